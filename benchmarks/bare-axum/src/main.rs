//! The baseline for the HTTP benchmark: the quickstart's `POST /jobs` route on bare axum, with
//! a plain `tokio::spawn` of a sleep and nothing supervised, tracked or drained.
//!
//! Same interface as `examples/quickstart` where it matters for the comparison: binds
//! `127.0.0.1:$PORT` (default 3000, 0 for any free port), prints `listening on http://ADDR`
//! once bound, answers `POST /jobs?duration_ms=N` with 202 and `{"id": n}`, and stops on
//! SIGTERM or SIGINT through `axum::serve`'s graceful shutdown (which waits for in-flight
//! requests, not for the spawned sleeps).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

#[derive(Debug, Deserialize)]
struct JobParams {
    #[serde(default)]
    duration_ms: u64,
}

async fn post_job(
    State(next_id): State<Arc<AtomicU64>>,
    Query(params): Query<JobParams>,
) -> (StatusCode, Json<Value>) {
    // Relaxed: ids only need to be unique.
    let id = next_id.fetch_add(1, Ordering::Relaxed);
    let duration = Duration::from_millis(params.duration_ms);
    tokio::spawn(tokio::time::sleep(duration));
    (StatusCode::ACCEPTED, Json(json!({ "id": id })))
}

async fn ready() -> StatusCode {
    StatusCode::OK
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("cannot install the signal handlers; stop the server with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port
            .parse()
            .map_err(|err| format!("PORT={port:?} is not a port number (0-65535): {err}"))?,
        Err(_) => 3000,
    };
    let app = Router::new()
        .route("/jobs", post(post_job))
        .route("/ready", get(ready))
        .with_state(Arc::new(AtomicU64::new(1)));
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{}", listener.local_addr()?)?;
    // The benchmark script waits for this line on a pipe, where stdout is block-buffered.
    stdout.flush()?;
    drop(stdout);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    println!("shutdown report: bare axum does not track its tasks");
    Ok(())
}
