//! Errors returned by the supervisor and by task handles.

use std::any::Any;
use std::fmt;
use std::sync::Mutex;

/// Why a task could not be spawned.
///
/// A spawn that fails hands nothing to the supervisor: the future or closure is dropped without
/// being run, and this error says why, so the caller can retry, shed load or report it.
///
/// # Examples
///
/// ```
/// use background_tasks::{SpawnError, TaskSupervisor};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let supervisor = TaskSupervisor::builder().max_tasks(1).build();
/// let _first = supervisor.spawn(std::future::pending::<()>()).unwrap();
/// let second = supervisor.spawn(async {});
/// assert!(matches!(second, Err(SpawnError::AtCapacity { limit: 1 })));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The supervisor is shutting down and admits no new tasks.
    ///
    /// Tasks running under the supervisor may still spawn follow-up tasks through their
    /// [`TaskContext`](crate::TaskContext) until the cancel phase begins; everyone else is
    /// refused from the moment shutdown starts.
    #[error(
        "the task supervisor is shutting down and accepts no new tasks; \
         do the work inline, hand it to another instance, or retry after restart"
    )]
    ShuttingDown,
    /// The supervisor already runs as many tasks as its `max_tasks` limit allows.
    #[error(
        "the task supervisor is at capacity ({limit} tasks running); \
         retry once a task has finished, or raise `max_tasks` on the builder"
    )]
    AtCapacity {
        /// The limit set with [`SupervisorBuilder::max_tasks`](crate::SupervisorBuilder::max_tasks).
        limit: usize,
    },
    /// As many tasks of this name run as its limit allows, and as many wait for a place as its
    /// queue holds (see [`SupervisorBuilder::limit`](crate::SupervisorBuilder::limit)).
    #[error(
        "the tasks of this name are at their limit ({limit} running) and their queue is full \
         ({queue} waiting); retry once one has finished, or raise the limit or the queue \
         length given to `SupervisorBuilder::limit`"
    )]
    QueueFull {
        /// How many tasks of the name may run at once.
        limit: usize,
        /// How many may wait: the queue length of the name's [`Limit`](crate::Limit), or 0
        /// for a blocking task, which cannot wait without holding a thread.
        queue: usize,
    },
}

/// Why a task did not produce its output.
///
/// Returned by awaiting a [`TaskHandle`](crate::TaskHandle) when the task panicked or was
/// aborted: by its handle, by the supervisor's shutdown, or by its own timeout
/// ([`TaskBuilder::timeout`](crate::TaskBuilder::timeout)).
///
/// # Examples
///
/// ```
/// use background_tasks::TaskSupervisor;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let supervisor = TaskSupervisor::new();
/// let handle = supervisor.spawn(async { panic!("boom") }).unwrap();
/// let error = handle.await.unwrap_err();
/// assert!(error.is_panic());
/// assert_eq!(error.panic_message(), Some("boom"));
/// # }
/// ```
#[derive(thiserror::Error)]
#[error("{}", self.describe())]
pub struct TaskError {
    repr: Repr,
}

enum Repr {
    Cancelled,
    TimedOut,
    Panic {
        message: Option<String>,
        // The payload is `Send` but not `Sync`; the mutex makes the error `Sync` as errors should
        // be, and is only ever locked once, by `try_into_panic`.
        payload: Mutex<Box<dyn Any + Send + 'static>>,
    },
}

impl TaskError {
    pub(crate) fn cancelled() -> Self {
        Self {
            repr: Repr::Cancelled,
        }
    }

    pub(crate) fn timed_out() -> Self {
        Self {
            repr: Repr::TimedOut,
        }
    }

    pub(crate) fn panic(payload: Box<dyn Any + Send + 'static>) -> Self {
        Self {
            repr: Repr::Panic {
                message: panic_message(&*payload).map(str::to_owned),
                payload: Mutex::new(payload),
            },
        }
    }

    /// Returns `true` if the task panicked.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let error = supervisor.spawn(async { panic!("boom") }).unwrap().await.unwrap_err();
    /// assert!(error.is_panic());
    /// # }
    /// ```
    #[must_use]
    pub fn is_panic(&self) -> bool {
        matches!(self.repr, Repr::Panic { .. })
    }

    /// Returns `true` if the task was aborted, through its handle or by the supervisor's
    /// shutdown, before it produced its output.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let handle = supervisor.spawn(std::future::pending::<()>()).unwrap();
    /// handle.abort();
    /// assert!(handle.await.unwrap_err().is_cancelled());
    /// # }
    /// ```
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        matches!(self.repr, Repr::Cancelled)
    }

    /// Returns `true` if the task ran past the timeout set with
    /// [`TaskBuilder::timeout`](crate::TaskBuilder::timeout) and was aborted: at the timeout
    /// for a task without a context, once the supervisor's `cancel_grace` had passed too for a
    /// task with one.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let handle = supervisor
    ///     .task("call-upstream")
    ///     .timeout(Duration::from_secs(10))
    ///     .spawn(std::future::pending::<()>())
    ///     .unwrap();
    /// let error = handle.await.unwrap_err();
    /// assert!(error.is_timeout());
    /// assert!(!error.is_cancelled());
    /// # }
    /// ```
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        matches!(self.repr, Repr::TimedOut)
    }

    /// The panic message, when the task panicked with a string message (as `panic!` does).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let error = supervisor.spawn(async { panic!("boom") }).unwrap().await.unwrap_err();
    /// assert_eq!(error.panic_message(), Some("boom"));
    /// # }
    /// ```
    #[must_use]
    pub fn panic_message(&self) -> Option<&str> {
        match &self.repr {
            Repr::Panic { message, .. } => message.as_deref(),
            Repr::Cancelled | Repr::TimedOut => None,
        }
    }

    /// Returns the panic payload, to resume the panic with [`std::panic::resume_unwind`].
    ///
    /// # Errors
    ///
    /// Gives the error back unchanged when the task did not panic.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let error = supervisor.spawn(async { panic!("boom") }).unwrap().await.unwrap_err();
    /// let payload = error.try_into_panic().unwrap();
    /// assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
    /// // std::panic::resume_unwind(payload) would carry the panic on.
    /// # }
    /// ```
    pub fn try_into_panic(self) -> Result<Box<dyn Any + Send + 'static>, TaskError> {
        match self.repr {
            Repr::Panic { payload, .. } => Ok(payload
                .into_inner()
                .unwrap_or_else(|poison| poison.into_inner())),
            Repr::Cancelled | Repr::TimedOut => Err(self),
        }
    }

    fn describe(&self) -> String {
        match &self.repr {
            Repr::Cancelled => "the task was aborted before it finished".to_owned(),
            Repr::TimedOut => "the task ran past its timeout and was aborted; raise the timeout, \
                               or spawn it with a context and stop at `ctx.cancelled()`"
                .to_owned(),
            Repr::Panic {
                message: Some(message),
                ..
            } => format!("the task panicked: {message}"),
            Repr::Panic { message: None, .. } => {
                "the task panicked with a non-string payload".to_owned()
            }
        }
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Cancelled => f.write_str("TaskError::Cancelled"),
            Repr::TimedOut => f.write_str("TaskError::TimedOut"),
            Repr::Panic { message, .. } => f
                .debug_struct("TaskError::Panic")
                .field("message", message)
                .finish_non_exhaustive(),
        }
    }
}

/// The message of a panic payload, when it is a string, as `panic!` produces.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<&'static str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_message_reads_str_and_string_payloads() {
        let payload: Box<dyn Any + Send> = Box::new("static");
        assert_eq!(panic_message(&*payload), Some("static"));
        let payload: Box<dyn Any + Send> = Box::new(String::from("owned"));
        assert_eq!(panic_message(&*payload), Some("owned"));
        let payload: Box<dyn Any + Send> = Box::new(7_u32);
        assert_eq!(panic_message(&*payload), None);
    }

    #[test]
    fn task_error_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<TaskError>();
        assert_send_sync::<SpawnError>();
    }

    #[test]
    fn try_into_panic_gives_back_the_payload_or_the_error() {
        let error = TaskError::panic(Box::new(42_u8));
        assert_eq!(error.panic_message(), None);
        let payload = error.try_into_panic().expect("a panic");
        assert_eq!(payload.downcast_ref::<u8>(), Some(&42));
        let error = TaskError::cancelled();
        assert!(error.try_into_panic().is_err_and(|e| e.is_cancelled()));
    }

    #[test]
    fn messages_say_what_to_do() {
        let message = SpawnError::AtCapacity { limit: 3 }.to_string();
        assert!(message.contains("3 tasks") && message.contains("max_tasks"));
        let message = SpawnError::QueueFull { limit: 2, queue: 5 }.to_string();
        assert!(message.contains("2 running") && message.contains("5 waiting"));
        assert!(message.contains("SupervisorBuilder::limit"));
        assert!(
            SpawnError::ShuttingDown
                .to_string()
                .contains("shutting down")
        );
        assert!(
            TaskError::panic(Box::new("x"))
                .to_string()
                .contains("panicked: x")
        );
    }
}
