//! `track_future`: a future its owner polls, counted as a running task while it lives,
//! drained, signalled and reported by shutdown, which cannot abort it.

mod support;

use std::time::Duration;

use background_tasks::{FailureKind, SpawnError, TaskKind, TaskSupervisor};
use support::Failures;
use tokio::time::{Instant, sleep};

fn recording(shutdown_timeout: Duration, cancel_grace: Duration) -> (TaskSupervisor, Failures) {
    support::recording(
        TaskSupervisor::builder()
            .shutdown_timeout(shutdown_timeout)
            .cancel_grace(cancel_grace),
    )
}

#[tokio::test(start_paused = true)]
async fn a_tracked_future_counts_as_a_running_task_until_it_completes_or_is_dropped() {
    let supervisor = TaskSupervisor::new();
    let tracked = supervisor.task("inline").track_future(async { 7 }).unwrap();
    let snapshot = supervisor.snapshot();
    assert_eq!(supervisor.len(), 1);
    assert_eq!(snapshot.tasks.len(), 1, "named before its first poll");
    assert_eq!(snapshot.tasks[0].id, tracked.id());
    assert_eq!(snapshot.tasks[0].kind, TaskKind::Tracked);
    assert_eq!(snapshot.tasks[0].name.as_deref(), Some("inline"));
    assert_eq!(tracked.await, 7);
    assert!(supervisor.is_empty());

    // Dropped unfinished by its owner, as a losing `select!` branch is: no failure.
    let dropped = supervisor
        .track_future(std::future::pending::<()>())
        .unwrap();
    tokio::select! {
        () = dropped => unreachable!(),
        () = sleep(Duration::from_millis(10)) => {}
    }
    assert!(supervisor.is_empty());
    let counters = supervisor.snapshot().counters;
    assert_eq!(
        (counters.spawned, counters.completed),
        (2, 2),
        "{counters:?}"
    );
    assert_eq!(counters.aborted, 0, "{counters:?}");
    assert!(supervisor.shutdown().await.is_clean());
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_a_tracked_future_while_its_owner_polls_it() {
    let supervisor = TaskSupervisor::builder()
        .shutdown_timeout(Duration::from_secs(5))
        .build();
    let started = Instant::now();
    let work = supervisor
        .track_future(async {
            sleep(Duration::from_secs(2)).await;
            "saved"
        })
        .unwrap();
    let (saved, report) = tokio::join!(work, supervisor.shutdown());
    assert_eq!(saved, "saved");
    assert_eq!(report.completed(), 1, "{report}");
    assert!(report.is_clean(), "{report}");
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(2),
        "waited for it, no longer"
    );
}

#[tokio::test(start_paused = true)]
async fn a_tracked_future_with_a_context_sees_the_cancellation_signal_and_gets_the_grace() {
    let supervisor = TaskSupervisor::builder()
        .shutdown_timeout(Duration::from_secs(1))
        .cancel_grace(Duration::from_secs(1))
        .build();
    let work = supervisor
        .task("listens")
        .track_future_with(|ctx| async move {
            ctx.cancelled().await;
            // Wraps up within the grace.
            sleep(Duration::from_millis(300)).await;
            ctx.is_cancelled()
        })
        .unwrap();
    let (cancelled, report) = tokio::join!(work, supervisor.shutdown());
    assert!(cancelled);
    assert_eq!(report.cancelled(), 1, "{report}");
    assert_eq!(report.elapsed(), Duration::from_millis(1_300), "{report}");
}

#[tokio::test(start_paused = true)]
async fn a_tracked_future_alive_at_the_abort_is_reported_abandoned_and_runs_on() {
    let (supervisor, failures) = recording(Duration::from_secs(1), Duration::from_secs(1));
    let plain = supervisor
        .task("slow-inline")
        .track_future(async {
            sleep(Duration::from_secs(10)).await;
            "finished anyway"
        })
        .unwrap();
    let with_context = supervisor
        .task("ignores-the-signal")
        .track_future_with(|_ctx| sleep(Duration::from_secs(10)))
        .unwrap();
    // Never polled at all: still named, since it registers when it is made.
    let never_polled = supervisor
        .task("never-polled")
        .track_future(async {})
        .unwrap();
    let owner = tokio::spawn(async move { tokio::join!(plain, with_context).0 });
    let started = Instant::now();
    let report = supervisor.shutdown().await;
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(2),
        "not waited for past the budget"
    );
    let mut abandoned: Vec<_> = report
        .abandoned_tasks()
        .iter()
        .filter_map(|task| task.name())
        .collect();
    abandoned.sort_unstable();
    assert_eq!(
        abandoned,
        ["ignores-the-signal", "never-polled", "slow-inline"],
        "{report}"
    );
    assert_eq!(report.aborted(), 0, "nothing could abort them: {report}");
    assert_eq!(
        report.abandoned(),
        3,
        "each by name, none merely counted: {report}"
    );
    assert_eq!(supervisor.len(), 3, "still counted while they live");

    // Their owners still run them.
    assert_eq!(owner.await.unwrap(), "finished anyway");
    never_polled.await;
    assert!(supervisor.is_empty());
    assert!(
        report
            .abandoned_tasks()
            .iter()
            .all(|task| task.is_tracked())
    );
    assert!(report.to_string().contains("tracked)"), "{report}");
    let failures = failures.lock().unwrap();
    assert_eq!(failures.len(), 3, "{failures:?}");
    assert!(
        failures
            .iter()
            .all(|failure| failure.kind() == FailureKind::Abandoned)
    );
    assert!(
        failures[0].to_string().contains("tracked future"),
        "says why nothing could stop it: {}",
        failures[0]
    );
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_a_tracked_future_is_reported_then_unwinds_to_its_owner() {
    let (supervisor, failures) = recording(Duration::from_secs(1), Duration::ZERO);
    let tracked = supervisor
        .task("panics-inline")
        .track_future(async { panic!("inline boom") })
        .unwrap();
    let owner = tokio::spawn(tracked).await.unwrap_err();
    assert!(owner.is_panic(), "the owner sees the panic");
    assert!(supervisor.is_empty());
    let failures = failures.lock().unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].kind(), FailureKind::Panic);
    assert_eq!(failures[0].task_name(), Some("panics-inline"));
    assert_eq!(failures[0].panic_message(), Some("inline boom"));
    assert_eq!(supervisor.snapshot().counters.panicked, 1);
}

#[tokio::test(start_paused = true)]
async fn track_future_is_admitted_and_refused_as_any_spawn() {
    let supervisor = TaskSupervisor::builder().max_tasks(1).build();
    let held = supervisor.track_future(async {}).unwrap();
    assert!(matches!(
        supervisor.track_future(async {}),
        Err(SpawnError::AtCapacity { limit: 1 })
    ));
    drop(held);
    assert!(
        supervisor.track_future(async {}).is_ok(),
        "its place is back"
    );
    let supervisor = TaskSupervisor::new();
    supervisor
        .spawn_with(|ctx| async move {
            ctx.shutdown_started().await;
            // A task's follow-ups, tracked ones too, are accepted during the drain.
            ctx.track_future(sleep(Duration::from_millis(10)))
                .unwrap()
                .await;
        })
        .unwrap();
    let (report, refused) = tokio::join!(supervisor.shutdown(), async {
        supervisor.track_future(async {}).map(drop)
    });
    assert!(matches!(refused, Err(SpawnError::ShuttingDown)));
    assert_eq!(report.completed(), 2, "{report}");
}
