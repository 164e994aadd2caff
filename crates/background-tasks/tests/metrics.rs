//! The `metrics` feature: every metric with its labels, read back from a test recorder, with
//! exact values under paused time. Run with `--features metrics` (the workspace's test build
//! enables it through the quickstart).

use std::collections::BTreeMap;
use std::future::pending;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use background_tasks::{METRIC_NAMES_LIMIT, SpawnError, TaskSupervisor};
use metrics_util::debugging::DebuggingRecorder;
use recorder::{counter, gauge, histogram, recorded};

// The helpers that read the recorder, shared with background-tasks-apalis's tests through the
// end-to-end harness, which depends on this crate: included by path instead.
#[allow(unreachable_pub, dead_code)]
#[path = "../../../tests/src/recorder.rs"]
mod recorder;

/// A current-thread runtime with paused time.
fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime")
}

/// Runs `test` on a paused current-thread runtime with `recorder` as this thread's recorder.
fn with_recorder(recorder: &DebuggingRecorder, test: impl std::future::Future<Output = ()>) {
    let runtime = paused_runtime();
    metrics::with_local_recorder(recorder, || runtime.block_on(test));
}

async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[test]
fn every_metric_is_recorded_with_its_name_outcome_and_reason() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let mut seen = BTreeMap::new();
    with_recorder(&recorder, async {
        let supervisor = TaskSupervisor::builder()
            .shutdown_timeout(Duration::from_secs(1))
            .cancel_grace(Duration::from_secs(1))
            .max_tasks(6)
            .build();
        supervisor
            .task("resize")
            .spawn(tokio::time::sleep(Duration::from_secs(2)))
            .unwrap();
        supervisor
            .task("resize")
            .spawn(async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                panic!("no such image");
            })
            .unwrap();
        supervisor.spawn(async {}).unwrap();
        let aborted = supervisor.spawn(pending::<()>()).unwrap();
        supervisor.task("stuck").spawn(pending::<()>()).unwrap();
        supervisor
            .task("polite")
            .spawn_with(|ctx| async move { ctx.cancelled().await })
            .unwrap();
        assert!(matches!(
            supervisor.spawn(async {}),
            Err(SpawnError::AtCapacity { limit: 6 })
        ));
        settle().await;
        aborted.abort();
        tokio::time::sleep(Duration::from_secs(3)).await;

        supervisor.record_metrics();
        let metrics = recorded(&snapshotter, &mut seen);
        assert_eq!(gauge(metrics, "background_tasks_running{}"), 2.0);
        assert_eq!(gauge(metrics, "background_tasks_oldest_age_seconds{}"), 3.0);

        let report = supervisor.shutdown().await;
        assert_eq!((report.cancelled(), report.aborted()), (1, 1));
        assert!(matches!(
            supervisor.spawn(async {}),
            Err(SpawnError::ShuttingDown)
        ));
        supervisor.record_metrics();
    });

    let metrics = recorded(&snapshotter, &mut seen);
    for (key, value) in [
        ("background_tasks_spawned_total{name=resize}", 2),
        ("background_tasks_spawned_total{name=unnamed}", 2),
        ("background_tasks_spawned_total{name=stuck}", 1),
        ("background_tasks_spawned_total{name=polite}", 1),
        (
            "background_tasks_finished_total{name=resize,outcome=completed}",
            1,
        ),
        (
            "background_tasks_finished_total{name=resize,outcome=panicked}",
            1,
        ),
        (
            "background_tasks_finished_total{name=unnamed,outcome=completed}",
            1,
        ),
        (
            "background_tasks_finished_total{name=unnamed,outcome=aborted}",
            1,
        ),
        (
            "background_tasks_finished_total{name=stuck,outcome=aborted}",
            1,
        ),
        (
            "background_tasks_finished_total{name=polite,outcome=cancelled}",
            1,
        ),
        ("background_tasks_refused_total{reason=at_capacity}", 1),
        ("background_tasks_refused_total{reason=shutting_down}", 1),
    ] {
        assert_eq!(counter(metrics, key), value, "{key}");
    }
    let finished = metrics
        .keys()
        .filter(|key| key.starts_with("background_tasks_finished_total"))
        .count();
    assert_eq!(finished, 6, "no other outcome: {metrics:#?}");
    let mut resize = histogram(metrics, "background_tasks_duration_seconds{name=resize}");
    resize.sort_by(f64::total_cmp);
    assert_eq!(resize, [0.5, 2.0]);
    // The stuck task ran from 0 until the abort at 1 s into the shutdown, at 4 s.
    assert_eq!(
        histogram(metrics, "background_tasks_duration_seconds{name=stuck}"),
        [4.0]
    );
    assert_eq!(gauge(metrics, "background_tasks_running{}"), 0.0);
    assert_eq!(gauge(metrics, "background_tasks_oldest_age_seconds{}"), 0.0);
}

/// A blocking task still on its thread when the budget runs out is abandoned: counted so when
/// its thread returns.
#[test]
fn a_blocking_task_abandoned_by_shutdown_is_counted_when_its_thread_returns() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // The blocking thread records through the global recorder: this test alone installs it,
    // and reads only its own task's name.
    let _ = recorder.install();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (started, start) = std::sync::mpsc::channel();
    runtime.block_on(async {
        let supervisor = TaskSupervisor::builder()
            .shutdown_timeout(Duration::from_millis(50))
            .cancel_grace(Duration::ZERO)
            .build();
        let handle = supervisor
            .task("hog-abandoned")
            .spawn_blocking(move || {
                started.send(()).unwrap();
                let _ = released.recv();
            })
            .unwrap();
        start.recv().unwrap();
        assert_eq!(supervisor.shutdown().await.abandoned(), 1);
        // Its thread returns after the report.
        release.send(()).unwrap();
        handle.await.unwrap();
    });
    let mut seen = BTreeMap::new();
    let metrics = recorded(&snapshotter, &mut seen);
    assert_eq!(
        counter(
            metrics,
            "background_tasks_finished_total{name=hog-abandoned,outcome=abandoned}"
        ),
        1
    );
}

#[test]
fn names_past_the_limit_share_the_other_label_and_a_warning_says_why() {
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Log {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let log = Log::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let log = log.clone();
            move || log.clone()
        })
        .with_ansi(false)
        .finish();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    tracing::subscriber::with_default(subscriber, || {
        with_recorder(&recorder, async {
            let supervisor = TaskSupervisor::new();
            for i in 0..METRIC_NAMES_LIMIT + 5 {
                supervisor.task(format!("job-{i}")).spawn(async {}).unwrap();
            }
            // A name seen before the limit keeps its label, given as text or as a literal.
            supervisor.task("job-0").spawn(async {}).unwrap();
            supervisor
                .task(String::from("job-0"))
                .spawn(async {})
                .unwrap();
            // A literal first seen past the limit shares `other`, each time.
            for _ in 0..2 {
                supervisor
                    .task("a-literal-too-many")
                    .spawn(async {})
                    .unwrap();
            }
            settle().await;
        });
    });
    let mut seen = BTreeMap::new();
    let metrics = recorded(&snapshotter, &mut seen);
    assert_eq!(
        counter(metrics, "background_tasks_spawned_total{name=other}"),
        7
    );
    assert_eq!(
        counter(metrics, "background_tasks_spawned_total{name=job-0}"),
        3
    );
    let spawned = metrics
        .keys()
        .filter(|key| key.starts_with("background_tasks_spawned_total"))
        .count();
    assert_eq!(spawned, METRIC_NAMES_LIMIT + 1);
    let log = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert_eq!(log.matches("WARN").count(), 1, "{log}");
    assert!(log.contains("never with ids or user input"), "{log}");
}

#[test]
fn each_name_counts_under_its_own_label_however_it_is_given() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    with_recorder(&recorder, async {
        let supervisor = TaskSupervisor::new();
        // The same text as a literal at another address, as another crate's literal may be.
        let mail: &'static str = String::from("mail").leak();
        for _ in 0..2 {
            supervisor.task("job").spawn(async {}).unwrap();
            supervisor.task("mail").spawn(async {}).unwrap();
            supervisor.task(mail).spawn(async {}).unwrap();
            supervisor
                .task(String::from("job"))
                .spawn(async {})
                .unwrap();
            supervisor.task("resize").spawn(async {}).unwrap();
            supervisor.spawn(async {}).unwrap();
        }
        settle().await;
    });
    let mut seen = BTreeMap::new();
    let metrics = recorded(&snapshotter, &mut seen);
    for (name, count) in [("job", 4), ("mail", 4), ("resize", 2), ("unnamed", 2)] {
        assert_eq!(
            counter(
                metrics,
                &format!("background_tasks_spawned_total{{name={name}}}")
            ),
            count,
            "{name}"
        );
        assert_eq!(
            counter(
                metrics,
                &format!("background_tasks_finished_total{{name={name},outcome=completed}}")
            ),
            count,
            "{name}"
        );
        assert_eq!(
            histogram(
                metrics,
                &format!("background_tasks_duration_seconds{{name={name}}}")
            )
            .len(),
            count as usize,
            "{name}"
        );
    }
}

#[test]
fn timeouts_queue_refusals_and_waiting_tasks_are_recorded() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    with_recorder(&recorder, async {
        let supervisor = TaskSupervisor::builder()
            .limit("send-mail", background_tasks::Limit::new(1).queue(1))
            .build();
        let timed = supervisor
            .task("call-upstream")
            .timeout(Duration::from_secs(2))
            .spawn(pending::<()>())
            .unwrap();
        supervisor.task("send-mail").spawn(pending::<()>()).unwrap();
        supervisor.task("send-mail").spawn(pending::<()>()).unwrap();
        let refused = supervisor.task("send-mail").spawn(async {});
        assert_eq!(
            refused.unwrap_err(),
            SpawnError::QueueFull { limit: 1, queue: 1 }
        );
        settle().await;
        supervisor.record_metrics();
        let mut seen = BTreeMap::new();
        let metrics = recorded(&snapshotter, &mut seen);
        assert_eq!(
            gauge(metrics, "background_tasks_waiting{name=send-mail}"),
            1.0
        );
        assert_eq!(
            counter(metrics, "background_tasks_refused_total{reason=queue_full}"),
            1
        );
        assert!(timed.await.unwrap_err().is_timeout());
        let metrics = recorded(&snapshotter, &mut seen);
        assert_eq!(
            counter(
                metrics,
                "background_tasks_finished_total{name=call-upstream,outcome=timed_out}"
            ),
            1
        );
    });
}

/// The supervisor keeps the handles its recorder gave for each name, but a handle records
/// only into the recorder that gave it: each task's metrics go to the recorder in place when
/// it spawns and when it ends, whichever recorded before.
#[test]
fn each_task_records_into_the_recorder_in_place_as_it_spawns_and_ends() {
    let runtime = paused_runtime();
    let supervisor = TaskSupervisor::new();
    let run = |count: usize| {
        runtime.block_on(async {
            for _ in 0..count {
                supervisor.task("job").spawn(async {}).unwrap();
            }
            supervisor.spawn(async {}).unwrap();
            settle().await;
        });
    };
    // No recorder yet: these go to the no-op recorder.
    run(1);
    let (first, second) = (DebuggingRecorder::new(), DebuggingRecorder::new());
    metrics::with_local_recorder(&first, || run(2));
    metrics::with_local_recorder(&second, || run(1));
    metrics::with_local_recorder(&first, || run(4));
    for (recorder, jobs, unnamed) in [(&first, 6, 2), (&second, 1, 1)] {
        let mut seen = BTreeMap::new();
        let metrics = recorded(&recorder.snapshotter(), &mut seen);
        assert_eq!(
            counter(metrics, "background_tasks_spawned_total{name=job}"),
            jobs
        );
        assert_eq!(
            counter(
                metrics,
                "background_tasks_finished_total{name=job,outcome=completed}"
            ),
            jobs
        );
        assert_eq!(
            histogram(metrics, "background_tasks_duration_seconds{name=job}").len(),
            jobs as usize
        );
        assert_eq!(
            counter(metrics, "background_tasks_spawned_total{name=unnamed}"),
            unnamed
        );
        assert_eq!(
            counter(
                metrics,
                "background_tasks_finished_total{name=unnamed,outcome=completed}"
            ),
            unnamed
        );
    }
}

/// A task that spawns under one recorder and ends under another counts its end in the second.
#[test]
fn a_task_that_ends_under_another_recorder_counts_its_end_there() {
    let runtime = paused_runtime();
    let supervisor = TaskSupervisor::new();
    let (first, second) = (DebuggingRecorder::new(), DebuggingRecorder::new());
    let handle = metrics::with_local_recorder(&first, || {
        runtime.block_on(async {
            // One that ends here first, so that `first` gave a handle for the end too.
            supervisor.task("job").spawn(async {}).unwrap();
            settle().await;
        });
        let _runtime = runtime.enter();
        supervisor
            .task("job")
            .spawn(tokio::time::sleep(Duration::from_secs(1)))
            .unwrap()
    });
    metrics::with_local_recorder(&second, || runtime.block_on(handle)).unwrap();
    let (mut first_seen, mut second_seen) = (BTreeMap::new(), BTreeMap::new());
    let first = recorded(&first.snapshotter(), &mut first_seen);
    let second = recorded(&second.snapshotter(), &mut second_seen);
    assert_eq!(
        counter(first, "background_tasks_spawned_total{name=job}"),
        2
    );
    assert_eq!(
        counter(
            first,
            "background_tasks_finished_total{name=job,outcome=completed}"
        ),
        1
    );
    assert_eq!(
        histogram(first, "background_tasks_duration_seconds{name=job}"),
        [0.0]
    );
    assert_eq!(
        counter(
            second,
            "background_tasks_finished_total{name=job,outcome=completed}"
        ),
        1
    );
    assert_eq!(
        histogram(second, "background_tasks_duration_seconds{name=job}"),
        [1.0]
    );
}
