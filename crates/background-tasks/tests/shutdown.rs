//! The phased shutdown: admission, drain, cancel, abort, and the report.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use background_tasks::{SpawnError, TaskSupervisor};
use tokio::time::{Instant, sleep};

fn supervisor(timeout_ms: u64, grace_ms: u64) -> TaskSupervisor {
    TaskSupervisor::builder()
        .shutdown_timeout(Duration::from_millis(timeout_ms))
        .cancel_grace(Duration::from_millis(grace_ms))
        .build()
}

#[tokio::test(start_paused = true)]
async fn admission_closes_as_soon_as_shutdown_begins() {
    let supervisor = supervisor(1_000, 0);
    supervisor.spawn(sleep(Duration::from_millis(500))).unwrap();
    let shutdown = tokio::spawn({
        let supervisor = supervisor.clone();
        async move { supervisor.shutdown().await }
    });
    tokio::task::yield_now().await;
    assert!(supervisor.is_shutting_down());
    assert_eq!(
        supervisor.spawn(async {}).unwrap_err(),
        SpawnError::ShuttingDown
    );
    assert_eq!(
        supervisor.spawn_blocking(|| ()).unwrap_err(),
        SpawnError::ShuttingDown
    );
    let report = shutdown.await.unwrap();
    assert_eq!(report.completed(), 1, "the refused spawns are not counted");
}

#[tokio::test(start_paused = true)]
async fn drain_waits_for_tasks_and_returns_as_soon_as_the_last_one_ends() {
    let supervisor = supervisor(5_000, 1_000);
    let done = Arc::new(AtomicUsize::new(0));
    for ms in [100, 300, 200] {
        let done = done.clone();
        supervisor
            .spawn(async move {
                sleep(Duration::from_millis(ms)).await;
                done.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
    }
    let start = Instant::now();
    let report = supervisor.shutdown().await;
    assert_eq!(done.load(Ordering::SeqCst), 3);
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert_eq!(report.elapsed(), Duration::from_millis(300));
    assert_eq!(
        (
            report.completed(),
            report.cancelled(),
            report.aborted(),
            report.abandoned()
        ),
        (3, 0, 0, 0)
    );
    assert!(report.is_clean());
}

#[tokio::test(start_paused = true)]
async fn cancel_phase_signals_tasks_and_counts_those_that_stop() {
    let supervisor = supervisor(1_000, 500);
    let stopped_at = Arc::new(std::sync::Mutex::new(None));
    supervisor
        .task("cooperative")
        .spawn_with({
            let stopped_at = stopped_at.clone();
            move |ctx| async move {
                ctx.cancelled().await;
                assert!(ctx.is_cancelled());
                *stopped_at.lock().unwrap() = Some(Instant::now());
            }
        })
        .unwrap();
    let start = Instant::now();
    let report = supervisor.shutdown().await;
    assert_eq!(
        stopped_at.lock().unwrap().unwrap() - start,
        Duration::from_millis(1_000),
        "the cancellation signal fires when the drain budget runs out"
    );
    assert_eq!(report.elapsed(), Duration::from_millis(1_000));
    assert_eq!((report.completed(), report.cancelled()), (0, 1));
    assert!(!report.is_clean());
}

/// Tasks spawned without a context cannot see the cancellation signal: they are aborted when
/// the drain runs out, not after the grace (1.5 s here before).
#[tokio::test(start_paused = true)]
async fn tasks_that_ignore_every_signal_are_aborted_when_the_drain_runs_out() {
    let supervisor = supervisor(1_000, 500);
    let dropped = Arc::new(AtomicBool::new(false));
    struct SetOnDrop(Arc<AtomicBool>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let handle = supervisor
        .task("stubborn")
        .spawn({
            let guard = SetOnDrop(dropped.clone());
            async move {
                let _guard = guard;
                std::future::pending::<()>().await;
            }
        })
        .unwrap();
    let unnamed = supervisor.spawn(sleep(Duration::from_secs(3600))).unwrap();
    let start = Instant::now();
    let report = supervisor.shutdown().await;
    assert_eq!(start.elapsed(), Duration::from_millis(1_000));
    assert_eq!(report.aborted(), 2);
    let names: Vec<_> = report.aborted_tasks().iter().map(|t| t.name()).collect();
    assert_eq!(names, [Some("stubborn"), None]);
    assert_eq!(
        report.aborted_tasks()[0].age(),
        Duration::from_millis(1_000)
    );
    let line = report.to_string();
    assert!(
        line.contains("0 completed, 0 cancelled, 2 aborted, 0 abandoned"),
        "{line}"
    );
    assert!(line.contains("stubborn (task 1, 1.0s)"), "{line}");
    assert!(
        line.contains(&format!("task {} (1.0s)", unnamed.id())),
        "{line}"
    );
    let error = handle.await.unwrap_err();
    assert!(error.is_cancelled());
    assert!(
        dropped.load(Ordering::SeqCst),
        "the aborted future is dropped"
    );
    assert!(unnamed.await.unwrap_err().is_cancelled());
    assert!(supervisor.is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_aborted_task_is_dropped_outside_of_an_unwind() {
    // An abort used to unwind through tokio, which dropped the future during the unwind: its
    // destructors saw `std::thread::panicking()`, and one that panicked aborted the process.
    let supervisor = supervisor(0, 0);
    let unwinding = Arc::new(AtomicUsize::new(0));
    struct Probe(Arc<AtomicUsize>);
    impl Drop for Probe {
        fn drop(&mut self) {
            // 1 for a drop outside of an unwind, 2 for one during an unwind.
            let seen = if std::thread::panicking() { 2 } else { 1 };
            self.0.store(seen, Ordering::SeqCst);
        }
    }
    let probe = Probe(unwinding.clone());
    let handle = supervisor
        .spawn(async move {
            let _probe = probe;
            std::future::pending::<()>().await;
        })
        .unwrap();
    tokio::task::yield_now().await;
    let report = supervisor.shutdown().await;
    assert_eq!(report.aborted(), 1);
    assert!(handle.await.unwrap_err().is_cancelled());
    assert_eq!(
        unwinding.load(Ordering::SeqCst),
        1,
        "the aborted future is dropped, and not during an unwind"
    );
}

#[tokio::test(start_paused = true)]
async fn every_task_is_counted_exactly_once_across_phases() {
    let supervisor = supervisor(1_000, 1_000);
    // Ends during the drain, during the grace, and not at all.
    supervisor.spawn(sleep(Duration::from_millis(10))).unwrap();
    supervisor
        .spawn_with(|ctx| async move {
            ctx.cancelled().await;
            sleep(Duration::from_millis(100)).await;
        })
        .unwrap();
    supervisor.spawn(std::future::pending::<()>()).unwrap();
    supervisor
        .spawn(async { panic!("counted as completed, like any other outcome") })
        .unwrap();
    let report = supervisor.shutdown().await;
    assert_eq!(
        (
            report.completed(),
            report.cancelled(),
            report.aborted(),
            report.abandoned()
        ),
        (2, 1, 1, 0)
    );
    // The grace lasts as long as the task with a context needs it: the one without was
    // aborted when it began.
    assert_eq!(report.elapsed(), Duration::from_millis(1_100));
}

#[tokio::test(start_paused = true)]
async fn a_second_or_concurrent_shutdown_returns_the_same_report() {
    let supervisor = supervisor(1_000, 0);
    supervisor.spawn(sleep(Duration::from_millis(200))).unwrap();
    let (first, second) = tokio::join!(supervisor.shutdown(), supervisor.shutdown());
    assert_eq!(first, second);
    assert_eq!(supervisor.shutdown().await, first);
    assert_eq!(first.completed(), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_shutdown_future_does_not_stop_the_shutdown() {
    let supervisor = supervisor(1_000, 0);
    supervisor.spawn(sleep(Duration::from_millis(300))).unwrap();
    let _ = tokio::time::timeout(Duration::from_millis(10), supervisor.shutdown()).await;
    assert!(supervisor.is_shutting_down());
    sleep(Duration::from_millis(500)).await;
    assert!(supervisor.is_empty());
    let report = supervisor.shutdown().await;
    assert_eq!(report.completed(), 1);
    assert_eq!(report.elapsed(), Duration::from_millis(300));
}

#[tokio::test(start_paused = true)]
async fn shutdown_now_skips_the_budget_and_aborts() {
    let supervisor = supervisor(60_000, 60_000);
    let (tx, rx) = std::sync::mpsc::channel();
    supervisor
        .spawn_with(move |ctx| {
            tx.send(ctx).unwrap();
            std::future::pending::<()>()
        })
        .unwrap();
    let ctx = rx.recv().unwrap();
    tokio::task::yield_now().await;
    let start = Instant::now();
    let report = supervisor.shutdown_now().await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(report.aborted(), 1);
    assert!(
        ctx.is_cancelled() && ctx.cancellation_token().is_cancelled(),
        "the cancellation signal still fires"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_now_cuts_a_running_shutdown_short() {
    let supervisor = supervisor(60_000, 60_000);
    supervisor.spawn(std::future::pending::<()>()).unwrap();
    let slow = tokio::spawn({
        let supervisor = supervisor.clone();
        async move { supervisor.shutdown().await }
    });
    sleep(Duration::from_secs(5)).await;
    let report = supervisor.shutdown_now().await;
    assert_eq!(report.elapsed(), Duration::from_secs(5));
    assert_eq!(report.aborted(), 1);
    assert_eq!(slow.await.unwrap(), report);
}

#[tokio::test(start_paused = true)]
async fn follow_up_tasks_spawned_during_the_drain_are_part_of_the_shutdown() {
    let supervisor = supervisor(1_000, 500);
    let follow_up_ran = Arc::new(AtomicBool::new(false));
    supervisor
        .task("parent")
        .spawn_with({
            let follow_up_ran = follow_up_ran.clone();
            move |ctx| async move {
                ctx.shutdown_started().await;
                // Outside callers are refused now, but a running task may hand work on.
                ctx.task("quick-follow-up")
                    .spawn(async move {
                        sleep(Duration::from_millis(100)).await;
                        follow_up_ran.store(true, Ordering::SeqCst);
                    })
                    .unwrap();
                ctx.task("slow-follow-up")
                    .spawn(std::future::pending::<()>())
                    .unwrap();
            }
        })
        .unwrap();
    let report = supervisor.shutdown().await;
    assert!(
        follow_up_ran.load(Ordering::SeqCst),
        "the follow-up was awaited"
    );
    assert_eq!((report.completed(), report.aborted()), (2, 1));
    assert_eq!(report.aborted_tasks()[0].name(), Some("slow-follow-up"));
    // Aborted when the drain ran out: it has no context, so the grace was of no use to it.
    assert_eq!(report.elapsed(), Duration::from_millis(1_000));
}

#[tokio::test(start_paused = true)]
async fn follow_up_tasks_are_refused_once_the_cancel_phase_begins() {
    let supervisor = supervisor(100, 1_000);
    let refused = supervisor
        .spawn_with(|ctx| async move {
            ctx.cancelled().await;
            ctx.spawn(async {}).map(drop)
        })
        .unwrap();
    supervisor.shutdown().await;
    assert_eq!(refused.await.unwrap(), Err(SpawnError::ShuttingDown));
}

#[tokio::test(start_paused = true)]
async fn follow_ups_queued_when_the_abort_comes_report_themselves_as_not_started() {
    let supervisor = supervisor(60_000, 60_000);
    supervisor
        .task("parent")
        .spawn_with(|ctx| async move {
            ctx.shutdown_started().await;
            // Queued behind the shutdown driver, so the abort walk runs before its first poll.
            ctx.task("never-polled").spawn(async {}).unwrap();
            std::future::pending::<()>().await;
        })
        .unwrap();
    tokio::task::yield_now().await;
    let report = supervisor.shutdown_now().await;
    let aborted: Vec<_> = report
        .aborted_tasks()
        .iter()
        .map(|task| (task.name(), task.is_started()))
        .collect();
    assert_eq!(
        aborted,
        [(Some("parent"), true), (Some("never-polled"), false)]
    );
    assert!(
        report
            .to_string()
            .contains("never-polled (task 2, not started)")
    );
}

#[tokio::test(start_paused = true)]
async fn budgets_too_large_for_an_instant_do_not_panic() {
    let supervisor = supervisor(u64::MAX, u64::MAX);
    supervisor.spawn(sleep(Duration::from_millis(5))).unwrap();
    let report = supervisor.shutdown().await;
    assert_eq!(report.completed(), 1);
    let supervisor = TaskSupervisor::builder()
        .shutdown_timeout(Duration::MAX)
        .cancel_grace(Duration::MAX)
        .build();
    assert_eq!(supervisor.shutdown_now().await.completed(), 0);
}

#[tokio::test(start_paused = true)]
async fn zero_budgets_abort_at_once() {
    let supervisor = supervisor(0, 0);
    supervisor
        .spawn_with(|ctx| async move { ctx.cancelled().await })
        .unwrap();
    supervisor.spawn(std::future::pending::<()>()).unwrap();
    tokio::task::yield_now().await;
    let report = supervisor.shutdown().await;
    assert_eq!(report.elapsed(), Duration::ZERO);
    assert_eq!((report.cancelled(), report.aborted()), (0, 2));
}

/// Documented misuse: `wait_idle` inside a supervised task counts that task, so it returns only
/// when shutdown aborts the task.
#[tokio::test(start_paused = true)]
async fn wait_idle_inside_a_task_waits_for_that_task_too() {
    let supervisor = TaskSupervisor::builder()
        .shutdown_timeout(Duration::from_secs(1))
        .cancel_grace(Duration::ZERO)
        .build();
    let inside = supervisor.clone();
    let handle = supervisor
        .task("waits-for-itself")
        .spawn(async move {
            tokio::time::timeout(Duration::from_secs(60), inside.wait_idle())
                .await
                .is_ok()
        })
        .unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(!handle.is_finished(), "still waiting for itself");
    let report = supervisor.shutdown().await;
    assert_eq!(report.aborted(), 1);
    assert!(handle.await.unwrap_err().is_cancelled());
}

/// Documented misuse: `shutdown` awaited inside a supervised task takes the whole drain (the
/// grace too, for a task with a context) and aborts its caller; other callers get the report.
#[tokio::test(start_paused = true)]
async fn shutdown_inside_a_task_takes_the_budget_and_aborts_its_caller() {
    let supervisor = TaskSupervisor::builder()
        .shutdown_timeout(Duration::from_secs(2))
        .cancel_grace(Duration::from_secs(1))
        .build();
    let inside = supervisor.clone();
    let handle = supervisor
        .task("shuts-down")
        .spawn(async move { inside.shutdown().await })
        .unwrap();
    tokio::task::yield_now().await;
    let report = supervisor.shutdown().await;
    assert_eq!(report.elapsed(), Duration::from_secs(2));
    assert_eq!(report.aborted_tasks()[0].name(), Some("shuts-down"));
    assert!(handle.await.unwrap_err().is_cancelled());
}

/// Documented limit: on a `current_thread` runtime, a task that blocks the thread inside a
/// poll holds up the shutdown's timers too, so the shutdown ends once that poll returns, past
/// its budget, and still counts the task. Real time, since the thread really sleeps.
#[tokio::test(flavor = "current_thread")]
async fn on_a_current_thread_runtime_a_thread_blocking_poll_holds_up_the_shutdown() {
    const BLOCKS_FOR: Duration = Duration::from_millis(300);
    let supervisor = TaskSupervisor::builder()
        .shutdown_timeout(Duration::from_millis(20))
        .cancel_grace(Duration::ZERO)
        .build();
    supervisor
        .task("blocks-the-thread")
        .spawn(async { std::thread::sleep(BLOCKS_FOR) })
        .unwrap();
    let report = supervisor.shutdown().await;
    assert!(
        report.elapsed() >= BLOCKS_FOR,
        "the shutdown ran while its only thread was blocked: {report}"
    );
    assert_eq!(report.completed(), 1, "{report}");
}

/// Records when it is dropped: when the task holding it ended.
struct DropClock(Arc<Mutex<Option<Instant>>>);

impl Drop for DropClock {
    fn drop(&mut self) {
        *self.0.lock().expect("the clock lock") = Some(Instant::now());
    }
}

/// The budget as a newcomer reads it, with the defaults: asked for "5 s, then cancel", a stuck
/// task spawned without a context ends at 5 s, and so does the shutdown, when no task with a
/// context is left. It used to be aborted at 6 s, after a grace it could not use.
#[tokio::test(start_paused = true)]
async fn with_the_default_budget_a_stuck_task_without_a_context_ends_at_5_s() {
    let supervisor = TaskSupervisor::new();
    let ended = Arc::new(Mutex::new(None));
    let clock = DropClock(ended.clone());
    supervisor
        .task("stuck")
        .spawn(async move {
            let _clock = clock;
            std::future::pending::<()>().await;
        })
        .unwrap();
    let start = Instant::now();
    let report = supervisor.shutdown().await;
    assert_eq!(report.elapsed(), Duration::from_secs(5), "{report}");
    let ended = ended.lock().unwrap().expect("the task ended");
    assert_eq!(ended - start, Duration::from_secs(5));
    assert_eq!(
        (report.cancelled(), report.aborted(), report.abandoned()),
        (0, 1, 0)
    );
    assert_eq!(report.aborted_tasks()[0].name(), Some("stuck"));
    assert_eq!(report.aborted_tasks()[0].age(), Duration::from_secs(5));
}

/// The grace is for the tasks that can see the cancellation signal: with one that needs it,
/// the shutdown waits for it, while the stuck task without a context is aborted at 5 s, and a
/// stuck one with a context at 6 s.
#[tokio::test(start_paused = true)]
async fn the_grace_is_for_tasks_with_a_context_only() {
    let supervisor = TaskSupervisor::new();
    let plain_ended = Arc::new(Mutex::new(None));
    let clock = DropClock(plain_ended.clone());
    supervisor
        .task("plain")
        .spawn(async move {
            let _clock = clock;
            std::future::pending::<()>().await;
        })
        .unwrap();
    supervisor
        .task("cooperative")
        .spawn_with(|ctx| async move {
            ctx.cancelled().await;
            sleep(Duration::from_millis(500)).await;
        })
        .unwrap();
    supervisor
        .task("deaf")
        .spawn_with(|_ctx| std::future::pending::<()>())
        .unwrap();
    let start = Instant::now();
    let report = supervisor.shutdown().await;
    assert_eq!(report.elapsed(), Duration::from_secs(6), "{report}");
    let plain_ended = plain_ended.lock().unwrap().expect("the plain task ended");
    assert_eq!(plain_ended - start, Duration::from_secs(5));
    assert_eq!((report.cancelled(), report.aborted()), (1, 2), "{report}");
    let aborted: Vec<_> = report
        .aborted_tasks()
        .iter()
        .map(|task| (task.name(), task.age()))
        .collect();
    assert_eq!(
        aborted,
        [
            (Some("plain"), Duration::from_secs(5)),
            (Some("deaf"), Duration::from_secs(6))
        ]
    );
}

/// A task without a context that had not been polled yet when the cancel phase began is
/// aborted at its first poll, as "not started", and counted once.
#[tokio::test(start_paused = true)]
async fn a_task_without_a_context_spawned_as_the_drain_ends_is_aborted_not_cancelled() {
    let supervisor = supervisor(1_000, 1_000);
    supervisor
        .spawn_with(|ctx| async move {
            // Spawned at the very end of the drain, so that the cancel phase begins before its
            // first poll.
            sleep(Duration::from_millis(1_000)).await;
            let _ = ctx.task("late").spawn(std::future::pending::<()>());
            ctx.cancelled().await;
        })
        .unwrap();
    let report = supervisor.shutdown().await;
    let total = report.completed() + report.cancelled() + report.aborted() + report.abandoned();
    assert_eq!(total, 2, "{report}");
    assert!(
        report
            .aborted_tasks()
            .iter()
            .all(|task| task.name() == Some("late")),
        "{report}"
    );
    assert!(report.elapsed() < Duration::from_millis(2_000), "{report}");
}
