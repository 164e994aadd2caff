//! The admission limit under contention.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use background_tasks::{SpawnError, TaskHandle, TaskSupervisor};

/// A short task: counts itself running, yields `yields` times, then counts itself done.
type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What a contention run saw.
struct Hammered {
    admitted: usize,
    refused: usize,
    /// The most tasks that ran at once.
    most: usize,
    ran: usize,
}

/// Spawns `per_thread` short tasks from each of `threads` threads at once, through `spawn`, on
/// a 4-worker runtime; waits until the supervisor is idle. A refusal that `expected` accepts
/// backs off, as a refused caller would: without it, eight threads can make every attempt
/// before a worker ends a single task, and no place is ever given back. `check` runs after
/// every spawn.
fn hammer(
    supervisor: &TaskSupervisor,
    (threads, per_thread, yields): (usize, usize, usize),
    spawn: fn(&TaskSupervisor, Task) -> Result<TaskHandle<()>, SpawnError>,
    expected: fn(&SpawnError) -> bool,
    check: fn(&TaskSupervisor),
) -> Hammered {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .expect("a runtime");
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(std::sync::Barrier::new(threads));
    let spawners: Vec<_> = (0..threads)
        .map(|_| {
            let (supervisor, handle) = (supervisor.clone(), runtime.handle().clone());
            let (running, most, ran, barrier) =
                (running.clone(), most.clone(), ran.clone(), barrier.clone());
            std::thread::spawn(move || {
                let _runtime = handle.enter();
                barrier.wait();
                let (mut admitted, mut refused) = (0, 0);
                for _ in 0..per_thread {
                    let (running, most, ran) = (running.clone(), most.clone(), ran.clone());
                    let task = Box::pin(async move {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        for _ in 0..yields {
                            tokio::task::yield_now().await;
                        }
                        running.fetch_sub(1, Ordering::SeqCst);
                        ran.fetch_add(1, Ordering::SeqCst);
                    });
                    match spawn(&supervisor, task) {
                        Ok(_) => admitted += 1,
                        Err(error) if expected(&error) => {
                            refused += 1;
                            std::thread::sleep(std::time::Duration::from_micros(20));
                        }
                        Err(other) => panic!("unexpected {other}"),
                    }
                    check(&supervisor);
                }
                (admitted, refused)
            })
        })
        .collect();
    let (admitted, refused) = spawners
        .into_iter()
        .map(|thread| thread.join().expect("a spawning thread"))
        .fold((0, 0), |(a, r), (a2, r2)| (a + a2, r + r2));
    runtime.block_on(supervisor.wait_idle());
    assert_eq!(admitted + refused, threads * per_thread);
    Hammered {
        admitted,
        refused,
        most: most.load(Ordering::SeqCst),
        ran: ran.load(Ordering::SeqCst),
    }
}

#[test]
fn max_tasks_holds_with_many_threads_spawning_at_once() {
    const LIMIT: usize = 16;
    let supervisor = TaskSupervisor::builder().max_tasks(LIMIT).build();
    let Hammered {
        admitted,
        refused,
        most,
        ran,
    } = hammer(
        &supervisor,
        (8, 2_000, 3),
        |supervisor, task| supervisor.spawn(task),
        |error| matches!(error, SpawnError::AtCapacity { limit: LIMIT }),
        |supervisor| assert!(supervisor.len() <= LIMIT),
    );
    assert!(refused > 0, "the limit was reached");
    assert!(admitted > LIMIT, "places were given back and reused");
    assert_eq!(ran, admitted, "every admitted task ran");
    assert!(
        most <= LIMIT,
        "{most} tasks ran at once, over the limit of {LIMIT}"
    );
    assert!(supervisor.is_empty());
}

#[test]
fn a_name_limit_and_its_queue_hold_with_many_threads_spawning_at_once() {
    const LIMIT: usize = 4;
    const QUEUE: usize = 32;
    let supervisor = TaskSupervisor::builder()
        .limit("job", background_tasks::Limit::new(LIMIT).queue(QUEUE))
        .build();
    let Hammered {
        admitted,
        refused,
        most,
        ran,
    } = hammer(
        &supervisor,
        (8, 500, 1),
        |supervisor, task| supervisor.task("job").spawn(task),
        |error| {
            matches!(
                error,
                SpawnError::QueueFull {
                    limit: LIMIT,
                    queue: QUEUE
                }
            )
        },
        |supervisor| assert!(supervisor.snapshot_oldest(0).waiting <= QUEUE),
    );
    assert!(
        admitted > LIMIT + QUEUE,
        "places were given back and reused"
    );
    assert_eq!(ran, admitted, "every admitted task ran");
    assert!(
        most <= LIMIT,
        "{most} tasks ran at once, over the limit of {LIMIT}"
    );
    let snapshot = supervisor.snapshot();
    assert_eq!((snapshot.running, snapshot.waiting), (0, 0));
    assert_eq!(snapshot.counters.refused_queue_full, refused as u64);
}
