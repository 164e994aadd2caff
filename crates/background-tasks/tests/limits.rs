//! The admission limit under contention.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use background_tasks::{SpawnError, TaskSupervisor};

#[test]
fn max_tasks_holds_with_many_threads_spawning_at_once() {
    const LIMIT: usize = 16;
    const THREADS: usize = 8;
    const PER_THREAD: usize = 2_000;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    let supervisor = TaskSupervisor::builder().max_tasks(LIMIT).build();
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(std::sync::Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (supervisor, handle) = (supervisor.clone(), runtime.handle().clone());
            let (running, most, ran, barrier) =
                (running.clone(), most.clone(), ran.clone(), barrier.clone());
            std::thread::spawn(move || {
                let _runtime = handle.enter();
                barrier.wait();
                let (mut admitted, mut refused) = (0, 0);
                for _ in 0..PER_THREAD {
                    let (running, most, ran) = (running.clone(), most.clone(), ran.clone());
                    let task = async move {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        for _ in 0..3 {
                            tokio::task::yield_now().await;
                        }
                        running.fetch_sub(1, Ordering::SeqCst);
                        ran.fetch_add(1, Ordering::SeqCst);
                    };
                    match supervisor.spawn(task) {
                        Ok(_) => admitted += 1,
                        Err(SpawnError::AtCapacity { limit }) => {
                            assert_eq!(limit, LIMIT);
                            refused += 1;
                            // Backs off, as a refused caller would: without it, eight threads
                            // can make every attempt before a worker ends a single task, and
                            // no place is ever given back.
                            std::thread::sleep(std::time::Duration::from_micros(20));
                        }
                        Err(other) => panic!("unexpected {other}"),
                    }
                    assert!(supervisor.len() <= LIMIT);
                }
                (admitted, refused)
            })
        })
        .collect();
    let (admitted, refused) = threads
        .into_iter()
        .map(|thread| thread.join().unwrap())
        .fold((0, 0), |(a, r), (a2, r2)| (a + a2, r + r2));
    runtime.block_on(supervisor.wait_idle());
    assert_eq!(admitted + refused, THREADS * PER_THREAD);
    assert!(refused > 0, "the limit was reached");
    assert!(admitted > LIMIT, "places were given back and reused");
    assert_eq!(
        ran.load(Ordering::SeqCst),
        admitted,
        "every admitted task ran"
    );
    let most = most.load(Ordering::SeqCst);
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
    const THREADS: usize = 8;
    const PER_THREAD: usize = 500;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .expect("a runtime");
    let supervisor = TaskSupervisor::builder()
        .limit("job", background_tasks::Limit::new(LIMIT).queue(QUEUE))
        .build();
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(std::sync::Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (supervisor, handle) = (supervisor.clone(), runtime.handle().clone());
            let (running, most, ran, barrier) =
                (running.clone(), most.clone(), ran.clone(), barrier.clone());
            std::thread::spawn(move || {
                let _runtime = handle.enter();
                barrier.wait();
                let (mut admitted, mut refused) = (0, 0);
                for _ in 0..PER_THREAD {
                    let (running, most, ran) = (running.clone(), most.clone(), ran.clone());
                    let task = async move {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        running.fetch_sub(1, Ordering::SeqCst);
                        ran.fetch_add(1, Ordering::SeqCst);
                    };
                    match supervisor.task("job").spawn(task) {
                        Ok(_) => admitted += 1,
                        Err(SpawnError::QueueFull { limit, queue }) => {
                            assert_eq!((limit, queue), (LIMIT, QUEUE));
                            refused += 1;
                            // Backs off, as a refused caller would.
                            std::thread::sleep(std::time::Duration::from_micros(20));
                        }
                        Err(other) => panic!("unexpected {other}"),
                    }
                    assert!(supervisor.snapshot_oldest(0).waiting <= QUEUE);
                }
                (admitted, refused)
            })
        })
        .collect();
    let (admitted, refused) = threads
        .into_iter()
        .map(|thread| thread.join().expect("a spawning thread"))
        .fold((0, 0), |(a, r), (a2, r2)| (a + a2, r + r2));
    runtime.block_on(supervisor.wait_idle());
    assert_eq!(admitted + refused, THREADS * PER_THREAD);
    assert!(
        admitted > LIMIT + QUEUE,
        "places were given back and reused"
    );
    assert_eq!(
        ran.load(Ordering::SeqCst),
        admitted,
        "every admitted task ran"
    );
    let most = most.load(Ordering::SeqCst);
    assert!(
        most <= LIMIT,
        "{most} tasks ran at once, over the limit of {LIMIT}"
    );
    let snapshot = supervisor.snapshot();
    assert_eq!((snapshot.running, snapshot.waiting), (0, 0));
    assert_eq!(snapshot.counters.refused_queue_full, refused as u64);
}
