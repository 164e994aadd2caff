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

/// A runtime of its own, with one worker and blocking threads named `name`.
fn other_runtime(name: &str) -> tokio::runtime::Runtime {
    Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("a runtime")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn spawn_on_runs_each_form_on_the_runtime_given_rather_than_the_configured_one() {
    let other = other_runtime("other-runtime");
    let supervisor = TaskSupervisor::builder().runtime(Handle::current()).build();
    let here = || Handle::current().id();
    let on = other.handle();
    let plain = supervisor.spawn_on(async move { here() }, on).unwrap();
    let named = supervisor
        .task("named")
        .spawn_on(async move { here() }, on)
        .unwrap();
    let with = supervisor
        .task("with-context")
        .spawn_with_on(
            |ctx| async move { (here(), ctx.name().map(str::to_owned)) },
            on,
        )
        .unwrap();
    let thread = || std::thread::current().name().map(str::to_owned);
    let blocking = supervisor.spawn_blocking_on(thread, on).unwrap();
    let blocking_with = supervisor
        .task("blocking-with-context")
        .spawn_blocking_with_on(move |ctx| (thread(), ctx.name().map(str::to_owned)), on)
        .unwrap();
    let follow_up = supervisor
        .spawn_with({
            let on = on.clone();
            move |ctx| async move { ctx.spawn_on(async move { here() }, &on).unwrap().await }
        })
        .unwrap();

    assert_eq!(plain.await.unwrap(), on.id());
    assert_eq!(named.await.unwrap(), on.id());
    assert_eq!(
        with.await.unwrap(),
        (on.id(), Some("with-context".to_owned()))
    );
    assert_eq!(
        blocking.await.unwrap().as_deref(),
        Some("other-runtime"),
        "on the other runtime's blocking pool"
    );
    assert_eq!(
        blocking_with.await.unwrap(),
        (
            Some("other-runtime".to_owned()),
            Some("blocking-with-context".to_owned())
        )
    );
    assert_eq!(follow_up.await.unwrap().unwrap(), on.id());
    assert_eq!(supervisor.snapshot().counters.completed, 7);
    assert!(supervisor.shutdown().await.is_clean());
    other.shutdown_background();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn tasks_spawned_on_another_runtime_are_drained_cancelled_and_aborted_like_the_rest() {
    let other = other_runtime("drained-runtime");
    let supervisor = TaskSupervisor::builder()
        .shutdown_timeout(Duration::from_millis(200))
        .cancel_grace(Duration::from_millis(200))
        .max_tasks(3)
        .build();
    let on = other.handle();
    let finishes = supervisor
        .task("finishes")
        .spawn_on(tokio::time::sleep(Duration::from_millis(50)), on)
        .unwrap();
    supervisor
        .task("stops-when-cancelled")
        .spawn_with_on(|ctx| async move { ctx.cancelled().await }, on)
        .unwrap();
    supervisor
        .task("never-ends")
        .spawn_on(std::future::pending::<()>(), on)
        .unwrap();
    assert!(
        matches!(
            supervisor.spawn_on(async {}, on),
            Err(background_tasks::SpawnError::AtCapacity { limit: 3 })
        ),
        "max_tasks counts them"
    );
    // Registered (suspended) before the shutdown begins.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let report = supervisor.shutdown().await;
    assert!(finishes.is_finished());
    assert_eq!(
        (report.completed(), report.cancelled(), report.aborted()),
        (1, 1, 1),
        "{report}"
    );
    assert_eq!(report.aborted_tasks()[0].name(), Some("never-ends"));
    assert!(matches!(
        supervisor.spawn_on(async {}, on),
        Err(background_tasks::SpawnError::ShuttingDown)
    ));
    other.shutdown_background();
}
