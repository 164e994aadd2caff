//! The quickstart's HTTP interface.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use background_tasks_axum::{
    BackgroundTaskError, BackgroundTasks, Readiness, TaskSupervisor, tasks_dashboard,
};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use serde_json::json;

use crate::AppState;

/// `POST /jobs`, `GET /tasks`, `GET /ready` and the task dashboard under `/dashboard/`.
///
/// Handlers reach the supervisor through the `BackgroundTasks` extractor, which `serve` gives
/// every request: no `BackgroundTasksLayer` here, which would cost each request a boxed
/// service of its own (axum wraps every route under a `Router::layer`). Served otherwise (the
/// tests below call the router directly), the app adds the layer.
///
/// The dashboard is mounted without authentication because the quickstart listens on
/// 127.0.0.1 only; an app that listens on a network puts it behind its authentication (see
/// `tasks_dashboard`'s docs).
pub(crate) fn router(supervisor: &TaskSupervisor, readiness: Readiness, state: AppState) -> Router {
    Router::new()
        .route("/jobs", post(post_job))
        .route("/tasks", get(get_tasks))
        .route("/metrics", get(get_metrics))
        .route_service("/ready", readiness)
        .nest_service("/dashboard", tasks_dashboard(supervisor.clone()))
        // In an `Arc`: axum clones a route's state for every request it routes, and one
        // reference count costs less than the clones of each field (a profile under wrk put
        // the field-by-field clone and drop at 1.5 % of the quickstart's CPU per request).
        .with_state(Arc::new(state))
}

/// The longest job name `POST /jobs` takes: names are labels (of the dashboard's rows, of
/// metrics), not data.
const MAX_NAME_LEN: usize = 64;

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

impl Kind {
    /// The job's name when the request gives none.
    fn default_name(self) -> &'static str {
        match self {
            Kind::Async => "async-job",
            Kind::Blocking => "blocking-job",
            Kind::Panic => "panic-job",
            Kind::Cooperative => "cooperative-job",
        }
    }
}

#[derive(Debug, Deserialize)]
struct JobParams {
    #[serde(default)]
    duration_ms: u64,
    #[serde(default)]
    kind: Kind,
    /// The task's name; by default the kind's (`async-job`, ...).
    name: Option<String>,
}

/// `POST /jobs?duration_ms=N&kind=K&name=S`: 202 `{"id": n}`, 400 on bad parameters, 503
/// while shutting down or at capacity.
async fn post_job(
    tasks: BackgroundTasks,
    params: Result<Query<JobParams>, QueryRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), JobError> {
    let Query(JobParams {
        duration_ms,
        kind,
        name,
    }) = params?;
    let name = match name {
        None => Cow::Borrowed(kind.default_name()),
        Some(name) if name.is_empty() || name.len() > MAX_NAME_LEN => {
            return Err(JobError::BadName(name.len()));
        }
        Some(name) => Cow::Owned(name),
    };
    let duration = Duration::from_millis(duration_ms);
    let id = match kind {
        Kind::Async => tasks.task(name).spawn(tokio::time::sleep(duration))?.id(),
        Kind::Blocking => tasks
            .task(name)
            .spawn_blocking(move || std::thread::sleep(duration))?
            .id(),
        Kind::Panic => tasks
            .task(name)
            .spawn(async move {
                tokio::time::sleep(duration).await;
                panic!("panic job failed on purpose after {duration_ms} ms");
            })?
            .id(),
        Kind::Cooperative => tasks
            .task(name)
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
    State(state): State<Arc<AppState>>,
) -> Json<serde_json::Value> {
    let supervisor = tasks.supervisor();
    let running = supervisor
        .len()
        .saturating_sub(state.startup_tasks_running());
    let shutting_down = !state.readiness.is_ready() || supervisor.is_shutting_down();
    Json(json!({ "running": running, "shutting_down": shutting_down }))
}

/// The buckets of `background_tasks_duration_seconds` and `background_jobs_duration_seconds`,
/// from a short job to a long one.
const DURATION_BUCKETS: [f64; 9] = [0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0];

/// Installs the Prometheus recorder as the process's `metrics` recorder; `GET /metrics`
/// renders what it holds.
pub(crate) fn install_metrics_recorder() -> Result<PrometheusHandle, BuildError> {
    let mut builder = PrometheusBuilder::new();
    for histogram in [
        "background_tasks_duration_seconds",
        "background_jobs_duration_seconds",
    ] {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(histogram.to_owned()), &DURATION_BUCKETS)?;
    }
    builder.install_recorder()
}

/// How often [`spawn_metrics_upkeep`] drains the histograms: the exporter's own default, the
/// schedule `PrometheusBuilder::build` gives the exporters it runs itself.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// Drains the histograms' samples into their buckets every [`METRICS_UPKEEP`], as the exporter
/// asks of the apps that install its recorder alone. Until a drain, the exporter keeps every
/// sample (16 bytes and a timestamp): `GET /metrics` drains them, but a server nobody scrapes
/// kept one more per task for good, 1 GB per 60 million tasks (the quickstart under `wrk`
/// grew 17 bytes a request). A plain tokio task, not a supervised one: it holds nothing to
/// drain or report, and ends with the runtime.
pub(crate) fn spawn_metrics_upkeep(metrics: PrometheusHandle) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(METRICS_UPKEEP);
        // The first tick is now: nothing to drain yet.
        interval.tick().await;
        loop {
            interval.tick().await;
            metrics.run_upkeep();
        }
    });
}

/// `GET /metrics`: 200, the supervisor's and the durable jobs' metrics (and any other the app
/// records) in the Prometheus text format.
async fn get_metrics(tasks: BackgroundTasks, State(state): State<Arc<AppState>>) -> Response {
    // The gauges are set here, when they are read, rather than by every spawn.
    tasks.supervisor().record_metrics();
    // The queues' depth is a query: a database that does not answer leaves those gauges at
    // their last values, and the rest is served all the same.
    if let Some(jobs) = &state.durable_jobs
        && let Err(error) = jobs.record_metrics().await
    {
        tracing::warn!("GET /metrics: cannot read the durable jobs' queues: {error}");
    }
    // Drains the histograms' samples into their buckets, as the exporter asks of its users.
    state.metrics.run_upkeep();
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
        .into_response()
}

/// Why `POST /jobs` refused a job.
#[derive(Debug)]
enum JobError {
    BadRequest(QueryRejection),
    /// A `name` that is empty or longer than [`MAX_NAME_LEN`] bytes: its length.
    BadName(usize),
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
            Self::BadName(len) => (
                StatusCode::BAD_REQUEST,
                Json(json!({
                    "error": format!(
                        "`name` must be 1 to {MAX_NAME_LEN} bytes long, not {len}: \
                         name the kind of job, not one job (no ids in names)"
                    )
                })),
            )
                .into_response(),
            // 503 with Retry-After.
            Self::Spawn(error) => error.into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use axum::body::Body;
    use axum::http::Request;
    use axum::http::header::RETRY_AFTER;
    use background_tasks_axum::BackgroundTasksLayer;
    use tower::ServiceExt;

    use super::*;

    fn app(supervisor: &TaskSupervisor) -> Router {
        let readiness = Readiness::new();
        let state = AppState {
            readiness: readiness.clone(),
            startup_tasks: Arc::new(AtomicUsize::new(0)),
            durable_fetchers: None,
            durable_jobs: None,
            // Not installed: these tests read no metrics, and a process has one recorder.
            metrics: PrometheusBuilder::new().build_recorder().handle(),
        };
        // Called without `serve`: the layer hands the supervisor to the handlers instead.
        router(supervisor, readiness, state).layer(BackgroundTasksLayer::new(supervisor.clone()))
    }

    async fn post(app: &Router, uri: &str) -> (StatusCode, Option<String>, serde_json::Value) {
        let request = Request::post(uri).body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .map(|value| value.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        (status, retry_after, json)
    }

    #[tokio::test(start_paused = true)]
    async fn post_jobs_answers_202_with_the_task_id_for_every_kind() {
        let supervisor = TaskSupervisor::new();
        let app = app(&supervisor);
        for (kind, id) in [
            ("async", 1),
            ("blocking", 2),
            ("panic", 3),
            ("cooperative", 4),
        ] {
            let (status, _, json) = post(&app, &format!("/jobs?duration_ms=5&kind={kind}")).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{kind}");
            assert_eq!(json, json!({ "id": id }));
        }
        let (status, _, json) = post(&app, "/jobs").await;
        assert_eq!((status, json), (StatusCode::ACCEPTED, json!({ "id": 5 })));
        assert_eq!(supervisor.shutdown().await.completed(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn post_jobs_names_the_task_after_its_kind_or_the_name_given() {
        let supervisor = TaskSupervisor::new();
        let app = app(&supervisor);
        for uri in [
            "/jobs?duration_ms=60000&kind=cooperative",
            "/jobs?duration_ms=60000&name=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        ] {
            assert_eq!(post(&app, uri).await.0, StatusCode::ACCEPTED, "{uri}");
        }
        tokio::task::yield_now().await;
        let mut names: Vec<_> = supervisor
            .snapshot()
            .tasks
            .into_iter()
            .map(|task| task.name.unwrap().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["<script>alert(1)</script>", "cooperative-job"]);
    }

    #[tokio::test]
    async fn the_dashboard_is_mounted_at_dashboard() {
        let app = app(&TaskSupervisor::new());
        for uri in ["/dashboard/", "/dashboard/snapshot.json"] {
            let request = Request::get(uri).body(Body::empty()).unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{uri}");
        }
    }

    #[tokio::test]
    async fn post_jobs_answers_400_with_a_json_error_for_bad_parameters() {
        let app = app(&TaskSupervisor::new());
        let long = format!("/jobs?name={}", "x".repeat(MAX_NAME_LEN + 1));
        for uri in [
            "/jobs?duration_ms=-1",
            "/jobs?duration_ms=soon",
            "/jobs?kind=cron",
            "/jobs?name=",
            &long,
        ] {
            let (status, _, json) = post(&app, uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            assert!(json["error"].is_string(), "{uri}: {json}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn post_jobs_answers_503_with_retry_after_at_capacity_and_while_shutting_down() {
        let supervisor = TaskSupervisor::builder().max_tasks(1).build();
        let app = app(&supervisor);
        assert_eq!(
            post(&app, "/jobs?duration_ms=60000").await.0,
            StatusCode::ACCEPTED
        );
        let (status, retry_after, _) = post(&app, "/jobs?duration_ms=1").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(retry_after.is_some());

        let _ = supervisor.shutdown_now().await;
        let (status, retry_after, _) = post(&app, "/jobs").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(retry_after.is_some());
    }
}
