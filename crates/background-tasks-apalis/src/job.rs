//! What a durable job is: a named, serializable type with one async handler.

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::JobContext;

/// The error a job's handler returns: anything that implements [`std::error::Error`], or a
/// message (`Err("no such user".into())`), as tower's `BoxError`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A durable job: a serializable value, stored in the queue named [`NAME`](Self::NAME) until a
/// worker runs [`run`](Self::run) on it.
///
/// The stored form is the value's JSON. A job that runs is at least once: a crash or a lost
/// worker reruns it, so its handler should be idempotent (see `docs/guide.md`).
///
/// # Examples
///
/// ```
/// use background_tasks_apalis::{BoxError, Job, JobContext};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct SendWelcomeMail {
///     user: u64,
/// }
///
/// #[derive(Clone)]
/// struct Mailer;
///
/// impl Job for SendWelcomeMail {
///     // The queue's name in the database: renaming the type does not move the queue.
///     const NAME: &'static str = "send-welcome-mail";
///     // What the handler needs besides the payload, given to `WorkersBuilder::job`.
///     type State = Mailer;
///
///     async fn run(self, _mailer: Mailer, ctx: JobContext) -> Result<(), BoxError> {
///         tokio::select! {
///             () = ctx.cancelled() => Err("interrupted by shutdown".into()),
///             () = async { /* send it */ } => Ok(()),
///         }
///     }
/// }
/// ```
pub trait Job: Serialize + DeserializeOwned + Send + 'static {
    /// The queue's name in the database, set explicitly: renaming or moving the type keeps
    /// its queue. It names the job in logs, in failure reports and in the shutdown report.
    const NAME: &'static str;

    /// What the handler gets besides the payload (a connection pool, a client; `()` for
    /// nothing), given once to [`WorkersBuilder::job`](crate::WorkersBuilder::job) and cloned
    /// for each run.
    type State: Clone + Send + Sync + 'static;

    /// Runs the job once.
    ///
    /// An `Err` or a panic is a failed attempt: the job is retried with backoff up to its
    /// maximum attempts, then dead with the last error kept. An `Err` returned once the
    /// supervisor's cancellation signal fired ([`JobContext::is_cancelled`]) is an
    /// interruption instead: the job goes back to the queue without consuming an attempt.
    fn run(
        self,
        state: Self::State,
        ctx: JobContext,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
}
