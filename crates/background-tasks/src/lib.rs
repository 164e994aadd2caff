//! Supervised background tasks for tokio: work that outlives the request that spawned it but
//! not the process, tracked while it runs, drained within a budget at shutdown, then cancelled
//! and aborted, and never lost without a word.
//!
//! This is the framework-agnostic core; `background-tasks-axum` plugs it into axum. The model
//! is Quart's `app.add_background_task` with `BACKGROUND_TASK_SHUTDOWN_TIMEOUT`, with what
//! Quart lacks: handles and results, tasks spawned during shutdown that are awaited like the
//! rest, blocking tasks that are reported when they outlive the budget, a failure callback,
//! an admission limit, and an exact report.
//!
//! ```
//! use std::time::Duration;
//! use background_tasks::{SpawnError, TaskSupervisor};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), SpawnError> {
//! let supervisor = TaskSupervisor::builder()
//!     .shutdown_timeout(Duration::from_secs(5))
//!     .cancel_grace(Duration::from_secs(1))
//!     .on_failure(|failure| eprintln!("{failure}"))
//!     .build();
//!
//! // Fire and forget: the task runs on after this scope, and shutdown waits for it.
//! supervisor.task("send-receipt").spawn(async {
//!     tokio::time::sleep(Duration::from_millis(200)).await;
//! })?;
//!
//! // A long-lived task that stops when asked.
//! supervisor.task("heartbeat").spawn_with(|ctx| async move {
//!     while !ctx.is_shutting_down() {
//!         tokio::select! {
//!             _ = ctx.shutdown_started() => {}
//!             _ = tokio::time::sleep(Duration::from_secs(1)) => tracing::info!("alive"),
//!         }
//!     }
//! })?;
//!
//! let report = supervisor.shutdown().await;
//! assert_eq!(report.completed(), 2);
//! println!("{report}");
//! # Ok(())
//! # }
//! ```
//!
//! While it runs, [`TaskSupervisor::snapshot`] tells what it is doing: the running tasks with
//! their names and ages, their counts by name, counters of every outcome since it was built,
//! the recent failures and the progress of a shutdown, without stopping anything.
//!
//! # Metrics
//!
//! With the `metrics` cargo feature (off by default), the supervisor records its tasks through
//! the [`metrics`](https://docs.rs/metrics/0.24) facade, for any exporter:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `background_tasks_spawned_total` | counter | `name` |
//! | `background_tasks_finished_total` | counter | `name`, `outcome`: `completed`, `panicked`, `cancelled`, `aborted`, `abandoned`, `timed_out` |
//! | `background_tasks_refused_total` | counter | `reason`: `shutting_down`, `at_capacity`, `queue_full` |
//! | `background_tasks_duration_seconds` | histogram | `name` |
//! | `background_tasks_running` | gauge | |
//! | `background_tasks_oldest_age_seconds` | gauge | |
//! | `background_tasks_waiting` | gauge | `name`: each name with a `SupervisorBuilder::limit` |
//!
//! Counters and the histogram are recorded as tasks spawn and end (a task's duration runs from
//! its first suspension, or a blocking task's spawn; a task that ends in its first poll counts
//! 0 s). The gauges are set by `TaskSupervisor::record_metrics`, which a scrape handler
//! calls. A task counts as finished when it ends: a blocking task abandoned by shutdown when its
//! thread returns, and during the drain any end but a panic is `completed`, as in the
//! [`ShutdownReport`]. Each goes to the recorder in place where the task spawns or ends, as
//! the `metrics` macros would send it: a global recorder installed after the supervisor was
//! built gets every later task. The supervisor keeps, per name, the handles that recorder gave,
//! so that a task builds no metric key and looks up nothing in the recorder's registry.
//!
//! Every label value is a time series your metrics backend keeps, so task names must come from
//! a small, fixed set (`"send-mail"`, never `"send-mail-42"` or user input). Unnamed tasks are
//! labelled `METRIC_LABEL_UNNAMED` (`unnamed`); past `METRIC_NAMES_LIMIT` (100) distinct names,
//! new names are labelled `METRIC_LABEL_OTHER` (`other`), with a warning logged once.
//!
//! See `docs/design.md` in the repository for the phases, the states and what each count of
//! the [`ShutdownReport`] means.
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![forbid(unsafe_code)]

mod builder;
mod context;
mod error;
mod failure;
mod handle;
mod limit;
#[cfg(feature = "metrics")]
mod metrics;
mod names;
mod ready;
mod registry;
mod report;
mod shutdown;
mod snapshot;
mod spawn;
mod state;
mod supervisor;
mod sync;
mod task_builder;
mod timeout;
mod tracked;

pub use builder::SupervisorBuilder;
pub use context::TaskContext;
pub use error::{SpawnError, TaskError};
pub use failure::{FailureKind, TaskFailure};
pub use handle::{TaskHandle, TaskId};
pub use limit::Limit;
#[cfg(feature = "metrics")]
pub use metrics::{METRIC_LABEL_OTHER, METRIC_LABEL_UNNAMED, METRIC_NAMES_LIMIT};
pub use report::{ShutdownReport, TaskRecord};
pub use snapshot::{
    Counters, NameCount, RECENT_FAILURES, RecentFailure, RunningTask, ShutdownProgress, Snapshot,
    SupervisorPhase, TaskKind,
};
pub use supervisor::TaskSupervisor;
pub use task_builder::TaskBuilder;
pub use tracked::TrackedFuture;
