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
mod registry;
mod report;
mod shutdown;
mod snapshot;
mod spawn;
mod state;
mod supervisor;
mod sync;
mod task_builder;

pub use builder::SupervisorBuilder;
pub use context::TaskContext;
pub use error::{SpawnError, TaskError};
pub use failure::{FailureKind, TaskFailure};
pub use handle::{TaskHandle, TaskId};
pub use report::{ShutdownReport, TaskRecord};
pub use snapshot::{
    Counters, NameCount, RECENT_FAILURES, RecentFailure, RunningTask, ShutdownProgress, Snapshot,
    SupervisorPhase, TaskKind,
};
pub use supervisor::TaskSupervisor;
pub use task_builder::TaskBuilder;
