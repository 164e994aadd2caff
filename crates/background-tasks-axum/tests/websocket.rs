//! Upgraded connections under `serve`'s shutdown: WebSockets through `axum::extract::ws`, over
//! real TCP with a real WebSocket client. hyper hands an upgraded socket to its handler and
//! forgets it; `serve` still counts it, closes it at the request drain timeout, and returns
//! only once its handler has let go of it.
//!
//! Real time (real sockets), on a current-thread runtime so that the logs of `serve` are
//! captured; the budgets are a few hundred milliseconds.

mod support;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::Response;
use axum::routing::get;
use background_tasks::{ShutdownReport, TaskContext, TaskSupervisor};
use background_tasks_axum::{BackgroundTasks, ServeError, serve};
use futures_util::StreamExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as ClientMessage;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use support::Logs;

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Server = JoinHandle<Result<ShutdownReport, ServeError>>;

/// Sets its flag when dropped: tells whether a socket's handler is gone.
struct DroppedFlag(Arc<AtomicBool>);

impl Drop for DroppedFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A running server and the triggers of its signals.
struct Running {
    address: SocketAddr,
    server: Server,
    shutdown: Option<oneshot::Sender<()>>,
    force: Option<oneshot::Sender<()>>,
    /// Told when a request reaches a handler that never answers.
    stuck: Arc<Notify>,
}

impl Running {
    fn shutdown(&mut self) -> Instant {
        let _ = self.shutdown.take().expect("once").send(());
        Instant::now()
    }

    fn force(&mut self) -> Instant {
        let _ = self.force.take().expect("once").send(());
        Instant::now()
    }

    /// Opens a WebSocket to `/ws` and reads the handler's `ready`, so that the socket is in
    /// its handler's hands.
    async fn connect(&self) -> Client {
        let (mut client, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", self.address))
            .await
            .expect("the upgrade succeeds");
        let ready = client.next().await.expect("a message").expect("no error");
        assert_eq!(ready, ClientMessage::text("ready"));
        client
    }

    async fn report(self) -> ShutdownReport {
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("serve returns")
            .expect("serve does not panic")
            .expect("serve runs")
    }
}

async fn start(
    app: Router,
    supervisor: &TaskSupervisor,
    request_drain_timeout: Duration,
) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let address = listener.local_addr().expect("a bound address");
    let (shutdown, shutdown_signal) = oneshot::channel::<()>();
    let (force, force_signal) = oneshot::channel::<()>();
    let server = tokio::spawn(
        serve(listener, app, supervisor.clone())
            .request_drain_timeout(request_drain_timeout)
            .shutdown_signal(async move {
                let _ = shutdown_signal.await;
            })
            .force_shutdown_signal(async move {
                let _ = force_signal.await;
            })
            .into_future(),
    );
    Running {
        address,
        server,
        shutdown: Some(shutdown),
        force: Some(force),
        stuck: Arc::new(Notify::new()),
    }
}

/// A server whose `/ws` says `ready`, then reads until the socket ends (the flag is set once
/// the handler has let go of the socket), and whose `/stuck` never answers.
async fn plain_socket_server(request_drain_timeout: Duration) -> (Running, Arc<AtomicBool>) {
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let stuck = Arc::new(Notify::new());
    let app = Router::new()
        .route(
            "/ws",
            get(move |ws: WebSocketUpgrade| async move {
                ws.on_upgrade(move |mut socket| async move {
                    let _flag = DroppedFlag(flag);
                    socket
                        .send(Message::text("ready"))
                        .await
                        .expect("the client is there");
                    while let Some(Ok(_)) = socket.recv().await {}
                })
            }),
        )
        .route(
            "/stuck",
            get({
                let stuck = stuck.clone();
                move || async move {
                    stuck.notify_one();
                    std::future::pending::<()>().await
                }
            }),
        );
    let mut running = start(app, &TaskSupervisor::new(), request_drain_timeout).await;
    running.stuck = stuck;
    (running, dropped)
}

/// Fails on the `serve` of before upgraded connections were tracked: it returned at once, with
/// the socket's handler still running.
#[tokio::test]
async fn an_idle_websocket_at_the_signal_is_closed_at_the_request_drain_timeout_and_serve_returns_within_the_budget()
 {
    let logs = Logs::capture();
    let drain = Duration::from_millis(300);
    let (mut running, dropped) = plain_socket_server(drain).await;
    let mut client = running.connect().await;

    let signalled = running.shutdown();
    let client_side = tokio::spawn(async move { client.next().await });
    let report = running.report().await;
    let elapsed = signalled.elapsed();
    assert!(
        elapsed >= drain,
        "serve waited for the WebSocket until the request drain timeout: {elapsed:?}"
    );
    // The drain, then the close's 100 ms at most, with room for a loaded machine.
    assert!(
        elapsed < drain + Duration::from_secs(2),
        "within the budget: {elapsed:?}"
    );
    assert!(report.is_clean(), "{report}");
    assert!(
        dropped.load(Ordering::SeqCst),
        "the handler let go of its socket before serve returned"
    );
    let ended = tokio::time::timeout(Duration::from_secs(5), client_side)
        .await
        .expect("the client sees its connection end")
        .unwrap();
    assert!(
        !matches!(ended, Some(Ok(ClientMessage::Text(_)))),
        "no message, the end: {ended:?}"
    );
    let logs = logs.contents();
    assert!(
        logs.contains(
            "closing 1 upgraded connections (WebSockets) still open at the request drain timeout"
        ),
        "{logs}"
    );
    assert!(
        !logs.contains("had not stopped"),
        "the handler saw the close: {logs}"
    );
}

/// When a request outlives the request drain too, the WebSocket is closed with it, once.
#[tokio::test]
async fn a_websocket_and_a_stuck_request_at_the_request_drain_timeout_are_closed_together() {
    let logs = Logs::capture();
    let drain = Duration::from_millis(300);
    let (mut running, dropped) = plain_socket_server(drain).await;
    let _client = running.connect().await;
    let address = running.address;
    let entered = running.stuck.notified();
    let stuck = tokio::spawn(async move {
        let mut stream = TcpStream::connect(address).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(
            &mut stream,
            b"GET /stuck HTTP/1.1\r\nhost: test\r\n\r\n",
        )
        .await
        .unwrap();
        let mut answer = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer).await
    });
    entered.await;

    let signalled = running.shutdown();
    running.report().await;
    let elapsed = signalled.elapsed();
    assert!(
        elapsed >= drain && elapsed < drain + Duration::from_secs(2),
        "{elapsed:?}"
    );
    assert!(dropped.load(Ordering::SeqCst));
    let answer = stuck.await.unwrap();
    assert!(
        answer.is_err() || answer.is_ok_and(|read| read == 0),
        "the stuck request's connection is closed without an answer"
    );
    let logs = logs.contents();
    assert!(
        logs.contains("closing 1 connections and 1 upgraded connections (WebSockets) still open"),
        "{logs}"
    );
    assert_eq!(
        logs.matches("closing").count(),
        1,
        "closed once, logged once: {logs}"
    );
    assert!(!logs.contains("had not stopped"), "{logs}");
}

/// Fails on the `serve` of before: it returned at once.
#[tokio::test]
async fn serve_waits_for_a_websocket_that_ends_during_the_request_drain() {
    let (mut running, dropped) = plain_socket_server(Duration::from_secs(30)).await;
    let mut client = running.connect().await;

    let signalled = running.shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !running.server.is_finished(),
        "serve waits for the open WebSocket"
    );
    client.close(None).await.expect("the close is sent");
    let report = running.report().await;
    assert!(report.is_clean(), "{report}");
    assert!(dropped.load(Ordering::SeqCst));
    let elapsed = signalled.elapsed();
    assert!(
        elapsed < Duration::from_secs(10),
        "returned once the WebSocket ended, long before the 30 s request drain timeout: \
         {elapsed:?}"
    );
}

/// Fails on the `serve` of before: it returned at the shutdown signal, and nothing ever
/// closed the socket.
#[tokio::test]
async fn the_force_signal_closes_websockets_at_once() {
    let (mut running, dropped) = plain_socket_server(Duration::from_secs(30)).await;
    let _client = running.connect().await;

    running.shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!running.server.is_finished());
    let forced = running.force();
    running.report().await;
    assert!(
        forced.elapsed() < Duration::from_millis(500),
        "milliseconds, with a margin for a loaded machine: {:?}",
        forced.elapsed()
    );
    assert!(dropped.load(Ordering::SeqCst));
}

/// The socket loop of the guide: a named supervised task that answers the shutdown with a
/// Close frame. `deaf` skips that, and is aborted when the shutdown's drain runs out.
async fn socket_loop(mut socket: WebSocket, ctx: TaskContext, deaf: bool) {
    if socket.send(Message::text("ready")).await.is_err() {
        return;
    }
    let shutdown = async {
        if deaf {
            std::future::pending::<()>().await;
        }
        ctx.shutdown_started().await;
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            message = socket.recv() => match message {
                Some(Ok(_)) => continue,
                _ => return,
            },
            () = &mut shutdown => break,
        }
    }
    let close = CloseFrame {
        code: close_code::AWAY,
        reason: "server shutting down".into(),
    };
    if socket.send(Message::Close(Some(close))).await.is_ok() {
        // The client's Close in reply ends the handshake.
        while let Some(Ok(_)) = socket.recv().await {}
    }
}

fn supervised_socket_app(deaf: bool) -> Router {
    async fn upgrade(ws: WebSocketUpgrade, tasks: BackgroundTasks, deaf: bool) -> Response {
        ws.on_upgrade(move |socket| async move {
            if let Err(error) = tasks
                .task("websocket")
                .spawn_with(move |ctx| socket_loop(socket, ctx, deaf))
            {
                tracing::warn!("WebSocket refused: {error}");
            }
        })
    }
    Router::new().route(
        "/ws",
        get(move |ws: WebSocketUpgrade, tasks: BackgroundTasks| upgrade(ws, tasks, deaf)),
    )
}

#[tokio::test]
async fn a_websocket_run_as_a_supervised_task_gets_a_close_frame_and_the_task_is_in_the_report() {
    let supervisor = TaskSupervisor::builder()
        .shutdown_timeout(Duration::from_secs(5))
        .build();
    let app = supervised_socket_app(false).layer(background_tasks_axum::BackgroundTasksLayer::new(
        supervisor.clone(),
    ));
    let mut running = start(app, &supervisor, Duration::from_secs(30)).await;
    let mut client = running.connect().await;

    let signalled = running.shutdown();
    let close = tokio::time::timeout(Duration::from_secs(5), client.next())
        .await
        .expect("the task says goodbye at the shutdown")
        .expect("a message")
        .expect("no error");
    let ClientMessage::Close(Some(frame)) = close else {
        panic!("a Close frame with a reason: {close:?}");
    };
    assert_eq!(frame.code, CloseCode::Away);
    assert_eq!(frame.reason.as_str(), "server shutting down");
    // Reading on sends the client's Close in reply, which ends the socket.
    assert!(client.next().await.is_none());

    let report = running.report().await;
    assert_eq!(report.completed(), 1, "the socket's task: {report}");
    assert!(report.is_clean(), "{report}");
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "long before the 30 s request drain timeout: {:?}",
        signalled.elapsed()
    );
}

#[tokio::test]
async fn a_supervised_websocket_task_that_ignores_the_shutdown_is_aborted_and_named_in_the_report()
{
    let supervisor = TaskSupervisor::builder()
        .shutdown_timeout(Duration::from_millis(200))
        .cancel_grace(Duration::ZERO)
        .build();
    let app = supervised_socket_app(true).layer(background_tasks_axum::BackgroundTasksLayer::new(
        supervisor.clone(),
    ));
    let mut running = start(app, &supervisor, Duration::from_secs(30)).await;
    let mut client = running.connect().await;

    let signalled = running.shutdown();
    let report = running.report().await;
    assert_eq!(report.aborted(), 1, "{report}");
    assert_eq!(report.aborted_tasks()[0].name(), Some("websocket"));
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "the abort dropped the socket, so serve did not wait for the request drain timeout: \
         {:?}",
        signalled.elapsed()
    );
    let ended = tokio::time::timeout(Duration::from_secs(5), client.next())
        .await
        .expect("the client sees its connection end");
    assert!(
        !matches!(ended, Some(Ok(ClientMessage::Text(_)))),
        "{ended:?}"
    );
}
