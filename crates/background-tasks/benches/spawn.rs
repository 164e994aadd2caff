//! What supervision costs, measured side by side in one run: `TaskSupervisor` against
//! `tokio::spawn` and `tokio_util`'s `TaskTracker` on the same runtime.
//!
//! - `spawn_1m`: spawn and completion of 1 000 000 no-op tasks from a task on a 2-worker
//!   runtime, waiting for all of them (`wait_idle`, `close` + `wait`, or the join handles).
//! - `spawn_1m_outside`: the same million spawned from the thread in `block_on`, which is not
//!   one of the runtime's workers.
//! - `spawn_1m_2_threads`: the same million spawned by two runtime workers at once, half each,
//!   so that both contend on the supervisor's (or tracker's) shared state.
//! - `shutdown_100k`: `shutdown()` with 100 000 idle tasks that all end at the cancellation
//!   signal, against cancelling a `CancellationToken` and waiting on a `TaskTracker`.
//! - `abort_30k`: a shutdown with no budget that must abort 30 000 stuck tasks (pending, or
//!   sleeping on a timer), until it reports and until the tasks have ended, and formatting
//!   its report: the one-line `Display`, and the alternate form that names every task.
//! - `memory_10k`: heap bytes allocated by the spawning thread for 10 000 tasks that stay
//!   pending (divan's `AllocProfiler`); divide by 10 000 for bytes per running task.
//!
//! Run with `cargo bench -p background-tasks --bench spawn`; `benchmarks/spawn-ratios` runs it
//! and prints each variant's median as a ratio to `TaskTracker`. `cargo test --benches` runs
//! every benchmark once, with a thousandth of the tasks.

use std::future::{Future, pending};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use background_tasks::{ShutdownReport, TaskSupervisor};
use divan::{AllocProfiler, Bencher};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod common;
use common::{runtime, scaled};

// Counting allocations costs a thread-local access per allocation, in every variant alike.
#[global_allocator]
static ALLOC: AllocProfiler = AllocProfiler::system();

fn main() {
    divan::main();
}

/// Runs `driver` as a task on `runtime` (so that it spawns from a worker, as a handler does)
/// and blocks until it is done.
fn run_in<F>(runtime: &Runtime, driver: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    runtime
        .block_on(runtime.spawn(driver))
        .expect("the driver task does not panic");
}

/// Spawns `tasks` no-op tasks on a `TaskTracker` and waits until all ended.
async fn tracked(tasks: usize) {
    let tracker = TaskTracker::new();
    for _ in 0..tasks {
        tracker.spawn(async {});
    }
    tracker.close();
    tracker.wait().await;
}

/// Spawns `tasks` no-op tasks with `TaskSupervisor::spawn` and waits until all ended.
async fn supervised(tasks: usize) {
    let supervisor = TaskSupervisor::new();
    for _ in 0..tasks {
        let _detached = supervisor.spawn(async {}).expect("admitted");
    }
    supervisor.wait_idle().await;
}

/// Spawns `tasks` named no-op tasks (`task("noop").spawn`) and waits until all ended.
async fn supervised_named(tasks: usize) {
    let supervisor = TaskSupervisor::new();
    for _ in 0..tasks {
        let _detached = supervisor.task("noop").spawn(async {}).expect("admitted");
    }
    supervisor.wait_idle().await;
}

/// Spawns `tasks` no-op tasks through each API and waits for all of them to end.
#[divan::bench_group(sample_count = 15, sample_size = 1)]
mod spawn_1m {
    use super::*;

    const TASKS: usize = 1_000_000;

    #[divan::bench]
    fn tokio_spawn(bencher: Bencher<'_, '_>) {
        let runtime = runtime();
        let tasks = scaled(TASKS);
        bencher.bench_local(|| {
            run_in(&runtime, async move {
                let mut handles = Vec::with_capacity(tasks);
                for _ in 0..tasks {
                    handles.push(tokio::spawn(async {}));
                }
                for handle in handles {
                    handle.await.expect("no-op tasks do not fail");
                }
            });
        });
    }

    #[divan::bench]
    fn task_tracker(bencher: Bencher<'_, '_>) {
        let runtime = runtime();
        let tasks = scaled(TASKS);
        bencher.bench_local(|| {
            run_in(&runtime, tracked(tasks));
        });
    }

    #[divan::bench]
    fn supervisor_spawn(bencher: Bencher<'_, '_>) {
        let runtime = runtime();
        let tasks = scaled(TASKS);
        bencher.bench_local(|| {
            run_in(&runtime, supervised(tasks));
        });
    }

    #[divan::bench]
    fn supervisor_named(bencher: Bencher<'_, '_>) {
        let runtime = runtime();
        let tasks = scaled(TASKS);
        bencher.bench_local(|| {
            run_in(&runtime, supervised_named(tasks));
        });
    }

    #[divan::bench]
    fn supervisor_spawn_with(bencher: Bencher<'_, '_>) {
        let runtime = runtime();
        let tasks = scaled(TASKS);
        bencher.bench_local(|| {
            run_in(&runtime, async move {
                let supervisor = TaskSupervisor::new();
                for _ in 0..tasks {
                    let _detached = supervisor.spawn_with(|_ctx| async {}).expect("admitted");
                }
                supervisor.wait_idle().await;
            });
        });
    }
}

/// The same million tasks, spawned from a thread that is not one of the runtime's workers: the
/// thread in `block_on`, as a `main` spawning startup work does (a std thread or a blocking
/// task handing work back is in the same place). Each spawn goes through the runtime's shared
/// queue, and each task ends on a worker.
#[divan::bench_group(sample_count = 15, sample_size = 1)]
mod spawn_1m_outside {
    use super::*;

    const TASKS: usize = 1_000_000;

    #[divan::bench]
    fn task_tracker(bencher: Bencher<'_, '_>) {
        let runtime = runtime();
        let tasks = scaled(TASKS);
        bencher.bench_local(|| {
            runtime.block_on(tracked(tasks));
        });
    }

    #[divan::bench]
    fn supervisor_spawn(bencher: Bencher<'_, '_>) {
        let runtime = runtime();
        let tasks = scaled(TASKS);
        bencher.bench_local(|| {
            runtime.block_on(supervised(tasks));
        });
    }

    #[divan::bench]
    fn supervisor_named(bencher: Bencher<'_, '_>) {
        let runtime = runtime();
        let tasks = scaled(TASKS);
        bencher.bench_local(|| {
            runtime.block_on(supervised_named(tasks));
        });
    }
}

/// The same million tasks, spawned half each by two workers running at the same time.
#[divan::bench_group(sample_count = 15, sample_size = 1)]
mod spawn_1m_2_threads {
    use super::*;

    const TASKS: usize = 1_000_000;
    const THREADS: usize = 2;

    /// Runs `spawn_half` on both workers at once, then `wait`.
    fn contended<S, W, WF>(runtime: &Runtime, spawn_half: S, wait: W)
    where
        S: Fn() + Send + Sync + 'static,
        W: FnOnce() -> WF,
        WF: Future<Output = ()> + Send + 'static,
    {
        let spawn_half = Arc::new(spawn_half);
        // A thread barrier, not an async one: it holds each driver on its worker until the
        // other worker runs the other driver, so that both really spawn in parallel.
        let barrier = Arc::new(Barrier::new(THREADS));
        let drivers: Vec<_> = (0..THREADS)
            .map(|_| {
                let spawn_half = spawn_half.clone();
                let barrier = barrier.clone();
                runtime.spawn(async move {
                    barrier.wait();
                    spawn_half();
                })
            })
            .collect();
        let wait = wait();
        runtime.block_on(async move {
            for driver in drivers {
                driver.await.expect("the driver task does not panic");
            }
            wait.await;
        });
    }

    #[divan::bench]
    fn task_tracker(bencher: Bencher<'_, '_>) {
        let runtime = runtime();
        let half = scaled(TASKS) / THREADS;
        bencher.bench_local(|| {
            let tracker = TaskTracker::new();
            let spawner = tracker.clone();
            contended(
                &runtime,
                move || {
                    for _ in 0..half {
                        spawner.spawn(async {});
                    }
                },
                move || async move {
                    tracker.close();
                    tracker.wait().await;
                },
            );
        });
    }

    #[divan::bench]
    fn supervisor_spawn(bencher: Bencher<'_, '_>) {
        let runtime = runtime();
        let half = scaled(TASKS) / THREADS;
        bencher.bench_local(|| {
            let supervisor = TaskSupervisor::new();
            let spawner = supervisor.clone();
            contended(
                &runtime,
                move || {
                    for _ in 0..half {
                        let _detached = spawner.spawn(async {}).expect("admitted");
                    }
                },
                move || async move { supervisor.wait_idle().await },
            );
        });
    }
}

/// How long it takes to stop 100 000 idle tasks that all end at the cancellation signal.
#[divan::bench_group(sample_count = 15, sample_size = 1)]
mod shutdown_100k {
    use super::*;

    const TASKS: usize = 100_000;

    /// Blocks until `started` reaches `tasks`, so that every task waits on its signal before
    /// the clock starts; bounded, since a bug here must not hang the run.
    fn wait_started(started: &AtomicUsize, tasks: usize) {
        for _ in 0..10_000 {
            // Relaxed: only the count matters, and the tasks publish nothing else.
            if started.load(Ordering::Relaxed) == tasks {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("the idle tasks did not all start within 10 s");
    }

    #[divan::bench]
    fn supervisor_shutdown(bencher: Bencher<'_, '_>) {
        let tasks = scaled(TASKS);
        bencher
            .with_inputs(|| {
                let runtime = runtime();
                // A grace no run comes near: every task ends at the cancellation signal, and
                // `shutdown()` returns when the last one has. Under valgrind, or on a loaded
                // machine, the default second ran out and aborted part of them.
                let supervisor = TaskSupervisor::builder()
                    .shutdown_timeout(Duration::ZERO)
                    .cancel_grace(Duration::from_secs(600))
                    .build();
                let started = Arc::new(AtomicUsize::new(0));
                {
                    let _entered = runtime.enter();
                    for _ in 0..tasks {
                        let started = started.clone();
                        let _detached = supervisor
                            .spawn_with(|ctx| async move {
                                started.fetch_add(1, Ordering::Relaxed);
                                ctx.cancelled().await;
                            })
                            .expect("admitted");
                    }
                }
                wait_started(&started, tasks);
                (runtime, supervisor)
            })
            .bench_local_values(|(runtime, supervisor)| {
                let report = runtime.block_on(supervisor.shutdown());
                assert_eq!(report.cancelled(), tasks, "{report}");
                // Dropped after the clock stops: tearing the runtime down is not shutdown.
                (runtime, supervisor)
            });
    }

    #[divan::bench]
    fn token_and_tracker(bencher: Bencher<'_, '_>) {
        let tasks = scaled(TASKS);
        bencher
            .with_inputs(|| {
                let runtime = runtime();
                let tracker = TaskTracker::new();
                let token = CancellationToken::new();
                let started = Arc::new(AtomicUsize::new(0));
                {
                    let _entered = runtime.enter();
                    for _ in 0..tasks {
                        let started = started.clone();
                        let token = token.clone();
                        tracker.spawn(async move {
                            started.fetch_add(1, Ordering::Relaxed);
                            token.cancelled().await;
                        });
                    }
                }
                wait_started(&started, tasks);
                (runtime, tracker, token)
            })
            .bench_local_values(|(runtime, tracker, token)| {
                runtime.block_on(async {
                    tracker.close();
                    token.cancel();
                    tracker.wait().await;
                });
                (runtime, tracker, token)
            });
    }
}

/// Heap bytes that 10 000 running (pending) tasks cost, as counted by divan's `AllocProfiler`
/// on the spawning thread: the task cells, the supervisor's registry entries and the growth of
/// its slabs. The tasks' first polls run on the workers and are not counted; a pending future
/// allocates nothing there.
#[divan::bench_group(sample_count = 10, sample_size = 1)]
mod memory_10k {
    use super::*;

    const TASKS: usize = 10_000;

    #[divan::bench]
    fn tokio_spawn(bencher: Bencher<'_, '_>) {
        let tasks = scaled(TASKS);
        bencher
            .with_inputs(|| (runtime(), Vec::with_capacity(tasks)))
            .bench_local_values(|(runtime, mut handles)| {
                {
                    let _entered = runtime.enter();
                    for _ in 0..tasks {
                        handles.push(tokio::spawn(pending::<()>()));
                    }
                }
                (runtime, handles)
            });
    }

    #[divan::bench]
    fn task_tracker(bencher: Bencher<'_, '_>) {
        let tasks = scaled(TASKS);
        bencher
            .with_inputs(|| (runtime(), TaskTracker::new(), Vec::with_capacity(tasks)))
            .bench_local_values(|(runtime, tracker, mut handles)| {
                {
                    let _entered = runtime.enter();
                    for _ in 0..tasks {
                        handles.push(tracker.spawn(pending::<()>()));
                    }
                }
                (runtime, tracker, handles)
            });
    }

    #[divan::bench]
    fn supervisor_spawn(bencher: Bencher<'_, '_>) {
        let tasks = scaled(TASKS);
        bencher
            .with_inputs(|| (runtime(), TaskSupervisor::new(), Vec::with_capacity(tasks)))
            .bench_local_values(|(runtime, supervisor, mut handles)| {
                {
                    let _entered = runtime.enter();
                    for _ in 0..tasks {
                        handles.push(supervisor.spawn(pending::<()>()).expect("admitted"));
                    }
                }
                (runtime, supervisor, handles)
            });
    }

    #[divan::bench]
    fn supervisor_spawn_with(bencher: Bencher<'_, '_>) {
        let tasks = scaled(TASKS);
        bencher
            .with_inputs(|| (runtime(), TaskSupervisor::new(), Vec::with_capacity(tasks)))
            .bench_local_values(|(runtime, supervisor, mut handles)| {
                {
                    let _entered = runtime.enter();
                    for _ in 0..tasks {
                        handles.push(
                            supervisor
                                .spawn_with(|ctx| async move { ctx.cancelled().await })
                                .expect("admitted"),
                        );
                    }
                }
                (runtime, supervisor, handles)
            });
    }
}

/// Where the time goes past the budget when a shutdown has to abort many tasks: the abort
/// phase itself, and formatting the report, whose `Display` names every aborted task.
#[divan::bench_group(sample_count = 10, sample_size = 1)]
mod abort_30k {
    use super::*;

    const TASKS: usize = 30_000;

    /// A runtime and a supervisor with no budget at all, running `tasks` tasks that never end:
    /// pending futures, or (`sleeping`) 10-minute sleeps, which hold a timer entry each, as
    /// the quickstart's `async` jobs do.
    fn stuck(tasks: usize, sleeping: bool) -> (Runtime, TaskSupervisor) {
        let runtime = runtime();
        let supervisor = TaskSupervisor::builder()
            .shutdown_timeout(Duration::ZERO)
            .cancel_grace(Duration::ZERO)
            .build();
        {
            let _entered = runtime.enter();
            for _ in 0..tasks {
                let _detached = if sleeping {
                    supervisor
                        .task("stuck-job")
                        .spawn(tokio::time::sleep(Duration::from_secs(600)))
                        .expect("admitted")
                } else {
                    supervisor
                        .task("stuck-job")
                        .spawn(async { pending::<()>().await })
                        .expect("admitted")
                };
            }
        }
        // Lets the workers poll every task once, as on a server where they have been running.
        runtime.block_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
        (runtime, supervisor)
    }

    #[divan::bench(args = [false, true])]
    fn shutdown_aborting_all(bencher: Bencher<'_, '_>, sleeping: bool) {
        bench_shutdown(bencher, sleeping, false);
    }

    /// The same shutdown, until every aborted task has also ended on its worker: what the
    /// process pays before it can exit with nothing left running.
    #[divan::bench(args = [false, true])]
    fn shutdown_until_ended(bencher: Bencher<'_, '_>, sleeping: bool) {
        bench_shutdown(bencher, sleeping, true);
    }

    fn bench_shutdown(bencher: Bencher<'_, '_>, sleeping: bool, until_ended: bool) {
        let tasks = scaled(TASKS);
        bencher
            .with_inputs(|| stuck(tasks, sleeping))
            .bench_local_values(|(runtime, supervisor)| {
                let report = runtime.block_on(async {
                    let report = supervisor.shutdown().await;
                    if until_ended {
                        supervisor.wait_idle().await;
                    }
                    report
                });
                assert_eq!(report.aborted(), tasks, "{}", report.aborted());
                (runtime, supervisor, report)
            });
    }

    #[divan::bench]
    fn report_to_string(bencher: Bencher<'_, '_>) {
        bench_report(bencher, |report| report.to_string());
    }

    /// The alternate form, which names all 30 000 tasks.
    #[divan::bench]
    fn report_to_string_alternate(bencher: Bencher<'_, '_>) {
        bench_report(bencher, |report| format!("{report:#}"));
    }

    fn bench_report(bencher: Bencher<'_, '_>, format: fn(&ShutdownReport) -> String) {
        let tasks = scaled(TASKS);
        bencher
            .with_inputs(|| {
                let (runtime, supervisor) = stuck(tasks, false);
                let report = runtime.block_on(supervisor.shutdown());
                (runtime, supervisor, report)
            })
            .bench_local_values(|(runtime, supervisor, report)| {
                let line = format(&report);
                (runtime, supervisor, report, line)
            });
    }
}
