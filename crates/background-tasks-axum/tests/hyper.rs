//! The layer on any tower service, served by plain hyper: no router, no `serve`. A handler
//! reaches its tasks from the request's extensions; after-response tasks wait for the body to
//! be sent; the supervisor's shutdown, called by the app once hyper is done, awaits the tasks.

mod support;

use std::convert::Infallible;
use std::time::Duration;

use background_tasks_axum::{BackgroundTasks, BackgroundTasksLayer, TaskSupervisor};
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tower::{ServiceBuilder, service_fn};

use support::{ChannelBody, channel_body, request, send, text};

/// What the handler hands the test: the sender of its response body, and a receiver told
/// when its after-response task runs.
type Handed = (mpsc::UnboundedSender<Bytes>, oneshot::Receiver<()>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_on_a_tower_service_served_by_plain_hyper_spawns_tasks_and_runs_after_response_tasks_once_the_body_is_sent()
 {
    let supervisor = TaskSupervisor::new();
    let (hand, mut handed) = mpsc::unbounded_channel::<Handed>();
    let service = ServiceBuilder::new()
        .layer(BackgroundTasksLayer::new(supervisor.clone()))
        .service(service_fn(move |request: Request<Incoming>| {
            let hand = hand.clone();
            async move {
                let tasks = request
                    .extensions()
                    .get::<BackgroundTasks>()
                    .expect("the layer puts the tasks into every request")
                    .clone();
                // Ends only once the shutdown begins: `completed` in the report.
                tasks
                    .task("hyper-job")
                    .spawn_with(|ctx| async move { ctx.shutdown_started().await })
                    .expect("spawned");
                let (ran, after) = oneshot::channel();
                tasks
                    .after_response(async move {
                        let _ = ran.send(());
                    })
                    .expect("spawned");
                let (frames, body) = channel_body();
                let _ = hand.send((frames, after));
                Ok::<Response<ChannelBody>, Infallible>(Response::new(body))
            }
        }));

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let address = listener.local_addr().expect("a bound address");
    let server = tokio::spawn(async move {
        let (io, _) = listener.accept().await.expect("a connection");
        hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
            .await
    });

    let io = TcpStream::connect(address).await.expect("connected");
    let response = send(io, request("GET", "/"))
        .await
        .expect("the headers arrive");
    let (frames, mut after) = handed.recv().await.expect("the handler ran");
    // The headers are out, the body is not: the after-response task waits.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        after.try_recv().is_err(),
        "the after-response task ran before the body was sent"
    );
    frames.send(Bytes::from("done")).expect("the body is read");
    drop(frames);
    assert_eq!(text(response).await, "done");
    tokio::time::timeout(Duration::from_secs(10), after)
        .await
        .expect("the after-response task runs once the body is sent")
        .expect("the after-response task ran");

    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the connection ends once the client is gone")
        .expect("the server task does not panic")
        .expect("hyper served the connection");
    // The after-response task has sent its message, but may not have ended yet: one that
    // ends after the shutdown began would be counted as completed there too.
    tokio::time::timeout(Duration::from_secs(10), async {
        while supervisor.len() > 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the after-response task ends once it has sent its message");
    let report = tokio::time::timeout(Duration::from_secs(10), supervisor.shutdown())
        .await
        .expect("the job ends when the drain begins");
    assert_eq!(report.completed(), 1, "{report}");
    assert!(report.is_clean(), "{report}");
}
