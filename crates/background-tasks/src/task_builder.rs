//! Spawning a task with a name.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::task::LocalSet;

use crate::context::TaskContext;
use crate::error::SpawnError;
use crate::handle::{TaskHandle, TaskId};
use crate::state::Origin;
use crate::supervisor::Inner;
use crate::tracked::TrackedFuture;

/// Spawns a task with a name, from [`TaskSupervisor::task`](crate::TaskSupervisor::task) or
/// [`TaskContext::task`].
///
/// The name appears in the task's tracing span, in failure reports and in the shutdown report.
/// Its methods mirror the supervisor's, and are where every spawn is defined: each placement
/// (the supervisor's runtime, a chosen runtime, a [`LocalSet`], the blocking pool, or the
/// caller's own polling) in a plain form and in a form that hands the task its
/// [`TaskContext`].
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

    /// `task`, called with the [`TaskContext`] of the id it is given: what the context forms
    /// hand to the spawn. The context is made only once the task is admitted.
    #[inline]
    fn with_context<T, R>(&self, task: T) -> impl FnOnce(TaskId) -> R + use<'a, T, R>
    where
        T: FnOnce(TaskContext) -> R,
    {
        let (inner, name) = (self.inner, self.name.clone());
        move |id| task(TaskContext::new(inner.clone(), id, name))
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
            .spawn_async(self.origin, false, self.name, |_| future, None)
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
        let make = self.with_context(task);
        self.inner
            .spawn_async(self.origin, true, self.name, make, None)
    }

    /// Spawns `future` as a named task on the runtime `handle` refers to, rather than on the
    /// supervisor's; see [`TaskSupervisor::spawn_on`](crate::TaskSupervisor::spawn_on).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let handle = tokio::runtime::Handle::current();
    /// supervisor.task("ping").spawn_on(async {}, &handle).unwrap();
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn).
    #[track_caller]
    #[inline]
    pub fn spawn_on<F>(
        self,
        future: F,
        handle: &Handle,
    ) -> Result<TaskHandle<F::Output>, SpawnError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner
            .spawn_async(self.origin, false, self.name, |_| future, Some(handle))
    }

    /// Spawns the future that `task` builds from its [`TaskContext`] as a named task on the
    /// runtime `handle` refers to; see [`spawn_on`](Self::spawn_on).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let handle = tokio::runtime::Handle::current();
    /// supervisor
    ///     .task("poll")
    ///     .spawn_with_on(|ctx| async move { ctx.shutdown_started().await }, &handle)
    ///     .unwrap();
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn).
    #[track_caller]
    #[inline]
    pub fn spawn_with_on<F, Fut>(
        self,
        task: F,
        handle: &Handle,
    ) -> Result<TaskHandle<Fut::Output>, SpawnError>
    where
        F: FnOnce(TaskContext) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        let make = self.with_context(task);
        self.inner
            .spawn_async(self.origin, true, self.name, make, Some(handle))
    }

    /// Spawns `future`, which need not be `Send`, as a named task on the current
    /// [`LocalSet`]; see [`TaskSupervisor::spawn_local`](crate::TaskSupervisor::spawn_local).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::rc::Rc;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// tokio::task::LocalSet::new().run_until(async {
    ///     let shared = Rc::new(7);
    ///     let handle = supervisor.task("local").spawn_local(async move { *shared }).unwrap();
    ///     assert_eq!(handle.await.unwrap(), 7);
    /// }).await;
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn).
    ///
    /// # Panics
    ///
    /// Like [`tokio::task::spawn_local`], panics when called outside of a [`LocalSet`].
    #[track_caller]
    #[inline]
    pub fn spawn_local<F>(self, future: F) -> Result<TaskHandle<F::Output>, SpawnError>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        self.inner
            .spawn_local(self.origin, false, self.name, |_| future, None)
    }

    /// Spawns the future that `task` builds from its [`TaskContext`], which need not be
    /// `Send`, as a named task on the current [`LocalSet`]; see
    /// [`spawn_local`](Self::spawn_local).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// tokio::task::LocalSet::new().run_until(async {
    ///     supervisor.task("local").spawn_local_with(|ctx| async move {
    ///         ctx.shutdown_started().await
    ///     }).unwrap();
    ///     supervisor.shutdown().await;
    /// }).await;
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn).
    ///
    /// # Panics
    ///
    /// As [`spawn_local`](Self::spawn_local).
    #[track_caller]
    #[inline]
    pub fn spawn_local_with<F, Fut>(self, task: F) -> Result<TaskHandle<Fut::Output>, SpawnError>
    where
        F: FnOnce(TaskContext) -> Fut,
        Fut: Future + 'static,
        Fut::Output: 'static,
    {
        let make = self.with_context(task);
        self.inner
            .spawn_local(self.origin, true, self.name, make, None)
    }

    /// Spawns `future`, which need not be `Send`, as a named task on `local_set`; see
    /// [`TaskSupervisor::spawn_local_on`](crate::TaskSupervisor::spawn_local_on).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let local_set = tokio::task::LocalSet::new();
    /// let handle = supervisor.task("local").spawn_local_on(async { 7 }, &local_set).unwrap();
    /// assert_eq!(local_set.run_until(handle).await.unwrap(), 7);
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn).
    #[track_caller]
    #[inline]
    pub fn spawn_local_on<F>(
        self,
        future: F,
        local_set: &LocalSet,
    ) -> Result<TaskHandle<F::Output>, SpawnError>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        self.inner
            .spawn_local(self.origin, false, self.name, |_| future, Some(local_set))
    }

    /// Spawns the future that `task` builds from its [`TaskContext`], which need not be
    /// `Send`, as a named task on `local_set`; see [`spawn_local_on`](Self::spawn_local_on).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let local_set = tokio::task::LocalSet::new();
    /// let handle = supervisor
    ///     .task("local")
    ///     .spawn_local_with_on(|ctx| async move { ctx.id() }, &local_set)
    ///     .unwrap();
    /// let id = handle.id();
    /// assert_eq!(local_set.run_until(handle).await.unwrap(), id);
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn).
    #[track_caller]
    #[inline]
    pub fn spawn_local_with_on<F, Fut>(
        self,
        task: F,
        local_set: &LocalSet,
    ) -> Result<TaskHandle<Fut::Output>, SpawnError>
    where
        F: FnOnce(TaskContext) -> Fut,
        Fut: Future + 'static,
        Fut::Output: 'static,
    {
        let make = self.with_context(task);
        self.inner
            .spawn_local(self.origin, true, self.name, make, Some(local_set))
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
            .spawn_blocking(self.origin, false, self.name, |_| function, None)
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
        let make = self.with_context(|context| move || function(context));
        self.inner
            .spawn_blocking(self.origin, true, self.name, make, None)
    }

    /// Runs `function` as a named task on the blocking thread pool of the runtime `handle`
    /// refers to; see
    /// [`TaskSupervisor::spawn_blocking_on`](crate::TaskSupervisor::spawn_blocking_on).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let handle = tokio::runtime::Handle::current();
    /// let task = supervisor.task("checksum").spawn_blocking_on(|| 7, &handle).unwrap();
    /// assert_eq!(task.await.unwrap(), 7);
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn).
    #[track_caller]
    #[inline]
    pub fn spawn_blocking_on<F, R>(
        self,
        function: F,
        handle: &Handle,
    ) -> Result<TaskHandle<R>, SpawnError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.inner
            .spawn_blocking(self.origin, false, self.name, |_| function, Some(handle))
    }

    /// Runs `function` with its [`TaskContext`] as a named task on the blocking thread pool
    /// of the runtime `handle` refers to; see [`spawn_blocking_on`](Self::spawn_blocking_on).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let handle = tokio::runtime::Handle::current();
    /// let task = supervisor
    ///     .task("scan")
    ///     .spawn_blocking_with_on(|ctx| ctx.is_cancelled(), &handle)
    ///     .unwrap();
    /// assert!(!task.await.unwrap());
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn).
    #[track_caller]
    #[inline]
    pub fn spawn_blocking_with_on<F, R>(
        self,
        function: F,
        handle: &Handle,
    ) -> Result<TaskHandle<R>, SpawnError>
    where
        F: FnOnce(TaskContext) -> R + Send + 'static,
        R: Send + 'static,
    {
        let make = self.with_context(|context| move || function(context));
        self.inner
            .spawn_blocking(self.origin, true, self.name, make, Some(handle))
    }

    /// Tracks `future` as a named task that its owner polls; see
    /// [`TaskSupervisor::track_future`](crate::TaskSupervisor::track_future).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let tracked = supervisor.task("inline-work").track_future(async { 7 }).unwrap();
    /// assert_eq!(supervisor.len(), 1);
    /// assert_eq!(tracked.await, 7);
    /// assert_eq!(supervisor.len(), 0);
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn).
    #[inline]
    pub fn track_future<F: Future>(self, future: F) -> Result<TrackedFuture<F>, SpawnError> {
        self.inner.track(self.origin, false, self.name, |_| future)
    }

    /// Tracks the future that `task` builds from its [`TaskContext`] as a named task that its
    /// owner polls; see [`TaskSupervisor::track_future_with`](crate::TaskSupervisor::track_future_with).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let tracked = supervisor
    ///     .task("inline-work")
    ///     .track_future_with(|ctx| async move { ctx.is_cancelled() })
    ///     .unwrap();
    /// assert!(!tracked.await);
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn).
    #[inline]
    pub fn track_future_with<F, Fut>(self, task: F) -> Result<TrackedFuture<Fut>, SpawnError>
    where
        F: FnOnce(TaskContext) -> Fut,
        Fut: Future,
    {
        let make = self.with_context(task);
        self.inner.track(self.origin, true, self.name, make)
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
