//! Durable jobs for `background-tasks` on [apalis]: jobs stored in SQLite (one file, nothing
//! to install) or PostgreSQL (feature `postgres`, for many processes or machines), run by
//! workers that are tasks of the same [`TaskSupervisor`](background_tasks::TaskSupervisor),
//! under the same shutdown budget and report as in-process tasks.
//!
//! - **Define** a job as a serializable type with a name and one async handler ([`Job`]).
//! - **Enqueue** it in one line from a handler ([`DurableJobs::enqueue`]); `?` turns an
//!   unreachable database or a shutdown under way into a `503` with `Retry-After`
//!   ([`DurableJobError`]). Options: a delay, an idempotency key, the attempts
//!   ([`EnqueueOptions`]). On PostgreSQL, `DurableJobs::enqueue_in` stores the job in the
//!   caller's own transaction, so that it exists exactly when the request's data does.
//! - **Run** it on [`Workers`], a fetcher per job type with its own concurrency and a
//!   supervised task per job. The supervisor's shutdown drives them: fetching stops at once;
//!   running jobs may finish in the drain; their handlers see the cancellation
//!   ([`JobContext::cancelled`]); the jobs the abort ends go back to the queue at once,
//!   without consuming an attempt, and [`Workers::finish`] names them
//!   ([`DurableShutdownReport`]).
//! - **Crashes**: a job whose process died runs again on another worker, or the same process
//!   restarted, once its worker has been silent for
//!   [`orphan_after`](WorkersBuilder::orphan_after) (5 s by default): at least once.
//! - **Failures**: an `Err` or a panic is retried with backoff up to the job's attempts, then
//!   the job is dead with its last error ([`JobStatus::last_error`]); a payload that no longer
//!   deserializes is dead at once. Each failure goes through tracing and the supervisor's
//!   `on_failure` callback, as a panic of the job's task (the core has no other public way in).
//!
//! # Features
//!
//! - `postgres`: `postgres://` URLs, on apalis-postgres (for several processes or machines
//!   sharing the work), and `DurableJobs::enqueue_in`.
//!
//! The tables and most queries are apalis's own (`apalis-sqlite`, `apalis-postgres`): the
//! queue is apalis's queue, readable by its tools.
//!
//! ```
//! use background_tasks::TaskSupervisor;
//! use background_tasks_apalis::{BoxError, DurableJobs, Job, JobContext};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct SendReceipt {
//!     order: u64,
//! }
//!
//! impl Job for SendReceipt {
//!     const NAME: &'static str = "send-receipt";
//!     type State = ();
//!
//!     async fn run(self, _state: (), ctx: JobContext) -> Result<(), BoxError> {
//!         tracing::info!(order = self.order, attempt = ctx.attempt(), "sending");
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("bta-lib-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! # let url = format!("sqlite://{}/jobs.db", dir.display());
//! let supervisor = TaskSupervisor::new();
//! let jobs = DurableJobs::builder(&url).supervisor(&supervisor).connect().await?;
//! let workers = jobs.workers(&supervisor).job::<SendReceipt>(4, ()).start().await?;
//!
//! jobs.enqueue(SendReceipt { order: 7 }).await?;
//!
//! // At exit: the supervisor's phases, then the aborted jobs back in the queue.
//! let report = workers.finish(supervisor.shutdown().await).await;
//! println!("{report}");
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```
//!
//! [apalis]: https://docs.rs/apalis
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![forbid(unsafe_code)]

mod context;
mod error;
mod id;
mod job;
mod jobs;
mod options;
mod report;
mod status;
mod store;
mod worker;

pub use context::JobContext;
pub use error::{ConnectError, DurableJobError};
pub use id::{JobId, ParseJobIdError};
pub use job::{BoxError, Job};
pub use jobs::{DurableJobs, DurableJobsBuilder};
pub use options::EnqueueOptions;
pub use report::{DurableShutdownReport, ReturnedJob};
pub use status::{JobState, JobStatus};
pub use worker::{FetchersHandle, Workers, WorkersBuilder};
