//! The quickstart's HTTP interface.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use background_tasks::TaskSupervisor;
use background_tasks_axum::{
    BackgroundTaskError, BackgroundTasks, BackgroundTasksLayer, Readiness,
};
use serde::Deserialize;
use serde_json::json;

use crate::AppState;

/// `POST /jobs`, `GET /tasks` and `GET /ready`, with the supervisor reachable from handlers.
pub(crate) fn router(supervisor: TaskSupervisor, readiness: Readiness, state: AppState) -> Router {
    Router::new()
        .route("/jobs", post(post_job))
        .route("/tasks", get(get_tasks))
        .route_service("/ready", readiness)
        .with_state(state)
        .layer(BackgroundTasksLayer::new(supervisor))
}

/// What a job does for its `duration_ms`.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    /// A tokio sleep.
    #[default]
    Async,
    /// A thread sleep on the blocking pool.
    Blocking,
    /// A sleep, then a panic.
    Panic,
    /// A sleep that stops early, cleanly, when shutdown cancels it.
    Cooperative,
}

#[derive(Debug, Deserialize)]
struct JobParams {
    #[serde(default)]
    duration_ms: u64,
    #[serde(default)]
    kind: Kind,
}

/// `POST /jobs?duration_ms=N&kind=K`: 202 `{"id": n}`, 400 on bad parameters, 503 while
/// shutting down or at capacity.
async fn post_job(
    tasks: BackgroundTasks,
    params: Result<Query<JobParams>, QueryRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), JobError> {
    let Query(JobParams { duration_ms, kind }) = params?;
    let duration = Duration::from_millis(duration_ms);
    let id = match kind {
        Kind::Async => tasks
            .task("async-job")
            .spawn(tokio::time::sleep(duration))?
            .id(),
        Kind::Blocking => tasks
            .task("blocking-job")
            .spawn_blocking(move || std::thread::sleep(duration))?
            .id(),
        Kind::Panic => tasks
            .task("panic-job")
            .spawn(async move {
                tokio::time::sleep(duration).await;
                panic!("panic job failed on purpose after {duration_ms} ms");
            })?
            .id(),
        Kind::Cooperative => tasks
            .task("cooperative-job")
            .spawn_with(move |ctx| async move {
                tokio::select! {
                    () = tokio::time::sleep(duration) => {}
                    () = ctx.cancelled() => {}
                }
            })?
            .id(),
    };
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": id.as_u64() }))))
}

/// `GET /tasks`: 200 `{"running": n, "shutting_down": bool}`, where `running` counts the jobs
/// (not the heartbeat) and `shutting_down` turns true with the shutdown signal.
async fn get_tasks(
    tasks: BackgroundTasks,
    State(state): State<AppState>,
) -> Json<serde_json::Value> {
    let supervisor = tasks.supervisor();
    let running = supervisor
        .len()
        .saturating_sub(state.startup_tasks_running());
    let shutting_down = !state.readiness.is_ready() || supervisor.is_shutting_down();
    Json(json!({ "running": running, "shutting_down": shutting_down }))
}

/// Why `POST /jobs` refused a job.
#[derive(Debug)]
enum JobError {
    BadRequest(QueryRejection),
    Spawn(BackgroundTaskError),
}

impl From<QueryRejection> for JobError {
    fn from(rejection: QueryRejection) -> Self {
        Self::BadRequest(rejection)
    }
}

impl From<BackgroundTaskError> for JobError {
    fn from(error: BackgroundTaskError) -> Self {
        Self::Spawn(error)
    }
}

impl IntoResponse for JobError {
    fn into_response(self) -> Response {
        match self {
            Self::BadRequest(rejection) => (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": rejection.body_text() })),
            )
                .into_response(),
            // 503 with Retry-After.
            Self::Spawn(error) => error.into_response(),
        }
    }
}
