//! Configuring a supervisor.

use std::fmt;
use std::time::Duration;

use crate::failure::TaskFailure;
use crate::supervisor::{Config, FailureCallback, Inner, TaskSupervisor};

/// Builds a [`TaskSupervisor`] with a shutdown budget, a task limit and a failure callback.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use background_tasks::TaskSupervisor;
///
/// let supervisor = TaskSupervisor::builder()
///     .shutdown_timeout(Duration::from_secs(30))
///     .cancel_grace(Duration::from_secs(5))
///     .max_tasks(10_000)
///     .build();
/// ```
#[must_use = "a SupervisorBuilder does nothing until `build` is called"]
pub struct SupervisorBuilder {
    shutdown_timeout: Duration,
    cancel_grace: Duration,
    max_tasks: Option<usize>,
    on_failure: Option<FailureCallback>,
}

impl SupervisorBuilder {
    /// The default drain budget: 5 seconds, as Quart's `BACKGROUND_TASK_SHUTDOWN_TIMEOUT`.
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks::SupervisorBuilder;
    ///
    /// let supervisor = background_tasks::TaskSupervisor::builder()
    ///     .shutdown_timeout(SupervisorBuilder::DEFAULT_SHUTDOWN_TIMEOUT * 2)
    ///     .build();
    /// ```
    pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
    /// The default time between the cancellation signal and the abort: 1 second.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use background_tasks::SupervisorBuilder;
    ///
    /// assert_eq!(SupervisorBuilder::DEFAULT_CANCEL_GRACE, Duration::from_secs(1));
    /// ```
    pub const DEFAULT_CANCEL_GRACE: Duration = Duration::from_secs(1);

    pub(crate) fn new() -> Self {
        Self {
            shutdown_timeout: Self::DEFAULT_SHUTDOWN_TIMEOUT,
            cancel_grace: Self::DEFAULT_CANCEL_GRACE,
            max_tasks: None,
            on_failure: None,
        }
    }

    /// How long shutdown waits for tasks to end on their own before it fires the
    /// cancellation signal. Zero skips the drain. Default: 5 seconds.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// let supervisor = background_tasks::TaskSupervisor::builder()
    ///     .shutdown_timeout(Duration::from_secs(30))
    ///     .build();
    /// ```
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How long shutdown waits after the cancellation signal before it aborts what is left.
    /// Zero aborts at once. Default: 1 second.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// let supervisor = background_tasks::TaskSupervisor::builder()
    ///     .cancel_grace(Duration::from_millis(500))
    ///     .build();
    /// ```
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.cancel_grace = grace;
        self
    }

    /// The most tasks that may run at once; a spawn beyond it gets
    /// [`SpawnError::AtCapacity`](crate::SpawnError::AtCapacity). Blocking tasks count, and so
    /// do abandoned blocking tasks until they end. Default: no limit.
    ///
    /// # Examples
    ///
    /// ```
    /// let supervisor = background_tasks::TaskSupervisor::builder().max_tasks(100).build();
    /// ```
    pub fn max_tasks(mut self, limit: usize) -> Self {
        self.max_tasks = Some(limit);
        self
    }

    /// Called for every task that panics, and for every task that shutdown aborts or
    /// abandons, on the thread where that happened. Failures are logged through `tracing`
    /// whether or not a callback is set. A panic in the callback is caught and logged.
    ///
    /// # Examples
    ///
    /// ```
    /// let supervisor = background_tasks::TaskSupervisor::builder()
    ///     .on_failure(|failure| eprintln!("background task failed: {failure}"))
    ///     .build();
    /// ```
    pub fn on_failure(mut self, callback: impl Fn(&TaskFailure) + Send + Sync + 'static) -> Self {
        self.on_failure = Some(Box::new(callback));
        self
    }

    /// Builds the supervisor.
    ///
    /// # Examples
    ///
    /// ```
    /// let supervisor = background_tasks::TaskSupervisor::builder().build();
    /// ```
    pub fn build(self) -> TaskSupervisor {
        TaskSupervisor {
            inner: std::sync::Arc::new(Inner::new(Config {
                shutdown_timeout: self.shutdown_timeout,
                cancel_grace: self.cancel_grace,
                max_tasks: self.max_tasks,
                on_failure: self.on_failure,
            })),
        }
    }
}

impl fmt::Debug for SupervisorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorBuilder")
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("cancel_grace", &self.cancel_grace)
            .field("max_tasks", &self.max_tasks)
            .field("on_failure", &self.on_failure.as_ref().map(|_| ".."))
            .finish()
    }
}
