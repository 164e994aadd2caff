//! Resident memory per pending task, counting what every thread allocates (the spawning
//! thread, and the workers when a task first suspends): one kind of spawn per process, so that
//! no kind inherits another's freed pages.
//!
//! `cargo bench -p background-tasks --bench rss -- <kind> [tasks]` spawns `tasks` (default
//! 1 000 000) futures that stay pending from a task on a 2-worker runtime, waits until every
//! one has been polled once, and prints one JSON line with the resident set before and after
//! (`/proc/self/statm`) and the difference per task. Kinds: `tokio_spawn`, `task_tracker`,
//! `supervisor_spawn`, `supervisor_named`, `supervisor_spawn_with`,
//! `supervisor_named_spawn_with`. `benchmarks/rss-per-task` runs every kind in fresh
//! processes, rounds interleaved, and prints each kind's median as a ratio to `task_tracker`.
//!
//! Run with no kind (as `cargo test --benches` does), it checks every kind with 1 000 tasks.

use std::future::pending;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use background_tasks::TaskSupervisor;
use tokio::runtime::Runtime;
use tokio_util::task::TaskTracker;

mod common;

const KINDS: [&str; 6] = [
    "tokio_spawn",
    "task_tracker",
    "supervisor_spawn",
    "supervisor_named",
    "supervisor_spawn_with",
    "supervisor_named_spawn_with",
];

fn main() {
    let words = common::words();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        [] => {
            for kind in KINDS {
                measure(kind, 1_000);
            }
        }
        [kind] => measure(kind, 1_000_000),
        [kind, tasks] => measure(kind, tasks.parse().expect("tasks: a whole number")),
        _ => panic!("usage: rss <kind> [tasks]; kinds: {}", KINDS.join(", ")),
    }
}

/// Resident set size in bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm reads");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("statm's second field is the resident page count");
    // The page size of every Linux x86_64 and most aarch64 builds; statm counts in pages.
    pages * 4096
}

fn measure(kind: &str, tasks: usize) {
    assert!(
        KINDS.contains(&kind),
        "unknown kind {kind}; kinds: {}",
        KINDS.join(", ")
    );
    let runtime = common::runtime();
    let supervisor = runtime.block_on(async { TaskSupervisor::new() });
    let tracker = TaskTracker::new();
    let polled = Arc::new(AtomicUsize::new(0));
    // Warm up: every lazy structure (thread-local caches, the registry's first pages, the
    // workers' queues) is in place before the first reading.
    spawn_all(&runtime, kind, 1_000, &supervisor, &tracker, &polled);
    wait_polled(&polled, 1_000);
    let before = rss();
    spawn_all(&runtime, kind, tasks, &supervisor, &tracker, &polled);
    wait_polled(&polled, 1_000 + tasks);
    // Let the workers go idle, so that nothing is half-allocated when the set is read.
    std::thread::sleep(Duration::from_millis(100));
    let after = rss();
    println!(
        "{{\"kind\":\"{kind}\",\"tasks\":{tasks},\"rss_before\":{before},\"rss_after\":{after},\"bytes_per_task\":{:.1}}}",
        after.saturating_sub(before) as f64 / tasks as f64
    );
    // Neither the runtime's drop nor the supervisor's report is measured: a million pending
    // tasks are left to the process's exit.
    std::mem::forget(runtime);
    std::mem::forget(supervisor);
}

/// Spawns `tasks` futures that count their first poll and stay pending, from a task (so, from
/// a worker, as a request handler does).
fn spawn_all(
    runtime: &Runtime,
    kind: &str,
    tasks: usize,
    supervisor: &TaskSupervisor,
    tracker: &TaskTracker,
    polled: &Arc<AtomicUsize>,
) {
    let (kind, supervisor, tracker, polled) = (
        kind.to_owned(),
        supervisor.clone(),
        tracker.clone(),
        polled.clone(),
    );
    let driver = runtime.spawn(async move {
        for _ in 0..tasks {
            let polled = polled.clone();
            let task = async move {
                polled.fetch_add(1, Ordering::Relaxed);
                pending::<()>().await;
            };
            match kind.as_str() {
                "tokio_spawn" => drop(tokio::spawn(task)),
                "task_tracker" => drop(tracker.spawn(task)),
                "supervisor_spawn" => drop(supervisor.spawn(task)),
                "supervisor_named" => drop(supervisor.task("job").spawn(task)),
                "supervisor_spawn_with" => drop(supervisor.spawn_with(|_ctx| task)),
                "supervisor_named_spawn_with" => {
                    drop(supervisor.task("job").spawn_with(|_ctx| task))
                }
                _ => unreachable!("checked in measure"),
            }
        }
    });
    runtime
        .block_on(driver)
        .expect("the spawning task does not panic");
}

fn wait_polled(polled: &AtomicUsize, expected: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while polled.load(Ordering::Relaxed) < expected {
        assert!(
            Instant::now() < deadline,
            "tasks were not all polled in 120 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
