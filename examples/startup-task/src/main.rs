//! A periodic job started before serving, Quart's `before_serving` with a background task:
//! it refreshes a cache every two seconds and stops as soon as shutdown starts.
//!
//! ```text
//! cargo run -p example-startup-task
//! curl http://127.0.0.1:3000/quote   # the cached value, refreshed in the background
//! curl http://127.0.0.1:3000/ready   # 200 while serving, 503 once shutdown began
//! # Ctrl-C: the refresher stops at once, so shutdown does not wait out its budget.
//! ```

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use background_tasks_axum::{BackgroundTasksLayer, Readiness, SpawnError, TaskSupervisor, serve};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

type Cache = Arc<RwLock<String>>;

/// Spawns the refresher on the supervisor, before any request is served.
fn spawn_refresher(supervisor: &TaskSupervisor, cache: Cache) -> Result<(), SpawnError> {
    // `spawn_with` hands the task its context: its name, and the shutdown signals.
    let handle = supervisor
        .task("refresh-cache")
        .spawn_with(move |ctx| async move {
            let mut interval = tokio::time::interval(Duration::from_secs(2));
            let mut generation = 0_u64;
            loop {
                tokio::select! {
                    // The drain began. Returning now ends the task as `completed`; a task that
                    // ignored it would hold shutdown for `shutdown_timeout`, then be cancelled.
                    () = ctx.shutdown_started() => break,
                    _ = interval.tick() => {
                        generation += 1;
                        // The value is replaced whole, so a poisoned lock holds no torn state.
                        *cache.write().unwrap_or_else(PoisonError::into_inner) =
                            format!("quote of generation {generation}\n");
                        // Inside the task's span: the log line names the task.
                        tracing::info!(generation, "cache refreshed");
                    }
                }
            }
            tracing::info!("refresher stopped: shutdown started");
        })?;
    // Dropping the handle detaches the task; the supervisor still tracks it.
    drop(handle);
    Ok(())
}

async fn quote(State(cache): State<Cache>) -> String {
    cache.read().unwrap_or_else(PoisonError::into_inner).clone()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Logs to stderr, so that stdout carries only the address and the report; at `info`
    // unless RUST_LOG says otherwise, so that the shutdown's phases show.
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let supervisor = TaskSupervisor::builder()
        .shutdown_timeout(Duration::from_secs(5))
        .build();
    let cache = Cache::default();
    spawn_refresher(&supervisor, cache.clone())?;

    let readiness = Readiness::new();
    let app = Router::new()
        .route("/quote", get(quote))
        .route_service("/ready", readiness.clone())
        .with_state(cache)
        .layer(BackgroundTasksLayer::new(supervisor.clone()));

    // A bad PORT is an error, not a silent fallback to the default.
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port
            .parse()
            .map_err(|_| format!("PORT must be a port number (0 to 65535), got {port:?}"))?,
        Err(_) => 3000,
    };
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let address = listener.local_addr()?;
    // The refresher is part of the same shutdown as the request handlers' tasks: its report
    // counts it as completed when it stopped on `shutdown_started`. `into_future` installs
    // the signal handlers before the address is announced.
    let server = serve(listener, app, supervisor)
        .readiness(readiness)
        .into_future();
    println!("listening on http://{address}");
    let report = server.await?;
    println!("shutdown report: {report}");
    Ok(())
}
