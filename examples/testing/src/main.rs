//! How to test a handler's background task: call the router with
//! `tower::ServiceExt::oneshot` (no socket), then `supervisor.wait_idle()` until the task has
//! run, as Quart's `test_app` waits for background tasks. Run the tests with
//! `cargo test -p example-testing`; the server itself with `cargo run -p example-testing`:
//!
//! ```text
//! curl -X POST http://127.0.0.1:3000/orders   # 202; the confirmation is sent in the background
//! curl http://127.0.0.1:3000/outbox           # the confirmations sent so far
//! ```

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use background_tasks_axum::{
    BackgroundTaskError, BackgroundTasks, BackgroundTasksLayer, TaskSupervisor, serve,
};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// Where "sent" mails go: a stand-in for a mail server that the tests can inspect.
#[derive(Debug, Clone, Default)]
struct Outbox(Arc<Mutex<Vec<String>>>);

impl Outbox {
    fn send(&self, mail: String) {
        // One push cannot be left half done, so a poisoned lock is still usable.
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(mail);
    }

    fn sent(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// `POST /orders`: accepts the order, and mails a confirmation in the background.
async fn place_order(
    tasks: BackgroundTasks,
    State(outbox): State<Outbox>,
) -> Result<StatusCode, BackgroundTaskError> {
    tasks.task("send-confirmation").spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await; // a slow mail server
        outbox.send("your order is confirmed".to_owned());
    })?;
    Ok(StatusCode::ACCEPTED)
}

async fn outbox(State(outbox): State<Outbox>) -> String {
    outbox.sent().join("\n")
}

/// The app, built the same way in `main` and in the tests.
fn app(supervisor: TaskSupervisor, outbox: Outbox) -> Router {
    Router::new()
        .route("/orders", post(place_order))
        .route("/outbox", get(self::outbox))
        .with_state(outbox)
        .layer(BackgroundTasksLayer::new(supervisor))
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
    let router = app(supervisor.clone(), Outbox::default());
    // A bad PORT is an error, not a silent fallback to the default.
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port
            .parse()
            .map_err(|_| format!("PORT must be a port number (0 to 65535), got {port:?}"))?,
        Err(_) => 3000,
    };
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let address = listener.local_addr()?;
    // `into_future` installs the signal handlers before the address is announced.
    let server = serve(listener, router, supervisor).into_future();
    println!("listening on http://{address}");
    let report = server.await?;
    println!("shutdown report: {report}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use axum::http::header::RETRY_AFTER;
    use tower::ServiceExt;

    use super::*;

    fn order() -> Request<Body> {
        Request::post("/orders").body(Body::empty()).unwrap()
    }

    // Paused time: the 2-second mail costs no wall time, and nothing here needs a real clock.
    #[tokio::test(start_paused = true)]
    async fn an_order_is_confirmed_in_the_background() {
        let supervisor = TaskSupervisor::new();
        let outbox = Outbox::default();

        let response = app(supervisor.clone(), outbox.clone())
            .oneshot(order())
            .await
            .unwrap();

        // The handler answered without waiting for the mail...
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        assert!(outbox.sent().is_empty());
        // ...which is sent once the background task has run. `wait_idle` also counts tasks
        // that tasks spawn, and does not close the supervisor, so a test can go on.
        supervisor.wait_idle().await;
        assert_eq!(outbox.sent(), ["your order is confirmed"]);
    }

    #[tokio::test]
    async fn orders_are_refused_with_503_while_shutting_down() {
        let supervisor = TaskSupervisor::new();
        supervisor.shutdown().await;

        let response = app(supervisor, Outbox::default())
            .oneshot(order())
            .await
            .unwrap();

        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key(RETRY_AFTER));
    }

    // A handler is a function: it can also be called directly, with an extractor built by
    // hand, when the router is not what the test is about.
    #[tokio::test(start_paused = true)]
    async fn the_handler_can_be_called_directly() {
        let supervisor = TaskSupervisor::new();
        let outbox = Outbox::default();

        let status = place_order(
            BackgroundTasks::new(supervisor.clone()),
            State(outbox.clone()),
        )
        .await
        .unwrap();

        assert_eq!(status, StatusCode::ACCEPTED);
        // `shutdown` waits too, and says how each task ended.
        let report = supervisor.shutdown().await;
        assert_eq!(report.completed(), 1);
        assert_eq!(outbox.sent(), ["your order is confirmed"]);
    }
}
