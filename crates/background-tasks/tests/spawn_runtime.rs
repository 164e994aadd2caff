//! `SupervisorBuilder::runtime`: every task runs on the runtime set on the builder, whatever
//! runtime or thread spawns it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use background_tasks::TaskSupervisor;
use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// What an actix-web worker does: spawn from a single-thread runtime of its own, which ends
/// (and would drop its tasks) before the supervisor's shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_spawned_from_a_runtime_that_ends_runs_to_completion_on_the_configured_one() {
    let supervisor = TaskSupervisor::builder()
        .runtime(Handle::current())
        .shutdown_timeout(Duration::from_secs(30))
        .build();
    let done = Arc::new(AtomicBool::new(false));
    let (finish, finished) = oneshot::channel::<()>();
    let spawner = supervisor.clone();
    let task_done = done.clone();
    std::thread::spawn(move || {
        let worker = Builder::new_current_thread().enable_all().build().unwrap();
        worker.block_on(async move {
            spawner
                .task("outlives-its-spawner")
                .spawn(async move {
                    let _ = finished.await;
                    task_done.store(true, Ordering::SeqCst);
                })
                .unwrap();
        });
        // The spawning runtime ends here, with every task it holds.
        drop(worker);
    })
    .join()
    .unwrap();

    assert_eq!(
        supervisor.len(),
        1,
        "the task survived its spawner's runtime"
    );
    // The shutdown begins (polled first), then the task is let go: it ends in the drain.
    let (report, ()) = tokio::join!(supervisor.shutdown(), async move {
        finish.send(()).unwrap();
    });
    assert!(done.load(Ordering::SeqCst), "the task ran to its end");
    assert_eq!(report.completed(), 1, "{report}");
    assert!(report.is_clean(), "{report}");
}

#[test]
fn spawn_and_spawn_blocking_need_no_current_runtime_when_one_is_configured() {
    let runtime = Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let supervisor = TaskSupervisor::builder()
        .runtime(runtime.handle().clone())
        .build();
    // A plain thread, no runtime entered: the task goes to the configured runtime.
    let asynchronous = supervisor.spawn(async { 1 }).unwrap();
    let blocking = supervisor.spawn_blocking(|| 2).unwrap();
    let (a, b) = runtime.block_on(async { (asynchronous.await, blocking.await) });
    assert_eq!((a.unwrap(), b.unwrap()), (1, 2));
    assert!(runtime.block_on(supervisor.shutdown()).is_clean());
}

#[test]
fn the_configured_runtime_is_reported_by_the_getter() {
    let runtime = Builder::new_current_thread().build().unwrap();
    let supervisor = TaskSupervisor::builder()
        .runtime(runtime.handle().clone())
        .build();
    assert_eq!(
        supervisor.runtime().map(Handle::id),
        Some(runtime.handle().id())
    );
    assert!(TaskSupervisor::new().runtime().is_none());
}
