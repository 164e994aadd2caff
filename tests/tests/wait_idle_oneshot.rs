//! Testing a handler's background task the way Quart's `test_app` does, without sockets: call
//! the router with `tower::ServiceExt::oneshot`, then `supervisor.wait_idle()` until the task
//! has run. No real socket or thread is involved, so time is paused: the 5-second task costs
//! no wall time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use background_tasks::TaskSupervisor;
use background_tasks_axum::{BackgroundTaskError, BackgroundTasks, BackgroundTasksLayer};
use tower::ServiceExt;

type Log = Arc<Mutex<Vec<&'static str>>>;

async fn sign_up(
    tasks: BackgroundTasks,
    State(log): State<Log>,
) -> Result<StatusCode, BackgroundTaskError> {
    tasks.task("welcome-mail").spawn({
        let log = log.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            log.lock().expect("the log lock").push("mail sent");
        }
    })?;
    tasks
        .after_response(async move { log.lock().expect("the log lock").push("after response") })?;
    Ok(StatusCode::CREATED)
}

fn app(supervisor: &TaskSupervisor, log: &Log) -> Router {
    Router::new()
        .route("/sign-up", post(sign_up))
        .with_state(log.clone())
        .layer(BackgroundTasksLayer::new(supervisor.clone()))
}

fn sign_up_request() -> Request<Body> {
    Request::post("/sign-up")
        .body(Body::empty())
        .expect("a valid request")
}

#[tokio::test(start_paused = true)]
async fn wait_idle_waits_for_the_background_tasks_of_a_handler() {
    let supervisor = TaskSupervisor::new();
    let log = Log::default();

    let response = app(&supervisor, &log)
        .oneshot(sign_up_request())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(log.lock().unwrap().is_empty(), "the handler did not wait");
    // Reading the body to its end sends the response: after-response tasks may start.
    axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();

    let started = tokio::time::Instant::now();
    supervisor.wait_idle().await;
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(*log.lock().unwrap(), ["after response", "mail sent"]);
    // `wait_idle` does not close the supervisor: the next test request still spawns.
    assert!(!supervisor.is_shutting_down());
    let again = app(&supervisor, &log)
        .oneshot(sign_up_request())
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
}

#[tokio::test(start_paused = true)]
async fn after_response_tasks_wait_for_the_response_body() {
    let supervisor = TaskSupervisor::new();
    let log = Log::default();
    let response = app(&supervisor, &log)
        .oneshot(sign_up_request())
        .await
        .unwrap();

    // Held, unsent: the after-response task has not started, while the other runs.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(*log.lock().unwrap(), ["mail sent"]);
    assert_eq!(
        supervisor.len(),
        1,
        "the after-response task is tracked while it waits"
    );

    drop(response);
    supervisor.wait_idle().await;
    assert_eq!(*log.lock().unwrap(), ["mail sent", "after response"]);
}
