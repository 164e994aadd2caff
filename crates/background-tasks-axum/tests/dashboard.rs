//! `tasks_dashboard`: the page, `snapshot.json` and what the service refuses, mounted as a
//! user mounts it. The page's behaviour in a browser is tested end to end in the workspace's
//! `tests/` member (`dashboard_browser.rs`).

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use background_tasks_axum::{TaskSupervisor, tasks_dashboard};
use serde_json::{Value, json};
use tower::ServiceExt;

const SCRIPT_NAME: &str = "<script>alert(1)</script>";

fn app(supervisor: &TaskSupervisor) -> Router {
    Router::new().nest_service("/dashboard", tasks_dashboard(supervisor.clone()))
}

async fn get(app: &Router, method: &str, uri: &str) -> (StatusCode, header::HeaderMap, String) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .expect("a valid request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .expect("a body");
    (
        parts.status,
        parts.headers,
        String::from_utf8(body.to_vec()).expect("UTF-8"),
    )
}

async fn fetch_snapshot(app: &Router) -> Value {
    let (status, headers, body) = get(app, "GET", "/dashboard/snapshot.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    serde_json::from_str(&body).expect("JSON")
}

#[tokio::test(start_paused = true)]
async fn snapshot_json_has_the_documented_schema_with_exact_values() {
    let supervisor = TaskSupervisor::builder()
        .shutdown_timeout(Duration::from_secs(5))
        .cancel_grace(Duration::from_secs(1))
        .build();
    let app = app(&supervisor);
    for _ in 0..2 {
        supervisor
            .task("send-mail")
            .spawn(std::future::pending::<()>())
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    supervisor.spawn(std::future::pending::<()>()).unwrap();
    let failed = supervisor
        .task(SCRIPT_NAME)
        .spawn(async { panic!("<b>bold</b> & more") })
        .unwrap();
    let failed_id = failed.id().as_u64();
    let _ = failed.await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut snapshot = fetch_snapshot(&app).await;
    let failure = &mut snapshot["recent_failures"][0];
    assert!(failure["at_unix_ms"].as_u64().unwrap() > 1_700_000_000_000);
    failure["at_unix_ms"] = json!(0);
    assert_eq!(
        snapshot,
        json!({
            "phase": "running",
            "running": 3,
            "oldest_age_ms": 2500,
            "counters": {
                "spawned": 4, "completed": 0, "panicked": 1, "cancelled": 0, "aborted": 0,
                "abandoned": 0, "refused": { "shutting_down": 0, "at_capacity": 0 }
            },
            "by_name": [
                { "name": "send-mail", "running": 2, "oldest_age_ms": 2500 },
                { "name": null, "running": 1, "oldest_age_ms": 500 },
            ],
            "oldest_tasks": [
                { "id": 1, "name": "send-mail", "kind": "async", "started": true, "age_ms": 2500 },
                { "id": 2, "name": "send-mail", "kind": "async", "started": true, "age_ms": 2500 },
                { "id": 3, "name": null, "kind": "async", "started": true, "age_ms": 500 },
            ],
            "recent_failures": [{
                "id": failed_id,
                "name": SCRIPT_NAME,
                "kind": "panic",
                "message": "<b>bold</b> & more",
                "description": format!("task {failed_id} ({SCRIPT_NAME}) panicked: <b>bold</b> & more"),
                "at_unix_ms": 0,
                "ago_ms": 500,
            }],
            "shutdown": null,
        })
    );

    let shutdown = tokio::spawn({
        let supervisor = supervisor.clone();
        async move { supervisor.shutdown().await }
    });
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let draining = fetch_snapshot(&app).await;
    assert_eq!(draining["phase"], "draining");
    assert_eq!(
        draining["shutdown"],
        json!({
            "elapsed_ms": 1500, "shutdown_timeout_ms": 5000, "cancel_grace_ms": 1000,
            "report": null,
        })
    );
    shutdown.await.unwrap();
    let finished = fetch_snapshot(&app).await;
    assert_eq!(finished["phase"], "finished");
    assert_eq!(finished["counters"]["aborted"], 3);
    assert_eq!(
        finished["shutdown"]["report"],
        json!({ "completed": 0, "cancelled": 0, "aborted": 3, "abandoned": 0, "elapsed_ms": 5000 })
    );
}

#[tokio::test(start_paused = true)]
async fn the_longest_running_list_is_bounded_but_the_counts_cover_every_task() {
    let supervisor = TaskSupervisor::new();
    let app = Router::new().nest_service(
        "/dashboard",
        tasks_dashboard(supervisor.clone()).longest_running(2),
    );
    for _ in 0..5 {
        supervisor
            .task("poll")
            .spawn(std::future::pending::<()>())
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let snapshot = fetch_snapshot(&app).await;
    let ids: Vec<_> = snapshot["oldest_tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|task| task["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2]);
    assert_eq!(snapshot["by_name"][0]["running"], 5);
}

#[tokio::test]
async fn the_page_is_self_contained_and_runs_only_its_own_script() {
    let supervisor = TaskSupervisor::new();
    let app = app(&supervisor);
    supervisor
        .task(SCRIPT_NAME)
        .spawn(std::future::pending::<()>())
        .unwrap();
    let (status, headers, page) = get(&app, "GET", "/dashboard/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let policy = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    let nonce = policy
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap();
    assert_eq!(nonce.len(), 32);
    assert!(policy.starts_with("default-src 'none'; "), "{policy}");
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    // Its script and style carry the nonce; nothing is loaded from anywhere.
    assert_eq!(page.matches(&format!("nonce=\"{nonce}\"")).count(), 2);
    assert!(!page.contains("{nonce}"));
    for external in ["http://", "https://", "src=", "href=", "@import"] {
        assert!(!page.contains(external), "the page loads {external}");
    }
    // Data never goes through the HTML parser: the page is static, and its script writes
    // with textContent only.
    assert!(!page.contains("alert(1)"));
    assert!(!page.contains("innerHTML"));
    assert!(!page.contains("insertAdjacentHTML"));
    assert!(page.contains("textContent"));
    assert!(page.contains("snapshot.json"));

    let (_, second, _) = get(&app, "GET", "/dashboard").await;
    assert_ne!(
        second[header::CONTENT_SECURITY_POLICY],
        headers[header::CONTENT_SECURITY_POLICY],
        "a fresh nonce per response"
    );
}

#[tokio::test]
async fn the_dashboard_is_read_only_and_serves_nothing_else() {
    let app = app(&TaskSupervisor::new());
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        for uri in ["/dashboard/", "/dashboard/snapshot.json"] {
            let (status, headers, _) = get(&app, method, uri).await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
            assert_eq!(headers[header::ALLOW], "GET, HEAD");
        }
    }
    let (status, _, body) = get(&app, "GET", "/dashboard/tasks/1/abort").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("/snapshot.json"), "{body}");
    let (status, headers, body) = get(&app, "HEAD", "/dashboard/snapshot.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert!(body.is_empty());
    // Not mounted, not served.
    let (status, _, _) = get(&Router::new(), "GET", "/dashboard/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(start_paused = true)]
async fn a_tracked_future_shows_as_tracked_in_the_snapshot_json() {
    let supervisor = TaskSupervisor::new();
    let app = app(&supervisor);
    let tracked = supervisor
        .task("inline-save")
        .track_future(std::future::pending::<()>())
        .unwrap();
    let snapshot = fetch_snapshot(&app).await;
    assert_eq!(
        snapshot["oldest_tasks"],
        json!([{ "id": tracked.id().as_u64(), "name": "inline-save", "kind": "tracked", "started": true, "age_ms": 0 }])
    );
    drop(tracked);
}
