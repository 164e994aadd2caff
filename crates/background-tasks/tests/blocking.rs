//! Tasks that hold a thread: blocking tasks, and async tasks that block. These need real
//! threads and so real time; the margins are wide enough for a loaded two-core machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use background_tasks::TaskSupervisor;

const BUDGET: Duration = Duration::from_millis(100);
/// Far below the time the stuck tasks hold their thread, far above a normal return.
const MARGIN: Duration = Duration::from_millis(700);

fn supervisor() -> TaskSupervisor {
    TaskSupervisor::builder()
        .shutdown_timeout(BUDGET / 2)
        .cancel_grace(BUDGET / 2)
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronous_task_runs_on_a_thread_and_is_awaited() {
    let supervisor = TaskSupervisor::new();
    let caller = std::thread::current().id();
    let done = Arc::new(AtomicBool::new(false));
    let handle = supervisor
        .spawn_blocking({
            let done = done.clone();
            move || {
                std::thread::sleep(Duration::from_millis(50));
                done.store(true, Ordering::SeqCst);
                std::thread::current().id()
            }
        })
        .unwrap();
    let report = supervisor.shutdown().await;
    assert!(done.load(Ordering::SeqCst), "shutdown waited for it");
    assert_eq!(report.completed(), 1);
    assert_ne!(handle.await.unwrap(), caller);
}

/// A blocking task without a context cannot see the cancellation signal, nor be aborted: the
/// shutdown does not wait the grace for it (it used to, 30 s here), and abandons it when the
/// drain ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_blocking_task_is_abandoned_and_shutdown_returns_anyway() {
    let supervisor = TaskSupervisor::builder()
        .shutdown_timeout(BUDGET)
        .cancel_grace(Duration::from_secs(30))
        .build();
    let handle = supervisor
        .task("resize")
        .spawn_blocking(|| std::thread::sleep(Duration::from_secs(2)))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let start = Instant::now();
    let report = supervisor.shutdown().await;
    let elapsed = start.elapsed();
    assert!(
        elapsed >= BUDGET && elapsed < BUDGET + MARGIN,
        "{elapsed:?}"
    );
    assert_eq!((report.aborted(), report.abandoned()), (0, 1));
    assert_eq!(report.abandoned_tasks()[0].name(), Some("resize"));
    assert!(!report.abandoned_tasks()[0].is_tracked());
    assert!(
        report.to_string().contains("abandoned: resize (task 1,"),
        "{report}"
    );
    assert_eq!(supervisor.len(), 1, "it still runs, and is still counted");
    assert!(!handle.is_finished());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_task_sees_the_cancellation_signal() {
    let supervisor = TaskSupervisor::builder()
        .shutdown_timeout(BUDGET / 2)
        .cancel_grace(Duration::from_secs(30))
        .build();
    supervisor
        .spawn_blocking_with(|ctx| {
            while !ctx.is_cancelled() {
                std::thread::sleep(Duration::from_millis(5));
            }
        })
        .unwrap();
    let start = Instant::now();
    let report = supervisor.shutdown().await;
    assert!(start.elapsed() < BUDGET + MARGIN);
    assert_eq!(report.cancelled(), 1);
}

#[test]
fn queued_blocking_tasks_are_aborted_before_they_start() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let started = Arc::new(AtomicBool::new(false));
    let report = runtime.block_on(async {
        let supervisor = supervisor();
        supervisor
            .task("occupies-the-only-thread")
            .spawn_blocking(|| std::thread::sleep(Duration::from_millis(800)))
            .unwrap();
        let queued = supervisor
            .task("queued")
            .spawn_blocking({
                let started = started.clone();
                move || started.store(true, Ordering::SeqCst)
            })
            .unwrap();
        let report = supervisor.shutdown().await;
        assert!(queued.await.unwrap_err().is_cancelled());
        report
    });
    drop(runtime);
    assert!(!started.load(Ordering::SeqCst), "the queued task never ran");
    assert_eq!((report.aborted(), report.abandoned()), (1, 1));
    assert_eq!(report.aborted_tasks()[0].name(), Some("queued"));
    assert_eq!(
        report.abandoned_tasks()[0].name(),
        Some("occupies-the-only-thread")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_task_blocking_its_thread_is_abandoned_not_waited_for() {
    let supervisor = supervisor();
    supervisor
        .task("blocks-in-async")
        .spawn(async { std::thread::sleep(Duration::from_secs(2)) })
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let start = Instant::now();
    let report = supervisor.shutdown().await;
    let elapsed = start.elapsed();
    assert!(elapsed < BUDGET + MARGIN, "{elapsed:?}");
    assert_eq!(report.abandoned(), 1);
    assert!(
        report
            .to_string()
            .contains("1 unnamed task held up in or before its first poll by a blocked thread"),
        "{report}"
    );
}
