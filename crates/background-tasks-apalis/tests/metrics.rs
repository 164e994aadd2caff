//! The `metrics` feature on SQLite: every job metric with its labels and each outcome, read
//! back from a test recorder. Run with `--features metrics` (the workspace's test build
//! enables it through the quickstart).
//!
//! The storage keeps whole seconds, so this runs in real time: about 2 s, most of it the
//! failing job's 1 s backoff.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use background_tasks_apalis::{EnqueueOptions, JobState};
use background_tasks_e2e::recorder::{counter, gauge, histogram, recorded};
use common::{Db, Flaky, LONG, OldFlaky, Sleep, final_status, sleep};
use metrics_util::debugging::DebuggingRecorder;

/// One job of each fate on one worker: done; failed, then dead after its retry; dead at once
/// (a payload of another shape); pending (delayed, enqueued twice under one key); and two
/// returned to the queue by shutdown, one that stops when cancelled and one aborted.
#[test]
fn every_job_metric_is_recorded_with_its_job_and_each_outcome() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let mut seen = BTreeMap::new();
    // A current-thread runtime, so that every task records through this thread's recorder.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = Db {
        url: format!("sqlite://{}", dir.path().join("jobs.db").display()),
        _dir: Some(dir),
    };
    let mut ids = Vec::new();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            // A drain of 200 ms, then 300 ms of grace before the abort.
            let setup = common::start(&db, Duration::from_millis(200), 4).await;
            let jobs = &setup.jobs;
            let done = jobs.enqueue(sleep(10)).await.unwrap();
            let failing = Flaky {
                failures: 99,
                panic: false,
            };
            let failing = jobs
                .enqueue_with(failing, EnqueueOptions::new().max_attempts(2))
                .await
                .unwrap();
            let old = jobs.enqueue(OldFlaky("v1 shape".into())).await.unwrap();
            let keyed = || {
                EnqueueOptions::new()
                    .delay(Duration::from_secs(3600))
                    .idempotency_key("once")
            };
            let delayed = jobs.enqueue_with(sleep(1), keyed()).await.unwrap();
            assert_eq!(jobs.enqueue_with(sleep(1), keyed()).await.unwrap(), delayed);
            let cooperative = Sleep {
                ms: 60_000,
                cooperative: true,
            };
            let stops = jobs.enqueue(cooperative).await.unwrap();
            let aborted = jobs.enqueue(sleep(60_000)).await.unwrap();
            ids.extend([
                done.clone(),
                failing.clone(),
                old.clone(),
                delayed,
                stops,
                aborted,
            ]);

            assert_eq!(
                final_status(jobs, &done, LONG).await.state(),
                JobState::Done
            );
            for id in [&failing, &old] {
                assert_eq!(final_status(jobs, id, LONG).await.state(), JobState::Dead);
            }
            // Both long handlers have started (the probe counts them from their first poll).
            let deadline = Instant::now() + LONG;
            while setup.probe.running.load(Ordering::SeqCst) < 2 {
                assert!(Instant::now() < deadline, "the long jobs did not start");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }

            jobs.record_metrics().await.unwrap();
            let metrics = recorded(&snapshotter, &mut seen);
            assert_eq!(
                gauge(metrics, "background_jobs_running{job=test-sleep}"),
                2.0
            );
            assert_eq!(
                gauge(metrics, "background_jobs_running{job=test-flaky}"),
                0.0
            );
            assert_eq!(
                gauge(metrics, "background_jobs_pending{job=test-sleep}"),
                1.0
            );
            assert_eq!(
                gauge(metrics, "background_jobs_pending{job=test-flaky}"),
                0.0
            );

            let report = setup
                .workers
                .finish(setup.supervisor.shutdown().await)
                .await;
            assert_eq!(report.returned().len(), 2, "{report}");
            assert_eq!(report.tasks().aborted(), 1, "{report}");
            // The returned jobs wait again, beside the delayed one.
            jobs.record_metrics().await.unwrap();
        });
    });

    let metrics = recorded(&snapshotter, &mut seen);
    for (key, value) in [
        // The second enqueue under the key stored nothing.
        ("background_jobs_enqueued_total{job=test-sleep}", 4),
        ("background_jobs_enqueued_total{job=test-flaky}", 2),
        (
            "background_jobs_finished_total{job=test-sleep,outcome=done}",
            1,
        ),
        (
            "background_jobs_finished_total{job=test-flaky,outcome=failed}",
            1,
        ),
        (
            "background_jobs_finished_total{job=test-flaky,outcome=dead}",
            2,
        ),
        (
            "background_jobs_finished_total{job=test-sleep,outcome=returned}",
            2,
        ),
        // The jobs' tasks are named after their type, so the core's metrics are bounded too.
        ("background_tasks_spawned_total{name=test-sleep}", 3),
        ("background_tasks_spawned_total{name=test-flaky}", 3),
    ] {
        assert_eq!(counter(metrics, key), value, "{key}");
    }
    let finished = metrics
        .keys()
        .filter(|key| key.starts_with("background_jobs_finished_total"))
        .count();
    assert_eq!(finished, 4, "no other outcome: {metrics:#?}");
    for id in &ids {
        let id = id.to_string();
        assert!(
            metrics.keys().all(|key| !key.contains(&id)),
            "no job id in any label: {metrics:#?}"
        );
    }
    // Two runs of the failing job's handler; the payload of another shape ran none.
    assert_eq!(
        histogram(metrics, "background_jobs_duration_seconds{job=test-flaky}").len(),
        2
    );
    // The short job's run, then the two long ones: the one that stopped when cancelled ran
    // through the 200 ms drain, the aborted one through the 300 ms grace as well.
    let sleeps = histogram(metrics, "background_jobs_duration_seconds{job=test-sleep}");
    assert_eq!(sleeps.len(), 3, "{sleeps:?}");
    assert!(
        sleeps[0] >= 0.01 && sleeps[1] >= 0.2 && sleeps[2] >= 0.5,
        "{sleeps:?}"
    );
    assert_eq!(
        gauge(metrics, "background_jobs_running{job=test-sleep}"),
        0.0
    );
    assert_eq!(
        gauge(metrics, "background_jobs_pending{job=test-sleep}"),
        3.0
    );
}

#[test]
fn sqlite_the_pending_gauge_counts_the_jobs_waiting_in_the_database() {
    let dir = tempfile::tempdir().expect("a temp dir");
    common::the_pending_gauge_counts_the_jobs_waiting_in_the_database(&format!(
        "sqlite://{}",
        dir.path().join("jobs.db").display()
    ));
}
