//! What a task's span costs under `tracing-subscriber`'s `fmt` layer, the subscriber most apps
//! install: 200 000 tasks that suspend once, spawned from a runtime worker, under a `fmt`
//! subscriber writing to a sink, with the span at the default level (`DEBUG`, off under the
//! filter) or at `INFO` (on).
//!
//! ```text
//! cargo bench -p background-tasks --bench span --no-run   # prints the binary's path
//! <binary> info 5             # span at INFO under an `info` filter: five timed rounds
//! <binary> default 5          # the default span level under the same filter
//! valgrind --tool=callgrind <binary> info 1      # the same, counted in instructions
//! ```
//!
//! Figures (callgrind's totals divided by the tasks) are in docs/benchmarks.md.

use std::time::Instant;

use background_tasks::TaskSupervisor;
use tracing::Level;
use tracing_subscriber::EnvFilter;

const TASKS: u32 = 200_000;

fn main() {
    let mut args = std::env::args().skip(1).filter(|arg| arg != "--bench");
    let span = args.next().unwrap_or_else(|| "default".to_owned());
    let rounds: u32 = args.next().map_or(5, |rounds| {
        rounds.parse().expect("the number of rounds is a number")
    });
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("info"))
        .with_writer(std::io::sink)
        .init();
    let builder = TaskSupervisor::builder();
    let supervisor = match span.as_str() {
        "info" => builder.task_span_level(Level::INFO),
        "default" => builder,
        other => panic!("span level {other:?}: say `info` or `default`"),
    }
    .build();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    for round in 1..=rounds {
        let supervisor = supervisor.clone();
        let started = Instant::now();
        runtime
            .block_on(runtime.spawn(async move {
                for _ in 0..TASKS {
                    supervisor
                        .spawn(tokio::task::yield_now())
                        .expect("admitted");
                }
                supervisor.wait_idle().await;
            }))
            .expect("the driver does not panic");
        println!(
            "span {span}, round {round}: {:?} per task",
            started.elapsed() / TASKS
        );
    }
}
