//! `serve` over a real socket: tasks spawned from handlers outlive their worker, requests in
//! flight drain, the force signal aborts at once, and misconfiguration is an error.

use std::net::SocketAddr;
use std::sync::Arc;
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

/// `POST /jobs?delay_ms=N`: waits N ms in the handler, then spawns a job that, once shutdown
/// has begun (so after the workers stopped), sleeps 300 ms and sets `done`.
async fn post_job(
    tasks: BackgroundTasks,
    query: web::Query<std::collections::HashMap<String, u64>>,
    done: web::Data<Arc<AtomicBool>>,
) -> Result<HttpResponse, BackgroundTaskError> {
    let delay = query.get("delay_ms").copied().unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    let done = Arc::clone(&done);
    tasks.task("job").spawn_with(move |ctx| async move {
        ctx.shutdown_started().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        done.store(true, Ordering::SeqCst);
    })?;
    Ok(HttpResponse::Accepted().finish())
}

/// Starts a two-worker server with the supervisor's middleware and `POST /jobs`, configured
/// by `configure`, in a task; gives that task and the server's address.
fn start(
    supervisor: &TaskSupervisor,
    done: &Arc<AtomicBool>,
    configure: impl FnOnce(Serve) -> Serve,
) -> (JoinHandle<Result<ShutdownReport, ServeError>>, SocketAddr) {
    let middleware = BackgroundTasksMiddleware::new(supervisor.clone());
    let done = web::Data::new(done.clone());
    let server = HttpServer::new(move || {
        App::new()
            .wrap(middleware.clone())
            .app_data(done.clone())
            .route("/jobs", web::post().to(post_job))
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
    let serving = configure(serve(server, supervisor.clone())).into_future();
    (tokio::spawn(serving), address)
}

fn supervisor() -> TaskSupervisor {
    TaskSupervisor::builder()
        .runtime(Handle::current())
        .shutdown_timeout(Duration::from_secs(30))
        .cancel_grace(Duration::from_secs(5))
        .build()
}

async fn post(address: SocketAddr, delay_ms: u64) -> reqwest::StatusCode {
    reqwest::Client::new()
        .post(format!("http://{address}/jobs?delay_ms={delay_ms}"))
        .send()
        .await
        .expect("the server answers")
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_spawned_from_a_handler_runs_to_completion_after_its_worker_stopped() {
    let supervisor = supervisor();
    let done = Arc::new(AtomicBool::new(false));
    let (stop, stopped) = oneshot::channel::<()>();
    let (serving, address) = start(&supervisor, &done, |serve| {
        serve.shutdown_signal(async move {
            let _ = stopped.await;
        })
    });
    assert_eq!(post(address, 0).await, reqwest::StatusCode::ACCEPTED);
    stop.send(()).unwrap();
    let report = serving.await.unwrap().unwrap();
    // The job slept past its worker's end, on the runtime set on the supervisor.
    assert!(done.load(Ordering::SeqCst), "the job ran to its end");
    assert_eq!(report.completed(), 1, "{report}");
    assert!(report.is_clean(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_at_the_signal_finishes_and_its_task_is_awaited() {
    let supervisor = supervisor();
    let done = Arc::new(AtomicBool::new(false));
    let (stop, stopped) = oneshot::channel::<()>();
    let (serving, address) = start(&supervisor, &done, |serve| {
        serve.shutdown_signal(async move {
            let _ = stopped.await;
        })
    });
    let request = tokio::spawn(post(address, 700));
    // The request is in its handler when the signal arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(()).unwrap();
    assert_eq!(request.await.unwrap(), reqwest::StatusCode::ACCEPTED);
    let report = serving.await.unwrap().unwrap();
    assert!(done.load(Ordering::SeqCst));
    assert_eq!(report.completed(), 1, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_outlives_the_request_drain_timeout_does_not_hold_the_shutdown() {
    let supervisor = supervisor();
    let done = Arc::new(AtomicBool::new(false));
    let (stop, stopped) = oneshot::channel::<()>();
    let (serving, address) = start(&supervisor, &done, |serve| {
        serve
            .request_drain_timeout(Duration::from_millis(500))
            .shutdown_signal(async move {
                let _ = stopped.await;
            })
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
    hanging.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_force_signal_aborts_the_tasks_at_once() {
    let supervisor = supervisor();
    let done = Arc::new(AtomicBool::new(false));
    let (stop, stopped) = oneshot::channel::<()>();
    let (force, forced) = oneshot::channel::<()>();
    let (serving, _address) = start(&supervisor, &done, |serve| {
        serve
            .shutdown_signal(async move {
                let _ = stopped.await;
            })
            .force_shutdown_signal(async move {
                let _ = forced.await;
            })
    });
    supervisor
        .task("forever")
        .spawn(std::future::pending::<()>())
        .unwrap();
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
    assert_eq!(report.aborted(), 1, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_supervisor_without_a_runtime_of_its_own() {
    let supervisor = TaskSupervisor::new();
    let server = HttpServer::new(App::new).bind(("127.0.0.1", 0)).unwrap();
    let error = serve(server, supervisor).await.unwrap_err();
    assert!(matches!(error, ServeError::MissingRuntime), "{error}");
    assert!(
        error
            .to_string()
            .contains(".runtime(tokio::runtime::Handle::current())")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_server_bound_to_no_address() {
    let server = HttpServer::new(App::new);
    let error = serve(server, supervisor()).await.unwrap_err();
    assert!(matches!(error, ServeError::NotBound), "{error}");
}
