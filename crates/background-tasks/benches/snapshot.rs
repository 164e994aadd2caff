//! What `TaskSupervisor::snapshot` costs with many tasks running: what a dashboard polling
//! every second pays.
//!
//! - `snapshot_100k`: one snapshot of 100 000 suspended tasks on a 2-worker runtime, named
//!   from a set of 10 names (static strings, as `task("...")` is usually given), or unnamed.
//! - `snapshot_oldest_50_of_100k`: the same named tasks, listing only the 50 oldest, as the
//!   axum crate's dashboard does.
//! - `len_100k`: `len()` beside it, the count alone, for scale.
//!
//! Run with `cargo bench -p background-tasks --bench snapshot`. `cargo test --benches` runs
//! every benchmark once, with a thousandth of the tasks.

use std::future::pending;

use background_tasks::TaskSupervisor;
use divan::Bencher;
use tokio::runtime::Runtime;

mod common;
use common::scaled;

fn main() {
    divan::main();
}

const NAMES: [&str; 10] = [
    "send-mail",
    "resize",
    "webhook",
    "index",
    "thumbnail",
    "billing",
    "report",
    "sync",
    "cleanup",
    "notify",
];

/// A runtime with `tasks` pending tasks on `supervisor`, all suspended once (so listed).
fn loaded(tasks: usize, named: bool) -> (Runtime, TaskSupervisor) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a 2-worker runtime builds");
    let supervisor = TaskSupervisor::new();
    runtime.block_on(async {
        for i in 0..tasks {
            if named {
                supervisor
                    .task(NAMES[i % NAMES.len()])
                    .spawn(pending::<()>())
            } else {
                supervisor.spawn(pending::<()>())
            }
            .expect("admitted");
        }
        // Until every task has suspended once, and so is in the registry.
        while supervisor.snapshot().tasks.len() < tasks {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    });
    (runtime, supervisor)
}

#[divan::bench(args = [true, false])]
fn snapshot_100k(bencher: Bencher<'_, '_>, named: bool) {
    let tasks = scaled(100_000);
    let (runtime, supervisor) = loaded(tasks, named);
    bencher.bench_local(|| {
        let snapshot = supervisor.snapshot();
        assert_eq!(snapshot.tasks.len(), tasks);
        snapshot
    });
    runtime.shutdown_background();
}

/// What the dashboard asks for: the 50 oldest tasks, and the counts of all.
#[divan::bench]
fn snapshot_oldest_50_of_100k(bencher: Bencher<'_, '_>) {
    let tasks = scaled(100_000);
    let (runtime, supervisor) = loaded(tasks, true);
    bencher.bench_local(|| supervisor.snapshot_oldest(50));
    runtime.shutdown_background();
}

#[divan::bench]
fn len_100k(bencher: Bencher<'_, '_>) {
    let tasks = scaled(100_000);
    let (runtime, supervisor) = loaded(tasks, true);
    bencher.bench_local(|| supervisor.len());
    runtime.shutdown_background();
}
