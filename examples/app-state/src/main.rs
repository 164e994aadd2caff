//! A background task that reads and updates the app's state after the response has been sent.
//!
//! The handler answers `202 Accepted` at once; the bookkeeping (here, counting a view, with a
//! sleep standing in for a slow database write) runs once the response is gone, with the same
//! `State` the handlers see. Shutdown waits for it.
//!
//! ```text
//! cargo run -p example-app-state
//! curl -X POST http://127.0.0.1:3000/articles/rust/views   # 202, without waiting
//! curl http://127.0.0.1:3000/articles/rust                 # rust: 1 views
//! # Ctrl-C: pending counts are written before the process exits.
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use background_tasks_axum::{
    BackgroundTaskError, BackgroundTasks, BackgroundTasksLayer, TaskSupervisor, serve,
};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// The app's state, shared by handlers and by the tasks they spawn: clone it into the task.
#[derive(Debug, Clone, Default)]
struct AppState {
    views: Arc<Mutex<HashMap<String, u64>>>,
}

impl AppState {
    fn views(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        // A panic while holding the lock cannot leave the map half-updated (one insert), so a
        // poisoned lock is still safe to use.
        self.views.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `POST /articles/{article}/views`: counts a view after answering.
async fn record_view(
    Path(article): Path<String>,
    State(state): State<AppState>,
    tasks: BackgroundTasks,
) -> Result<StatusCode, BackgroundTaskError> {
    // Starts once the response body has been sent (or dropped, if the client went away).
    // `?` turns a refusal (shutting down, or at capacity) into 503 with Retry-After.
    tasks.task("count-view").after_response(async move {
        tokio::time::sleep(Duration::from_millis(200)).await; // the slow write
        *state.views().entry(article).or_default() += 1;
    })?;
    Ok(StatusCode::ACCEPTED)
}

/// `GET /articles/{article}`: what the background tasks have counted so far.
async fn show(Path(article): Path<String>, State(state): State<AppState>) -> String {
    let views = state.views().get(&article).copied().unwrap_or(0);
    format!("{article}: {views} views\n")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Logs to stderr, so that stdout carries only the address and the report; at `info`
    // unless RUST_LOG says otherwise, so that the shutdown's phases show.
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let supervisor = TaskSupervisor::new();
    let app = Router::new()
        .route("/articles/{article}", get(show))
        .route("/articles/{article}/views", post(record_view))
        .with_state(AppState::default())
        // After the routes that use `BackgroundTasks`, so that it wraps them.
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
    // Serves until SIGINT or SIGTERM, then waits for the pending counts (5 s at most).
    // `into_future` installs the signal handlers before the address is announced, so that a
    // signal right after it shuts down gracefully rather than killing the process.
    let server = serve(listener, app, supervisor).into_future();
    println!("listening on http://{address}");
    let report = server.await?;
    println!("shutdown report: {report}");
    Ok(())
}
