//! Per-task timeouts (`TaskBuilder::timeout`): the signal at the deadline, the abort after the
//! grace (at once without a context), and how a timed-out task is reported and counted, under
//! paused time.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use background_tasks::{Counters, FailureKind, TaskFailure, TaskSupervisor};
use support::Failures;
use tokio::time::{Instant, sleep};

const TIMEOUT: Duration = Duration::from_secs(10);
const GRACE: Duration = Duration::from_secs(2);

fn recording() -> (TaskSupervisor, Failures) {
    support::recording(
        TaskSupervisor::builder()
            .shutdown_timeout(Duration::from_secs(60))
            .cancel_grace(GRACE),
    )
}

fn failures_of(failures: &Mutex<Vec<TaskFailure>>) -> Vec<(FailureKind, String)> {
    let failures = failures.lock().expect("the failures");
    failures
        .iter()
        .map(|failure| (failure.kind(), failure.to_string()))
        .collect()
}

/// Spawned, completed, timed out: the counters these tests look at.
fn counts(counters: &Counters) -> (u64, u64, u64) {
    (counters.spawned, counters.completed, counters.timed_out)
}

#[tokio::test(start_paused = true)]
async fn a_task_without_a_context_is_aborted_at_its_timeout_even_when_idle() {
    let (supervisor, failures) = recording();
    let start = Instant::now();
    let handle = supervisor
        .task("call-upstream")
        .timeout(TIMEOUT)
        .spawn(std::future::pending::<()>())
        .unwrap();
    let error = handle.await.unwrap_err();
    assert!(error.is_timeout(), "{error}");
    assert!(!error.is_cancelled() && !error.is_panic());
    assert!(error.to_string().contains("timeout"), "{error}");
    assert_eq!(
        start.elapsed(),
        TIMEOUT,
        "no grace: it cannot see the signal"
    );
    assert!(supervisor.is_empty());
    assert_eq!(
        failures_of(&failures),
        [(
            FailureKind::TimedOut,
            "task 1 (call-upstream) timed out after 10s and was aborted".to_owned()
        )]
    );
    let snapshot = supervisor.snapshot();
    assert_eq!(
        counts(&snapshot.counters),
        (1, 0, 1),
        "{:?}",
        snapshot.counters
    );
    assert!(snapshot.recent_failures[0].failure.is_timeout());
    assert!(supervisor.shutdown().await.is_clean());
}

#[tokio::test(start_paused = true)]
async fn a_task_with_a_context_sees_its_signal_at_the_timeout_and_is_aborted_after_the_grace() {
    let (supervisor, failures) = recording();
    let start = Instant::now();
    let signalled = Arc::new(Mutex::new(None));
    let handle = supervisor
        .task("import")
        .timeout(TIMEOUT)
        .spawn_with({
            let signalled = signalled.clone();
            move |ctx| async move {
                assert_eq!(ctx.deadline(), Some(start + TIMEOUT));
                let token = ctx.cancellation_token();
                ctx.cancelled().await;
                assert!(ctx.is_cancelled() && token.is_cancelled());
                assert!(
                    !ctx.is_shutting_down(),
                    "its own signal, not the shutdown's"
                );
                *signalled.lock().unwrap() = Some(start.elapsed());
                // Ignores it: aborted when the grace has passed.
                std::future::pending::<()>().await;
            }
        })
        .unwrap();
    let error = handle.await.unwrap_err();
    assert!(error.is_timeout(), "{error}");
    assert_eq!(*signalled.lock().unwrap(), Some(TIMEOUT));
    assert_eq!(start.elapsed(), TIMEOUT + GRACE);
    assert_eq!(
        failures_of(&failures),
        [(
            FailureKind::TimedOut,
            "task 1 (import) timed out after 10s and was aborted".to_owned()
        )]
    );
    assert_eq!(counts(&supervisor.snapshot().counters), (1, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_task_that_stops_at_its_signal_keeps_its_output_and_is_still_reported_timed_out() {
    let (supervisor, failures) = recording();
    let handle = supervisor
        .task("import")
        .timeout(TIMEOUT)
        .spawn_with(|ctx| async move {
            ctx.cancelled().await;
            sleep(GRACE / 2).await;
            "saved what it had"
        })
        .unwrap();
    assert_eq!(handle.await.unwrap(), "saved what it had");
    assert_eq!(
        failures_of(&failures),
        [(
            FailureKind::TimedOut,
            "task 1 (import) timed out after 10s, and ended on its own after its cancellation \
             signal"
                .to_owned()
        )]
    );
    assert_eq!(counts(&supervisor.snapshot().counters), (1, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_task_that_ends_before_its_timeout_is_neither_signalled_nor_reported() {
    let (supervisor, failures) = recording();
    let handle = supervisor
        .task("quick")
        .timeout(TIMEOUT)
        .spawn_with(|ctx| async move {
            sleep(TIMEOUT / 2).await;
            ctx.is_cancelled()
        })
        .unwrap();
    assert!(!handle.await.unwrap());
    // Its timer is gone with it: nothing fires later.
    sleep(TIMEOUT * 2).await;
    assert!(failures_of(&failures).is_empty());
    assert_eq!(counts(&supervisor.snapshot().counters), (1, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn other_tasks_keep_the_shutdown_signal_and_no_timeout() {
    let (supervisor, _failures) = recording();
    let timed = supervisor
        .task("timed")
        .timeout(TIMEOUT)
        .spawn(std::future::pending::<()>())
        .unwrap();
    let untimed = supervisor
        .task("untimed")
        .spawn_with(|ctx| async move {
            sleep(TIMEOUT * 2).await;
            ctx.is_cancelled()
        })
        .unwrap();
    assert!(timed.await.unwrap_err().is_timeout());
    assert!(!untimed.await.unwrap(), "a timeout is the task's own");
}

#[tokio::test(start_paused = true)]
async fn a_timeout_during_the_drain_ends_the_task_which_the_report_counts_completed() {
    let (supervisor, failures) = recording();
    supervisor
        .task("stuck")
        .timeout(TIMEOUT)
        .spawn(std::future::pending::<()>())
        .unwrap();
    sleep(Duration::from_secs(1)).await;
    let report = supervisor.shutdown().await;
    // The drain (60 s) did not have to wait for its budget: the timeout ended the task first.
    assert_eq!(report.elapsed(), TIMEOUT - Duration::from_secs(1));
    assert_eq!((report.completed(), report.aborted()), (1, 0), "{report}");
    let counters = supervisor.snapshot().counters;
    assert_eq!(counts(&counters), (1, 0, 1), "{counters:?}");
    assert_eq!(failures_of(&failures)[0].0, FailureKind::TimedOut);
}

#[tokio::test(start_paused = true)]
async fn shutdown_aborting_a_task_in_its_timeout_grace_reports_it_aborted_not_timed_out() {
    let (supervisor, failures) = recording();
    supervisor
        .task("slow-to-stop")
        .timeout(TIMEOUT)
        .spawn_with(|ctx| async move {
            ctx.cancelled().await;
            std::future::pending::<()>().await;
        })
        .unwrap();
    // Past the deadline, inside the grace of the task's own timeout.
    sleep(TIMEOUT + GRACE / 2).await;
    let report = supervisor.shutdown_now().await;
    assert_eq!(report.aborted(), 1, "{report}");
    supervisor.wait_idle().await;
    let counters = supervisor.snapshot().counters;
    assert_eq!(
        (counters.aborted, counters.timed_out),
        (1, 0),
        "{counters:?}"
    );
    let kinds: Vec<_> = failures_of(&failures)
        .into_iter()
        .map(|(kind, _)| kind)
        .collect();
    assert_eq!(
        kinds,
        [FailureKind::Aborted],
        "one failure, as the report says"
    );
}

#[test]
fn a_blocking_task_queued_past_its_timeout_does_not_start() {
    // Real time, on a runtime with one blocking thread, which the first task holds.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (supervisor, failures) = recording();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let (holder, queued, ran) = runtime.block_on(async {
        let holder = supervisor
            .spawn_blocking(move || release_rx.recv().unwrap())
            .unwrap();
        let ran = Arc::new(Mutex::new(false));
        let queued = supervisor
            .task("checksum")
            .timeout(Duration::from_millis(50))
            .spawn_blocking({
                let ran = ran.clone();
                move || *ran.lock().unwrap() = true
            })
            .unwrap();
        (holder, queued, ran)
    });
    std::thread::sleep(Duration::from_millis(200));
    release_tx.send(()).unwrap();
    runtime.block_on(async {
        holder.await.unwrap();
        let error = queued.await.unwrap_err();
        assert!(error.is_timeout(), "{error}");
    });
    assert!(!*ran.lock().unwrap(), "it did not start");
    assert_eq!(
        failures_of(&failures),
        [(
            FailureKind::TimedOut,
            "task 2 (checksum) timed out after 50ms and was aborted".to_owned()
        )]
    );
    runtime.shutdown_background();
}

#[tokio::test(start_paused = true)]
async fn a_running_blocking_task_sees_its_timeout_through_is_cancelled() {
    let (supervisor, failures) = recording();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (started_tx, started_rx) = std::sync::mpsc::channel::<bool>();
    let handle = supervisor
        .task("scan")
        .timeout(TIMEOUT)
        .spawn_blocking_with(move |ctx| {
            started_tx.send(ctx.is_cancelled()).unwrap();
            go_rx.recv().unwrap();
            ctx.is_cancelled()
        })
        .unwrap();
    assert!(!started_rx.recv().unwrap());
    // A blocking task in flight keeps tokio from moving the paused clock by itself.
    tokio::time::advance(TIMEOUT).await;
    go_tx.send(()).unwrap();
    assert!(handle.await.unwrap(), "its deadline passed");
    assert_eq!(
        failures_of(&failures),
        [(
            FailureKind::TimedOut,
            "task 1 (scan) timed out after 10s, and ended on its own after its cancellation \
             signal"
                .to_owned()
        )]
    );
}

#[tokio::test(start_paused = true)]
async fn a_tracked_future_gets_its_signal_but_is_left_to_its_owner() {
    let (supervisor, failures) = recording();
    let start = Instant::now();
    let tracked = supervisor
        .task("inline")
        .timeout(TIMEOUT)
        .track_future_with(|ctx| async move {
            ctx.cancelled().await;
            // Runs on past the grace: only its owner could stop it.
            sleep(GRACE * 3).await;
            "done"
        })
        .unwrap();
    assert_eq!(tracked.await, "done");
    assert_eq!(start.elapsed(), TIMEOUT + GRACE * 3);
    assert_eq!(failures_of(&failures)[0].0, FailureKind::TimedOut);
    assert_eq!(counts(&supervisor.snapshot().counters), (1, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_local_task_times_out_too() {
    let (supervisor, _failures) = recording();
    let local_set = tokio::task::LocalSet::new();
    let start = Instant::now();
    let handle = supervisor
        .task("local")
        .timeout(TIMEOUT)
        .spawn_local_on(std::future::pending::<()>(), &local_set)
        .unwrap();
    let error = local_set.run_until(handle).await.unwrap_err();
    assert!(error.is_timeout());
    assert_eq!(start.elapsed(), TIMEOUT);
}
