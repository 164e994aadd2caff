//! What `serve` serves besides a plain `Router`, as `axum::serve` does: a router with state, a
//! router with `ConnectInfo`, a `MethodRouter` and any tower service. Real sockets: the
//! peer address `ConnectInfo` gives is the client's.

mod support;

use std::convert::Infallible;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Router, ServiceExt as _};
use background_tasks_axum::{
    BackgroundTaskError, BackgroundTasks, BackgroundTasksLayer, MakeConnectionService,
    ShutdownReport, TaskSupervisor, serve,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::sleep;
use tower::{ServiceBuilder, ServiceExt as _, service_fn};

use support::{request, send, text};

/// How long each spawned task runs: the shutdown must wait for it.
const TASK: Duration = Duration::from_millis(200);

/// A server for `make_service` on a real socket, and the sender that stops it.
async fn start<M>(
    make_service: M,
    supervisor: &TaskSupervisor,
) -> (
    SocketAddr,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<ShutdownReport>,
)
where
    M: MakeConnectionService<SocketAddr>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let address = listener.local_addr().expect("a bound address");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(
        serve(listener, make_service, supervisor.clone())
            .shutdown_signal(async move {
                let _ = stopped.await;
            })
            .into_future(),
    );
    let server = tokio::spawn(async move {
        server
            .await
            .expect("serve does not panic")
            .expect("serve runs")
    });
    (address, stop, server)
}

/// GETs `uri` over a new connection; the answer, and the client's own address.
async fn get_text(address: SocketAddr, uri: &str) -> (StatusCode, String, SocketAddr) {
    let io = TcpStream::connect(address).await.expect("connected");
    let local = io.local_addr().expect("a local address");
    let response = send(io, request("GET", uri)).await.expect("answered");
    let status = response.status();
    (status, text(response).await, local)
}

/// Stops the server; the report once the task that `uri` spawned has run to completion.
async fn stop(
    stop: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<ShutdownReport>,
) -> ShutdownReport {
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("the server stops once the task has ended")
        .expect("the server task does not panic")
}

#[derive(Clone)]
struct AppState {
    greeting: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_with_state_is_served_once_given_its_state() {
    let supervisor = TaskSupervisor::new();
    let app = Router::new()
        .route(
            "/",
            get(
                |State(state): State<AppState>, tasks: BackgroundTasks| async move {
                    tasks.task("with-state").spawn(sleep(TASK))?;
                    Ok::<_, BackgroundTaskError>(state.greeting)
                },
            ),
        )
        .layer(BackgroundTasksLayer::new(supervisor.clone()))
        .with_state(AppState { greeting: "hello" });
    let (address, stopper, server) = start(app, &supervisor).await;

    let (status, body, _) = get_text(address, "/").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hello"));

    let report = stop(stopper, server).await;
    assert_eq!(report.completed(), 1, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_info_gives_each_handler_its_peer_address() {
    let supervisor = TaskSupervisor::new();
    let app = Router::new()
        .route(
            "/peer",
            get(
                |ConnectInfo(peer): ConnectInfo<SocketAddr>, tasks: BackgroundTasks| async move {
                    tasks.task("with-peer").spawn(sleep(TASK))?;
                    Ok::<_, BackgroundTaskError>(peer.to_string())
                },
            ),
        )
        .layer(BackgroundTasksLayer::new(supervisor.clone()));
    let (address, stopper, server) = start(
        app.into_make_service_with_connect_info::<SocketAddr>(),
        &supervisor,
    )
    .await;

    // Two connections, two peers: the address is the connection's, not the first one's.
    for _ in 0..2 {
        let (status, body, local) = get_text(address, "/peer").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, local.to_string());
    }

    let report = stop(stopper, server).await;
    assert_eq!(report.completed(), 2, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_router_and_a_routers_make_service_are_served() {
    let supervisor = TaskSupervisor::new();
    let handler = get(|tasks: BackgroundTasks| async move {
        tasks.task("method-router").spawn(sleep(TASK))?;
        Ok::<_, BackgroundTaskError>("method router")
    })
    .layer(BackgroundTasksLayer::new(supervisor.clone()));
    let (address, stopper, server) = start(handler.clone(), &supervisor).await;
    let (status, body, _) = get_text(address, "/any/path").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "method router"));
    let report = stop(stopper, server).await;
    assert_eq!(report.completed(), 1, "{report}");

    let supervisor = TaskSupervisor::new();
    let app = Router::new()
        .route(
            "/",
            get(|tasks: BackgroundTasks| async move {
                tasks.task("make-service").spawn(sleep(TASK))?;
                Ok::<_, BackgroundTaskError>("make service")
            }),
        )
        .layer(BackgroundTasksLayer::new(supervisor.clone()));
    let (address, stopper, server) = start(app.into_make_service(), &supervisor).await;
    let (status, body, _) = get_text(address, "/").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "make service"));
    let report = stop(stopper, server).await;
    assert_eq!(report.completed(), 1, "{report}");
}

/// A tower service with no router: the layer in a `ServiceBuilder`, the extractor called by
/// hand, the response made an axum one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_tower_service_is_served_through_into_make_service() {
    let supervisor = TaskSupervisor::new();
    let service = ServiceBuilder::new()
        .layer(BackgroundTasksLayer::new(supervisor.clone()))
        .service(service_fn(|request: Request| async move {
            let (mut parts, _body) = request.into_parts();
            let answer = match BackgroundTasks::from_request_parts(&mut parts, &()).await {
                Ok(tasks) => match tasks.task("tower").spawn(sleep(TASK)) {
                    Ok(_) => (StatusCode::ACCEPTED, "spawned").into_response(),
                    Err(error) => error.into_response(),
                },
                Err(rejection) => rejection.into_response(),
            };
            Ok::<Response, Infallible>(answer)
        }))
        .map_response(IntoResponse::into_response);
    let (address, stopper, server) = start(service.into_make_service(), &supervisor).await;

    let (status, body, _) = get_text(address, "/").await;
    assert_eq!((status, body.as_str()), (StatusCode::ACCEPTED, "spawned"));

    let report = stop(stopper, server).await;
    assert_eq!(report.completed(), 1, "{report}");
}
