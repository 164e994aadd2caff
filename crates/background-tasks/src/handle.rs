//! Handles to running tasks.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::task::JoinHandle;

use crate::error::TaskError;

/// Identifies a task within its supervisor: ids are given out in spawn order, from 1, and never
/// reused by the same supervisor.
///
/// # Examples
///
/// ```
/// use background_tasks::TaskSupervisor;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let supervisor = TaskSupervisor::new();
/// let first = supervisor.spawn(async {}).unwrap();
/// let second = supervisor.spawn(async {}).unwrap();
/// assert!(first.id() < second.id());
/// assert_eq!(first.id().to_string(), "1");
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(pub(crate) u64);

impl TaskId {
    /// The id as a number.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let handle = supervisor.spawn(async {}).unwrap();
    /// assert_eq!(handle.id().as_u64(), 1);
    /// # }
    /// ```
    #[inline]
    #[must_use]
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// What a supervised task gives tokio instead of its output when it is stopped: by shutdown's
/// abort, or by its own timeout. A one-byte error leaves the task's cell as small as a bare
/// task's in practice (the future, not the output, sets its size), and ending with a value
/// rather than unwinding keeps aborting thousands of tasks cheap: an unwind costs over a
/// microsecond per task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stopped {
    ByShutdown,
    /// By the timeout set with [`TaskBuilder::timeout`](crate::TaskBuilder::timeout).
    TimedOut,
}

/// An owned permission to await a supervised task's output or abort it.
///
/// Awaiting the handle gives the task's output, or a [`TaskError`] when it panicked or was
/// aborted. Dropping the handle detaches the task: it runs on, still supervised, and its end is
/// still awaited at shutdown.
///
/// # Examples
///
/// ```
/// use background_tasks::TaskSupervisor;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let supervisor = TaskSupervisor::new();
/// let handle = supervisor.spawn(async { 6 * 7 }).unwrap();
/// assert_eq!(handle.await.unwrap(), 42);
/// # }
/// ```
pub struct TaskHandle<T> {
    id: TaskId,
    join: JoinHandle<Result<T, Stopped>>,
}

impl<T> TaskHandle<T> {
    pub(crate) fn new(id: TaskId, join: JoinHandle<Result<T, Stopped>>) -> Self {
        Self { id, join }
    }

    /// The task's id, as in its tracing span and in shutdown reports.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let handle = supervisor.spawn_with(|ctx| async move { ctx.id() }).unwrap();
    /// let id = handle.id();
    /// assert_eq!(handle.await.unwrap(), id);
    /// # }
    /// ```
    #[inline]
    #[must_use]
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Aborts the task, as [`JoinHandle::abort`] does: an async task stops at its next
    /// `.await`; a blocking task is only stopped if it has not started yet. Awaiting the handle
    /// afterwards gives a [`TaskError`] for which [`TaskError::is_cancelled`] is true, unless the
    /// task had already finished. An abort on purpose is no failure: unlike a task dropped
    /// because its runtime shut down before the supervisor did
    /// ([`FailureKind::Dropped`](crate::FailureKind::Dropped)), it is neither logged nor passed
    /// to `on_failure`.
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks::TaskSupervisor;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = TaskSupervisor::new();
    /// let handle = supervisor.spawn(std::future::pending::<()>()).unwrap();
    /// handle.abort();
    /// assert!(handle.await.unwrap_err().is_cancelled());
    /// # }
    /// ```
    #[inline]
    pub fn abort(&self) {
        self.join.abort();
    }

    /// Returns `true` once the task has ended, however it ended.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let handle = supervisor.spawn(async {}).unwrap();
    /// assert!(!handle.is_finished());
    /// supervisor.wait_idle().await;
    /// assert!(handle.is_finished());
    /// # }
    /// ```
    #[inline]
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }
}

impl<T> Future for TaskHandle<T> {
    type Output = Result<T, TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(match ready!(Pin::new(&mut self.join).poll(cx)) {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(Stopped::ByShutdown)) => Err(TaskError::cancelled()),
            Ok(Err(Stopped::TimedOut)) => Err(TaskError::timed_out()),
            Err(error) if error.is_cancelled() => Err(TaskError::cancelled()),
            Err(error) => Err(TaskError::panic(error.into_panic())),
        })
    }
}

impl<T> fmt::Debug for TaskHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.id)
            .field("finished", &self.is_finished())
            .finish()
    }
}
