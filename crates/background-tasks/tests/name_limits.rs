//! Per-name limits (`SupervisorBuilder::limit`): tasks beyond a name's limit wait their turn in
//! spawn order, a full queue refuses, and waiting tasks are real tasks (counted, shown,
//! drained, reported by name when they never started), under paused time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use background_tasks::{Limit, SpawnError, TaskSupervisor};
use tokio::time::{Instant, sleep};

const WORK: Duration = Duration::from_secs(1);

/// Lets the spawned tasks run until they all suspend again, without moving the paused clock.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// Records the order in which tasks start, and how many run at once at most.
#[derive(Clone, Default)]
struct Log {
    started: Arc<Mutex<Vec<usize>>>,
    running: Arc<Mutex<(usize, usize)>>,
}

impl Log {
    fn task(&self, index: usize) -> impl Future<Output = usize> + Send + 'static {
        let log = self.clone();
        async move {
            log.started.lock().expect("the log").push(index);
            {
                let mut running = log.running.lock().expect("the log");
                running.0 += 1;
                running.1 = running.1.max(running.0);
            }
            sleep(WORK).await;
            log.running.lock().expect("the log").0 -= 1;
            index
        }
    }

    fn started(&self) -> Vec<usize> {
        self.started.lock().expect("the log").clone()
    }

    fn most_at_once(&self) -> usize {
        self.running.lock().expect("the log").1
    }
}

#[tokio::test(start_paused = true)]
async fn tasks_beyond_a_name_s_limit_wait_their_turn_in_spawn_order() {
    let supervisor = TaskSupervisor::builder().limit("send-mail", 2).build();
    let log = Log::default();
    let start = Instant::now();
    let handles: Vec<_> = (0..6)
        .map(|index| supervisor.task("send-mail").spawn(log.task(index)).unwrap())
        .collect();
    // Waiting tasks are real tasks: counted at once, before any of them is polled.
    assert_eq!(supervisor.len(), 6);
    let snapshot = supervisor.snapshot();
    assert_eq!(snapshot.waiting, 4);
    assert_eq!(snapshot.by_name[0].name.as_deref(), Some("send-mail"));
    assert_eq!(snapshot.by_name[0].waiting, 4);
    for (index, handle) in handles.into_iter().enumerate() {
        assert_eq!(handle.await.unwrap(), index);
    }
    assert_eq!(log.started(), [0, 1, 2, 3, 4, 5], "in spawn order");
    assert_eq!(log.most_at_once(), 2);
    assert_eq!(start.elapsed(), WORK * 3, "two at a time");
    assert_eq!(supervisor.snapshot().waiting, 0);
}

#[tokio::test(start_paused = true)]
async fn the_turn_is_taken_at_the_spawn_not_at_the_first_poll() {
    let supervisor = TaskSupervisor::builder().limit("row", 1).build();
    let log = Log::default();
    supervisor.task("row").spawn(log.task(0)).unwrap();
    let first = supervisor.task("row").track_future(log.task(1)).unwrap();
    let second = supervisor.task("row").track_future(log.task(2)).unwrap();
    // Polled in the other order: the second asks for its place first, and still waits for
    // the first, spawned before it.
    let (second, first) = tokio::join!(second, first);
    assert_eq!((first, second), (1, 2));
    assert_eq!(log.started(), [0, 1, 2]);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses_the_spawn_with_queue_full() {
    let supervisor = TaskSupervisor::builder()
        .limit("export", Limit::new(1).queue(2))
        .build();
    let log = Log::default();
    for index in 0..3 {
        supervisor.task("export").spawn(log.task(index)).unwrap();
    }
    let refused = supervisor.task("export").spawn(log.task(3));
    assert_eq!(
        refused.unwrap_err(),
        SpawnError::QueueFull { limit: 1, queue: 2 }
    );
    let counters = supervisor.snapshot().counters;
    assert_eq!(counters.refused_queue_full, 1);
    assert_eq!(counters.spawned, 3, "a refused spawn is no task");
    assert_eq!(supervisor.len(), 3);
    // Once the first has ended, the queue has room again.
    sleep(WORK).await;
    settle().await;
    supervisor.task("export").spawn(log.task(4)).unwrap();
    supervisor.wait_idle().await;
    assert_eq!(log.started(), [0, 1, 2, 4]);
}

#[tokio::test(start_paused = true)]
async fn a_limit_holds_only_its_name_and_max_tasks_still_holds_across_names() {
    let supervisor = TaskSupervisor::builder()
        .limit("send-mail", 1)
        .max_tasks(4)
        .build();
    let log = Log::default();
    for index in 0..3 {
        supervisor.task("send-mail").spawn(log.task(index)).unwrap();
    }
    supervisor.task("resize").spawn(log.task(10)).unwrap();
    settle().await;
    assert_eq!(log.started(), [0, 10], "another name does not wait");
    // Two running and two waiting make four: the global limit counts waiting tasks too.
    let refused = supervisor.task("resize").spawn(log.task(11));
    assert_eq!(refused.unwrap_err(), SpawnError::AtCapacity { limit: 4 });
    supervisor.wait_idle().await;
}

#[tokio::test(start_paused = true)]
async fn the_snapshot_lists_waiting_tasks_as_not_started() {
    let supervisor = TaskSupervisor::builder().limit("import", 1).build();
    supervisor
        .task("import")
        .spawn(std::future::pending::<()>())
        .unwrap();
    supervisor
        .task("import")
        .spawn(std::future::pending::<()>())
        .unwrap();
    settle().await;
    sleep(WORK).await;
    let snapshot = supervisor.snapshot();
    let listed: Vec<_> = snapshot
        .tasks
        .iter()
        .map(|task| (task.id.as_u64(), task.started, task.age))
        .collect();
    assert_eq!(listed, [(1, true, WORK), (2, false, WORK)]);
    assert_eq!(
        (snapshot.by_name[0].running, snapshot.by_name[0].waiting),
        (2, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_waiting_tasks_which_may_start_during_the_drain() {
    let supervisor = TaskSupervisor::builder()
        .limit("send-mail", 1)
        .shutdown_timeout(Duration::from_secs(10))
        .build();
    let log = Log::default();
    for index in 0..3 {
        supervisor.task("send-mail").spawn(log.task(index)).unwrap();
    }
    settle().await;
    let report = supervisor.shutdown().await;
    assert_eq!(report.completed(), 3, "{report}");
    assert_eq!(report.elapsed(), WORK * 3);
    assert_eq!(log.started(), [0, 1, 2]);
}

#[tokio::test(start_paused = true)]
async fn waiting_tasks_that_never_started_are_reported_by_name_as_not_started() {
    let supervisor = TaskSupervisor::builder()
        .limit("send-mail", 1)
        .shutdown_timeout(WORK)
        .cancel_grace(WORK)
        .build();
    let stuck = supervisor
        .task("send-mail")
        .spawn(std::future::pending::<()>())
        .unwrap();
    let plain = supervisor
        .task("send-mail")
        .spawn(async { unreachable!("never gets a place") })
        .unwrap();
    let with_context = supervisor
        .task("send-mail")
        .spawn_with(|_ctx| async { unreachable!("never gets a place") })
        .unwrap();
    settle().await;
    let report = supervisor.shutdown().await;
    assert_eq!(report.aborted(), 3, "{report}");
    // No grace to wait for: a waiting task with a context never starts once the cancel
    // phase has begun.
    assert_eq!(report.elapsed(), WORK);
    let aborted: Vec<_> = report
        .aborted_tasks()
        .iter()
        .map(|task| (task.id(), task.name(), task.is_started()))
        .collect();
    assert_eq!(
        aborted,
        [
            (stuck.id(), Some("send-mail"), true),
            (plain.id(), Some("send-mail"), false),
            (with_context.id(), Some("send-mail"), false),
        ]
    );
    assert!(report.to_string().contains("not started"), "{report}");
    for handle in [stuck, plain] {
        assert!(handle.await.unwrap_err().is_cancelled());
    }
    assert!(with_context.await.unwrap_err().is_cancelled());
    assert!(supervisor.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_waiting_task_aborted_through_its_handle_gives_up_its_turn() {
    let supervisor = TaskSupervisor::builder().limit("job", 1).build();
    let log = Log::default();
    let first = supervisor.task("job").spawn(log.task(0)).unwrap();
    let second = supervisor.task("job").spawn(log.task(1)).unwrap();
    let third = supervisor.task("job").spawn(log.task(2)).unwrap();
    settle().await;
    second.abort();
    assert!(second.await.unwrap_err().is_cancelled());
    assert_eq!(supervisor.snapshot().waiting, 1);
    assert_eq!(first.await.unwrap(), 0);
    assert_eq!(third.await.unwrap(), 2);
    assert_eq!(log.started(), [0, 2]);
    assert_eq!(supervisor.snapshot().waiting, 0);
}

#[tokio::test(start_paused = true)]
async fn a_blocking_task_beyond_the_limit_is_refused_rather_than_holding_a_thread() {
    let supervisor = TaskSupervisor::builder().limit("checksum", 1).build();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = supervisor
        .task("checksum")
        .spawn_blocking(move || release_rx.recv().unwrap())
        .unwrap();
    let refused = supervisor.task("checksum").spawn_blocking(|| ());
    assert_eq!(
        refused.unwrap_err(),
        SpawnError::QueueFull { limit: 1, queue: 0 }
    );
    release_tx.send(()).unwrap();
    holder.await.unwrap();
    supervisor.task("checksum").spawn_blocking(|| ()).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_tracked_future_waits_for_its_place_when_its_owner_polls_it() {
    let supervisor = TaskSupervisor::builder().limit("inline", 1).build();
    let log = Log::default();
    let start = Instant::now();
    let spawned = supervisor.task("inline").spawn(log.task(0)).unwrap();
    let tracked = supervisor.task("inline").track_future(log.task(1)).unwrap();
    assert_eq!(supervisor.snapshot().waiting, 1);
    assert_eq!(tracked.await, 1);
    assert_eq!(start.elapsed(), WORK * 2, "it waited for the first");
    assert_eq!(spawned.await.unwrap(), 0);
    assert_eq!(log.most_at_once(), 1);
}
