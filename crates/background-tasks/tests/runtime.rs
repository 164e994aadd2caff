//! The supervisor against its runtime: shut down, missing timers, dropped mid-shutdown.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use background_tasks::TaskSupervisor;

#[test]
fn spawn_blocking_on_a_runtime_that_has_shut_down_neither_hangs_nor_leaks() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let handle = runtime.handle().clone();
    drop(runtime);
    let supervisor = TaskSupervisor::new();
    let (done, finished) = mpsc::channel();
    std::thread::spawn({
        let supervisor = supervisor.clone();
        move || {
            let _runtime = handle.enter();
            // Tokio drops the closure at once, ending the task while it is being spawned.
            let spawned = supervisor.spawn_blocking(|| ()).map(drop);
            done.send(spawned).unwrap();
        }
    });
    let spawned = finished
        .recv_timeout(Duration::from_secs(10))
        .expect("spawn_blocking returned");
    assert!(spawned.is_ok());
    assert!(
        supervisor.is_empty(),
        "the task that never ran is not counted"
    );
}

#[test]
fn shutdown_without_timers_panics_in_the_caller_and_changes_nothing() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let supervisor = TaskSupervisor::new();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(supervisor.shutdown())
    }));
    assert!(panicked.is_err());
    assert!(!supervisor.is_shutting_down(), "admission is still open");
    runtime.block_on(async { supervisor.spawn(async {}).unwrap().await.unwrap() });
}

#[test]
fn a_shutdown_whose_runtime_ends_still_publishes_its_report() {
    let supervisor = TaskSupervisor::builder()
        .shutdown_timeout(Duration::from_secs(3600))
        .build();
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    first.block_on(async {
        supervisor.spawn(std::future::pending::<()>()).unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(10), supervisor.shutdown()).await;
        assert!(waited.is_err(), "the drain has an hour to go");
    });
    // The driver task dies with its runtime.
    drop(first);
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = second.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), supervisor.shutdown())
            .await
            .expect("the report was written when the driver was dropped")
    });
    assert_eq!(report.completed() + report.aborted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_failure_callback_does_not_lengthen_the_shutdown() {
    const TASKS: usize = 10;
    const CALLBACK: Duration = Duration::from_millis(100);
    let (reported, reports) = mpsc::channel();
    let supervisor = TaskSupervisor::builder()
        .shutdown_timeout(Duration::ZERO)
        .cancel_grace(Duration::ZERO)
        .on_failure(move |failure| {
            std::thread::sleep(CALLBACK);
            reported.send(failure.is_aborted()).unwrap();
        })
        .build();
    for _ in 0..TASKS {
        supervisor.spawn(std::future::pending::<()>()).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let start = Instant::now();
    let report = supervisor.shutdown().await;
    let elapsed = start.elapsed();
    assert_eq!(report.aborted(), TASKS);
    // A tenth of what the callbacks take in all, with room for a loaded machine.
    assert!(elapsed < CALLBACK * TASKS as u32 / 2, "{elapsed:?}");
    let aborted: Vec<bool> = (0..TASKS)
        .map(|_| reports.recv_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    assert!(
        aborted.into_iter().all(|aborted| aborted),
        "every abort is still reported"
    );
}
