//! Bookkeeping does not grow with the number of tasks that have ended.

// A counting global allocator needs `unsafe impl GlobalAlloc`; the crate itself forbids unsafe.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use background_tasks::TaskSupervisor;

/// Counts the bytes allocated and not yet freed, process-wide.
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

/// Counts the allocations not yet freed, process-wide.
static LIVE_BLOCKS: AtomicIsize = AtomicIsize::new(0);

// SAFETY: delegates to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        LIVE_BLOCKS.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Enough that a single byte kept per task would pass the 64 KiB the tests allow; a debug build
/// spawns them in a few seconds, where a million took a minute or two on a loaded CI box.
const TASKS: usize = 100_000;

/// The tests measure the whole process's allocations: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds the measuring lock, on a fresh single-thread runtime.
fn alone_on_a_runtime() -> (std::sync::MutexGuard<'static, ()>, tokio::runtime::Runtime) {
    let alone = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    (alone, runtime)
}

/// A first round of bare tokio tasks grows tokio's own queues to their working size, so that
/// what the supervisor's tasks leave behind is all that is measured after.
async fn grow_tokio_queues(tasks: usize) {
    let handles: Vec<_> = (0..tasks)
        .map(|_| tokio::spawn(tokio::task::yield_now()))
        .collect();
    for handle in handles {
        handle.await.expect("a bare task");
    }
}

#[test]
fn a_hundred_thousand_short_tasks_leave_the_supervisor_as_small_as_they_found_it() {
    let (_alone, runtime) = alone_on_a_runtime();
    runtime.block_on(async {
        let supervisor = TaskSupervisor::new();
        // Tasks that suspend once, so that each of them is registered, and all live at once.
        let spawn_all = |supervisor: &TaskSupervisor| {
            for _ in 0..TASKS {
                drop(supervisor.spawn(tokio::task::yield_now()).unwrap());
            }
        };
        grow_tokio_queues(TASKS).await;
        let before = LIVE_BYTES.load(Ordering::Relaxed);

        spawn_all(&supervisor);
        assert_eq!(supervisor.len(), TASKS);
        supervisor.wait_idle().await;
        let after = LIVE_BYTES.load(Ordering::Relaxed);

        let grown = after - before;
        assert!(
            grown < 64 * 1024,
            "{grown} bytes are still held after {TASKS} tasks ended"
        );
    });
}

/// Failed before (megabytes held): a registry shard gave its memory back only once completely
/// empty, so one long-lived task kept its shard at the size of the burst it was spawned with.
#[test]
fn a_long_lived_task_does_not_keep_the_memory_of_a_burst() {
    const BURST: usize = 200_000;
    let (_alone, runtime) = alone_on_a_runtime();
    runtime.block_on(async {
        let supervisor = TaskSupervisor::new();
        grow_tokio_queues(BURST).await;
        let before = LIVE_BYTES.load(Ordering::Relaxed);

        for _ in 0..BURST {
            drop(supervisor.spawn(tokio::task::yield_now()).unwrap());
        }
        // Spawned last, so that it registers last, in the last slot its shard grew to.
        let long_lived = supervisor.spawn(std::future::pending::<()>()).unwrap();
        while supervisor.len() > 1 {
            tokio::task::yield_now().await;
        }
        let grown = LIVE_BYTES.load(Ordering::Relaxed) - before;
        assert!(
            grown < 64 * 1024,
            "{grown} bytes are still held with one task left of {BURST}"
        );
        long_lived.abort();
    });
}

/// Failed before, with two blocks a task: a task that suspended kept a box for its registry
/// slot (and a named one, for its name too, after its entry took the name). Now a suspended
/// task holds its tokio cell and its share of a registry page, whatever the kind of spawn.
#[test]
fn a_suspended_task_holds_no_allocation_but_its_cell_and_its_registry_slot() {
    const PENDING: usize = 10_000;
    let (_alone, runtime) = alone_on_a_runtime();
    runtime.block_on(async {
        let supervisor = TaskSupervisor::new();
        grow_tokio_queues(PENDING).await;
        for kind in ["spawn", "named", "spawn_with", "named spawn_with"] {
            let polled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let mut handles = Vec::with_capacity(PENDING);
            let before = LIVE_BLOCKS.load(Ordering::Relaxed);
            for _ in 0..PENDING {
                let polled = polled.clone();
                let task = async move {
                    polled.fetch_add(1, Ordering::Relaxed);
                    std::future::pending::<()>().await;
                };
                let handle = match kind {
                    "spawn" => supervisor.spawn(task),
                    "named" => supervisor.task("job").spawn(task),
                    "spawn_with" => supervisor.spawn_with(|_ctx| task),
                    _ => supervisor.task("job").spawn_with(|_ctx| task),
                };
                handles.push(handle.unwrap());
            }
            while polled.load(Ordering::Relaxed) < PENDING {
                tokio::task::yield_now().await;
            }
            let blocks = LIVE_BLOCKS.load(Ordering::Relaxed) - before;
            let per_task = blocks as f64 / PENDING as f64;
            // One cell each, and a page of 32 registry slots for every 32 tasks.
            assert!(
                per_task < 1.1,
                "{kind}: {per_task:.2} allocations held per suspended task"
            );
            for handle in handles {
                handle.abort();
            }
            while !supervisor.is_empty() {
                tokio::task::yield_now().await;
            }
        }
    });
}

/// Failed before, with two blocks a task: a named task kept its name in a box of its own until
/// it registered, so a named task that ends in its first poll (most tasks) cost an allocation
/// and a free more than an unnamed one. A `&'static str` name is now interned by the
/// supervisor, and held in the task's own word.
#[test]
fn a_named_task_waiting_for_its_first_poll_holds_no_allocation_but_its_cell() {
    const QUEUED: usize = 10_000;
    let (_alone, runtime) = alone_on_a_runtime();
    runtime.block_on(async {
        let supervisor = TaskSupervisor::new();
        grow_tokio_queues(QUEUED).await;
        for kind in ["spawn", "named"] {
            let mut handles = Vec::with_capacity(QUEUED);
            let before = LIVE_BLOCKS.load(Ordering::Relaxed);
            // Not polled until this task yields: each is queued, holding what its spawn made.
            for _ in 0..QUEUED {
                let handle = match kind {
                    "spawn" => supervisor.spawn(async {}),
                    _ => supervisor.task("job").spawn(async {}),
                };
                handles.push(handle.unwrap());
            }
            let blocks = LIVE_BLOCKS.load(Ordering::Relaxed) - before;
            let per_task = blocks as f64 / QUEUED as f64;
            assert!(
                per_task < 1.01,
                "{kind}: {per_task:.2} allocations held per queued task"
            );
            for handle in handles {
                handle.await.unwrap();
            }
        }
    });
}

/// Failed before, at 384 bytes a task against tokio's 256: the supervisor's guard took 24
/// bytes (the supervisor, the task's word, a pointer to its box), enough to take a 10 ms
/// sleep, as a handler spawns it, across tokio's 128-byte steps of cell size. Now the guard
/// takes 16 bytes, as many as a `TaskTracker`'s token with its padding, and the cell is the
/// same size as a bare task's.
#[test]
fn a_supervised_sleep_takes_the_cell_of_a_bare_one() {
    const QUEUED: usize = 1_000;
    let (_alone, runtime) = alone_on_a_runtime();
    runtime.block_on(async {
        let supervisor = TaskSupervisor::new();
        let sleep = || {
            let duration = std::time::Duration::from_millis(10);
            async move { tokio::time::sleep(duration).await }
        };
        let mut bytes_per_task = Vec::new();
        for kind in ["tokio", "spawn", "named"] {
            let mut bare_handles = Vec::with_capacity(QUEUED);
            let mut handles = Vec::with_capacity(QUEUED);
            let before = LIVE_BYTES.load(Ordering::Relaxed);
            // Not polled until this task yields: each holds what its spawn allocated.
            for _ in 0..QUEUED {
                match kind {
                    "tokio" => bare_handles.push(tokio::spawn(sleep())),
                    "spawn" => handles.push(supervisor.spawn(sleep()).unwrap()),
                    _ => handles.push(supervisor.task("job").spawn(sleep()).unwrap()),
                }
            }
            let bytes = LIVE_BYTES.load(Ordering::Relaxed) - before;
            bytes_per_task.push((kind, bytes as f64 / QUEUED as f64));
            bare_handles.iter().for_each(tokio::task::JoinHandle::abort);
            handles.iter().for_each(background_tasks::TaskHandle::abort);
            while !supervisor.is_empty() {
                tokio::task::yield_now().await;
            }
        }
        let bare = bytes_per_task[0].1;
        for (kind, bytes) in &bytes_per_task[1..] {
            // Within half of tokio's step: the queues' growth leaves a byte or so a task.
            assert!(
                *bytes < bare + 64.0,
                "{kind}: {bytes} bytes a queued task, against {bare} for tokio::spawn"
            );
        }
    });
}
