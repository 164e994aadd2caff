//! Durable jobs: stored in `DATABASE_URL`, run by this process's workers under the same
//! supervisor, and put back in the queue when shutdown aborts them.
//!
//! - `POST /durable-jobs?duration_ms=N&kind=K[&key=S]` -> 202 `{"id": "<ULID>"}`; K is
//!   `async` (sleeps N ms; stops early when cancelled, and is retried), `fail` (an error after
//!   N ms, every attempt), `flaky` (fails its first attempt, succeeds on the second) or
//!   `uncooperative` (sleeps N ms and ignores cancellation: shutdown aborts it at the end of
//!   the budget, and it goes back to the queue); S is an idempotency key. 400 for bad input; 503 with `Retry-After` once shutdown began or while
//!   the database is unreachable.
//! - `GET /durable-jobs/{id}` -> 200 `{"id", "status", "attempts"}`; 404 unknown; 400
//!   malformed.

use std::fmt;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use background_tasks_apalis::{
    BoxError, DurableJobError, DurableJobs, EnqueueOptions, Job, JobContext, JobId, Workers,
};
use background_tasks_axum::TaskSupervisor;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::{ConfigError, var};

/// `DATABASE_URL`, `DURABLE_WORKERS` and `DURABLE_MAX_ATTEMPTS`.
#[derive(Debug)]
pub(crate) struct DurableConfig {
    url: String,
    workers: usize,
    max_attempts: u32,
}

impl DurableConfig {
    pub(crate) fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            url: var(
                "DATABASE_URL",
                "sqlite://<file> or postgres://<user>@<host>/<db>",
            )?
            .unwrap_or_else(|| "sqlite://quickstart.db".to_owned()),
            workers: var("DURABLE_WORKERS", "a whole number of jobs run at once")?.unwrap_or(4),
            max_attempts: var(
                "DURABLE_MAX_ATTEMPTS",
                "a whole number of attempts, at least 1",
            )?
            .unwrap_or(3),
        })
    }
}

impl DurableConfig {
    /// How many supervised tasks the durable jobs may take: the fetcher and its jobs.
    pub(crate) fn supervised_tasks(&self) -> usize {
        if self.workers == 0 {
            0
        } else {
            self.workers + 1
        }
    }
}

/// The database could not be opened: the process exits with code 2.
#[derive(Debug)]
pub(crate) struct DatabaseError(background_tasks_apalis::ConnectError);

impl fmt::Display for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DATABASE_URL: {}", self.0)
    }
}

impl std::error::Error for DatabaseError {}

/// Opens the job database and starts this process's workers on `supervisor`.
pub(crate) async fn start(
    config: &DurableConfig,
    supervisor: &TaskSupervisor,
) -> Result<(DurableJobs, Workers), Box<dyn std::error::Error>> {
    let jobs = DurableJobs::builder(&config.url)
        .supervisor(supervisor)
        .max_attempts(config.max_attempts)
        .connect()
        .await
        .map_err(DatabaseError)?;
    let mut workers = jobs.workers(supervisor).name("quickstart");
    // 0 workers: this process only enqueues.
    if config.workers > 0 {
        workers = workers.job::<QuickstartJob>(config.workers, ());
    }
    let workers = workers.start().await?;
    tracing::info!(
        url = %config.url,
        workers = config.workers,
        max_attempts = config.max_attempts,
        worker = workers.name(),
        "durable jobs ready"
    );
    Ok((jobs, workers))
}

/// What a durable job does.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    #[default]
    Async,
    Fail,
    Flaky,
    /// Never looks at the cancellation signal, as a handler blocked in a call without a
    /// timeout: only the abort at the end of the budget ends it.
    Uncooperative,
}

/// The quickstart's durable job.
#[derive(Debug, Serialize, Deserialize)]
struct QuickstartJob {
    duration_ms: u64,
    kind: Kind,
}

impl Job for QuickstartJob {
    const NAME: &'static str = "quickstart-job";
    type State = ();

    async fn run(self, (): (), ctx: JobContext) -> Result<(), BoxError> {
        let work = tokio::time::sleep(Duration::from_millis(self.duration_ms));
        if self.kind == Kind::Uncooperative {
            work.await;
            return Ok(());
        }
        tokio::select! {
            () = work => {}
            () = ctx.cancelled() => return Err("interrupted by shutdown".into()),
        }
        match self.kind {
            Kind::Async | Kind::Uncooperative => Ok(()),
            Kind::Fail => Err(format!("failed on purpose (attempt {})", ctx.attempt()).into()),
            Kind::Flaky if ctx.attempt() == 1 => Err("flaky: fails its first attempt".into()),
            Kind::Flaky => Ok(()),
        }
    }
}

/// `POST /durable-jobs` and `GET /durable-jobs/{id}`.
pub(crate) fn router(jobs: DurableJobs) -> Router {
    Router::new()
        .route("/durable-jobs", post(post_durable_job))
        .route("/durable-jobs/{id}", get(get_durable_job))
        .with_state(jobs)
}

#[derive(Debug, Deserialize)]
struct Params {
    #[serde(default)]
    duration_ms: u64,
    #[serde(default)]
    kind: Kind,
    key: Option<String>,
}

async fn post_durable_job(
    State(jobs): State<DurableJobs>,
    params: Result<Query<Params>, QueryRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Query(params) = params.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let mut options = EnqueueOptions::new();
    if let Some(key) = params.key {
        options = options.idempotency_key(key);
    }
    let job = QuickstartJob {
        duration_ms: params.duration_ms,
        kind: params.kind,
    };
    let id = jobs.enqueue_with(job, options).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": id.to_string() }))))
}

async fn get_durable_job(
    State(jobs): State<DurableJobs>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id: JobId = id
        .parse()
        .map_err(|error: background_tasks_apalis::ParseJobIdError| {
            ApiError::BadRequest(error.to_string())
        })?;
    let status = jobs.status(&id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(json!({
        "id": id.to_string(),
        "status": status.state().as_str(),
        "attempts": status.attempts(),
    })))
}

/// Why a durable-jobs request failed.
#[derive(Debug)]
enum ApiError {
    BadRequest(String),
    NotFound,
    Jobs(DurableJobError),
}

impl From<DurableJobError> for ApiError {
    fn from(error: DurableJobError) -> Self {
        Self::Jobs(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::BadRequest(error) => {
                (StatusCode::BAD_REQUEST, Json(json!({ "error": error }))).into_response()
            }
            Self::NotFound => (
                StatusCode::NOT_FOUND,
                Json(json!({ "error": "no such durable job" })),
            )
                .into_response(),
            // 503 with Retry-After.
            Self::Jobs(error) => error.into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use axum::http::header::RETRY_AFTER;
    use tower::ServiceExt;

    use super::*;

    async fn call(app: &Router, request: Request<Body>) -> (StatusCode, bool, serde_json::Value) {
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let retry_after = response.headers().contains_key(RETRY_AFTER);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        (status, retry_after, json)
    }

    fn post(uri: &str) -> Request<Body> {
        Request::post(uri).body(Body::empty()).unwrap()
    }

    fn get(uri: &str) -> Request<Body> {
        Request::get(uri).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn the_durable_routes_answer_as_the_interface_says() {
        let dir = std::env::temp_dir().join(format!("quickstart-durable-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let supervisor = TaskSupervisor::new();
        let config = DurableConfig {
            url: format!("sqlite://{}/jobs.db", dir.display()),
            workers: 0,
            max_attempts: 3,
        };
        let (jobs, workers) = start(&config, &supervisor).await.unwrap();
        let app = router(jobs);

        let (status, _, json) =
            call(&app, post("/durable-jobs?duration_ms=5&kind=flaky&key=k")).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let id = json["id"].as_str().unwrap().to_owned();
        let (_, _, again) = call(&app, post("/durable-jobs?kind=async&key=k")).await;
        assert_eq!(again["id"], id.as_str(), "same key, same job");

        let (status, _, json) = call(&app, get(&format!("/durable-jobs/{id}"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            json,
            json!({ "id": id, "status": "pending", "attempts": 0 })
        );

        for uri in ["/durable-jobs?kind=cron", "/durable-jobs?duration_ms=-1"] {
            assert_eq!(
                call(&app, post(uri)).await.0,
                StatusCode::BAD_REQUEST,
                "{uri}"
            );
        }
        assert_eq!(
            call(&app, get("/durable-jobs/nope")).await.0,
            StatusCode::BAD_REQUEST
        );
        let unknown = "/durable-jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV";
        assert_eq!(call(&app, get(unknown)).await.0, StatusCode::NOT_FOUND);

        let report = workers.finish(supervisor.shutdown().await).await;
        assert!(
            report
                .to_string()
                .contains("0 durable jobs returned to the queue")
        );
        let (status, retry_after, _) = call(&app, post("/durable-jobs")).await;
        assert_eq!(
            (status, retry_after),
            (StatusCode::SERVICE_UNAVAILABLE, true)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
