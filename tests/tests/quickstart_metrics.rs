//! `GET /metrics` of the quickstart binary: the supervisor's metrics in the Prometheus text
//! format, through the core's `metrics` feature and metrics-exporter-prometheus.

use std::time::Duration;

use background_tasks_e2e::{Server, client, eventually};
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_metrics_serves_the_task_metrics_in_the_prometheus_text_format() {
    let server = Server::quickstart(&[("MAX_TASKS", "3")]);
    let http = client();
    for query in [
        "duration_ms=0&kind=async",
        "duration_ms=0&kind=async",
        "duration_ms=0&kind=panic",
        "duration_ms=60000&kind=async&name=slow",
    ] {
        let response = http
            .post(server.url(&format!("/jobs?{query}")))
            .send()
            .await
            .expect("POST /jobs is answered");
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{query}");
    }
    // Wait for the three short jobs to end: the slow one and the heartbeat run on.
    eventually("the short jobs to end", Duration::from_secs(10), || {
        let request = http.get(server.url("/tasks")).send();
        async move {
            let tasks: serde_json::Value = request.await.ok()?.json().await.ok()?;
            (tasks["running"] == 1).then_some(())
        }
    })
    .await;
    // MAX_TASKS=3 admits 3 jobs and the heartbeat: one more slow job fills it, the next is
    // refused.
    for expected in [
        StatusCode::ACCEPTED,
        StatusCode::ACCEPTED,
        StatusCode::SERVICE_UNAVAILABLE,
    ] {
        let response = http
            .post(server.url("/jobs?duration_ms=60000&name=slow"))
            .send()
            .await
            .expect("POST /jobs is answered");
        assert_eq!(response.status(), expected);
    }

    let response = http
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics is answered");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("ASCII")
            .starts_with("text/plain; version=0.0.4"),
    );
    let text = response.text().await.expect("a body");
    for line in [
        "background_tasks_spawned_total{name=\"async-job\"} 2",
        "background_tasks_spawned_total{name=\"panic-job\"} 1",
        "background_tasks_spawned_total{name=\"slow\"} 3",
        "background_tasks_spawned_total{name=\"heartbeat\"} 1",
        "background_tasks_finished_total{name=\"async-job\",outcome=\"completed\"} 2",
        "background_tasks_finished_total{name=\"panic-job\",outcome=\"panicked\"} 1",
        "background_tasks_refused_total{reason=\"at_capacity\"} 1",
        "background_tasks_running 4",
        "background_tasks_duration_seconds_count{name=\"async-job\"} 2",
        "# TYPE background_tasks_duration_seconds histogram",
        "# TYPE background_tasks_oldest_age_seconds gauge",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in:\n{text}"
        );
    }
}
