//! What a running task knows about itself and its supervisor.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::task::LocalSet;
use tokio_util::sync::CancellationToken;

use crate::error::SpawnError;
use crate::handle::{TaskHandle, TaskId};
use crate::state::{Origin, Phase};
use crate::supervisor::Inner;
use crate::task_builder::TaskBuilder;
use crate::tracked::TrackedFuture;

/// A task's view of itself and of its supervisor's shutdown, handed to tasks spawned with
/// [`spawn_with`](crate::TaskSupervisor::spawn_with).
///
/// Two signals tell a task when to stop, from polite to urgent:
/// - [`shutdown_started`](Self::shutdown_started): the drain began. Finish the unit of work at
///   hand and return; Quart's `shutdown_event`.
/// - [`cancelled`](Self::cancelled): the drain budget ran out. Stop now; what is still running
///   after `cancel_grace` is aborted.
///
/// Follow-up work spawned through the context belongs to the same shutdown: it is accepted
/// during the drain (only outside callers are refused then), and awaited, cancelled or aborted
/// with the rest. Keep a context within its task: a clone that outlives the task (stored in
/// app state, say) still spawns as a running task would, and what it spawns after the drain
/// found the supervisor idle gets no grace before the abort.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let supervisor = background_tasks::TaskSupervisor::new();
/// supervisor.task("import").spawn_with(|ctx| async move {
///     assert_eq!(ctx.name(), Some("import"));
///     // Hand the second half to a follow-up task, even if shutdown has begun.
///     ctx.task("import-index").spawn(async { /* ... */ }).unwrap();
/// }).unwrap();
/// assert_eq!(supervisor.shutdown().await.completed(), 2);
/// # }
/// ```
#[derive(Clone)]
pub struct TaskContext {
    inner: Arc<Inner>,
    id: TaskId,
    name: Option<Cow<'static, str>>,
}

impl TaskContext {
    pub(crate) fn new(inner: Arc<Inner>, id: TaskId, name: Option<Cow<'static, str>>) -> Self {
        Self { inner, id, name }
    }

    /// The task's id.
    #[inline]
    #[must_use]
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The task's name, when it was spawned with one.
    #[inline]
    #[must_use]
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Resolves once the supervisor's shutdown has begun: time to wind down.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// supervisor.spawn_with(|ctx| async move { ctx.shutdown_started().await }).unwrap();
    /// assert_eq!(supervisor.shutdown().await.completed(), 1);
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn shutdown_started(&self) {
        self.inner.drain.cancelled().await;
    }

    /// Returns `true` once the supervisor's shutdown has begun.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let handle = supervisor.spawn_with(|ctx| async move { ctx.is_shutting_down() }).unwrap();
    /// assert!(!handle.await.unwrap());
    /// # }
    /// ```
    #[must_use]
    pub fn is_shutting_down(&self) -> bool {
        self.inner.state.phase() != Phase::Running
    }

    /// Resolves once the cancel phase of the shutdown has begun: stop now, or be aborted when
    /// the grace runs out.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// supervisor.spawn_with(|ctx| async move { ctx.cancelled().await }).unwrap();
    /// assert_eq!(supervisor.shutdown().await.cancelled(), 1);
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn cancelled(&self) {
        self.inner.cancel.cancelled().await;
    }

    /// Returns `true` once the cancel phase of the shutdown has begun.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let handle = supervisor.spawn_with(|ctx| async move { ctx.is_cancelled() }).unwrap();
    /// assert!(!handle.await.unwrap());
    /// # }
    /// ```
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.inner.state.phase() >= Phase::Cancelling
    }

    /// A token that is cancelled when the cancel phase begins, to pass to code that takes a
    /// [`CancellationToken`]. It is a child token: cancelling it yourself affects only it and
    /// its own children, not the supervisor.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// supervisor.spawn_with(|ctx| async move {
    ///     let token = ctx.cancellation_token();
    ///     token.cancel();
    ///     assert!(!ctx.is_cancelled());
    /// }).unwrap();
    /// # }
    /// ```
    #[must_use]
    pub fn cancellation_token(&self) -> CancellationToken {
        self.inner.cancel.child_token()
    }

    /// Spawns a follow-up task on the same supervisor; accepted during the drain.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// supervisor.spawn_with(|ctx| async move {
    ///     ctx.spawn(async { /* the next step */ }).unwrap();
    /// }).unwrap();
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SpawnError::ShuttingDown`] once the cancel phase has begun, and
    /// [`SpawnError::AtCapacity`] when `max_tasks` tasks are running.
    ///
    /// # Panics
    ///
    /// Like [`tokio::spawn`], panics when called outside of a Tokio runtime.
    #[track_caller]
    #[inline]
    pub fn spawn<F>(&self, future: F) -> Result<TaskHandle<F::Output>, SpawnError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        TaskBuilder::new(&self.inner, Origin::Task, None).spawn(future)
    }

    /// Spawns a follow-up task that receives its own context; accepted during the drain.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// supervisor.spawn_with(|ctx| async move {
    ///     let parent = ctx.id();
    ///     ctx.spawn_with(move |child| async move { assert!(child.id() > parent) }).unwrap();
    /// }).unwrap();
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
    pub fn spawn_with<F, Fut>(&self, task: F) -> Result<TaskHandle<Fut::Output>, SpawnError>
    where
        F: FnOnce(TaskContext) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        TaskBuilder::new(&self.inner, Origin::Task, None).spawn_with(task)
    }

    /// Runs a synchronous follow-up on tokio's blocking thread pool; accepted during the drain.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// supervisor.spawn_with(|ctx| async move {
    ///     let sum = ctx.spawn_blocking(|| (1..=10).sum::<u32>()).unwrap();
    ///     assert_eq!(sum.await.unwrap(), 55);
    /// }).unwrap();
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
    pub fn spawn_blocking<F, R>(&self, function: F) -> Result<TaskHandle<R>, SpawnError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        TaskBuilder::new(&self.inner, Origin::Task, None).spawn_blocking(function)
    }

    /// Spawns a follow-up task on the runtime `handle` refers to; accepted during the drain.
    /// See [`TaskSupervisor::spawn_on`](crate::TaskSupervisor::spawn_on).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let handle = tokio::runtime::Handle::current();
    /// supervisor.spawn_with(move |ctx| async move {
    ///     ctx.spawn_on(async { /* the next step */ }, &handle).unwrap();
    /// }).unwrap();
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn).
    #[track_caller]
    #[inline]
    pub fn spawn_on<F>(
        &self,
        future: F,
        handle: &Handle,
    ) -> Result<TaskHandle<F::Output>, SpawnError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        TaskBuilder::new(&self.inner, Origin::Task, None).spawn_on(future, handle)
    }

    /// Runs a synchronous follow-up on the blocking thread pool of the runtime `handle` refers
    /// to; accepted during the drain. See
    /// [`TaskSupervisor::spawn_blocking_on`](crate::TaskSupervisor::spawn_blocking_on).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let handle = tokio::runtime::Handle::current();
    /// supervisor.spawn_with(move |ctx| async move {
    ///     let sum = ctx.spawn_blocking_on(|| (1..=10).sum::<u32>(), &handle).unwrap();
    ///     assert_eq!(sum.await.unwrap(), 55);
    /// }).unwrap();
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn).
    #[track_caller]
    #[inline]
    pub fn spawn_blocking_on<F, R>(
        &self,
        function: F,
        handle: &Handle,
    ) -> Result<TaskHandle<R>, SpawnError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        TaskBuilder::new(&self.inner, Origin::Task, None).spawn_blocking_on(function, handle)
    }

    /// Spawns a follow-up task that need not be `Send` on the current [`LocalSet`]; accepted
    /// during the drain. See [`TaskSupervisor::spawn_local`](crate::TaskSupervisor::spawn_local).
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
    ///     supervisor.spawn_local_with(|ctx| async move {
    ///         let step = Rc::new("the next step");
    ///         ctx.spawn_local(async move { drop(step) }).unwrap();
    ///     }).unwrap();
    ///     assert_eq!(supervisor.shutdown().await.completed(), 2);
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
    /// As [`TaskSupervisor::spawn_local`](crate::TaskSupervisor::spawn_local).
    #[track_caller]
    #[inline]
    pub fn spawn_local<F>(&self, future: F) -> Result<TaskHandle<F::Output>, SpawnError>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        TaskBuilder::new(&self.inner, Origin::Task, None).spawn_local(future)
    }

    /// Spawns a follow-up task that need not be `Send` on `local_set`; accepted during the
    /// drain. See [`TaskSupervisor::spawn_local_on`](crate::TaskSupervisor::spawn_local_on).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let local_set = tokio::task::LocalSet::new();
    /// let work = supervisor.track_future_with(|ctx| {
    ///     let follow_up = ctx.spawn_local_on(async { 7 }, &local_set).unwrap();
    ///     async move { follow_up.await.unwrap() }
    /// }).unwrap();
    /// assert_eq!(local_set.run_until(work).await, 7);
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn).
    #[track_caller]
    #[inline]
    pub fn spawn_local_on<F>(
        &self,
        future: F,
        local_set: &LocalSet,
    ) -> Result<TaskHandle<F::Output>, SpawnError>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        TaskBuilder::new(&self.inner, Origin::Task, None).spawn_local_on(future, local_set)
    }

    /// Tracks a follow-up future that the caller polls itself; accepted during the drain. See
    /// [`TaskSupervisor::track_future`](crate::TaskSupervisor::track_future).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// supervisor.spawn_with(|ctx| async move {
    ///     // Counted, drained and reported, but polled right here.
    ///     let step = ctx.track_future(async { 6 * 7 }).unwrap();
    ///     assert_eq!(step.await, 42);
    /// }).unwrap();
    /// assert_eq!(supervisor.shutdown().await.completed(), 2);
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn).
    #[inline]
    pub fn track_future<F: Future>(&self, future: F) -> Result<TrackedFuture<F>, SpawnError> {
        TaskBuilder::new(&self.inner, Origin::Task, None).track_future(future)
    }

    /// A builder for a named follow-up task; accepted during the drain.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// supervisor.spawn_with(|ctx| async move {
    ///     ctx.task("notify").spawn(async {}).unwrap();
    /// }).unwrap();
    /// # }
    /// ```
    #[inline]
    pub fn task(&self, name: impl Into<Cow<'static, str>>) -> TaskBuilder<'_> {
        TaskBuilder::new(&self.inner, Origin::Task, Some(name.into()))
    }
}

impl fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskContext")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("shutting_down", &self.is_shutting_down())
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}
