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
//! - `metrics`: the jobs through the `metrics` facade (see [Metrics](#metrics)), with the
//!   core's own `metrics` feature.
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
//! # Metrics
//!
//! With the `metrics` cargo feature (off by default), the jobs are recorded through the
//! [`metrics`](https://docs.rs/metrics/0.24) facade, for any exporter:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `background_jobs_enqueued_total` | counter | `job` |
//! | `background_jobs_finished_total` | counter | `job`, `outcome`: `done`, `failed`, `dead`, `returned` |
//! | `background_jobs_duration_seconds` | histogram | `job` |
//! | `background_jobs_running` | gauge | `job` |
//! | `background_jobs_pending` | gauge | `job` |
//!
//! - `enqueued_total` counts the jobs an enqueue stored: not a second enqueue with the same
//!   idempotency key, which stores nothing; with `DurableJobs::enqueue_in`, the job counts at
//!   the insert, even if the transaction is rolled back later.
//! - `finished_total` counts attempts as this process records their end: `done` (the handler
//!   returned `Ok`), `failed` (an `Err` or a panic with attempts left: the job waits for its
//!   retry), `dead` (its last attempt failed, its payload no longer deserializes, or its
//!   worker was lost during its last attempt) and `returned` (shutdown interrupted it and put
//!   it back in the queue without using an attempt, see [`DurableShutdownReport::returned`]).
//!   A job ends as one `done` or `dead`, after any number of `failed` and `returned`. Not
//!   counted: a run that dies with its process (the process that runs the job again counts
//!   that run), an outcome dropped because another worker had reclaimed the job (this one was
//!   silent past [`orphan_after`](WorkersBuilder::orphan_after)), and the aborted jobs that
//!   could not be put back ([`DurableShutdownReport::not_returned`]).
//! - `duration_seconds` times each run of a handler, from its start to its end however it
//!   ends, shutdown's abort included. A payload that does not deserialize runs no handler.
//! - The gauges are set by `DurableJobs::record_metrics`, which a scrape handler calls:
//!   `running` is the handlers running in this process now, `pending` the jobs waiting in the
//!   database (new, delayed, back from an interrupted run, or failed and waiting for their
//!   retry), one indexed count per job type, the same in every process that shares the
//!   database. They are set for the job types of the workers started from these
//!   [`DurableJobs`].
//!
//! The `job` label is the job type's [`Job::NAME`]: a constant of a type the program defines,
//! so the labels are a fixed set, known when the program is compiled; no id, payload or user
//! input ever becomes a label. The jobs' supervised tasks are named after it too, so the
//! core's `background_tasks_*` metrics label them the same way.
//!
//! [apalis]: https://docs.rs/apalis
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
// Denied, not forbidden: one call into SQLite's C API, the query planner setting that sqlx has
// no option for (`store/sqlite.rs`, `plan_without_bound_values`: without it every poll of the
// fetcher parsed and planned apalis's fetch statement again), allowed where it is made.
#![deny(unsafe_code)]

mod context;
mod error;
mod id;
mod job;
mod jobs;
#[cfg(feature = "metrics")]
mod metrics;
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
