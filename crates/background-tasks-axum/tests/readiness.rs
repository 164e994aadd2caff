//! The readiness service.

mod support;

use axum::Router;
use axum::http::StatusCode;
use axum::http::header::RETRY_AFTER;
use background_tasks_axum::Readiness;
use tower::ServiceExt;

use support::{request, text};

#[tokio::test]
async fn readiness_answers_200_until_shutdown_then_503_with_retry_after() {
    let readiness = Readiness::new();
    let app = Router::new().route_service("/ready", readiness.clone());

    let response = app.clone().oneshot(request("GET", "/ready")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get(RETRY_AFTER).is_none());
    assert_eq!(text(response).await, "ready\n");

    readiness.set_not_ready();
    readiness.set_not_ready();
    let response = app.oneshot(request("GET", "/ready")).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key(RETRY_AFTER));
    assert_eq!(text(response).await, "shutting down\n");
    assert!(!readiness.is_ready());
}
