//! Durable jobs over HTTP: `background-tasks-apalis` (workers under the supervisor) against
//! the same work on bare apalis (its own `WorkerBuilder` and `Monitor`, no supervisor), on
//! SQLite and PostgreSQL, in one run.
//!
//! For each backend and system, on a fresh database, an axum server on loopback takes
//! `POST /enqueue` and stores one job (the adapter's `DurableJobs::enqueue`, or apalis's
//! `TaskSink::push`); the job's handler records the time from just before the enqueue to its
//! own start. Two phases:
//!
//! - **throughput**: `--requests` POSTs from `--clients` concurrent keep-alive clients, with
//!   the workers running; enqueues per second over HTTP;
//! - **latency**: `--pings` POSTs one at a time, each waiting for its handler to start;
//!   enqueue-to-handler-start p50 and p99.
//!
//! Both systems poll an idle queue every 100 ms and run 16 jobs at once; on SQLite both use the
//! same connection settings (WAL, `synchronous = NORMAL`), so that the ratio measures the
//! adapter and not a durability setting. The order of the systems alternates between the
//! `--rounds`, and the medians over rounds are reported with the ratio adapter / bare
//! (throughput: bare / adapter, so that above 1 is always the adapter's overhead).
//!
//! Writes `bench-results/durable.json`; `benchmarks/durable-plot` draws it. PostgreSQL is a
//! throwaway cluster (`background_tasks_e2e::postgres`), or `TEST_POSTGRES_URL`'s server.
//!
//! ```sh
//! cargo bench -p bench-durable -- --rounds 3
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use apalis_core::backend::TaskSink;
use apalis_core::backend::ext::BackendExt;
use apalis_core::backend::finalize::Durable;
use apalis_core::error::BoxDynError;
use apalis_core::monitor::Monitor;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_core::worker::ext::parallelize::ParallelizeExt;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use background_tasks::TaskSupervisor;
use background_tasks_apalis::{BoxError, DurableJobs, Job, JobContext};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// What every handler does: records when it started, relative to its enqueue.
#[derive(Debug, Serialize, Deserialize)]
struct BenchJob {
    /// Microseconds since the Unix epoch, just before the enqueue.
    enqueued_at: u64,
}

impl Job for BenchJob {
    const NAME: &'static str = "bench-job";
    type State = ();

    async fn run(self, (): (), _ctx: JobContext) -> Result<(), BoxError> {
        probe().record(self.enqueued_at);
        Ok(())
    }
}

/// The bare apalis handler: the same work.
async fn bare_job(job: BenchJob) -> Result<(), BoxDynError> {
    probe().record(job.enqueued_at);
    Ok(())
}

/// One run's handler starts; a static because apalis's handler is a plain fn.
#[derive(Debug, Default)]
struct Probe {
    started: AtomicUsize,
    latencies: Mutex<Vec<u64>>,
    notify: Notify,
}

fn probe() -> &'static Probe {
    static PROBE: OnceLock<Probe> = OnceLock::new();
    PROBE.get_or_init(Probe::default)
}

impl Probe {
    fn record(&self, enqueued_at: u64) {
        let latency = now_micros().saturating_sub(enqueued_at);
        self.latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(latency);
        self.started.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    fn reset(&self) {
        self.latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        self.started.store(0, Ordering::SeqCst);
    }

    async fn wait_for(&self, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            if self.started.load(Ordering::SeqCst) >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {count} jobs started within {timeout:?}",
                self.started.load(Ordering::SeqCst)
            );
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        })
}

const CONCURRENCY: usize = 16;
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    Adapter,
    Bare,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            Self::Adapter => "background-tasks-apalis",
            Self::Bare => "bare apalis",
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Measure {
    enqueues_per_s: f64,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
}

struct Options {
    requests: usize,
    clients: usize,
    pings: usize,
    rounds: usize,
    backends: Vec<Backend>,
}

impl Options {
    fn parse() -> Self {
        let mut options = Self {
            requests: 2000,
            clients: 32,
            pings: 100,
            rounds: 3,
            backends: vec![Backend::Sqlite, Backend::Postgres],
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
            match arg.as_str() {
                "--requests" => options.requests = value().parse().expect("--requests N"),
                "--clients" => options.clients = value().parse().expect("--clients N"),
                "--pings" => options.pings = value().parse().expect("--pings N"),
                "--rounds" => options.rounds = value().parse().expect("--rounds N"),
                "--backends" => {
                    options.backends = value()
                        .split(',')
                        .map(|name| match name {
                            "sqlite" => Backend::Sqlite,
                            "postgres" => Backend::Postgres,
                            other => panic!("--backends: sqlite,postgres, not {other}"),
                        })
                        .collect();
                }
                // What `cargo bench` passes to every bench target.
                "--bench" => {}
                other => panic!(
                    "unknown option {other}; options: --requests N --clients N --pings N \
                     --rounds N --backends sqlite,postgres"
                ),
            }
        }
        options
    }
}

fn main() {
    let options = Options::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run(options));
}

async fn run(options: Options) {
    let mut results = Vec::new();
    for &backend in &options.backends {
        let mut rounds: Vec<(System, Measure)> = Vec::new();
        for round in 0..options.rounds {
            let order = if round % 2 == 0 {
                [System::Bare, System::Adapter]
            } else {
                [System::Adapter, System::Bare]
            };
            for system in order {
                let (url, _dir) = database(backend).await;
                let measure = measure(system, backend, &url, &options).await;
                eprintln!(
                    "{:8} {:24} round {}: {:7.0} enqueues/s, p50 {:6.2} ms, p99 {:6.2} ms",
                    backend.name(),
                    system.name(),
                    round + 1,
                    measure.enqueues_per_s,
                    measure.latency_p50_ms,
                    measure.latency_p99_ms
                );
                rounds.push((system, measure));
            }
        }
        let median = |system: System, field: fn(&Measure) -> f64| {
            let mut values: Vec<f64> = rounds
                .iter()
                .filter(|(s, _)| *s == system)
                .map(|(_, m)| field(m))
                .collect();
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        let get = |system| Measure {
            enqueues_per_s: median(system, |m| m.enqueues_per_s),
            latency_p50_ms: median(system, |m| m.latency_p50_ms),
            latency_p99_ms: median(system, |m| m.latency_p99_ms),
        };
        let (adapter, bare) = (get(System::Adapter), get(System::Bare));
        results.push(serde_json::json!({
            "backend": backend.name(),
            "adapter": adapter,
            "bare": bare,
            "ratio": {
                "throughput": bare.enqueues_per_s / adapter.enqueues_per_s,
                "latency_p50": adapter.latency_p50_ms / bare.latency_p50_ms,
                "latency_p99": adapter.latency_p99_ms / bare.latency_p99_ms,
            },
        }));
    }
    let report = serde_json::json!({
        "requests": options.requests,
        "clients": options.clients,
        "pings": options.pings,
        "rounds": options.rounds,
        "concurrency": CONCURRENCY,
        "poll_ms": POLL.as_millis(),
        "results": results,
    });
    println!("\n| backend | system | enqueues/s | p50 ms | p99 ms |\n|---|---|---|---|---|");
    for result in &results {
        for (key, name) in [
            ("bare", "bare apalis"),
            ("adapter", "background-tasks-apalis"),
        ] {
            let m = &result[key];
            println!(
                "| {} | {name} | {:.0} | {:.2} | {:.2} |",
                result["backend"].as_str().unwrap_or_default(),
                m["enqueues_per_s"].as_f64().unwrap_or_default(),
                m["latency_p50_ms"].as_f64().unwrap_or_default(),
                m["latency_p99_ms"].as_f64().unwrap_or_default()
            );
        }
        let ratio = &result["ratio"];
        println!(
            "| {} | overhead (adapter / bare) | {:.3}x | {:.3}x | {:.3}x |",
            result["backend"].as_str().unwrap_or_default(),
            ratio["throughput"].as_f64().unwrap_or_default(),
            ratio["latency_p50"].as_f64().unwrap_or_default(),
            ratio["latency_p99"].as_f64().unwrap_or_default()
        );
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench-results");
    std::fs::create_dir_all(&dir).expect("bench-results/");
    let path = dir.join("durable.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).expect("JSON"))
        .expect("write bench-results/durable.json");
    eprintln!("wrote {}", path.display());
}

/// A fresh database: a SQLite file in a temp dir, or a new PostgreSQL database.
async fn database(backend: Backend) -> (String, Option<tempfile::TempDir>) {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("a temp dir");
            let url = format!("sqlite://{}", dir.path().join("bench.db").display());
            (url, Some(dir))
        }
        Backend::Postgres => {
            let server = background_tasks_e2e::postgres::server().expect(
                "a PostgreSQL server: the PostgreSQL 15 binaries for a throwaway one, or \
                 TEST_POSTGRES_URL",
            );
            (server.database("bench").await, None)
        }
    }
}

async fn measure(system: System, backend: Backend, url: &str, options: &Options) -> Measure {
    probe().reset();
    let (app, stop) = match system {
        System::Adapter => adapter(url).await,
        System::Bare => bare(backend, url).await,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let address = listener.local_addr().expect("an address");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let endpoint = format!("http://{address}/enqueue");
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a client");

    // Throughput: concurrent keep-alive clients.
    let next = Arc::new(AtomicUsize::new(0));
    let began = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..options.clients {
        let (client, endpoint, next) = (client.clone(), endpoint.clone(), next.clone());
        let requests = options.requests;
        clients.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                let response = client.post(&endpoint).send().await.expect("POST /enqueue");
                assert_eq!(response.status(), StatusCode::ACCEPTED);
            }
        }));
    }
    for client in clients {
        client.await.expect("a client task");
    }
    let enqueues_per_s = options.requests as f64 / began.elapsed().as_secs_f64();
    probe()
        .wait_for(options.requests, Duration::from_secs(300))
        .await;

    // Latency: one job at a time, each waited for.
    probe().reset();
    for n in 1..=options.pings {
        let response = client.post(&endpoint).send().await.expect("POST /enqueue");
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        probe().wait_for(n, Duration::from_secs(30)).await;
    }
    let mut latencies = probe()
        .latencies
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    latencies.sort_unstable();
    let percentile = |p: f64| {
        let index = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[index] as f64 / 1000.0
    };
    let measure = Measure {
        enqueues_per_s,
        latency_p50_ms: percentile(0.50),
        latency_p99_ms: percentile(0.99),
    };
    server.abort();
    stop().await;
    measure
}

type Stop = Box<dyn FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>>;

/// The adapter: workers under a supervisor, `DurableJobs::enqueue` in the handler.
async fn adapter(url: &str) -> (Router, Stop) {
    let supervisor = TaskSupervisor::new();
    let jobs = DurableJobs::builder(url)
        .supervisor(&supervisor)
        .connect()
        .await
        .expect("the database opens");
    let workers = jobs
        .workers(&supervisor)
        .job::<BenchJob>(CONCURRENCY, ())
        .poll_interval(POLL)
        .start()
        .await
        .expect("the workers start");
    async fn enqueue(State(jobs): State<DurableJobs>) -> Result<StatusCode, BoxErrorResponse> {
        jobs.enqueue(BenchJob {
            enqueued_at: now_micros(),
        })
        .await
        .map_err(|error| BoxErrorResponse(error.to_string()))?;
        Ok(StatusCode::ACCEPTED)
    }
    let app = Router::new()
        .route("/enqueue", post(enqueue))
        .with_state(jobs);
    let stop: Stop = Box::new(move || {
        Box::pin(async move {
            let _ = workers.finish(supervisor.shutdown().await).await;
        })
    });
    (app, stop)
}

/// Bare apalis: its storage's `push` in the handler, its worker on its monitor.
async fn bare(backend: Backend, url: &str) -> (Router, Stop) {
    match backend {
        Backend::Sqlite => bare_sqlite(url).await,
        Backend::Postgres => bare_postgres(url).await,
    }
}

async fn bare_sqlite(url: &str) -> (Router, Stop) {
    use apalis_sqlite::{Config, SqliteStorage};
    use sqlx::sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
    };
    use std::str::FromStr;

    let options = SqliteConnectOptions::from_str(url)
        .expect("a SQLite URL")
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(3));
    let pool = SqlitePoolOptions::new()
        .acquire_timeout(Duration::from_secs(3))
        .connect_with(options)
        .await
        .expect("the database opens");
    SqliteStorage::<()>::migrations()
        .run(&pool)
        .await
        .expect("apalis's migrations");
    let config = Config::default().queue(BenchJob::NAME);
    let storage = SqliteStorage::<BenchJob>::new(&pool).with_config(config);
    let worker_storage = storage.clone();
    let monitor = Monitor::new().register(move |n| {
        WorkerBuilder::new(format!("bench-bare-{n}"))
            .backend(worker_storage.clone().poll_with_interval(POLL))
            .layer(tower::limit::ConcurrencyLimitLayer::new(CONCURRENCY))
            .parallelize(tokio::spawn)
            .build(bare_job)
    });
    bare_app(storage, monitor)
}

async fn bare_postgres(url: &str) -> (Router, Stop) {
    use apalis_postgres::{Config, PostgresStorage};
    use sqlx::postgres::PgPoolOptions;

    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(3))
        .connect(url)
        .await
        .expect("the database opens");
    PostgresStorage::<()>::migrations()
        .run(&pool)
        .await
        .expect("apalis's migrations");
    let config = Config::default().queue(BenchJob::NAME);
    let storage = PostgresStorage::<BenchJob>::new(&pool).with_config(config);
    let worker_storage = storage.clone();
    let monitor = Monitor::new().register(move |n| {
        WorkerBuilder::new(format!("bench-bare-{n}"))
            .backend(worker_storage.clone().poll_with_interval(POLL))
            .layer(tower::limit::ConcurrencyLimitLayer::new(CONCURRENCY))
            .parallelize(tokio::spawn)
            .build(bare_job)
    });
    bare_app(storage, monitor)
}

fn bare_app<S>(storage: S, monitor: Monitor) -> (Router, Stop)
where
    S: TaskSink<BenchJob, Durable> + Clone + Send + Sync + 'static,
{
    async fn enqueue<S: TaskSink<BenchJob, Durable> + Clone + Send + Sync + 'static>(
        State(storage): State<S>,
    ) -> Result<StatusCode, BoxErrorResponse> {
        let mut storage = storage.clone();
        storage
            .push(BenchJob {
                enqueued_at: now_micros(),
            })
            .await
            .map_err(|error| BoxErrorResponse(error.to_string()))?;
        Ok(StatusCode::ACCEPTED)
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(monitor.run_with_signal(async move {
        let _ = stop_rx.await;
        Ok(())
    }));
    let app = Router::new()
        .route("/enqueue", post(enqueue::<S>))
        .with_state(storage);
    let stop: Stop = Box::new(move || {
        Box::pin(async move {
            let _ = stop_tx.send(());
            let _ = tokio::time::timeout(Duration::from_secs(10), running).await;
        })
    });
    (app, stop)
}

/// A failed enqueue: the benchmark stops on it.
struct BoxErrorResponse(String);

impl axum::response::IntoResponse for BoxErrorResponse {
    fn into_response(self) -> axum::response::Response {
        (StatusCode::SERVICE_UNAVAILABLE, self.0).into_response()
    }
}
