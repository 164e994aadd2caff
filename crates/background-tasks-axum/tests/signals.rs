//! The default signals: SIGTERM starts the graceful shutdown, a second one forces the abort.
//!
//! In a test binary of its own: it signals its own process, which must not disturb other tests.
#![cfg(unix)]

mod support;

use std::future::IntoFuture;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use background_tasks::TaskSupervisor;
use background_tasks_axum::{BackgroundTaskError, BackgroundTasks, BackgroundTasksLayer, serve};
use tokio::net::{TcpListener, TcpStream};

use support::{request, send};

fn sigterm_self() {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_starts_the_graceful_shutdown_and_a_second_sigterm_forces_the_abort() {
    let supervisor = TaskSupervisor::builder()
        .shutdown_timeout(Duration::from_secs(60))
        .cancel_grace(Duration::from_secs(60))
        .build();
    let app = Router::new()
        .route(
            "/stuck-task",
            get(|tasks: BackgroundTasks| async move {
                tasks.task("stuck").spawn(std::future::pending::<()>())?;
                Ok::<_, BackgroundTaskError>(StatusCode::ACCEPTED)
            }),
        )
        .layer(BackgroundTasksLayer::new(supervisor.clone()));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let address = listener.local_addr().expect("a bound address");
    let server = tokio::spawn(serve(listener, app, supervisor.clone()).into_future());

    // Served, so the signal handlers are installed.
    let io = TcpStream::connect(address).await.unwrap();
    let response = send(io, request("GET", "/stuck-task")).await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    sigterm_self();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !supervisor.is_shutting_down() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the first SIGTERM drains the connections and starts the task shutdown");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!server.is_finished(), "the stuck task holds the shutdown");

    let forced = std::time::Instant::now();
    sigterm_self();
    let report = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the second SIGTERM aborts at once")
        .unwrap()
        .unwrap();
    assert!(
        forced.elapsed() < Duration::from_secs(2),
        "{:?}",
        forced.elapsed()
    );
    assert_eq!(report.aborted(), 1);
}
