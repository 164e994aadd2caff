//! gRPC over real sockets: the layer on a tonic `Server`, `background_tasks_tonic::serve`
//! draining HTTP/2 streams in flight, and the example binary stopped with real signals.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use background_tasks_e2e::{
    Counts, Server as ExampleProcess, eventually, example_binary, shutdown_took,
};
use background_tasks_tonic::{
    BackgroundTasksLayer, Serve, ServeError, ShutdownReport, TaskSupervisor, serve,
};
use example_grpc::jobs_client::JobsClient;
use example_grpc::jobs_server::JobsServer;
use example_grpc::{JobService, StartJobRequest, TasksRequest};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Code;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};

fn job(duration_ms: u64, kind: &str, reply_after_ms: u64) -> StartJobRequest {
    StartJobRequest {
        duration_ms,
        kind: kind.to_owned(),
        reply_after_ms,
    }
}

async fn connect(address: SocketAddr) -> JobsClient<Channel> {
    JobsClient::connect(format!("http://{address}"))
        .await
        .expect("the server accepts a connection")
}

/// A tonic `Server` with the layer: its methods reach the tasks, and the supervisor shut down
/// after `serve_with_shutdown` waits for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_on_a_tonic_server_lets_a_method_spawn_a_task_that_shutdown_waits_for() {
    let supervisor = TaskSupervisor::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .layer(BackgroundTasksLayer::new(supervisor.clone()))
            .add_service(JobsServer::new(JobService))
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async move {
                let _ = stopped.await;
            }),
    );
    let mut client = connect(address).await;
    let reply = client.start_job(job(1500, "async", 0)).await.unwrap();
    assert!(reply.get_ref().id > 0);
    drop(client);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    let report = supervisor.shutdown().await;
    assert_eq!(report.completed(), 1, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_layer_a_method_answers_internal_saying_how_to_add_it() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(
        Server::builder()
            .add_service(JobsServer::new(JobService))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let status = connect(address)
        .await
        .start_job(job(0, "", 0))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    assert!(
        status
            .message()
            .contains(".layer(BackgroundTasksLayer::new(supervisor))"),
        "{}",
        status.message()
    );
    server.abort();
}

/// Starts `serve` with the example's service on a free port, with a oneshot shutdown signal.
async fn start_serve(
    supervisor: &TaskSupervisor,
    configure: impl FnOnce(Serve<TcpListener>) -> Serve<TcpListener>,
) -> (
    JoinHandle<Result<ShutdownReport, ServeError>>,
    SocketAddr,
    oneshot::Sender<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let address = listener.local_addr().expect("its address");
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = configure(serve(
        listener,
        Routes::new(JobsServer::new(JobService)),
        supervisor.clone(),
    ))
    .shutdown_signal(async move {
        let _ = stopped.await;
    })
    .into_future();
    (tokio::spawn(serving), address, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_while_shutting_down_answers_unavailable_with_a_retry_pushback() {
    let supervisor = TaskSupervisor::new();
    let (serving, address, stop) = start_serve(&supervisor, |serve| serve).await;
    let mut client = connect(address).await;
    // The supervisor alone closes: the server still serves.
    supervisor.shutdown().await;
    let status = client.start_job(job(0, "", 0)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        status.metadata().get("grpc-retry-pushback-ms").unwrap(),
        "5000"
    );
    drop(client);
    stop.send(()).unwrap();
    serving.await.unwrap().unwrap();
}

/// Several HTTP/2 streams of one connection in flight when the drain begins: each finishes,
/// and the jobs they spawned are drained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_in_flight_at_the_signal_finish_and_their_tasks_are_drained() {
    let supervisor = TaskSupervisor::new();
    let (serving, address, stop) = start_serve(&supervisor, |serve| serve).await;
    // One channel: one HTTP/2 connection, the calls multiplexed on it.
    let client = connect(address).await;
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move { client.start_job(job(1500, "async", 800)).await })
        })
        .collect();
    eventually("five jobs running", Duration::from_secs(5), || {
        let running = supervisor.len();
        async move { (running == 5).then_some(()) }
    })
    .await;
    stop.send(()).unwrap();
    for call in calls {
        let reply = call.await.unwrap().expect("a stream in flight finishes");
        assert!(reply.get_ref().id > 0);
    }
    drop(client);
    let report = serving.await.unwrap().unwrap();
    assert_eq!(report.completed(), 5, "{report}");
}

/// A stream that outlives `request_drain_timeout` is closed, and the job it spawned is still
/// in the report: nothing outlives `serve` unreported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_outlives_the_request_drain_timeout_is_closed_and_its_task_reported() {
    let supervisor = TaskSupervisor::builder()
        .shutdown_timeout(Duration::from_millis(200))
        .cancel_grace(Duration::ZERO)
        .build();
    let (serving, address, stop) = start_serve(&supervisor, |serve| {
        serve.request_drain_timeout(Duration::from_millis(500))
    })
    .await;
    let mut client = connect(address).await;
    let call = tokio::spawn(async move { client.start_job(job(60_000, "async", 60_000)).await });
    eventually("the job running", Duration::from_secs(5), || {
        let running = supervisor.len();
        async move { (running == 1).then_some(()) }
    })
    .await;
    let signalled = Instant::now();
    stop.send(()).unwrap();
    let report = serving.await.unwrap().unwrap();
    let elapsed = signalled.elapsed();
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(report.aborted(), 1, "{report}");
    let status = call.await.unwrap().unwrap_err();
    assert!(
        matches!(
            status.code(),
            Code::Unavailable | Code::Cancelled | Code::Unknown
        ),
        "{status:?}"
    );
}

/// Slack on top of the budgets for process exit, scheduling and debug builds.
const MARGIN: Duration = Duration::from_millis(1500);

fn start_binary(env: &[(&str, &str)]) -> ExampleProcess {
    ExampleProcess::start(&example_binary("example-grpc"), env)
}

fn address(server: &ExampleProcess) -> SocketAddr {
    server.base["http://".len()..].parse().expect("an address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_running_grpc_jobs_exits_within_the_budget_and_prints_the_report() {
    let shutdown_timeout = Duration::from_millis(2000);
    let cancel_grace = Duration::from_millis(500);
    let mut server = start_binary(&[("SHUTDOWN_TIMEOUT_MS", "2000"), ("CANCEL_GRACE_MS", "500")]);
    let mut client = connect(address(&server)).await;
    for (duration, kind) in [
        (1500, "async"),
        (60_000, "cooperative"),
        (60_000, "async"),
        (60_000, "blocking"),
    ] {
        client
            .start_job(job(duration, kind, 0))
            .await
            .expect("StartJob");
    }
    let tasks = client.tasks(TasksRequest {}).await.unwrap().into_inner();
    assert_eq!(tasks.running, 4);
    drop(client);

    let signalled = Instant::now();
    server.sigterm();
    let status = server.wait_exit(shutdown_timeout + cancel_grace + MARGIN);
    let elapsed = signalled.elapsed();
    let status = status.unwrap_or_else(|| {
        panic!(
            "still running {elapsed:?} after SIGTERM; logs:\n{}",
            server.logs()
        )
    });
    assert!(
        status.success(),
        "exit status {status}; logs:\n{}",
        server.logs()
    );
    // The job that ignores every signal holds the drain to its timeout; it has no context, so
    // it is aborted then, and the cooperative job ends as soon as it is cancelled.
    assert!(elapsed >= shutdown_timeout, "{elapsed:?}");
    let line = server.line_starting_with("shutdown report: ", Duration::from_secs(1));
    let took = shutdown_took(&line);
    assert!(
        took >= shutdown_timeout - Duration::from_millis(100)
            && took < shutdown_timeout + cancel_grace,
        "the supervisor's shutdown took {took:?}: {line}"
    );
    assert_eq!(
        Counts::parse(&line),
        Counts {
            completed: 1,
            cancelled: 1,
            aborted: 1,
            abandoned: 1
        },
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_aborts_the_grpc_server_at_once() {
    let mut server = start_binary(&[
        ("SHUTDOWN_TIMEOUT_MS", "60000"),
        ("CANCEL_GRACE_MS", "60000"),
    ]);
    let mut client = connect(address(&server)).await;
    client
        .start_job(job(120_000, "async", 0))
        .await
        .expect("StartJob");
    drop(client);
    server.sigterm();
    eventually("the supervisor's drain", Duration::from_secs(10), || {
        let logs = server.logs();
        async move {
            logs.contains("shutting down background tasks")
                .then_some(())
        }
    })
    .await;
    let forced = Instant::now();
    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(2));
    let elapsed = forced.elapsed();
    let status = status.unwrap_or_else(|| {
        panic!(
            "still running 2 s after the second SIGTERM; logs:\n{}",
            server.logs()
        )
    });
    assert!(
        status.success(),
        "exit status {status}; logs:\n{}",
        server.logs()
    );
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    let line = server.line_starting_with("shutdown report: ", Duration::from_secs(1));
    assert_eq!(Counts::parse(&line).aborted, 1, "{line}");
}
