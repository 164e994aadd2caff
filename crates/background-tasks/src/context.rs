//! What a running task knows about itself and its supervisor.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::task::LocalSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::SpawnError;
use crate::handle::{TaskHandle, TaskId};
use crate::state::{Origin, Phase};
use crate::supervisor::Inner;
use crate::task_builder::TaskBuilder;
use crate::timeout::ContextDeadline;
use crate::tracked::TrackedFuture;

/// A task's view of itself and of its supervisor's shutdown, handed to tasks spawned with
/// [`spawn_with`](crate::TaskSupervisor::spawn_with).
///
/// Two signals tell a task when to stop, from polite to urgent:
/// - [`shutdown_started`](Self::shutdown_started): the drain began. Finish the unit of work at
///   hand and return; Quart's `shutdown_event`.
/// - [`cancelled`](Self::cancelled): the drain budget ran out, or the task's own timeout
///   ([`TaskBuilder::timeout`]) did. Stop now; what is still running after `cancel_grace` is
///   aborted.
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
pub struct TaskContext(Repr);

/// A [`TaskContext`] in two words, as a task's guard is: a task's future holds its context,
/// and the id, the name and the deadline side by side (eight words) took the future of
/// `spawn_with(|ctx| async move { ctx.cancelled().await })` from a 256-byte tokio cell to a
/// 384-byte one, and past the 128 bytes that tokio moves without calling `memcpy`.
#[derive(Clone)]
enum Repr {
    /// The supervisor, and the task's id with the index of its name among the supervisor's
    /// interned names in the bits from [`NAME_SHIFT`] up (0: no name).
    Lean { inner: Arc<Inner>, word: u64 },
    /// A task with a name that is not interned, a timeout, or an id too long to leave room
    /// for a name's index: one allocation, shared by the context's clones.
    Rich(Arc<Rich>),
}

/// What a [`Repr::Rich`] context holds.
struct Rich {
    inner: Arc<Inner>,
    id: TaskId,
    name: Option<Cow<'static, str>>,
    /// The task's timeout, if it has one: its own signal fires at the deadline.
    deadline: Option<ContextDeadline>,
}

/// Where a lean context's word keeps its name's index: above ids of up to 56 bits (2^56
/// spawns, two years at a billion a second).
const NAME_SHIFT: u32 = 56;

// Two words: see `Repr`.
const _: () = assert!(std::mem::size_of::<TaskContext>() == 2 * std::mem::size_of::<u64>());

impl TaskContext {
    #[inline(always)]
    pub(crate) fn new(
        inner: Arc<Inner>,
        id: TaskId,
        name: Option<Cow<'static, str>>,
        deadline: Option<ContextDeadline>,
    ) -> Self {
        if deadline.is_none() && id.as_u64() >> NAME_SHIFT == 0 {
            // A `&'static str` goes in the word, as the supervisor interns it for task guards
            // too (found by address, without a lock): a named context allocates nothing.
            let index = match &name {
                None => Some(0),
                Some(Cow::Borrowed(name)) => inner.names.index(name),
                Some(Cow::Owned(_)) => None,
            };
            if let Some(index) = index {
                // No deadline, and no name or a borrowed one: nothing to drop. Forgetting them
                // spares every spawn their drop glue, as `Flow::boxed` does.
                std::mem::forget((name, deadline));
                return Self(Repr::Lean {
                    inner,
                    word: id.as_u64() | (u64::from(index) << NAME_SHIFT),
                });
            }
        }
        Self::rich(inner, id, name, deadline)
    }

    /// A context with its parts in a box of their own. Out of line: few tasks need one.
    #[inline(never)]
    fn rich(
        inner: Arc<Inner>,
        id: TaskId,
        name: Option<Cow<'static, str>>,
        deadline: Option<ContextDeadline>,
    ) -> Self {
        Self(Repr::Rich(Arc::new(Rich {
            inner,
            id,
            name,
            deadline,
        })))
    }

    /// The supervisor.
    #[inline]
    fn inner(&self) -> &Arc<Inner> {
        match &self.0 {
            Repr::Lean { inner, .. } => inner,
            Repr::Rich(rich) => &rich.inner,
        }
    }

    /// The task's deadline, if it has a timeout.
    #[inline]
    fn context_deadline(&self) -> Option<&ContextDeadline> {
        match &self.0 {
            Repr::Lean { .. } => None,
            Repr::Rich(rich) => rich.deadline.as_ref(),
        }
    }

    /// When the task's timeout ([`TaskBuilder::timeout`]) runs out, if it has one: then
    /// [`cancelled`](Self::cancelled) fires, and the task is aborted once the supervisor's
    /// `cancel_grace` has passed too.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let start = tokio::time::Instant::now();
    /// let handle = supervisor
    ///     .task("import")
    ///     .timeout(Duration::from_secs(30))
    ///     .spawn_with(|ctx| async move { ctx.deadline() })
    ///     .unwrap();
    /// assert_eq!(handle.await.unwrap(), Some(start + Duration::from_secs(30)));
    /// # }
    /// ```
    #[inline]
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        self.context_deadline().map(|deadline| deadline.at)
    }

    /// The task's id.
    #[inline]
    #[must_use]
    pub fn id(&self) -> TaskId {
        match &self.0 {
            Repr::Lean { word, .. } => TaskId(word & ((1 << NAME_SHIFT) - 1)),
            Repr::Rich(rich) => rich.id,
        }
    }

    /// The task's name, when it was spawned with one.
    #[inline]
    #[must_use]
    pub fn name(&self) -> Option<&str> {
        match &self.0 {
            // Truncation keeps the 8 bits from `NAME_SHIFT` up: the index (0 for none).
            Repr::Lean { inner, word } => inner.names.get((word >> NAME_SHIFT) as u8),
            Repr::Rich(rich) => rich.name.as_deref(),
        }
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
    // The token's own future, not an `async fn` awaiting it: a task's future holds it, and
    // the wrapper took 16 bytes more and a poll of its own (see `cancelled`).
    #[must_use = "futures do nothing unless polled"]
    pub fn shutdown_started(&self) -> impl Future<Output = ()> + '_ {
        self.inner().drain.cancelled()
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
        self.inner().state.phase() != Phase::Running
    }

    /// Resolves once the cancel phase of the shutdown has begun, or the task's own timeout has
    /// run out: stop now, or be aborted when the grace runs out.
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
    // The token's own future, not an `async fn` awaiting it: a task's future holds it, and
    // the wrapper took 16 bytes more and a poll of its own (77 instructions a task, of
    // `shutdown_100k`'s tasks that wait on it), which took the future of
    // `spawn_with(|ctx| async move { ctx.cancelled().await })` past 128 bytes.
    #[must_use = "futures do nothing unless polled"]
    pub fn cancelled(&self) -> impl Future<Output = ()> + '_ {
        match self.context_deadline() {
            // A child of the supervisor's: fires at the shutdown's cancel phase too.
            Some(deadline) => deadline.token.cancelled(),
            None => self.inner().cancel.cancelled(),
        }
    }

    /// Returns `true` once the cancel phase of the shutdown has begun, or the task's own
    /// timeout has run out. A blocking task ([`spawn_blocking_with`]) checks it between units
    /// of work: it reads the clock against the deadline, since no timer wakes a thread.
    ///
    /// [`spawn_blocking_with`]: crate::TaskSupervisor::spawn_blocking_with
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
        self.inner().state.phase() >= Phase::Cancelling
            || self.context_deadline().is_some_and(|deadline| {
                deadline.token.is_cancelled() || Instant::now() >= deadline.at
            })
    }

    /// A token that is cancelled when the cancel phase begins (or, for an async task, when its
    /// timeout runs out), to pass to code that takes a [`CancellationToken`]. It is a child
    /// token: cancelling it yourself affects only it and its own children, not the supervisor.
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
        match self.context_deadline() {
            Some(deadline) => deadline.token.child_token(),
            None => self.inner().cancel.child_token(),
        }
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
        TaskBuilder::new(self.inner(), Origin::Task, None).spawn(future)
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
        TaskBuilder::new(self.inner(), Origin::Task, None).spawn_with(task)
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
        TaskBuilder::new(self.inner(), Origin::Task, None).spawn_blocking(function)
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
        TaskBuilder::new(self.inner(), Origin::Task, None).spawn_on(future, handle)
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
        TaskBuilder::new(self.inner(), Origin::Task, None).spawn_blocking_on(function, handle)
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
        TaskBuilder::new(self.inner(), Origin::Task, None).spawn_local(future)
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
        TaskBuilder::new(self.inner(), Origin::Task, None).spawn_local_on(future, local_set)
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
        TaskBuilder::new(self.inner(), Origin::Task, None).track_future(future)
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
        TaskBuilder::new(self.inner(), Origin::Task, Some(name.into()))
    }
}

impl fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskContext")
            .field("id", &self.id())
            .field("name", &self.name())
            .field("shutting_down", &self.is_shutting_down())
            .field("cancelled", &self.is_cancelled())
            .field("deadline", &self.deadline())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::TaskSupervisor;

    /// A context as a spawn with `name` and `deadline` makes it for the task `id`.
    fn context(
        supervisor: &TaskSupervisor,
        id: u64,
        name: Option<Cow<'static, str>>,
        deadline: Option<ContextDeadline>,
    ) -> TaskContext {
        TaskContext::new(supervisor.inner.clone(), TaskId(id), name, deadline)
    }

    #[tokio::test(start_paused = true)]
    async fn a_context_in_two_words_keeps_every_id_name_and_deadline() {
        let supervisor = TaskSupervisor::new();
        let last_in_word = (1 << NAME_SHIFT) - 1;
        // A `&'static str` is interned into the word, up to the last id that leaves room.
        for id in [1, last_in_word] {
            let ctx = context(&supervisor, id, Some(Cow::Borrowed("mail")), None);
            assert_eq!((ctx.id().as_u64(), ctx.name()), (id, Some("mail")));
            assert!(
                matches!(ctx.0, Repr::Lean { .. }),
                "no allocation for an interned name"
            );
        }
        // Past it, and for an owned name, the id and the name are kept in a box.
        for id in [last_in_word + 1, u64::MAX] {
            let ctx = context(&supervisor, id, Some(Cow::Borrowed("mail")), None);
            assert_eq!((ctx.id().as_u64(), ctx.name()), (id, Some("mail")));
            let ctx = context(&supervisor, id, None, None);
            assert_eq!((ctx.id().as_u64(), ctx.name()), (id, None));
        }
        let owned = Some(Cow::Owned(format!("user-{}", 7)));
        let ctx = context(&supervisor, 3, owned, None);
        assert_eq!((ctx.id().as_u64(), ctx.name()), (3, Some("user-7")));
        let ctx = context(&supervisor, 4, None, None);
        assert_eq!(
            (ctx.id().as_u64(), ctx.name(), ctx.deadline()),
            (4, None, None)
        );
        // A deadline, with a name: both in the context's box.
        let at = Instant::now() + Duration::from_secs(30);
        let token = CancellationToken::new();
        let deadline = ContextDeadline {
            at,
            token: token.clone(),
        };
        let ctx = context(&supervisor, 5, Some(Cow::Borrowed("mail")), Some(deadline));
        assert_eq!(ctx.name(), Some("mail"));
        assert_eq!(ctx.clone().deadline(), Some(at));
        assert!(!ctx.is_cancelled());
        token.cancel();
        assert!(ctx.is_cancelled());
        ctx.cancelled().await;
    }
}
