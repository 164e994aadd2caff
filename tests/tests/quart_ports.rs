//! Quart's background-task tests, ported: a real server from `background_tasks_axum::serve`
//! on `127.0.0.1:0`, a real HTTP client, and a shutdown signal the test fires itself.
//!
//! Quart's originals (`tests/test_background_tasks.py`) run the app under `test_app()`, whose
//! exit waits for background tasks; here that is `serve` returning its `ShutdownReport`.
//! Ordering is forced with channels rather than sleeps: a task that must outlive its request
//! waits for a message the test sends only once it holds the response.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use background_tasks::{ShutdownReport, TaskSupervisor};
use background_tasks_axum::{
    BackgroundTaskError, BackgroundTasks, BackgroundTasksLayer, ServeError, serve,
};
use background_tasks_e2e::{client, eventually};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

/// A server under test: its address, the trigger of its shutdown signal, and its task.
struct Server {
    base: String,
    stop: oneshot::Sender<()>,
    running: JoinHandle<Result<ShutdownReport, ServeError>>,
}

impl Server {
    async fn start(app: Router, supervisor: TaskSupervisor) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let base = format!("http://{}", listener.local_addr().expect("a bound address"));
        let (stop, stopped) = oneshot::channel::<()>();
        let running = tokio::spawn(
            serve(listener, app, supervisor)
                .shutdown_signal(async move {
                    let _ = stopped.await;
                })
                .into_future(),
        );
        Self {
            base,
            stop,
            running,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Fires the shutdown signal and waits, up to 10 s, for the report.
    async fn shut_down(self) -> ShutdownReport {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.running)
            .await
            .expect("serve returns within 10 s of its shutdown signal")
            .expect("the server task does not panic")
            .expect("serve runs")
    }
}

/// Quart's `app.config`: state the task reads, and where it writes what it saw.
#[derive(Clone)]
struct AppState {
    data: &'static str,
    seen: Arc<Mutex<Option<String>>>,
    release: Arc<Notify>,
}

/// Quart: `test_background_task`. A task spawned from a route runs after the response has
/// been sent, reads the app's state, and is awaited at shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_spawned_from_a_route_outlives_the_request_and_reads_app_state() {
    async fn index(
        tasks: BackgroundTasks,
        State(state): State<AppState>,
    ) -> Result<&'static str, BackgroundTaskError> {
        tasks.task("read-config").spawn(async move {
            // Held until the client has its response: the task outlives the request.
            state.release.notified().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            *state.seen.lock().unwrap() = Some(state.data.to_owned());
        })?;
        Ok("")
    }

    let supervisor = TaskSupervisor::new();
    let state = AppState {
        data: "data",
        seen: Arc::default(),
        release: Arc::default(),
    };
    let app = Router::new()
        .route("/", get(index))
        .with_state(state.clone())
        .layer(BackgroundTasksLayer::new(supervisor.clone()));
    let server = Server::start(app, supervisor.clone()).await;

    let response = client().get(server.url("/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(supervisor.len(), 1, "the task runs on after the response");
    assert_eq!(*state.seen.lock().unwrap(), None);
    // `notify_one` stores a permit, so the task cannot miss it.
    state.release.notify_one();

    let report = server.shut_down().await;
    assert_eq!(state.seen.lock().unwrap().as_deref(), Some("data"));
    assert_eq!(report.completed(), 1, "{report}");
    assert!(report.is_clean(), "{report}");
}

/// Quart: `test_lots_of_background_tasks`. Many requests, each with a task; shutdown awaits
/// every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_from_many_requests_are_all_awaited() {
    let count = Arc::new(Mutex::new(0_usize));
    let supervisor = TaskSupervisor::new();
    let app = Router::new()
        .route(
            "/",
            post(
                |tasks: BackgroundTasks, State(count): State<Arc<Mutex<usize>>>| async move {
                    tasks.spawn(async move {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        *count.lock().unwrap() += 1;
                    })?;
                    Ok::<_, BackgroundTaskError>(StatusCode::ACCEPTED)
                },
            ),
        )
        .with_state(count.clone())
        .layer(BackgroundTasksLayer::new(supervisor.clone()));
    let server = Server::start(app, supervisor).await;

    let client = client();
    let requests = (0..50).map(|_| client.post(server.url("/")).send());
    for response in futures_join_all(requests).await {
        assert_eq!(response.unwrap().status(), StatusCode::ACCEPTED);
    }
    let report = server.shut_down().await;
    assert_eq!(*count.lock().unwrap(), 50);
    assert!(report.is_clean(), "{report}");
}

/// Awaits every future, in order, without a dependency on `futures`.
async fn futures_join_all<F: Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("the future does not panic"));
    }
    outputs
}

/// Quart: a task added in `before_serving`. Spawned on the supervisor before the server
/// starts, it is awaited when the server shuts down, and counted in the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_spawned_before_serving_is_awaited_at_shutdown() {
    let supervisor = TaskSupervisor::new();
    let done = Arc::new(Mutex::new(false));
    supervisor
        .task("startup")
        .spawn_with({
            let done = done.clone();
            move |ctx| async move {
                // Runs until shutdown starts, then winds down for a while: shutdown must wait.
                ctx.shutdown_started().await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                *done.lock().unwrap() = true;
            }
        })
        .unwrap();
    let app = Router::new()
        .route("/", get(|| async { "hello" }))
        .layer(BackgroundTasksLayer::new(supervisor.clone()));
    let server = Server::start(app, supervisor).await;
    let response = client().get(server.url("/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!*done.lock().unwrap());

    let report = server.shut_down().await;
    assert!(
        *done.lock().unwrap(),
        "serve returned before the startup task ended"
    );
    assert_eq!(report.completed(), 1, "{report}");
    assert!(report.is_clean(), "{report}");
}

/// Quart: `test_sync_background_task`. A synchronous task runs on a thread of its own (the
/// server keeps answering on its only runtime thread while the task blocks) and is awaited.
#[tokio::test(flavor = "current_thread")]
async fn sync_task_runs_on_a_thread_and_is_awaited() {
    #[derive(Clone)]
    struct Sync {
        release: Arc<Mutex<Option<std::sync::mpsc::Receiver<()>>>>,
        thread: Arc<Mutex<Option<std::thread::ThreadId>>>,
        done: Arc<Mutex<bool>>,
    }
    let (release, released) = std::sync::mpsc::channel::<()>();
    let state = Sync {
        release: Arc::new(Mutex::new(Some(released))),
        thread: Arc::default(),
        done: Arc::default(),
    };
    let supervisor = TaskSupervisor::new();
    let app = Router::new()
        .route(
            "/",
            get(
                |tasks: BackgroundTasks, State(state): State<Sync>| async move {
                    let released = state.release.lock().unwrap().take().unwrap();
                    tasks.task("sync").spawn_blocking(move || {
                        *state.thread.lock().unwrap() = Some(std::thread::current().id());
                        // Blocks this thread until the test, served by the runtime's only thread,
                        // says so: it deadlocks (and times out) if the task runs on that thread.
                        released.recv_timeout(Duration::from_secs(10)).unwrap();
                        std::thread::sleep(Duration::from_millis(100));
                        *state.done.lock().unwrap() = true;
                    })?;
                    Ok::<_, BackgroundTaskError>("")
                },
            ),
        )
        .route("/other", get(|| async { "still serving" }))
        .with_state(state.clone())
        .layer(BackgroundTasksLayer::new(supervisor.clone()));
    let server = Server::start(app, supervisor).await;

    let client = client();
    let response = client.get(server.url("/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let other = client.get(server.url("/other")).send().await.unwrap();
    assert_eq!(other.text().await.unwrap(), "still serving");
    let thread = eventually("the sync task to start", Duration::from_secs(5), || async {
        *state.thread.lock().unwrap()
    })
    .await;
    assert_ne!(thread, std::thread::current().id());
    release.send(()).unwrap();

    let report = server.shut_down().await;
    assert!(
        *state.done.lock().unwrap(),
        "serve returned before the sync task ended"
    );
    assert_eq!(report.completed(), 1, "{report}");
    assert!(report.is_clean(), "{report}");
}

/// A request in flight when the signal arrives may still spawn a task (rejecting it is the
/// Spring 6.1 regression), and that task is awaited with the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_in_flight_at_the_signal_still_spawns_and_its_task_is_awaited() {
    #[derive(Clone, Default)]
    struct Gate {
        entered: Arc<Notify>,
        proceed: Arc<Notify>,
        done: Arc<Mutex<bool>>,
    }
    let gate = Gate::default();
    let supervisor = TaskSupervisor::new();
    let app = Router::new()
        .route(
            "/slow",
            post(
                |tasks: BackgroundTasks, State(gate): State<Gate>| async move {
                    gate.entered.notify_one();
                    gate.proceed.notified().await;
                    tasks.spawn(async move {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        *gate.done.lock().unwrap() = true;
                    })?;
                    Ok::<_, BackgroundTaskError>(StatusCode::ACCEPTED)
                },
            ),
        )
        .with_state(gate.clone())
        .layer(BackgroundTasksLayer::new(supervisor.clone()));
    let server = Server::start(app, supervisor.clone()).await;

    let request = tokio::spawn(client().post(server.url("/slow")).send());
    gate.entered.notified().await;
    let Server { stop, running, .. } = server;
    stop.send(()).unwrap();
    // The server is draining requests; the supervisor stays open until they are done.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!supervisor.is_shutting_down());
    gate.proceed.notify_one();

    let response = request.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let report = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        *gate.done.lock().unwrap(),
        "serve returned before the task ended"
    );
    assert_eq!(report.completed(), 1, "{report}");
}

/// Once the supervisor is shutting down, a handler's `?` on a spawn answers 503 with
/// `Retry-After` over the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_after_the_supervisor_shut_down_answers_503_with_retry_after() {
    let supervisor = TaskSupervisor::new();
    let app = Router::new()
        .route(
            "/jobs",
            post(|tasks: BackgroundTasks| async move {
                tasks.spawn(async {})?;
                Ok::<_, BackgroundTaskError>(StatusCode::ACCEPTED)
            }),
        )
        .layer(BackgroundTasksLayer::new(supervisor.clone()));
    let server = Server::start(app, supervisor.clone()).await;
    let client = client();
    let accepted = client.post(server.url("/jobs")).send().await.unwrap();
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);

    // Something else shuts the supervisor down while the server still serves.
    supervisor.shutdown().await;
    let refused = client.post(server.url("/jobs")).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry_after = refused.headers().get("retry-after").expect("Retry-After");
    assert!(retry_after.to_str().unwrap().parse::<u64>().unwrap() > 0);
    let body = refused.text().await.unwrap();
    assert!(body.contains("shut"), "the body says why: {body:?}");

    server.shut_down().await;
}
