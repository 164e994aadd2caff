//! Tearing down 200 000 tasks that sleep for ten minutes, three ways, each in a fresh process:
//!
//! - `runtime_drop`: bare `tokio::spawn`, the runtime dropped with the tasks in it (what a
//!   process that exits without any shutdown pays);
//! - `token_and_tracker`: the tasks select on a `CancellationToken` and are spawned on a
//!   `TaskTracker`; cancel, close, wait, then drop the runtime (the hand-written shutdown);
//! - `supervisor`: named supervised tasks, `shutdown()` with no budget and no grace (so every
//!   task is aborted at once), then drop the runtime.
//!
//! `cargo bench -p background-tasks --bench teardown -- <way> [tasks]` prints one JSON line: the
//! time to the report (or to the end of the wait) and to the end of the runtime's drop, both
//! from the moment the shutdown began. Issue 9's shutdown target is about this process: the
//! quickstart exits when its runtime has dropped the tasks its report names.
//!
//! Run with no way (as `cargo test --benches` does), it checks each way with 1 000 tasks.

use std::time::{Duration, Instant};

use background_tasks::TaskSupervisor;
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod common;

const WAYS: [&str; 3] = ["runtime_drop", "token_and_tracker", "supervisor"];

/// Long enough never to end during a run.
const SLEEP: Duration = Duration::from_secs(600);

fn main() {
    let words = common::words();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        [] => {
            for way in WAYS {
                measure(way, 1_000);
            }
        }
        [way] => measure(way, 200_000),
        [way, tasks] => measure(way, tasks.parse().expect("tasks: a whole number")),
        _ => panic!("usage: teardown <way> [tasks]; ways: {}", WAYS.join(", ")),
    }
}

/// Runs `spawn` as a task (from a worker, as a handler spawns), then lets every task reach its
/// sleep.
fn spawn_all(runtime: &Runtime, spawn: impl FnOnce() + Send + 'static) {
    runtime.block_on(async {
        tokio::spawn(async move { spawn() })
            .await
            .expect("the spawning task does not panic");
        tokio::time::sleep(Duration::from_millis(500)).await;
    });
}

fn measure(way: &str, tasks: usize) {
    let runtime = common::runtime();
    let (ended, dropped) = match way {
        "runtime_drop" => {
            spawn_all(&runtime, move || {
                for _ in 0..tasks {
                    drop(tokio::spawn(tokio::time::sleep(SLEEP)));
                }
            });
            let began = Instant::now();
            drop(runtime);
            (began.elapsed(), began.elapsed())
        }
        "token_and_tracker" => {
            let (tracker, token) = (TaskTracker::new(), CancellationToken::new());
            let (spawner, child) = (tracker.clone(), token.clone());
            spawn_all(&runtime, move || {
                for _ in 0..tasks {
                    let token = child.clone();
                    drop(spawner.spawn(async move {
                        tokio::select! {
                            () = token.cancelled() => {}
                            () = tokio::time::sleep(SLEEP) => {}
                        }
                    }));
                }
            });
            let began = Instant::now();
            runtime.block_on(async {
                token.cancel();
                tracker.close();
                tracker.wait().await;
            });
            let ended = began.elapsed();
            drop(runtime);
            (ended, began.elapsed())
        }
        "supervisor" => {
            let supervisor = runtime.block_on(async {
                TaskSupervisor::builder()
                    .shutdown_timeout(Duration::ZERO)
                    .cancel_grace(Duration::ZERO)
                    .build()
            });
            let spawner = supervisor.clone();
            spawn_all(&runtime, move || {
                for _ in 0..tasks {
                    drop(spawner.task("async-job").spawn(tokio::time::sleep(SLEEP)));
                }
            });
            let began = Instant::now();
            let report = runtime.block_on(supervisor.shutdown());
            let ended = began.elapsed();
            assert_eq!(report.aborted(), tasks, "{report}");
            drop(runtime);
            (ended, began.elapsed())
        }
        _ => panic!("unknown way {way}; ways: {}", WAYS.join(", ")),
    };
    println!(
        "{{\"way\":\"{way}\",\"tasks\":{tasks},\"ended_ms\":{:.1},\"dropped_ms\":{:.1}}}",
        ended.as_secs_f64() * 1e3,
        dropped.as_secs_f64() * 1e3
    );
}
