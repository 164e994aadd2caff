//! What a running durable job knows about itself and the shutdown.

use std::fmt;

use background_tasks::TaskContext;

use crate::id::JobId;

/// Handed to [`Job::run`](crate::Job::run): the job's id and attempt, and the supervisor's
/// shutdown and cancellation signals.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use background_tasks_apalis::{BoxError, JobContext};
///
/// async fn resize(ctx: JobContext) -> Result<(), BoxError> {
///     for _chunk in 0..10 {
///         if ctx.is_cancelled() {
///             // Back in the queue without consuming an attempt; another process resumes.
///             return Err("interrupted".into());
///         }
///         tokio::time::sleep(Duration::from_millis(10)).await;
///     }
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct JobContext {
    task: TaskContext,
    id: JobId,
    attempt: u32,
    max_attempts: u32,
}

impl JobContext {
    pub(crate) fn new(task: TaskContext, id: JobId, attempt: u32, max_attempts: u32) -> Self {
        Self {
            task,
            id,
            attempt,
            max_attempts,
        }
    }

    /// The job's id, as [`DurableJobs::enqueue`](crate::DurableJobs::enqueue) returned it.
    #[must_use]
    pub fn id(&self) -> &JobId {
        &self.id
    }

    /// Which attempt this is, from 1.
    #[must_use]
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// How many attempts the job has in all.
    #[must_use]
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Resolves when the supervisor's shutdown begins (the drain): a job may finish, but should
    /// not start more work than it must.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn shutdown_started(&self) {
        self.task.shutdown_started().await;
    }

    /// Returns `true` once the supervisor's shutdown has begun.
    #[must_use]
    pub fn is_shutting_down(&self) -> bool {
        self.task.is_shutting_down()
    }

    /// Resolves when the supervisor's cancel phase begins: the drain budget is spent and the
    /// job is aborted after the grace. A job that stops then with an `Err` goes back to the
    /// queue without consuming an attempt.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn cancelled(&self) {
        self.task.cancelled().await;
    }

    /// Returns `true` once the cancel phase has begun.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.task.is_cancelled()
    }

    /// The context of the supervised task that runs this job, to spawn follow-up in-process
    /// tasks.
    #[must_use]
    pub fn task_context(&self) -> &TaskContext {
        &self.task
    }
}

impl fmt::Debug for JobContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobContext")
            .field("id", &self.id)
            .field("attempt", &self.attempt)
            .field("max_attempts", &self.max_attempts)
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}
