//! Where a stored job is.

use std::fmt;

use crate::id::JobId;

/// A stored job's state, as [`DurableJobs::status`](crate::DurableJobs::status) reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JobState {
    /// Waiting to run: new, delayed, or back in the queue after an interrupted run.
    Pending,
    /// Running on a worker.
    Running,
    /// Finished successfully.
    Done,
    /// Failed an attempt and waits for its retry.
    Failed,
    /// Will not run again: every attempt failed, or its payload no longer deserializes.
    Dead,
}

impl JobState {
    /// The lowercase name: `pending`, `running`, `done`, `failed` or `dead`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(background_tasks_apalis::JobState::Dead.as_str(), "dead");
    /// ```
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Dead => "dead",
        }
    }

    /// Returns `true` for the states a job does not leave: done and dead.
    #[must_use]
    pub fn is_final(self) -> bool {
        matches!(self, Self::Done | Self::Dead)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored job: its state, attempts and last error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStatus {
    pub(crate) id: JobId,
    pub(crate) queue: String,
    pub(crate) state: JobState,
    pub(crate) attempts: u32,
    pub(crate) max_attempts: u32,
    pub(crate) last_error: Option<String>,
}

impl JobStatus {
    /// The job's id.
    #[must_use]
    pub fn id(&self) -> &JobId {
        &self.id
    }

    /// The job's queue: its [`Job::NAME`](crate::Job::NAME).
    #[must_use]
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Where the job is.
    #[must_use]
    pub fn state(&self) -> JobState {
        self.state
    }

    /// How many attempts have ended, in success or failure (a run interrupted by shutdown is
    /// not counted; a run lost with its process is).
    #[must_use]
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// How many attempts the job has in all.
    #[must_use]
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The error of the last failed attempt, or why the job is dead.
    #[must_use]
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }
}
