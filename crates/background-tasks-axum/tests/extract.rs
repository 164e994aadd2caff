//! The extractor: its rejection without the layer, and its spawn errors as 503 responses.

mod support;

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::http::header::RETRY_AFTER;
use axum::routing::post;
use background_tasks::TaskSupervisor;
use background_tasks_axum::{BackgroundTaskError, BackgroundTasks, BackgroundTasksLayer};
use tower::ServiceExt;

use support::{request, text};

async fn spawn_job(tasks: BackgroundTasks) -> Result<StatusCode, BackgroundTaskError> {
    tasks.task("job").spawn(std::future::pending::<()>())?;
    Ok(StatusCode::ACCEPTED)
}

fn app(supervisor: &TaskSupervisor) -> Router {
    Router::new()
        .route("/jobs", post(spawn_job))
        .layer(BackgroundTasksLayer::new(supervisor.clone()))
}

#[tokio::test]
async fn extractor_without_the_layer_answers_500_naming_the_layer_and_how_to_add_it() {
    let app = Router::new().route("/jobs", post(spawn_job));
    let response = app.oneshot(request("POST", "/jobs")).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = text(response).await;
    assert!(body.contains("BackgroundTasksLayer"), "{body}");
    assert!(
        body.contains(".layer(BackgroundTasksLayer::new(supervisor))"),
        "{body}"
    );
}

#[tokio::test]
async fn optional_extractor_without_the_layer_gives_none() {
    let app = Router::new().route(
        "/",
        post(|tasks: Option<BackgroundTasks>| async move { tasks.is_some().to_string() }),
    );
    let response = app.oneshot(request("POST", "/")).await.unwrap();
    assert_eq!(text(response).await, "false");
}

#[tokio::test]
async fn handlers_spawn_supervised_tasks_through_the_layer() {
    let supervisor = TaskSupervisor::builder()
        .shutdown_timeout(Duration::ZERO)
        .cancel_grace(Duration::ZERO)
        .build();
    let response = app(&supervisor)
        .oneshot(request("POST", "/jobs"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(supervisor.len(), 1);
    let report = supervisor.shutdown().await;
    assert_eq!(report.aborted_tasks()[0].name(), Some("job"));
}

#[tokio::test]
async fn spawn_at_capacity_answers_503_with_retry_after() {
    let supervisor = TaskSupervisor::builder().max_tasks(1).build();
    let app = app(&supervisor);
    let first = app.clone().oneshot(request("POST", "/jobs")).await.unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let second = app.oneshot(request("POST", "/jobs")).await.unwrap();
    assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(second.headers()[RETRY_AFTER], "1");
    let body = text(second).await;
    assert!(
        body.contains("at capacity") && body.contains("max_tasks"),
        "{body}"
    );
}

#[tokio::test(start_paused = true)]
async fn spawn_while_shutting_down_answers_503_with_retry_after() {
    let supervisor = TaskSupervisor::new();
    let _ = supervisor.shutdown().await;
    let response = app(&supervisor)
        .oneshot(request("POST", "/jobs"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[RETRY_AFTER], "5");
    assert!(text(response).await.contains("shutting down"));
}

#[tokio::test]
async fn spawn_blocking_from_a_handler_runs_on_another_thread_and_is_awaited() {
    let supervisor = TaskSupervisor::new();
    let app = Router::new()
        .route(
            "/",
            post(|tasks: BackgroundTasks| async move {
                let here = std::thread::current().id();
                let handle = tasks
                    .task("thread")
                    .spawn_blocking(move || std::thread::current().id() != here)?;
                Ok::<_, BackgroundTaskError>(handle.await.unwrap().to_string())
            }),
        )
        .layer(BackgroundTasksLayer::new(supervisor.clone()));
    let response = app.oneshot(request("POST", "/")).await.unwrap();
    assert_eq!(text(response).await, "true");
}

#[tokio::test(start_paused = true)]
async fn a_handler_s_tracked_future_is_drained_by_shutdown_while_the_handler_awaits_it() {
    let supervisor = TaskSupervisor::builder()
        .shutdown_timeout(Duration::from_secs(10))
        .build();
    let app = Router::new()
        .route(
            "/save",
            post(|tasks: BackgroundTasks| async move {
                let saved = tasks.task("save-order").track_future(async {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    "saved"
                })?;
                Ok::<_, BackgroundTaskError>(saved.await)
            }),
        )
        .route(
            "/export",
            post(|tasks: BackgroundTasks| async move {
                let export = tasks.track_future_with(|ctx| async move {
                    ctx.cancelled().await;
                    "cut short"
                })?;
                Ok::<_, BackgroundTaskError>(export.await)
            }),
        )
        .layer(BackgroundTasksLayer::new(supervisor.clone()));
    let save = tokio::spawn(app.clone().oneshot(request("POST", "/save")));
    let export = tokio::spawn(app.clone().oneshot(request("POST", "/export")));
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(supervisor.len(), 2, "both handlers' futures are counted");
    let report = supervisor.shutdown().await;
    assert_eq!(
        (report.completed(), report.cancelled()),
        (1, 1),
        "the save finished in the drain, the export on the signal: {report}"
    );
    assert_eq!(text(save.await.unwrap().unwrap()).await, "saved");
    assert_eq!(text(export.await.unwrap().unwrap()).await, "cut short");
    // Refused like any spawn once shutdown began: a 503 through `?`.
    let refused = app.oneshot(request("POST", "/save")).await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_handler_spawns_on_the_runtime_it_names() {
    let heavy = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let supervisor = TaskSupervisor::new();
    let handle = heavy.handle().clone();
    let app = Router::new()
        .route(
            "/",
            post(move |tasks: BackgroundTasks| async move {
                let here = || tokio::runtime::Handle::current().id();
                let plain = tasks.spawn_on(async move { here() }, &handle)?;
                let named = tasks
                    .task("render")
                    .spawn_with_on(|_ctx| async move { here() }, &handle)?;
                let (plain, named) = (plain.await.unwrap(), named.await.unwrap());
                Ok::<_, BackgroundTaskError>(
                    (plain == handle.id() && named == handle.id()).to_string(),
                )
            }),
        )
        .layer(BackgroundTasksLayer::new(supervisor.clone()));
    let response = app.oneshot(request("POST", "/")).await.unwrap();
    assert_eq!(text(response).await, "true");
    heavy.shutdown_background();
}
