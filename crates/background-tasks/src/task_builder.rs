//! Spawning a task with a name.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::context::TaskContext;
use crate::error::SpawnError;
use crate::handle::TaskHandle;
use crate::state::Origin;
use crate::supervisor::Inner;

/// Spawns a task with a name, from [`TaskSupervisor::task`](crate::TaskSupervisor::task) or
/// [`TaskContext::task`].
///
/// The name appears in the task's tracing span, in failure reports and in the shutdown report.
/// Its methods mirror the supervisor's.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let supervisor = background_tasks::TaskSupervisor::new();
/// let handle = supervisor.task("refresh-cache").spawn_with(|ctx| async move {
///     ctx.name().map(str::to_owned)
/// }).unwrap();
/// assert_eq!(handle.await.unwrap().as_deref(), Some("refresh-cache"));
/// # }
/// ```
#[must_use = "a TaskBuilder does nothing until one of its spawn methods is called"]
pub struct TaskBuilder<'a> {
    inner: &'a Arc<Inner>,
    origin: Origin,
    name: Option<Cow<'static, str>>,
}

impl<'a> TaskBuilder<'a> {
    pub(crate) fn new(
        inner: &'a Arc<Inner>,
        origin: Origin,
        name: Option<Cow<'static, str>>,
    ) -> Self {
        Self {
            inner,
            origin,
            name,
        }
    }

    /// Spawns `future` as a named task; see
    /// [`TaskSupervisor::spawn`](crate::TaskSupervisor::spawn).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// supervisor.task("ping").spawn(async {}).unwrap();
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`TaskSupervisor::spawn`](crate::TaskSupervisor::spawn), or
    /// [`TaskContext::spawn`] for a builder from a context.
    ///
    /// # Panics
    ///
    /// Like [`tokio::spawn`], panics when called outside of a Tokio runtime.
    #[track_caller]
    #[inline]
    pub fn spawn<F>(self, future: F) -> Result<TaskHandle<F::Output>, SpawnError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner
            .spawn_async(self.origin, false, self.name, |_| future)
    }

    /// Spawns the future that `task` builds from its [`TaskContext`] as a named task; see
    /// [`TaskSupervisor::spawn_with`](crate::TaskSupervisor::spawn_with).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// supervisor.task("ping").spawn_with(|ctx| async move { ctx.shutdown_started().await }).unwrap();
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn).
    ///
    /// # Panics
    ///
    /// As [`spawn`](Self::spawn).
    #[track_caller]
    #[inline]
    pub fn spawn_with<F, Fut>(self, task: F) -> Result<TaskHandle<Fut::Output>, SpawnError>
    where
        F: FnOnce(TaskContext) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        let context_name = self.name.clone();
        self.inner.spawn_async(self.origin, true, self.name, |id| {
            task(TaskContext::new(self.inner.clone(), id, context_name))
        })
    }

    /// Runs `function` on tokio's blocking thread pool as a named task; see
    /// [`TaskSupervisor::spawn_blocking`](crate::TaskSupervisor::spawn_blocking).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let handle = supervisor.task("checksum").spawn_blocking(|| 7).unwrap();
    /// assert_eq!(handle.await.unwrap(), 7);
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn).
    ///
    /// # Panics
    ///
    /// As [`spawn`](Self::spawn).
    #[track_caller]
    #[inline]
    pub fn spawn_blocking<F, R>(self, function: F) -> Result<TaskHandle<R>, SpawnError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.inner
            .spawn_blocking(self.origin, false, self.name, |_| function)
    }

    /// Runs `function` with its [`TaskContext`] on tokio's blocking thread pool as a named
    /// task; see [`TaskSupervisor::spawn_blocking_with`](crate::TaskSupervisor::spawn_blocking_with).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let handle = supervisor.task("scan").spawn_blocking_with(|ctx| ctx.is_cancelled()).unwrap();
    /// assert!(!handle.await.unwrap());
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn).
    ///
    /// # Panics
    ///
    /// As [`spawn`](Self::spawn).
    #[track_caller]
    #[inline]
    pub fn spawn_blocking_with<F, R>(self, function: F) -> Result<TaskHandle<R>, SpawnError>
    where
        F: FnOnce(TaskContext) -> R + Send + 'static,
        R: Send + 'static,
    {
        let context_name = self.name.clone();
        self.inner
            .spawn_blocking(self.origin, true, self.name, |id| {
                let context = TaskContext::new(self.inner.clone(), id, context_name);
                move || function(context)
            })
    }
}

impl fmt::Debug for TaskBuilder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskBuilder")
            .field("name", &self.name)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}
