//! `GET /metrics` of the quickstart binary: the supervisor's and the durable jobs' metrics in
//! the Prometheus text format, through the `metrics` features of the core and of
//! background-tasks-apalis, and metrics-exporter-prometheus.

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

/// The durable jobs' metrics (the apalis crate's `metrics` feature): counted by job type, and
/// their tasks named by job type in the core's metrics, never by job id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_metrics_serves_the_durable_job_metrics_labelled_by_job_type() {
    let server = Server::quickstart(&[("DURABLE_WORKERS", "2"), ("DURABLE_MAX_ATTEMPTS", "1")]);
    let http = client();
    // Done, dead after its only attempt, and one that runs on.
    for query in [
        "duration_ms=0&kind=async",
        "duration_ms=0&kind=fail",
        "duration_ms=60000&kind=async",
    ] {
        let response = http
            .post(server.url(&format!("/durable-jobs?{query}")))
            .send()
            .await
            .expect("POST /durable-jobs is answered");
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{query}");
    }
    let settled = [
        "background_jobs_finished_total{job=\"quickstart-job\",outcome=\"done\"} 1",
        "background_jobs_finished_total{job=\"quickstart-job\",outcome=\"dead\"} 1",
        "background_jobs_running{job=\"quickstart-job\"} 1",
    ];
    let text = eventually("the short jobs to end", Duration::from_secs(10), || {
        let request = http.get(server.url("/metrics")).send();
        async move {
            let text = request.await.ok()?.text().await.ok()?;
            settled
                .iter()
                .all(|line| text.lines().any(|l| l == *line))
                .then_some(text)
        }
    })
    .await;
    for line in [
        "background_jobs_enqueued_total{job=\"quickstart-job\"} 3",
        "background_jobs_pending{job=\"quickstart-job\"} 0",
        "background_jobs_duration_seconds_count{job=\"quickstart-job\"} 2",
        "# TYPE background_jobs_duration_seconds histogram",
        "background_tasks_spawned_total{name=\"quickstart-job\"} 3",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in:\n{text}"
        );
    }
}
