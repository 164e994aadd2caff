//! The newcomer's mistake, as a program: an app served with `axum::serve` (same name as this
//! project's `serve`, and it compiles) instead of `background_tasks_axum::serve`, so that the
//! supervisor is never shut down. `tests/axum_serve.rs` runs it, has `POST /sign-up` start a
//! long "welcome-mail" task, stops it with SIGTERM, and checks that the task dropped with the
//! runtime is logged at WARN on the way out.

use std::time::Duration;

use axum::Router;
use axum::routing::post;
use background_tasks_axum::{
    BackgroundTaskError, BackgroundTasks, BackgroundTasksLayer, TaskSupervisor,
};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

async fn sign_up(tasks: BackgroundTasks) -> Result<&'static str, BackgroundTaskError> {
    tasks.task("welcome-mail").spawn(async {
        tokio::time::sleep(Duration::from_secs(60)).await;
    })?;
    Ok("welcome!\n")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let supervisor = TaskSupervisor::new();
    let app = Router::new()
        .route("/sign-up", post(sign_up))
        .layer(BackgroundTasksLayer::new(supervisor));
    let port: u16 = std::env::var("PORT").map_or(Ok(0), |port| port.parse())?;
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let mut terminate = signal(SignalKind::terminate())?;
    println!("listening on http://{}", listener.local_addr()?);
    // The mistake: axum's own serve, whose graceful shutdown waits for requests only.
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            terminate.recv().await;
        })
        .await?;
    println!("axum::serve returned");
    Ok(())
}
