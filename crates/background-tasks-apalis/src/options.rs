//! Options of one enqueue.

use std::time::Duration;

/// How to enqueue one job: after a delay, under an idempotency key, with a number of attempts.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use background_tasks_apalis::EnqueueOptions;
///
/// let options = EnqueueOptions::new()
///     .delay(Duration::from_secs(60))
///     .idempotency_key("welcome-mail:42")
///     .max_attempts(5);
/// assert_eq!(options.get_max_attempts(), Some(5));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnqueueOptions {
    pub(crate) delay: Duration,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) max_attempts: Option<u32>,
}

impl EnqueueOptions {
    /// No delay, no key, and the store's default attempts
    /// ([`DurableJobsBuilder::max_attempts`](crate::DurableJobsBuilder::max_attempts)).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs the job no sooner than `delay` from now. The store keeps whole seconds, so the
    /// delay is rounded up to the next second.
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// A key unique within the job's queue: a second enqueue with the same key stores nothing
    /// and returns the first job's id, for as long as the first job is kept.
    #[must_use]
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// How many times the job may run before it is dead; at least 1.
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts.max(1));
        self
    }

    /// The attempts set with [`max_attempts`](Self::max_attempts), if any.
    #[must_use]
    pub fn get_max_attempts(&self) -> Option<u32> {
        self.max_attempts
    }
}
