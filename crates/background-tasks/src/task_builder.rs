//! Spawning a task with a name.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::task::LocalSet;

use crate::context::TaskContext;
use crate::error::SpawnError;
use crate::handle::{TaskHandle, TaskId};
use crate::spawn::Spec;
use crate::state::Origin;
use crate::supervisor::Inner;
use crate::timeout::ContextDeadline;
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
    timeout: Option<Duration>,
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
            timeout: None,
        }
    }

    /// Ends the task if it runs longer than `timeout`, counted from the spawn (time spent
    /// waiting for a place under its name's [limit](crate::SupervisorBuilder::limit)
    /// included), as [`tokio::time::timeout`] would, but supervised: the task is stopped the way shutdown
    /// stops it, and its end is reported.
    ///
    /// - A task with a [`TaskContext`] sees its cancellation signal fire at the timeout
    ///   ([`TaskContext::cancelled`], [`TaskContext::is_cancelled`], its
    ///   [`cancellation_token`](TaskContext::cancellation_token)), and is aborted if it still
    ///   runs once the supervisor's [`cancel_grace`](crate::SupervisorBuilder::cancel_grace)
    ///   has passed too.
    /// - A task without one cannot see the signal, and is aborted at the timeout.
    /// - A blocking task cannot be stopped once its thread runs it: it does not start if its
    ///   timeout runs out while it waits for a thread, and
    ///   [`TaskContext::is_cancelled`] tells one with a context when to stop.
    /// - A tracked future ([`track_future`](Self::track_future)) is polled by its owner, who
    ///   alone can stop it: its signal fires, and its end is reported, but it is not aborted.
    ///
    /// An aborted task's handle gives a [`TaskError`](crate::TaskError) for which
    /// [`is_timeout`](crate::TaskError::is_timeout) is true. Every task that runs past its
    /// timeout, aborted or not, is a failure of kind
    /// [`FailureKind::TimedOut`](crate::FailureKind::TimedOut): logged, passed to
    /// [`on_failure`](crate::SupervisorBuilder::on_failure), and counted in
    /// [`Counters::timed_out`](crate::Counters::timed_out) (and in the `metrics` feature's
    /// `outcome="timed_out"`). Shutdown treats a task with a timeout as any other; one it stops
    /// first is reported as shutdown reports it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::builder()
    ///     .cancel_grace(Duration::from_secs(1))
    ///     .build();
    /// let handle = supervisor
    ///     .task("call-upstream")
    ///     .timeout(Duration::from_secs(10))
    ///     .spawn_with(|ctx| async move {
    ///         tokio::select! {
    ///             _ = ctx.cancelled() => "gave up at the deadline",
    ///             _ = std::future::pending::<()>() => "answered",
    ///         }
    ///     })
    ///     .unwrap();
    /// assert_eq!(handle.await.unwrap(), "gave up at the deadline");
    /// assert_eq!(supervisor.snapshot().counters.timed_out, 1);
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// The spawn that follows panics, as [`tokio::time::sleep`] does, when called outside of
    /// a Tokio runtime with time enabled.
    #[inline]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// What the spawn asks for: `cooperative` when the task gets a [`TaskContext`].
    #[inline]
    fn spec(self, cooperative: bool) -> Spec {
        Spec {
            origin: self.origin,
            cooperative,
            name: self.name,
            timeout: self.timeout,
        }
    }

    /// `task`, called with the [`TaskContext`] of the id it is given: what the context forms
    /// hand to the spawn. The context is made only once the task is admitted.
    #[inline]
    fn with_context<T, R>(
        &self,
        task: T,
    ) -> impl FnOnce(TaskId, Option<ContextDeadline>) -> R + use<'a, T, R>
    where
        T: FnOnce(TaskContext) -> R,
    {
        let (inner, name) = (self.inner, self.name.clone());
        move |id, deadline| task(TaskContext::new(inner.clone(), id, name, deadline))
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
        self.inner.spawn_future(self.spec(false), future, None)
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
        self.inner.spawn_async(self.spec(true), make, None)
    }

    /// Spawns `future` as a named task once there is room for it: a place under its name's
    /// [limit](crate::SupervisorBuilder::limit), taken in turn with the tasks waiting there,
    /// and a place under [`max_tasks`](crate::SupervisorBuilder::max_tasks). Where
    /// [`spawn`](Self::spawn) would queue the task or be refused, this waits, without
    /// spawning anything meanwhile: what a producer (a queue consumer, a batch import) wants,
    /// so that it goes at the pace of its tasks.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use background_tasks::TaskSupervisor;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let supervisor = TaskSupervisor::builder().limit("import-row", 4).build();
    /// for row in 0..100 {
    ///     // Never more than 4 rows in flight, and none waiting: the loop waits instead.
    ///     supervisor
    ///         .task("import-row")
    ///         .spawn_when_ready(async move {
    ///             tokio::time::sleep(Duration::from_millis(10)).await;
    ///             row
    ///         })
    ///         .await
    ///         .unwrap();
    ///     assert!(supervisor.len() <= 4);
    /// }
    /// supervisor.wait_idle().await;
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SpawnError::ShuttingDown`] as soon as shutdown begins, whether it had begun before
    /// the call or begins while it waits (for a builder from a [`TaskContext`], once the
    /// cancel phase begins). The future is then dropped without being polled.
    ///
    /// # Panics
    ///
    /// As [`spawn`](Self::spawn), at the first poll.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: nothing is spawned until it returns, so dropping it while it
    /// waits drops the future unpolled and gives up its turn; a place under the name's limit
    /// granted meanwhile passes to the next in line.
    pub async fn spawn_when_ready<F>(self, future: F) -> Result<TaskHandle<F::Output>, SpawnError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let inner = self.inner;
        inner
            .spawn_when_ready(self.spec(false), |_, _| future)
            .await
    }

    /// Spawns the future that `task` builds from its [`TaskContext`] as a named task once
    /// there is room for it; see [`spawn_when_ready`](Self::spawn_when_ready). `task` is
    /// called only then.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::builder().max_tasks(1).build();
    /// let handle = supervisor
    ///     .task("consume")
    ///     .spawn_with_when_ready(|ctx| async move { ctx.name().map(str::to_owned) })
    ///     .await
    ///     .unwrap();
    /// assert_eq!(handle.await.unwrap().as_deref(), Some("consume"));
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn_when_ready`](Self::spawn_when_ready).
    ///
    /// # Panics
    ///
    /// As [`spawn_when_ready`](Self::spawn_when_ready).
    ///
    /// # Cancel safety
    ///
    /// As [`spawn_when_ready`](Self::spawn_when_ready): `task` is not called if the wait is
    /// dropped.
    pub async fn spawn_with_when_ready<F, Fut>(
        self,
        task: F,
    ) -> Result<TaskHandle<Fut::Output>, SpawnError>
    where
        F: FnOnce(TaskContext) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        let (inner, make) = (self.inner, self.with_context(task));
        inner.spawn_when_ready(self.spec(true), make).await
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
            .spawn_future(self.spec(false), future, Some(handle))
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
        self.inner.spawn_async(self.spec(true), make, Some(handle))
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
            .spawn_local(self.spec(false), |_, _| future, None)
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
        self.inner.spawn_local(self.spec(true), make, None)
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
            .spawn_local(self.spec(false), |_, _| future, Some(local_set))
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
            .spawn_local(self.spec(true), make, Some(local_set))
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
            .spawn_blocking(self.spec(false), |_, _| function, None)
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
        self.inner.spawn_blocking(self.spec(true), make, None)
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
            .spawn_blocking(self.spec(false), |_, _| function, Some(handle))
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
            .spawn_blocking(self.spec(true), make, Some(handle))
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
        self.inner.track(self.spec(false), |_, _| future)
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
        self.inner.track(self.spec(true), make)
    }
}

impl fmt::Debug for TaskBuilder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskBuilder")
            .field("name", &self.name)
            .field("origin", &self.origin)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
