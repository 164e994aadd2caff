//! The `metrics` feature with a global recorder installed after the supervisor was built and
//! had recorded (into the no-op recorder), as an app that builds its supervisor before its
//! exporter does (the quickstart is one). Its own test binary: a process installs one global
//! recorder at most.

use std::collections::BTreeMap;

use background_tasks::TaskSupervisor;
use metrics_util::debugging::DebuggingRecorder;
use recorder::{counter, histogram, recorded};

#[allow(unreachable_pub, dead_code)]
#[path = "../../../tests/src/recorder.rs"]
mod recorder;

#[test]
fn a_global_recorder_installed_after_tasks_ran_gets_every_later_task() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let supervisor = TaskSupervisor::new();
    let run = |count: u64| {
        runtime.block_on(async {
            let handles: Vec<_> = (0..count)
                .map(|_| supervisor.task("job").spawn(async {}).unwrap())
                .collect();
            for handle in handles {
                handle.await.unwrap();
            }
        });
    };
    // Before any recorder: recorded into the no-op recorder, on the workers and here.
    run(3);
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only global recorder of this process");
    run(5);
    let mut seen = BTreeMap::new();
    let metrics = recorded(&snapshotter, &mut seen);
    assert_eq!(
        counter(metrics, "background_tasks_spawned_total{name=job}"),
        5
    );
    assert_eq!(
        counter(
            metrics,
            "background_tasks_finished_total{name=job,outcome=completed}"
        ),
        5
    );
    assert_eq!(
        histogram(metrics, "background_tasks_duration_seconds{name=job}").len(),
        5
    );
}
