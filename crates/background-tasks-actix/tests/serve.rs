//! `serve` over a real socket: tasks spawned from handlers run on their worker, which `serve`
//! keeps running until they have been drained, cancelled or aborted and reported; requests in
//! flight drain; the force signal aborts at once; misconfiguration is an error.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use std::future::IntoFuture;

use background_tasks_actix::{
    BackgroundTaskError, BackgroundTasks, BackgroundTasksMiddleware, Serve, ServeError,
    ShutdownReport, TaskSupervisor, serve,
};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What the jobs of a test saw: whether one ran to its end, and on which threads they ran.
#[derive(Default)]
struct Seen {
    done: AtomicBool,
    threads: Mutex<Vec<String>>,
    stuck_dropped: AtomicBool,
}

impl Seen {
    fn record_thread(&self) {
        let name = std::thread::current().name().unwrap_or("").to_owned();
        self.threads
            .lock()
            .expect("no job panics while holding it")
            .push(name);
    }

    fn done(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }
}

/// `POST /jobs?delay_ms=N`: waits N ms in the handler, then spawns a job that, once shutdown
/// has begun (so after the requests drained), sleeps 300 ms and sets `done`.
async fn post_job(
    tasks: BackgroundTasks,
    query: web::Query<std::collections::HashMap<String, u64>>,
    seen: web::Data<Arc<Seen>>,
) -> Result<HttpResponse, BackgroundTaskError> {
    let delay = query.get("delay_ms").copied().unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    let seen = Arc::clone(&seen);
    tasks.task("job").spawn_with(move |ctx| async move {
        seen.record_thread();
        ctx.shutdown_started().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        seen.record_thread();
        seen.done.store(true, Ordering::SeqCst);
    })?;
    Ok(HttpResponse::Accepted().finish())
}

/// `POST /stuck`: spawns a job that never ends and ignores cancellation, with a flag that
/// tells when it was dropped.
async fn post_stuck(
    tasks: BackgroundTasks,
    seen: web::Data<Arc<Seen>>,
) -> Result<HttpResponse, BackgroundTaskError> {
    let flag = DroppedFlag(Arc::clone(&seen));
    tasks.task("stuck").spawn(async move {
        let _flag = flag;
        std::future::pending::<()>().await;
    })?;
    Ok(HttpResponse::Accepted().finish())
}

/// Sets `stuck_dropped` when dropped.
struct DroppedFlag(Arc<Seen>);

impl Drop for DroppedFlag {
    fn drop(&mut self) {
        self.0.stuck_dropped.store(true, Ordering::SeqCst);
    }
}

/// Starts a two-worker server with the supervisor's middleware and `POST /jobs`, configured
/// by `configure`, in a task; gives that task and the server's address.
fn start(
    supervisor: &TaskSupervisor,
    seen: &Arc<Seen>,
    configure: impl FnOnce(Serve) -> Serve,
) -> (JoinHandle<Result<ShutdownReport, ServeError>>, SocketAddr) {
    let middleware = BackgroundTasksMiddleware::new(supervisor.clone());
    let for_app = middleware.clone();
    let seen = web::Data::new(seen.clone());
    let server = HttpServer::new(move || {
        App::new()
            .wrap(for_app.clone())
            .app_data(seen.clone())
            .route("/jobs", web::post().to(post_job))
            .route("/stuck", web::post().to(post_stuck))
            .route(
                "/hang",
                web::get().to(|| async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    "late"
                }),
            )
    })
    .workers(2)
    .bind(("127.0.0.1", 0))
    .expect("a free port on the loopback");
    let address = server.addrs()[0];
    let serving = configure(serve(server, middleware)).into_future();
    (tokio::spawn(serving), address)
}

/// The supervisor of the tests: no runtime of its own, so handlers' tasks run on their worker.
fn supervisor() -> TaskSupervisor {
    TaskSupervisor::builder()
        .shutdown_timeout(Duration::from_secs(30))
        .cancel_grace(Duration::from_secs(5))
        .build()
}

fn on_a_worker(thread: &str) -> bool {
    thread.starts_with("actix-server worker")
}

async fn post(address: SocketAddr, delay_ms: u64) -> reqwest::StatusCode {
    post_to(address, &format!("/jobs?delay_ms={delay_ms}")).await
}

async fn post_to(address: SocketAddr, path: &str) -> reqwest::StatusCode {
    reqwest::Client::new()
        .post(format!("http://{address}{path}"))
        .send()
        .await
        .expect("the server answers")
        .status()
}

/// A shutdown signal for `configure`, and the sender that fires it.
fn signal() -> (
    oneshot::Sender<()>,
    impl Future<Output = ()> + Send + 'static,
) {
    let (stop, stopped) = oneshot::channel::<()>();
    (stop, async move {
        let _ = stopped.await;
    })
}

/// Serves one `POST /jobs` through a whole shutdown; gives the report and the threads the job
/// ran on, once it has run to its end.
async fn one_job_through_shutdown(supervisor: &TaskSupervisor) -> (ShutdownReport, Vec<String>) {
    let seen = Arc::new(Seen::default());
    let (stop, stopped) = signal();
    let (serving, address) = start(supervisor, &seen, |serve| serve.shutdown_signal(stopped));
    assert_eq!(post(address, 0).await, reqwest::StatusCode::ACCEPTED);
    stop.send(()).expect("serve listens");
    let report = serving
        .await
        .expect("serve does not panic")
        .expect("serve runs");
    assert!(seen.done(), "the job ran to its end: {report}");
    assert_eq!(report.completed(), 1, "{report}");
    let threads = seen.threads.lock().expect("not poisoned").clone();
    assert_eq!(threads.len(), 2, "{threads:?}");
    (report, threads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_spawned_from_a_handler_runs_on_its_worker_to_completion_during_shutdown() {
    let (report, threads) = one_job_through_shutdown(&supervisor()).await;
    // The job slept through the supervisor's drain, on its worker, which was still running.
    assert!(
        threads.iter().all(|thread| on_a_worker(thread)),
        "{threads:?}"
    );
    assert!(report.is_clean(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_with_a_runtime_of_its_own_runs_handlers_tasks_there_to_completion() {
    let supervisor = TaskSupervisor::builder()
        .runtime(Handle::current())
        .shutdown_timeout(Duration::from_secs(30))
        .build();
    let (_, threads) = one_job_through_shutdown(&supervisor).await;
    assert!(
        !threads.iter().any(|thread| on_a_worker(thread)),
        "{threads:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_spawned_from_a_handler_keeps_running_after_its_connection_closed() {
    let supervisor = supervisor();
    let seen = Arc::new(Seen::default());
    let (stop, stopped) = signal();
    let (serving, address) = start(&supervisor, &seen, |serve| serve.shutdown_signal(stopped));
    {
        // A client of its own, dropped with its connection once the answer is in.
        let client = reqwest::Client::new();
        let response = client
            .post(format!("http://{address}/jobs"))
            .header("connection", "close")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    }
    // The job waits for the shutdown: it is still running, its request long gone.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(supervisor.len(), 1);
    assert!(!seen.done());
    stop.send(()).unwrap();
    let report = serving.await.unwrap().unwrap();
    assert!(seen.done(), "the job ran to its end");
    assert_eq!(report.completed(), 1, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_still_on_a_worker_when_the_drain_ends_is_aborted_and_reported_before_the_worker_stops()
 {
    let supervisor = TaskSupervisor::builder()
        .shutdown_timeout(Duration::from_millis(200))
        .cancel_grace(Duration::from_millis(200))
        .build();
    let seen = Arc::new(Seen::default());
    let (stop, stopped) = signal();
    let (serving, address) = start(&supervisor, &seen, |serve| serve.shutdown_signal(stopped));
    assert_eq!(
        post_to(address, "/stuck").await,
        reqwest::StatusCode::ACCEPTED
    );
    stop.send(()).unwrap();
    let report = serving.await.unwrap().unwrap();
    // Aborted on its worker's runtime, which still ran: reported as aborted, not lost with
    // the worker, nor left over as abandoned.
    assert_eq!(report.aborted(), 1, "{report}");
    assert_eq!(report.abandoned(), 0, "{report}");
    assert_eq!(report.aborted_tasks()[0].name(), Some("stuck"), "{report}");
    assert!(seen.stuck_dropped.load(Ordering::SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_spawned_outside_a_worker_runs_where_it_was_spawned() {
    let supervisor = supervisor();
    let seen = Arc::new(Seen::default());
    let (stop, stopped) = signal();
    let (serving, _address) = start(&supervisor, &seen, |serve| serve.shutdown_signal(stopped));
    let thread = supervisor
        .spawn(async { std::thread::current().name().unwrap_or("").to_owned() })
        .unwrap();
    let thread = thread.await.unwrap();
    assert!(
        thread.starts_with("tokio-rt"),
        "on the test's runtime: {thread}"
    );
    stop.send(()).unwrap();
    let report = serving.await.unwrap().unwrap();
    assert!(report.is_clean(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_at_the_signal_finishes_closes_its_connection_and_its_task_is_awaited()
{
    let supervisor = supervisor();
    let seen = Arc::new(Seen::default());
    let (stop, stopped) = signal();
    let (serving, address) = start(&supervisor, &seen, |serve| serve.shutdown_signal(stopped));
    let request = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("http://{address}/jobs?delay_ms=700"))
            .send()
            .await
            .expect("the server answers")
    });
    // The request is in its handler when the signal arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(()).unwrap();
    let response = request.await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    assert_eq!(
        response
            .headers()
            .get("connection")
            .map(|value| value.as_bytes()),
        Some(&b"close"[..]),
        "a response sent during the drain closes its connection"
    );
    let report = serving.await.unwrap().unwrap();
    assert!(seen.done());
    assert_eq!(report.completed(), 1, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_outlives_the_request_drain_timeout_does_not_hold_the_shutdown() {
    let supervisor = supervisor();
    let seen = Arc::new(Seen::default());
    let (stop, stopped) = signal();
    let (serving, address) = start(&supervisor, &seen, |serve| {
        serve
            .request_drain_timeout(Duration::from_millis(500))
            .shutdown_signal(stopped)
    });
    let hanging = tokio::spawn(reqwest::get(format!("http://{address}/hang")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    stop.send(()).unwrap();
    let report = serving.await.unwrap().unwrap();
    let elapsed = signalled.elapsed();
    assert!(report.is_clean(), "{report}");
    // 500 ms of request drain; far from the handler's 60 s and actix's own 30 s default.
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    // The workers stopped at the end: the hanging request's connection is gone.
    let hung = tokio::time::timeout(Duration::from_secs(5), hanging)
        .await
        .expect("the hanging request ends with its worker")
        .unwrap();
    assert!(hung.is_err(), "{hung:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_force_signal_aborts_the_tasks_at_once() {
    let supervisor = supervisor();
    let seen = Arc::new(Seen::default());
    let (stop, stopped) = signal();
    let (force, forced) = signal();
    let (serving, address) = start(&supervisor, &seen, |serve| {
        serve.shutdown_signal(stopped).force_shutdown_signal(forced)
    });
    supervisor
        .task("forever")
        .spawn(std::future::pending::<()>())
        .unwrap();
    // And one on a worker.
    assert_eq!(
        post_to(address, "/stuck").await,
        reqwest::StatusCode::ACCEPTED
    );
    stop.send(()).unwrap();
    // Well into the 30 s drain of the supervisor.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(supervisor.is_shutting_down());
    let forced_at = Instant::now();
    force.send(()).unwrap();
    let report = serving.await.unwrap().unwrap();
    assert!(
        forced_at.elapsed() < Duration::from_secs(1),
        "{:?}",
        forced_at.elapsed()
    );
    assert_eq!(report.aborted(), 2, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_server_bound_to_no_address() {
    let server = HttpServer::new(App::new);
    let middleware = BackgroundTasksMiddleware::new(supervisor());
    let error = serve(server, middleware).await.unwrap_err();
    assert!(matches!(error, ServeError::NotBound), "{error}");
}
