//! `TaskBuilder::spawn_when_ready`: a spawn that waits for room (under its name's limit and
//! under `max_tasks`) instead of queueing or being refused, fails at once when shutdown
//! begins, and is cancel safe, under paused time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use background_tasks::{SpawnError, TaskSupervisor};
use tokio::time::{Instant, sleep};

const WORK: Duration = Duration::from_secs(1);

/// A future that records whether it was ever polled.
fn watched() -> (Arc<AtomicBool>, impl Future<Output = ()> + Send + 'static) {
    let polled = Arc::new(AtomicBool::new(false));
    let future = {
        let polled = polled.clone();
        async move { polled.store(true, Ordering::SeqCst) }
    };
    (polled, future)
}

#[tokio::test(start_paused = true)]
async fn it_waits_for_a_place_under_the_name_s_limit_without_queueing_a_task() {
    let supervisor = TaskSupervisor::builder().limit("import-row", 1).build();
    supervisor.task("import-row").spawn(sleep(WORK)).unwrap();
    let start = Instant::now();
    let waiter = tokio::spawn({
        let supervisor = supervisor.clone();
        async move {
            supervisor
                .task("import-row")
                .spawn_when_ready(async { 7 })
                .await
        }
    });
    sleep(WORK / 2).await;
    // The caller waits, not a task: nothing was admitted for it.
    assert_eq!((supervisor.len(), supervisor.snapshot().waiting), (1, 0));
    let handle = waiter.await.unwrap().unwrap();
    assert_eq!(start.elapsed(), WORK, "spawned as soon as the first ended");
    assert_eq!(handle.await.unwrap(), 7);
}

#[tokio::test(start_paused = true)]
async fn it_waits_for_room_under_max_tasks() {
    let supervisor = TaskSupervisor::builder().max_tasks(2).build();
    supervisor.spawn(sleep(WORK)).unwrap();
    supervisor.spawn(sleep(WORK * 3)).unwrap();
    let start = Instant::now();
    let handle = supervisor
        .task("next")
        .spawn_when_ready(async { "ran" })
        .await
        .unwrap();
    assert_eq!(start.elapsed(), WORK, "room as soon as one ended");
    assert_eq!(handle.await.unwrap(), "ran");
    // Without a wait, the same spawn is refused.
    supervisor.spawn(sleep(WORK * 3)).unwrap();
    assert_eq!(
        supervisor.spawn(async {}).unwrap_err(),
        SpawnError::AtCapacity { limit: 2 }
    );
}

/// Starts a `spawn_when_ready` of a watched future, named `name`, that has to wait, then
/// shuts the supervisor down: the wait fails at once, and the future never runs.
async fn shutdown_while_waiting(supervisor: TaskSupervisor, name: &'static str) {
    let (polled, future) = watched();
    let waiter = tokio::spawn({
        let supervisor = supervisor.clone();
        async move { supervisor.task(name).spawn_when_ready(future).await }
    });
    sleep(WORK).await;
    assert!(!waiter.is_finished(), "it waits");
    let start = Instant::now();
    let shutdown = tokio::spawn({
        let supervisor = supervisor.clone();
        async move { supervisor.shutdown().await }
    });
    let refused = waiter.await.expect("the waiter").map(drop);
    assert_eq!(refused, Err(SpawnError::ShuttingDown));
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "at once, not after the budget"
    );
    assert!(!polled.load(Ordering::SeqCst));
    assert!(shutdown.await.expect("the shutdown").aborted() >= 1);
    // Once shut down, it fails at once too.
    let (_, future) = watched();
    let refused = supervisor.task(name).spawn_when_ready(future).await;
    assert_eq!(refused.map(drop), Err(SpawnError::ShuttingDown));
}

#[tokio::test(start_paused = true)]
async fn it_fails_at_once_with_shutting_down_when_shutdown_begins_while_it_waits_for_room() {
    let supervisor = TaskSupervisor::builder()
        .max_tasks(1)
        .shutdown_timeout(Duration::from_secs(30))
        .cancel_grace(Duration::ZERO)
        .build();
    supervisor.spawn(std::future::pending::<()>()).unwrap();
    shutdown_while_waiting(supervisor, "any").await;
}

#[tokio::test(start_paused = true)]
async fn it_fails_at_once_with_shutting_down_when_shutdown_begins_while_it_waits_for_a_place() {
    let supervisor = TaskSupervisor::builder()
        .limit("limited", 1)
        .shutdown_timeout(Duration::from_secs(30))
        .cancel_grace(Duration::ZERO)
        .build();
    supervisor
        .task("limited")
        .spawn(std::future::pending::<()>())
        .unwrap();
    shutdown_while_waiting(supervisor, "limited").await;
}

#[tokio::test(start_paused = true)]
async fn it_is_cancel_safe_a_dropped_wait_spawns_nothing_and_keeps_no_place() {
    let supervisor = TaskSupervisor::builder().limit("job", 1).build();
    supervisor.task("job").spawn(sleep(WORK)).unwrap();
    let (polled, future) = watched();
    tokio::select! {
        _ = supervisor.task("job").spawn_when_ready(future) => unreachable!("no place yet"),
        () = sleep(WORK / 2) => {}
    }
    assert_eq!(supervisor.len(), 1, "nothing admitted");
    // A task queued behind the dropped wait gets the place as soon as it is free.
    let start = Instant::now();
    let next = supervisor.task("job").spawn(async { 2 }).unwrap();
    assert_eq!(next.await.unwrap(), 2);
    assert_eq!(start.elapsed(), WORK / 2);
    assert!(
        !polled.load(Ordering::SeqCst),
        "the dropped future never ran"
    );
    assert_eq!(supervisor.snapshot().counters.spawned, 2);
}

#[tokio::test(start_paused = true)]
async fn a_task_waiting_through_its_context_may_spawn_during_the_drain() {
    let supervisor = TaskSupervisor::builder()
        .max_tasks(2)
        .shutdown_timeout(Duration::from_secs(30))
        .build();
    supervisor.spawn(sleep(WORK * 2)).unwrap();
    let parent = supervisor
        .spawn_with(|ctx| async move {
            ctx.shutdown_started().await;
            // The parent and the sleeper fill `max_tasks`: the follow-up waits for the
            // sleeper, during the drain.
            ctx.task("follow-up")
                .spawn_when_ready(async { "done" })
                .await
                .unwrap()
                .await
                .unwrap()
        })
        .unwrap();
    sleep(WORK).await;
    let report = supervisor.shutdown().await;
    assert_eq!(report.completed(), 3, "{report}");
    assert_eq!(parent.await.unwrap(), "done");
}
