//! The quickstart: an axum server whose handlers start background jobs that outlive their
//! request, and that shuts down within one budget on SIGTERM or SIGINT.
//!
//! ```text
//! cargo run -p example-quickstart
//! curl -X POST 'http://127.0.0.1:3000/jobs?duration_ms=2000&kind=async'   # 202 {"id":2}
//! curl http://127.0.0.1:3000/tasks                                          # {"running":1,...}
//! curl http://127.0.0.1:3000/metrics                                        # Prometheus text
//! open http://127.0.0.1:3000/dashboard/                                      # the task dashboard
//! curl http://127.0.0.1:3000/ready                                          # ready
//! # Ctrl-C: readiness flips, requests drain, jobs drain, then the report is printed.
//! ```
//!
//! Settings (environment): `PORT` (default 3000; 0 picks a free port), `SHUTDOWN_TIMEOUT_MS`
//! (5000), `CANCEL_GRACE_MS` (1000), `DRAIN_DELAY_MS` (0), `REQUEST_DRAIN_TIMEOUT_MS`
//! (10000), `MAX_TASKS` (jobs running at once; no limit by default), `RUST_LOG` (info);
//! for durable jobs (see `durable.rs`) `DATABASE_URL` (`sqlite://quickstart.db`, created if
//! missing), `DURABLE_WORKERS` (4) and `DURABLE_MAX_ATTEMPTS` (3). A bad value, or a
//! database that cannot be opened, exits with code 2.

mod config;
mod durable;
mod routes;

use std::future::IntoFuture;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use background_tasks_axum::{Readiness, SpawnError, TaskSupervisor, serve};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::config::Config;

/// What handlers share besides the supervisor.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    readiness: Readiness,
    /// How many startup tasks (the heartbeat) still run: `/tasks` counts jobs only.
    startup_tasks: Arc<AtomicUsize>,
    /// The durable jobs' fetchers, tasks of the supervisor that are not jobs either.
    durable_fetchers: Option<background_tasks_apalis::FetchersHandle>,
    /// The durable jobs, whose gauges `GET /metrics` sets.
    durable_jobs: Option<background_tasks_apalis::DurableJobs>,
    /// What `GET /metrics` renders.
    metrics: PrometheusHandle,
}

impl AppState {
    fn startup_tasks_running(&self) -> usize {
        // Relaxed: a count for display, publishing nothing else.
        self.startup_tasks.load(Ordering::Relaxed)
            + self
                .durable_fetchers
                .as_ref()
                .map_or(0, background_tasks_apalis::FetchersHandle::running)
    }
}

fn main() -> ExitCode {
    // Logs to stderr, so that stdout carries only the address and the report; at `info`
    // unless RUST_LOG says otherwise, so that the shutdown's phases show.
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let durable = match durable::DurableConfig::from_env() {
        Ok(durable) => durable,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(config, durable));
    // Dropping the runtime would wait for every blocking thread, including those running the
    // blocking tasks that shutdown reported as abandoned: exit without them.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A database that cannot be opened is a setting to fix, as a bad variable is.
        Err(error) if error.is::<durable::DatabaseError>() => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    config: Config,
    durable: durable::DurableConfig,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut builder = TaskSupervisor::builder()
        .shutdown_timeout(config.shutdown_timeout)
        .cancel_grace(config.cancel_grace);
    if let Some(jobs) = config.max_tasks {
        // One more than the jobs, for the heartbeat, and one for the durable fetcher; durable
        // jobs running here share the limit.
        builder = builder.max_tasks(
            jobs.saturating_add(1)
                .saturating_add(durable.supervised_tasks()),
        );
    }
    let supervisor = builder.build();
    let metrics = routes::install_metrics_recorder()?;
    routes::spawn_metrics_upkeep(metrics.clone());
    let readiness = Readiness::new();
    let startup_tasks = Arc::new(AtomicUsize::new(0));

    // The database first: when it cannot be opened, the process exits before any task runs.
    let (jobs, workers) = durable::start(&durable, &supervisor).await?;
    // A startup task, as Quart's `before_serving`: it runs until shutdown starts, and shutdown
    // waits for it like for any other task.
    spawn_heartbeat(&supervisor, startup_tasks.clone())?;
    let state = AppState {
        readiness: readiness.clone(),
        startup_tasks,
        durable_fetchers: Some(workers.fetchers()),
        durable_jobs: Some(jobs.clone()),
        metrics,
    };

    let listener = TcpListener::bind(("127.0.0.1", config.port)).await?;
    let address = listener.local_addr()?;
    let app = routes::router(&supervisor, readiness.clone(), state).merge(durable::router(jobs));
    // `into_future` installs the SIGINT and SIGTERM handlers: from the moment the address is
    // announced, a signal shuts the server down gracefully.
    let server = serve(listener, app, supervisor)
        .readiness(readiness)
        .drain_delay(config.drain_delay)
        .request_drain_timeout(config.request_drain_timeout)
        .into_future();

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{address}")?;
    // Tests read this line through a pipe, where stdout is block-buffered.
    stdout.flush()?;
    drop(stdout);

    let report = server.await;
    // The durable jobs the abort ended go back to the queue, even when serving failed.
    let report = match report {
        Ok(report) => workers.finish(report).await,
        Err(error) => {
            drop(workers);
            return Err(error.into());
        }
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "shutdown report: {report}")?;
    stdout.flush()?;
    Ok(())
}

fn spawn_heartbeat(
    supervisor: &TaskSupervisor,
    running: Arc<AtomicUsize>,
) -> Result<(), SpawnError> {
    // Relaxed: see `AppState::startup_tasks_running`.
    running.fetch_add(1, Ordering::Relaxed);
    let spawned = supervisor
        .task("heartbeat")
        .spawn_with(move |ctx| async move {
            let mut beats = 0_u64;
            let mut interval = tokio::time::interval(Duration::from_secs(1));
            interval.tick().await;
            loop {
                tokio::select! {
                    () = ctx.shutdown_started() => break,
                    _ = interval.tick() => {
                        beats += 1;
                        tracing::info!(beats, "heartbeat");
                    }
                }
            }
            tracing::info!(beats, "heartbeat stopped: shutdown started");
            running.fetch_sub(1, Ordering::Relaxed);
        });
    spawned.map(drop)
}
