//! `TaskSupervisor::snapshot`: the running tasks, their counts by name, and the counters, with
//! exact values under paused time.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::time::Duration;

use background_tasks::{
    Counters, RECENT_FAILURES, SpawnError, SupervisorPhase, TaskKind, TaskSupervisor,
};
use tokio::time::sleep;

/// The counts of spawns and of each outcome, in the order of `Counters`' fields.
fn outcomes(counters: &Counters) -> [u64; 6] {
    [
        counters.spawned,
        counters.completed,
        counters.panicked,
        counters.cancelled,
        counters.aborted,
        counters.abandoned,
    ]
}

/// Moves the paused clock on by `by` and lets the woken tasks run: with a blocking task in
/// flight, tokio does not advance a paused clock by itself.
async fn advance(by: Duration) {
    tokio::time::advance(by).await;
    settle().await;
}

/// Lets the spawned tasks run until they all suspend again, without moving the paused clock.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn snapshot_lists_running_tasks_oldest_first_with_name_kind_age_and_counts_by_name() {
    let supervisor = TaskSupervisor::new();
    let first = supervisor
        .task("resize")
        .spawn(std::future::pending::<()>())
        .unwrap();
    sleep(Duration::from_secs(1)).await;
    supervisor
        .task("resize")
        .spawn(std::future::pending::<()>())
        .unwrap();
    supervisor.spawn(std::future::pending::<()>()).unwrap();
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let blocking = supervisor
        .task("checksum")
        .spawn_blocking(move || {
            started_tx.send(()).unwrap();
            release_rx.recv().unwrap();
        })
        .unwrap();
    started_rx.recv().unwrap();
    settle().await;
    advance(Duration::from_secs(2)).await;

    let snapshot = supervisor.snapshot();
    assert_eq!(snapshot.phase, SupervisorPhase::Running);
    assert_eq!(snapshot.running, 4);
    let listed: Vec<_> = snapshot
        .tasks
        .iter()
        .map(|task| (task.name.as_deref(), task.kind, task.started, task.age))
        .collect();
    assert_eq!(
        listed,
        [
            (
                Some("resize"),
                TaskKind::Async,
                true,
                Duration::from_secs(3)
            ),
            (
                Some("resize"),
                TaskKind::Async,
                true,
                Duration::from_secs(2)
            ),
            (None, TaskKind::Async, true, Duration::from_secs(2)),
            (
                Some("checksum"),
                TaskKind::Blocking,
                true,
                Duration::from_secs(2)
            ),
        ]
    );
    assert_eq!(snapshot.tasks[0].id, first.id());
    assert_eq!(snapshot.tasks[3].id, blocking.id());
    assert_eq!(snapshot.oldest_age, Some(Duration::from_secs(3)));
    let by_name: Vec<_> = snapshot
        .by_name
        .iter()
        .map(|count| (count.name.as_deref(), count.running, count.oldest_age))
        .collect();
    let secs = Duration::from_secs;
    assert_eq!(
        by_name,
        [
            (Some("resize"), 2, secs(3)),
            (None, 1, secs(2)),
            (Some("checksum"), 1, secs(2)),
        ]
    );
    assert!(snapshot.shutdown.is_none());
    assert_eq!(snapshot.counters.spawned, 4);
    assert_eq!(snapshot.counters.completed, 0);

    release_tx.send(()).unwrap();
    blocking.await.unwrap();
    let snapshot = supervisor.snapshot();
    assert_eq!(snapshot.running, 3);
    assert_eq!(snapshot.counters.completed, 1);
    assert!(
        snapshot
            .tasks
            .iter()
            .all(|task| task.kind == TaskKind::Async)
    );
}

#[tokio::test(start_paused = true)]
async fn a_task_that_never_suspended_is_counted_but_not_listed() {
    let supervisor = TaskSupervisor::new();
    supervisor.spawn(std::future::pending::<()>()).unwrap();
    // Queued for its first poll: this task has not yielded yet.
    let snapshot = supervisor.snapshot();
    assert_eq!(snapshot.running, 1);
    assert!(snapshot.tasks.is_empty());
    assert_eq!(snapshot.oldest_age, None);
    settle().await;
    assert_eq!(supervisor.snapshot().tasks.len(), 1);
}

/// Every outcome at once, through a whole shutdown: 2 tasks complete while running and 1 more
/// during the drain, 1 panics while running and 1 during the drain, 1 is aborted through its
/// handle, 1 without a context is aborted when the drain runs out, 1 with a context ends at
/// the cancellation signal, and 1 blocking task is abandoned on its thread.
#[tokio::test(start_paused = true)]
async fn counters_count_every_outcome_exactly_through_a_shutdown() {
    let supervisor = TaskSupervisor::builder()
        .shutdown_timeout(Duration::from_secs(2))
        .cancel_grace(Duration::from_secs(1))
        .build();
    let spawn_panic = |after: u64| {
        supervisor
            .task("explodes")
            .spawn(async move {
                sleep(Duration::from_millis(after)).await;
                panic!("boom");
            })
            .unwrap()
    };
    supervisor.spawn(async {}).unwrap();
    supervisor.spawn(sleep(Duration::from_millis(100))).unwrap();
    spawn_panic(100);
    let aborted = supervisor.spawn(std::future::pending::<()>()).unwrap();
    supervisor
        .task("stuck")
        .spawn(std::future::pending::<()>())
        .unwrap();
    supervisor
        .task("polite")
        .spawn_with(|ctx| async move { ctx.cancelled().await })
        .unwrap();
    supervisor
        .task("slow")
        .spawn(sleep(Duration::from_millis(1_500)))
        .unwrap();
    spawn_panic(1_000);
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    supervisor
        .task("hog")
        .spawn_blocking(move || {
            started_tx.send(()).unwrap();
            let _ = release_rx.recv();
        })
        .unwrap();
    started_rx.recv().unwrap();
    // Every task starts its timers at 0.
    settle().await;
    advance(Duration::from_millis(500)).await;
    aborted.abort();
    settle().await;

    let running = supervisor.snapshot();
    assert_eq!(running.running, 5);
    assert_eq!(
        outcomes(&running.counters),
        // spawned, completed, panicked, cancelled, aborted, abandoned
        [9, 2, 1, 0, 1, 0]
    );

    let shutdown = tokio::spawn({
        let supervisor = supervisor.clone();
        async move { supervisor.shutdown().await }
    });
    settle().await;
    advance(Duration::from_millis(1_200)).await;
    let draining = supervisor.snapshot();
    assert_eq!(draining.phase, SupervisorPhase::Draining);
    let progress = draining.shutdown.expect("shutdown has begun");
    assert_eq!(progress.elapsed, Duration::from_millis(1_200));
    assert_eq!(progress.shutdown_timeout, Duration::from_secs(2));
    assert_eq!(progress.cancel_grace, Duration::from_secs(1));
    assert!(progress.report.is_none());
    // The second panic (at 1 s) and the slow task (at 1.5 s) happened meanwhile.
    assert_eq!(
        (draining.counters.completed, draining.counters.panicked),
        (3, 2)
    );

    while !shutdown.is_finished() {
        advance(Duration::from_millis(10)).await;
    }
    let report = shutdown.await.unwrap();
    assert_eq!(
        (
            report.completed(),
            report.cancelled(),
            report.aborted(),
            report.abandoned()
        ),
        // The report counts the panic during the drain as completed; the snapshot does not.
        (2, 1, 1, 1)
    );
    let done = supervisor.snapshot();
    assert_eq!(done.phase, SupervisorPhase::Finished);
    assert_eq!(
        outcomes(&done.counters),
        // spawned, completed, panicked, cancelled, aborted, abandoned
        [9, 3, 2, 1, 2, 1]
    );
    assert_eq!(
        (
            done.counters.refused_shutting_down,
            done.counters.refused_at_capacity
        ),
        (0, 0)
    );
    let progress = done.shutdown.expect("shutdown has begun");
    assert_eq!(progress.report.as_ref().map(|r| r.abandoned()), Some(1));
    // The abandoned task still runs, and is still listed.
    assert_eq!(done.running, 1);
    assert_eq!(done.tasks[0].name.as_deref(), Some("hog"));
    release_tx.send(()).unwrap();
}

#[tokio::test(start_paused = true)]
async fn refused_spawns_are_counted_by_reason() {
    let supervisor = TaskSupervisor::builder().max_tasks(1).build();
    supervisor.spawn(std::future::pending::<()>()).unwrap();
    for _ in 0..2 {
        assert!(matches!(
            supervisor.spawn(async {}),
            Err(SpawnError::AtCapacity { limit: 1 })
        ));
    }
    let report = supervisor.shutdown_now().await;
    assert_eq!(report.aborted(), 1);
    assert!(matches!(
        supervisor.spawn(async {}),
        Err(SpawnError::ShuttingDown)
    ));
    let counters = supervisor.snapshot().counters;
    assert_eq!(
        (
            counters.spawned,
            counters.refused_at_capacity,
            counters.refused_shutting_down,
            counters.aborted
        ),
        (1, 2, 1, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_task_whose_closure_panicked_before_it_was_spawned_is_not_counted() {
    let supervisor = TaskSupervisor::new();
    let spawn = catch_unwind(AssertUnwindSafe(|| {
        supervisor.spawn_with(|_ctx| -> std::future::Ready<()> { panic!("bad setup") })
    }));
    assert!(spawn.is_err());
    supervisor.spawn(async {}).unwrap();
    settle().await;
    let counters = supervisor.snapshot().counters;
    assert_eq!((counters.spawned, counters.completed), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn recent_failures_keep_the_last_ones_most_recent_first() {
    let supervisor = TaskSupervisor::new();
    let mut ids = Vec::new();
    for i in 0..RECENT_FAILURES + 8 {
        let handle = supervisor
            .task("<script>alert(1)</script>")
            .spawn(async move { panic!("failure {i}") })
            .unwrap();
        ids.push(handle.id());
        let _ = handle.await;
        sleep(Duration::from_secs(1)).await;
    }
    let snapshot = supervisor.snapshot();
    assert_eq!(snapshot.counters.panicked, (RECENT_FAILURES + 8) as u64);
    let recent = &snapshot.recent_failures;
    assert_eq!(recent.len(), RECENT_FAILURES);
    let last = &recent[0];
    assert_eq!(last.failure.task_id(), *ids.last().unwrap());
    assert_eq!(last.failure.task_name(), Some("<script>alert(1)</script>"));
    assert_eq!(
        last.failure.panic_message(),
        Some(format!("failure {}", RECENT_FAILURES + 7).as_str())
    );
    assert_eq!(last.ago, Duration::from_secs(1));
    assert_eq!(
        recent[RECENT_FAILURES - 1].failure.task_id(),
        ids[8],
        "the oldest ones are forgotten"
    );
}
