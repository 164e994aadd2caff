//! The `serve` shutdown sequence, step by step: in memory under paused time for the timings,
//! and over real TCP sockets for the end to end paths.

mod support;

use std::future::IntoFuture;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use axum::routing::get;
use background_tasks::{ShutdownReport, TaskSupervisor};
use background_tasks_axum::{
    BackgroundTaskError, BackgroundTasks, BackgroundTasksLayer, Readiness, ServeError, serve,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};

use bytes::Bytes;
use support::{Connector, channel_body, memory_listener, request, send, text};

/// A signal the test fires.
struct Trigger(Option<oneshot::Sender<()>>);

fn trigger() -> (Trigger, impl Future<Output = ()> + Send + 'static) {
    let (sender, receiver) = oneshot::channel::<()>();
    (Trigger(Some(sender)), async move {
        let _ = receiver.await;
    })
}

impl Trigger {
    fn fire(&mut self) {
        if let Some(sender) = self.0.take() {
            let _ = sender.send(());
        }
    }
}

fn supervisor(shutdown_timeout: Duration, cancel_grace: Duration) -> TaskSupervisor {
    TaskSupervisor::builder()
        .shutdown_timeout(shutdown_timeout)
        .cancel_grace(cancel_grace)
        .build()
}

/// The app under test:
/// - `/` answers at once;
/// - `/slow` takes 2 s, then spawns `spawned-while-draining`, a 1 s task;
/// - `/stuck` never answers, after telling `entered`;
/// - `/stuck-task` spawns `stuck`, a task that ignores every signal;
/// - `/ready` is the readiness.
fn app(supervisor: &TaskSupervisor, readiness: &Readiness, entered: &Arc<Notify>) -> Router {
    let entered_slow = entered.clone();
    let entered_stuck = entered.clone();
    Router::new()
        .route("/", get(|| async { "hello" }))
        .route(
            "/slow",
            get(move |tasks: BackgroundTasks| async move {
                entered_slow.notify_one();
                sleep(Duration::from_secs(2)).await;
                tasks
                    .task("spawned-while-draining")
                    .spawn(sleep(Duration::from_secs(1)))?;
                Ok::<_, BackgroundTaskError>(StatusCode::ACCEPTED)
            }),
        )
        .route(
            "/stuck",
            get(move || async move {
                entered_stuck.notify_one();
                std::future::pending::<()>().await;
            }),
        )
        .route(
            "/stuck-task",
            get(|tasks: BackgroundTasks| async move {
                tasks.task("stuck").spawn(std::future::pending::<()>())?;
                Ok::<_, BackgroundTaskError>(StatusCode::ACCEPTED)
            }),
        )
        .route(
            "/deaf-task",
            get(|tasks: BackgroundTasks| async move {
                // Has a context, and ignores it: given the grace, then aborted.
                tasks
                    .task("deaf")
                    .spawn_with(|_ctx| std::future::pending::<()>())?;
                Ok::<_, BackgroundTaskError>(StatusCode::ACCEPTED)
            }),
        )
        .route_service("/ready", readiness.clone())
        .layer(BackgroundTasksLayer::new(supervisor.clone()))
}

/// GET `uri` over a new in-memory connection.
async fn get_status(connector: &Connector, uri: &str) -> Option<StatusCode> {
    let io = connector.connect()?;
    send(io, request("GET", uri))
        .await
        .ok()
        .map(|response| response.status())
}

type Server = JoinHandle<Result<ShutdownReport, ServeError>>;

/// A server on an in-memory listener, with custom shutdown and force signals.
struct Memory {
    connector: Connector,
    readiness: Readiness,
    supervisor: TaskSupervisor,
    entered: Arc<Notify>,
    shutdown: Trigger,
    force: Trigger,
    server: Server,
}

fn memory_server(
    supervisor: TaskSupervisor,
    drain_delay: Duration,
    request_drain_timeout: Duration,
) -> Memory {
    let (listener, connector) = memory_listener();
    let readiness = Readiness::new();
    let entered = Arc::new(Notify::new());
    let (shutdown, shutdown_signal) = trigger();
    let (force, force_signal) = trigger();
    let server = tokio::spawn(
        serve(
            listener,
            app(&supervisor, &readiness, &entered),
            supervisor.clone(),
        )
        .readiness(readiness.clone())
        .drain_delay(drain_delay)
        .request_drain_timeout(request_drain_timeout)
        .shutdown_signal(shutdown_signal)
        .force_shutdown_signal(force_signal)
        .into_future(),
    );
    Memory {
        connector,
        readiness,
        supervisor,
        entered,
        shutdown,
        force,
        server,
    }
}

/// Starts a request that never completes by itself; resolves once its handler runs.
async fn start(memory: &Memory, uri: &'static str) -> JoinHandle<Option<StatusCode>> {
    let connector = memory.connector.clone();
    let entered = memory.entered.notified();
    let request = tokio::spawn(async move { get_status(&connector, uri).await });
    entered.await;
    request
}

#[tokio::test(start_paused = true)]
async fn signal_flips_readiness_at_once_and_connections_are_accepted_during_the_drain_delay() {
    let supervisor = supervisor(Duration::from_secs(5), Duration::from_secs(1));
    let mut memory = memory_server(supervisor, Duration::from_secs(5), Duration::from_secs(10));
    assert_eq!(
        get_status(&memory.connector, "/ready").await,
        Some(StatusCode::OK)
    );

    memory.shutdown.fire();
    sleep(Duration::from_millis(1)).await;
    assert!(
        !memory.readiness.is_ready(),
        "readiness flips with the signal"
    );
    assert_eq!(
        get_status(&memory.connector, "/ready").await,
        Some(StatusCode::SERVICE_UNAVAILABLE)
    );

    sleep(Duration::from_secs(4)).await;
    assert_eq!(
        get_status(&memory.connector, "/").await,
        Some(StatusCode::OK),
        "new connections are still served during the drain delay"
    );

    sleep(Duration::from_millis(1_001)).await;
    assert!(
        memory.connector.connect().is_none(),
        "the listener is gone after the drain delay"
    );
    let report = memory.server.await.unwrap().unwrap();
    assert!(report.is_clean());
}

#[tokio::test(start_paused = true)]
async fn requests_in_flight_finish_during_the_drain_and_the_tasks_they_spawn_are_in_the_report() {
    let supervisor = supervisor(Duration::from_secs(5), Duration::from_secs(1));
    let mut memory = memory_server(supervisor, Duration::ZERO, Duration::from_secs(10));
    let slow = start(&memory, "/slow").await;
    let signalled = Instant::now();
    memory.shutdown.fire();

    sleep(Duration::from_millis(10)).await;
    assert!(memory.connector.connect().is_none(), "no new connections");
    assert_eq!(
        slow.await.unwrap(),
        Some(StatusCode::ACCEPTED),
        "the request in flight finishes, and may still spawn"
    );
    let report = memory.server.await.unwrap().unwrap();
    assert_eq!(
        report.completed(),
        1,
        "the task spawned during the drain: {report}"
    );
    assert!(report.is_clean());
    let elapsed = signalled.elapsed();
    assert!(
        elapsed >= Duration::from_secs(3) && elapsed < Duration::from_millis(3_100),
        "2 s of request, then 1 s of task: {elapsed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn request_drain_timeout_closes_a_stuck_connection_then_tasks_shut_down() {
    let supervisor = supervisor(Duration::from_secs(5), Duration::ZERO);
    let mut memory = memory_server(supervisor, Duration::ZERO, Duration::from_secs(3));
    assert_eq!(
        get_status(&memory.connector, "/stuck-task").await,
        Some(StatusCode::ACCEPTED)
    );
    let stuck = start(&memory, "/stuck").await;
    let signalled = Instant::now();
    memory.shutdown.fire();

    assert_eq!(stuck.await.unwrap(), None, "the stuck connection is closed");
    let closed = signalled.elapsed();
    assert!(
        closed >= Duration::from_secs(3) && closed < Duration::from_millis(3_100),
        "closed when the request drain timeout ran out, not when serve returns: {closed:?}"
    );
    assert!(
        memory.supervisor.is_shutting_down(),
        "then the tasks shut down"
    );
    let report = memory.server.await.unwrap().unwrap();
    let elapsed = signalled.elapsed();
    assert!(
        elapsed >= Duration::from_secs(8) && elapsed < Duration::from_millis(8_100),
        "3 s of request drain, then 5 s of task drain: {elapsed:?}"
    );
    assert_eq!(report.aborted(), 1);
}

#[tokio::test(start_paused = true)]
async fn force_signal_during_the_request_drain_closes_connections_and_aborts_tasks_at_once() {
    let supervisor = supervisor(Duration::from_secs(30), Duration::from_secs(30));
    let mut memory = memory_server(supervisor, Duration::ZERO, Duration::from_secs(60));
    assert_eq!(
        get_status(&memory.connector, "/stuck-task").await,
        Some(StatusCode::ACCEPTED)
    );
    let stuck = start(&memory, "/stuck").await;
    memory.shutdown.fire();
    sleep(Duration::from_secs(1)).await;
    assert!(!memory.server.is_finished());

    let forced = Instant::now();
    memory.force.fire();
    let report = memory.server.await.unwrap().unwrap();
    assert!(
        forced.elapsed() < Duration::from_millis(100),
        "{:?}",
        forced.elapsed()
    );
    assert_eq!(stuck.await.unwrap(), None);
    assert_eq!(report.aborted(), 1);
    assert_eq!(report.aborted_tasks()[0].name(), Some("stuck"));
}

#[tokio::test(start_paused = true)]
async fn force_signal_during_the_task_shutdown_aborts_tasks_at_once() {
    let supervisor = supervisor(Duration::from_secs(30), Duration::from_secs(30));
    let mut memory = memory_server(supervisor, Duration::ZERO, Duration::from_secs(60));
    assert_eq!(
        get_status(&memory.connector, "/stuck-task").await,
        Some(StatusCode::ACCEPTED)
    );
    memory.shutdown.fire();
    sleep(Duration::from_secs(2)).await;
    assert!(memory.supervisor.is_shutting_down(), "connections drained");
    assert!(!memory.server.is_finished());

    let forced = Instant::now();
    memory.force.fire();
    let report = memory.server.await.unwrap().unwrap();
    assert!(
        forced.elapsed() < Duration::from_millis(100),
        "{:?}",
        forced.elapsed()
    );
    assert_eq!(report.aborted(), 1);
}

#[tokio::test(start_paused = true)]
async fn force_signal_before_the_shutdown_signal_aborts_at_once() {
    let supervisor = supervisor(Duration::from_secs(30), Duration::from_secs(30));
    let mut memory = memory_server(supervisor, Duration::from_secs(30), Duration::from_secs(60));
    let stuck = start(&memory, "/stuck").await;
    memory.force.fire();
    let report = memory.server.await.unwrap().unwrap();
    assert!(!memory.readiness.is_ready());
    assert_eq!(stuck.await.unwrap(), None);
    assert!(report.is_clean());
}

#[tokio::test(start_paused = true)]
async fn shutdown_is_bounded_by_the_sum_of_the_budgets_whatever_handlers_and_tasks_do() {
    let supervisor = supervisor(Duration::from_secs(3), Duration::from_secs(1));
    let mut memory = memory_server(supervisor, Duration::from_secs(1), Duration::from_secs(2));
    for path in ["/stuck-task", "/deaf-task"] {
        assert_eq!(
            get_status(&memory.connector, path).await,
            Some(StatusCode::ACCEPTED)
        );
    }
    let stuck = start(&memory, "/stuck").await;
    let signalled = Instant::now();
    memory.shutdown.fire();

    let report = memory.server.await.unwrap().unwrap();
    let elapsed = signalled.elapsed();
    // 1 s drain delay + 2 s request drain + 3 s task drain + 1 s cancel grace.
    assert!(
        elapsed >= Duration::from_secs(7) && elapsed < Duration::from_millis(7_100),
        "{elapsed:?}"
    );
    assert_eq!(stuck.await.unwrap(), None);
    // The extractor's plain task cannot see the cancellation signal: aborted when the task
    // drain ran out, a second before the one with a context.
    let aborted: Vec<_> = report
        .aborted_tasks()
        .iter()
        .map(|task| (task.name(), task.age().as_secs()))
        .collect();
    assert_eq!(aborted, [(Some("stuck"), 6), (Some("deaf"), 7)], "{report}");
}

/// With only tasks that cannot see the cancellation signal left, the grace is not waited out.
#[tokio::test(start_paused = true)]
async fn a_stuck_task_without_a_context_ends_the_shutdown_when_the_task_drain_runs_out() {
    let supervisor = supervisor(Duration::from_secs(3), Duration::from_secs(30));
    let mut memory = memory_server(supervisor, Duration::ZERO, Duration::from_secs(2));
    assert_eq!(
        get_status(&memory.connector, "/stuck-task").await,
        Some(StatusCode::ACCEPTED)
    );
    let signalled = Instant::now();
    memory.shutdown.fire();
    let report = memory.server.await.unwrap().unwrap();
    assert_eq!(signalled.elapsed(), Duration::from_secs(3), "{report}");
    assert_eq!(report.aborted_tasks()[0].name(), Some("stuck"));
}

#[tokio::test(start_paused = true)]
async fn budgets_too_large_for_an_instant_mean_no_limit() {
    let supervisor = supervisor(Duration::MAX, Duration::MAX);
    let mut memory = memory_server(supervisor, Duration::MAX, Duration::MAX);
    memory.shutdown.fire();
    sleep(Duration::from_secs(3_600)).await;
    assert!(
        !memory.server.is_finished(),
        "still in the endless drain delay"
    );
    memory.force.fire();
    let report = memory.server.await.unwrap().unwrap();
    assert!(report.is_clean());

    let supervisor = TaskSupervisor::new();
    let (listener, _connector) = memory_listener();
    let (mut shutdown, shutdown_signal) = trigger();
    let server = tokio::spawn(
        serve(listener, Router::new(), supervisor)
            .request_drain_timeout(Duration::MAX)
            .shutdown_signal(shutdown_signal)
            .into_future(),
    );
    shutdown.fire();
    assert!(server.await.unwrap().unwrap().is_clean());
}

#[tokio::test(start_paused = true)]
async fn dropping_the_serve_future_closes_its_connections() {
    let supervisor = supervisor(Duration::from_secs(5), Duration::from_secs(1));
    let memory = memory_server(supervisor, Duration::ZERO, Duration::from_secs(10));
    let stuck = start(&memory, "/stuck").await;
    memory.server.abort();
    assert_eq!(stuck.await.unwrap(), None);
}

/// `serve` hands its supervisor to every request, as the layer does: a router without the
/// layer extracts `BackgroundTasks` (else a 500), and its after-response task starts once the
/// body has been sent in full, not before.
#[tokio::test(start_paused = true)]
async fn serve_hands_its_supervisor_to_every_request_without_the_layer() {
    let supervisor = supervisor(Duration::from_secs(5), Duration::from_secs(1));
    let (frames, body) = channel_body();
    let body = Arc::new(Mutex::new(Some(body)));
    let ran = Arc::new(AtomicBool::new(false));
    let app = Router::new().route(
        "/",
        get({
            let ran = ran.clone();
            move |tasks: BackgroundTasks| async move {
                // Both still run when shutdown begins, so that its report counts them.
                tasks.task("job").spawn(sleep(Duration::from_secs(1)))?;
                tasks.after_response(async move {
                    ran.store(true, Ordering::SeqCst);
                    sleep(Duration::from_secs(1)).await;
                })?;
                let body = body.lock().unwrap().take().expect("one request");
                Ok::<_, BackgroundTaskError>(Body::new(body))
            }
        }),
    );
    let (listener, connector) = memory_listener();
    let (mut shutdown, shutdown_signal) = trigger();
    let server = tokio::spawn(
        serve(listener, app, supervisor.clone())
            .shutdown_signal(shutdown_signal)
            .into_future(),
    );
    let response = send(connector.connect().unwrap(), request("GET", "/"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    frames.send(Bytes::from_static(b"partly")).unwrap();
    sleep(Duration::from_millis(10)).await;
    assert!(!ran.load(Ordering::SeqCst), "the body is still being sent");
    drop(frames);
    assert_eq!(text(response).await, "partly");
    sleep(Duration::from_millis(10)).await;
    assert!(ran.load(Ordering::SeqCst), "the body has been sent");

    shutdown.fire();
    let report = server.await.unwrap().unwrap();
    assert_eq!(
        report.completed(),
        2,
        "the job and the after-response task: {report}"
    );
}

/// A layer inside the app hands its own supervisor to the routes under it: the app chose it.
#[tokio::test(start_paused = true)]
async fn a_layer_under_serve_hands_its_own_supervisor_to_its_routes() {
    let served = supervisor(Duration::from_secs(5), Duration::from_secs(1));
    let layered = TaskSupervisor::new();
    let app = Router::new()
        .route(
            "/",
            get(|tasks: BackgroundTasks| async move {
                tasks.task("layered").spawn(sleep(Duration::from_secs(1)))?;
                Ok::<_, BackgroundTaskError>(StatusCode::ACCEPTED)
            }),
        )
        .layer(BackgroundTasksLayer::new(layered.clone()));
    let (listener, connector) = memory_listener();
    let (mut shutdown, shutdown_signal) = trigger();
    let server = tokio::spawn(
        serve(listener, app, served)
            .shutdown_signal(shutdown_signal)
            .into_future(),
    );
    assert_eq!(
        get_status(&connector, "/").await,
        Some(StatusCode::ACCEPTED)
    );
    shutdown.fire();
    let report = server.await.unwrap().unwrap();
    assert_eq!(report.completed(), 0, "{report}");
    assert_eq!(layered.shutdown().await.completed(), 1);
}

/// Several HTTP/2 streams of one connection, each entered into its handler.
async fn start_streams(
    memory: &Memory,
    uris: &[&'static str],
) -> Vec<JoinHandle<Result<StatusCode, hyper::Error>>> {
    let io = memory.connector.connect().expect("the listener is open");
    let sender = support::client_h2(io).await;
    let mut streams = Vec::new();
    for &uri in uris {
        let entered = memory.entered.notified();
        let mut sender = sender.clone();
        streams.push(tokio::spawn(async move {
            sender
                .send_request(request("GET", uri))
                .await
                .map(|response| response.status())
        }));
        entered.await;
    }
    streams
}

/// HTTP/2: the graceful shutdown sends GOAWAY, so the streams in flight finish (and may still
/// spawn) while the client opens no new one on the connection.
#[tokio::test(start_paused = true)]
async fn http2_streams_in_flight_when_the_drain_begins_all_finish_and_their_tasks_are_in_the_report()
 {
    let supervisor = supervisor(Duration::from_secs(5), Duration::from_secs(1));
    let mut memory = memory_server(supervisor, Duration::ZERO, Duration::from_secs(10));
    let streams = start_streams(&memory, &["/slow", "/slow", "/slow"]).await;
    let signalled = Instant::now();
    memory.shutdown.fire();

    for stream in streams {
        assert_eq!(stream.await.unwrap().unwrap(), StatusCode::ACCEPTED);
    }
    let report = memory.server.await.unwrap().unwrap();
    assert_eq!(
        report.completed(),
        3,
        "one task per stream, spawned during the drain: {report}"
    );
    assert!(report.is_clean(), "{report}");
    let elapsed = signalled.elapsed();
    assert!(
        elapsed >= Duration::from_secs(3) && elapsed < Duration::from_millis(3_100),
        "2 s of requests, together, then 1 s of tasks: {elapsed:?}"
    );
}

/// HTTP/2: a stream still open when the request drain timeout runs out is reset with its
/// connection, while the stream beside it that finished in time got its answer.
#[tokio::test(start_paused = true)]
async fn http2_a_stream_still_open_at_the_request_drain_timeout_is_closed_with_its_connection() {
    let supervisor = supervisor(Duration::from_secs(5), Duration::ZERO);
    // The slow stream answers at 2 s, and its 1 s task outlasts the request drain.
    let mut memory = memory_server(supervisor, Duration::ZERO, Duration::from_millis(2_500));
    let mut streams = start_streams(&memory, &["/slow", "/stuck"]).await;
    let signalled = Instant::now();
    memory.shutdown.fire();

    let stuck = streams.pop().expect("two streams");
    let slow = streams.pop().expect("two streams");
    assert_eq!(slow.await.unwrap().unwrap(), StatusCode::ACCEPTED);
    assert!(
        stuck.await.unwrap().is_err(),
        "the stuck stream gets no answer"
    );
    let closed = signalled.elapsed();
    assert!(
        closed >= Duration::from_millis(2_500) && closed < Duration::from_millis(2_600),
        "closed when the request drain timeout ran out: {closed:?}"
    );
    let report = memory.server.await.unwrap().unwrap();
    assert_eq!(report.completed(), 1, "the slow stream's task: {report}");
}

/// A server on a real socket.
async fn tcp_server(
    supervisor: &TaskSupervisor,
    entered: &Arc<Notify>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    force: impl Future<Output = ()> + Send + 'static,
) -> (std::net::SocketAddr, Server) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let address = listener.local_addr().expect("a bound address");
    let readiness = Readiness::new();
    let server = tokio::spawn(
        serve(
            listener,
            app(supervisor, &readiness, entered),
            supervisor.clone(),
        )
        .readiness(readiness)
        .request_drain_timeout(Duration::from_secs(30))
        .shutdown_signal(shutdown)
        .force_shutdown_signal(force)
        .into_future(),
    );
    (address, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tcp_a_request_in_flight_finishes_and_its_task_is_awaited() {
    let supervisor = supervisor(Duration::from_secs(30), Duration::from_secs(1));
    let entered = Arc::new(Notify::new());
    let (mut shutdown, shutdown_signal) = trigger();
    let (_force, force_signal) = trigger();
    let (address, server) = tcp_server(&supervisor, &entered, shutdown_signal, force_signal).await;

    let hello = send(
        TcpStream::connect(address).await.unwrap(),
        request("GET", "/"),
    )
    .await
    .unwrap();
    assert_eq!(text(hello).await, "hello");

    let in_flight = entered.notified();
    let slow = tokio::spawn(async move {
        let io = TcpStream::connect(address).await.unwrap();
        send(io, request("GET", "/slow"))
            .await
            .map(|response| response.status())
    });
    in_flight.await;
    shutdown.fire();
    assert_eq!(slow.await.unwrap().unwrap(), StatusCode::ACCEPTED);
    let report = tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("the server stops once the task has ended")
        .unwrap()
        .unwrap();
    assert_eq!(report.completed(), 1, "{report}");
    assert!(
        TcpStream::connect(address).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tcp_the_force_signal_returns_within_milliseconds() {
    let supervisor = supervisor(Duration::from_secs(60), Duration::from_secs(60));
    let entered = Arc::new(Notify::new());
    let (mut shutdown, shutdown_signal) = trigger();
    let (mut force, force_signal) = trigger();
    let (address, server) = tcp_server(&supervisor, &entered, shutdown_signal, force_signal).await;

    let io = TcpStream::connect(address).await.unwrap();
    let response = send(io, request("GET", "/stuck-task")).await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let in_flight = entered.notified();
    let stuck = tokio::spawn(async move {
        let io = TcpStream::connect(address).await.unwrap();
        send(io, request("GET", "/stuck"))
            .await
            .map(|response| response.status())
    });
    in_flight.await;
    shutdown.fire();
    sleep(Duration::from_millis(100)).await;
    assert!(!server.is_finished());

    let forced = std::time::Instant::now();
    force.fire();
    let report = server.await.unwrap().unwrap();
    // Milliseconds, with a margin for a loaded machine.
    assert!(
        forced.elapsed() < Duration::from_millis(500),
        "{:?}",
        forced.elapsed()
    );
    assert_eq!(report.aborted(), 1);
    assert!(
        stuck.await.unwrap().is_err(),
        "the stuck request's connection is closed"
    );
}

/// Races the graceful-shutdown notice against connections being polled on several threads: a
/// connection that missed it would stay open until the 30 s request drain timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_tcp_every_idle_keep_alive_connection_closes_promptly_on_shutdown() {
    for _ in 0..5 {
        let supervisor = supervisor(Duration::from_secs(5), Duration::from_secs(1));
        let entered = Arc::new(Notify::new());
        let (mut shutdown, shutdown_signal) = trigger();
        let (_force, force_signal) = trigger();
        let (address, server) =
            tcp_server(&supervisor, &entered, shutdown_signal, force_signal).await;
        let mut clients = Vec::new();
        for _ in 0..50 {
            let io = TcpStream::connect(address).await.unwrap();
            let mut client = support::client(io).await;
            let response = client.send_request(request("GET", "/")).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            // Kept open and idle: the server must close it.
            clients.push(client);
        }
        let signalled = std::time::Instant::now();
        shutdown.fire();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("no connection misses the shutdown")
            .unwrap()
            .unwrap();
        assert!(
            signalled.elapsed() < Duration::from_secs(5),
            "{:?}",
            signalled.elapsed()
        );
        drop(clients);
    }
}

/// Sets its flag when dropped: tells whether a handler's future is gone.
struct DroppedFlag(Arc<std::sync::atomic::AtomicBool>);

impl Drop for DroppedFlag {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tcp_no_handler_outlives_serve_after_the_request_drain_timeout() {
    let supervisor = supervisor(Duration::from_millis(50), Duration::from_millis(50));
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let entered = Arc::new(Notify::new());
    let app = Router::new().route(
        "/hold",
        get({
            let (dropped, entered) = (dropped.clone(), entered.clone());
            move || async move {
                let _flag = DroppedFlag(dropped);
                entered.notify_one();
                std::future::pending::<()>().await
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (mut shutdown, shutdown_signal) = trigger();
    let server = tokio::spawn(
        serve(listener, app, supervisor)
            .request_drain_timeout(Duration::from_millis(200))
            .shutdown_signal(shutdown_signal)
            .into_future(),
    );
    let in_flight = entered.notified();
    let held = tokio::spawn(async move {
        let io = TcpStream::connect(address).await.unwrap();
        send(io, request("GET", "/hold")).await.map(drop)
    });
    in_flight.await;
    shutdown.fire();
    server.await.unwrap().unwrap();
    assert!(
        dropped.load(std::sync::atomic::Ordering::SeqCst),
        "the stuck handler was dropped before serve returned"
    );
    assert!(held.await.unwrap().is_err());
}
