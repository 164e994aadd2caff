//! The supervisor: where tasks are spawned, counted and shut down.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::task::LocalSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::level_filters::LevelFilter;

use crate::builder::SupervisorBuilder;
use crate::context::TaskContext;
use crate::error::SpawnError;
use crate::failure::TaskFailure;
use crate::handle::TaskHandle;
use crate::registry::{Registry, lock};
use crate::report::{ShutdownReport, TaskRecord};
use crate::snapshot::Tally;
use crate::spawn::NAMED_DROPS;
use crate::state::{AbortFlag, Origin, Phase, State};
use crate::sync::{AtomicU64, AtomicUsize, Mutex, MutexGuard, fence};
use crate::task_builder::TaskBuilder;
use crate::tracked::TrackedFuture;

/// Spawns background tasks, tracks them, and shuts them down within a budget.
///
/// A task spawned on a supervisor outlives the code that spawned it (a request handler, say)
/// but not the supervisor's [`shutdown`](Self::shutdown), which runs in phases under one bound:
///
/// 1. **admission closes** at once: [`spawn`](Self::spawn) returns
///    [`SpawnError::ShuttingDown`], while running tasks may still spawn follow-ups through their
///    [`TaskContext`];
/// 2. **drain**: wait up to [`shutdown_timeout`](SupervisorBuilder::shutdown_timeout) for tasks
///    to end on their own;
/// 3. **cancel**: fire the cancellation signal ([`TaskContext::cancelled`]), abort at once the
///    tasks without a context, which cannot see it, and wait up to
///    [`cancel_grace`](SupervisorBuilder::cancel_grace) for those with one;
/// 4. **abort** what is left; blocking tasks already on a thread cannot be aborted and are
///    reported as abandoned.
///
/// [`SupervisorBuilder`] says, in one table, what happens when to each kind of task.
///
/// Cloning a supervisor is cheap and gives another handle to the same set of tasks.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use background_tasks::TaskSupervisor;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let supervisor = TaskSupervisor::builder()
///     .shutdown_timeout(Duration::from_secs(5))
///     .build();
///
/// // From a handler: the task outlives the request.
/// supervisor.task("send-welcome-mail").spawn(async {
///     tokio::time::sleep(Duration::from_millis(100)).await;
/// }).unwrap();
///
/// // At exit: wait for it, within the budget.
/// let report = supervisor.shutdown().await;
/// assert_eq!(report.completed(), 1);
/// # }
/// ```
#[derive(Clone)]
pub struct TaskSupervisor {
    pub(crate) inner: Arc<Inner>,
}

/// The callback set with [`SupervisorBuilder::on_failure`].
pub(crate) type FailureCallback = Box<dyn Fn(&TaskFailure) + Send + Sync + 'static>;

pub(crate) struct Config {
    pub(crate) shutdown_timeout: Duration,
    pub(crate) cancel_grace: Duration,
    pub(crate) max_tasks: Option<usize>,
    pub(crate) on_failure: Option<FailureCallback>,
    /// Set with [`SupervisorBuilder::runtime`]: where every task is spawned.
    pub(crate) runtime: Option<tokio::runtime::Handle>,
    /// Set with [`SupervisorBuilder::task_span_level`].
    pub(crate) task_span_level: LevelFilter,
    /// Set with [`SupervisorBuilder::limit`].
    pub(crate) limits: crate::limit::Limits,
}

// `repr(C)` keeps the fields in this order: the two words every spawn writes come first, on
// 128 bytes of their own (a cache line, and the one the CPU fetches with it), and the abort
// flag every poll reads sits on lines of its own (its type is aligned to 128 bytes), so that
// writes to the busy words do not invalidate what every spawn and poll reads in every other
// core's cache. Without `_busy_end`, the configuration shared the busy words' line: on a
// two-core server every spawn read it after the other core's last end had taken the line.
#[repr(C)]
pub(crate) struct Inner {
    pub(crate) state: State,
    pub(crate) next_id: AtomicU64,
    _busy_end: BusyEnd,
    pub(crate) config: Config,
    pub(crate) registry: Registry,
    /// How many futures wait for the count to reach zero; see `notify_if_idle`.
    pub(crate) idle_waiters: AtomicUsize,
    pub(crate) idle: Notify,
    /// How many `spawn_when_ready` calls wait for room under `max_tasks`; see `notify_room`.
    pub(crate) room_waiters: AtomicUsize,
    pub(crate) room: Notify,
    /// Fired when the drain begins.
    pub(crate) drain: CancellationToken,
    /// Fired when the cancel phase begins.
    pub(crate) cancel: CancellationToken,
    /// Fired to skip what is left of the budget and abort now.
    pub(crate) force: CancellationToken,
    /// Set when shutdown aborts what is left; read by every poll, so on lines of its own.
    pub(crate) aborting: AbortFlag,
    /// Notified when a place in the count that the abort walk could not see is accounted for.
    pub(crate) late: Notify,
    /// What ends during shutdown count without the shutdown lock.
    pub(crate) ends: crate::shutdown::ShutdownEnds,
    /// Taken to change phase, to count tasks that end during shutdown, and to give back
    /// admissions once it has begun; always before a shard lock of the registry, never after.
    pub(crate) shutdown: Mutex<ShutdownLog>,
    pub(crate) report: OnceLock<ShutdownReport>,
    pub(crate) report_ready: Notify,
    /// Tasks dropped unfinished while the supervisor ran (their runtime shut down first);
    /// touched only by such drops.
    pub(crate) dropped: AtomicUsize,
    /// What snapshots cannot derive: counts of rare events, and the recent failures.
    pub(crate) tally: Tally,
    /// The names of tasks, interned, so that a named task needs no box for its name.
    pub(crate) names: crate::names::Names,
    /// The task names used as metric labels, bounded.
    #[cfg(feature = "metrics")]
    pub(crate) labels: crate::metrics::Labels,
}

/// Ends the busy words' 128 bytes in [`Inner`]: a field of no size, aligned as the next line.
#[derive(Debug)]
#[repr(align(128))]
struct BusyEnd;

/// What shutdown has counted so far.
#[derive(Debug, Default)]
pub(crate) struct ShutdownLog {
    pub(crate) started: Option<Instant>,
    /// Tasks that ended, in any way but a panic or an abort, before shutdown began: the
    /// snapshot's `completed` from then on, fixed at the instant admission closed.
    pub(crate) completed_before: usize,
    /// Tasks that ended during the drain, beside those `Inner::ends` counts.
    pub(crate) completed: usize,
    /// Tasks that ended during the cancel phase, beside those `Inner::ends` counts.
    pub(crate) cancelled: usize,
    /// How many of the `completed` and of the `cancelled` panicked, which snapshots count
    /// apart.
    pub(crate) panicked_draining: usize,
    pub(crate) panicked_cancelling: usize,
    /// The same for tasks that ran past their timeout.
    pub(crate) timed_out_draining: usize,
    pub(crate) timed_out_cancelling: usize,
    /// Tasks past their timeout that shutdown stopped, and so are in its report as aborted
    /// (or abandoned), and not among the snapshot's timed out.
    pub(crate) timed_out_by_shutdown: usize,
    /// Tasks without a context that the cancel phase aborted, and so are not among the
    /// `cancelled`: those its walk found, and those it could not see, which the abort flag
    /// stopped at their first poll.
    pub(crate) aborted_early: Vec<TaskRecord>,
    /// Everything from the abort walk on; `None` before it.
    pub(crate) abort: Option<AbortLog>,
}

/// What the abort walk found, and what has been learnt since about the places in the count it
/// could not see.
///
/// At the walk, every place in the count is either a registered task, which the walk names,
/// or one of the `unseen`: an async task that has not suspended yet (queued for its first
/// poll, or inside it), or an admission that will be given back (a refused spawn, or a
/// blocking task refused at its registration). Each unseen place is accounted for once: the
/// task reports itself when it ends (named, in `aborted` or `abandoned`), or the admission is
/// given back; what is still unaccounted for when the report is written blocks its thread
/// inside a first poll, and is counted as abandoned, without a name.
#[derive(Debug, Default)]
pub(crate) struct AbortLog {
    pub(crate) aborted: Vec<TaskRecord>,
    pub(crate) abandoned: Vec<TaskRecord>,
    pub(crate) unseen: usize,
    /// Unseen places accounted for so far; never more than `unseen`.
    pub(crate) accounted: usize,
    /// The report, once written: later ends are not in it, and change nothing.
    pub(crate) report: Option<ShutdownReport>,
}

impl Inner {
    pub(crate) fn new(config: Config) -> Self {
        Self {
            config,
            state: State::new(),
            registry: Registry::new(),
            next_id: AtomicU64::new(1),
            _busy_end: BusyEnd,
            idle_waiters: AtomicUsize::new(0),
            idle: Notify::new(),
            room_waiters: AtomicUsize::new(0),
            room: Notify::new(),
            drain: CancellationToken::new(),
            cancel: CancellationToken::new(),
            force: CancellationToken::new(),
            aborting: AbortFlag::new(),
            late: Notify::new(),
            ends: crate::shutdown::ShutdownEnds::new(),
            shutdown: Mutex::new(ShutdownLog::default()),
            report: OnceLock::new(),
            report_ready: Notify::new(),
            dropped: AtomicUsize::new(0),
            tally: Tally::new(),
            names: crate::names::Names::default(),
            #[cfg(feature = "metrics")]
            labels: crate::metrics::Labels::default(),
        }
    }

    pub(crate) fn lock_shutdown(&self) -> MutexGuard<'_, ShutdownLog> {
        lock(&self.shutdown)
    }

    /// Resolves once no task runs, or when `stop` resolves first; returns whether it is idle.
    pub(crate) async fn wait_until_idle(&self, stop: impl Future<Output = ()>) -> bool {
        self.wait_until_none(State::running, stop).await
    }

    /// Resolves once `count` reads zero, or when `stop` resolves first; returns whether it
    /// does. Ends wake it through `notify_if_idle` when what they leave of the count the
    /// shutdown waits for in their phase is zero (see `Left::waited_for`).
    pub(crate) async fn wait_until_none(
        &self,
        count: impl Fn(&State) -> usize,
        stop: impl Future<Output = ()>,
    ) -> bool {
        // SeqCst pairs with the fence in `notify_if_idle`.
        self.idle_waiters.fetch_add(1, Ordering::SeqCst);
        let _waiting = DecrementOnDrop(&self.idle_waiters);
        let mut stop = std::pin::pin!(stop);
        loop {
            let notified = self.idle.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the count is read, so that a drop to zero in between still
            // wakes this future.
            notified.as_mut().enable();
            // SeqCst fence against the fence in `notify_if_idle`: the increment of
            // `idle_waiters` above must be ordered before this load of the count.
            fence(Ordering::SeqCst);
            if count(&self.state) == 0 {
                return true;
            }
            let stopped = std::future::poll_fn(|cx| {
                if stop.as_mut().poll(cx).is_ready() {
                    return std::task::Poll::Ready(true);
                }
                notified.as_mut().poll(cx).map(|()| false)
            })
            .await;
            if stopped {
                return count(&self.state) == 0;
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle and the last task are gone: every task dropped unfinished has been
        // counted. The first ones were logged by name; one line sums up the rest. Relaxed:
        // the drops that counted happened before this one, which the `Arc` orders.
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > NAMED_DROPS {
            tracing::warn!(
                dropped,
                "{dropped} background tasks were dropped unfinished ({} more than named \
                 above): their runtime shut down before the supervisor did",
                dropped - NAMED_DROPS
            );
        }
    }
}

pub(crate) struct DecrementOnDrop<'a>(pub(crate) &'a AtomicUsize);

impl Drop for DecrementOnDrop<'_> {
    fn drop(&mut self) {
        // Relaxed: a stale count only costs a spurious notify.
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl TaskSupervisor {
    /// A supervisor with the default budget: 5 s to drain (as Quart's
    /// `BACKGROUND_TASK_SHUTDOWN_TIMEOUT`), then the cancellation signal, with 1 s of grace for
    /// the tasks with a context (those without one are aborted at 5 s: see
    /// [the shutdown budget](SupervisorBuilder#the-shutdown-budget)), and no limit on the
    /// number of tasks.
    ///
    /// # Examples
    ///
    /// ```
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// assert!(supervisor.is_empty());
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder to set the shutdown budget, the task limit and the failure callback.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use background_tasks::TaskSupervisor;
    ///
    /// let supervisor = TaskSupervisor::builder()
    ///     .shutdown_timeout(Duration::from_secs(10))
    ///     .cancel_grace(Duration::from_secs(2))
    ///     .max_tasks(1_000)
    ///     .on_failure(|failure| eprintln!("{failure}"))
    ///     .build();
    /// ```
    pub fn builder() -> SupervisorBuilder {
        SupervisorBuilder::new()
    }

    /// Spawns `future` as a supervised task.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let handle = supervisor.spawn(async { "done" }).unwrap();
    /// assert_eq!(handle.await.unwrap(), "done");
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SpawnError::ShuttingDown`] once shutdown has begun, and [`SpawnError::AtCapacity`]
    /// when `max_tasks` tasks are running. The future is then dropped without being polled.
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
        TaskBuilder::new(&self.inner, Origin::Outside, None).spawn(future)
    }

    /// Spawns `future` once there is room for it under
    /// [`max_tasks`](SupervisorBuilder::max_tasks), instead of failing with
    /// [`SpawnError::AtCapacity`]; see [`TaskBuilder::spawn_when_ready`], which also waits for a
    /// place under a name's [limit](SupervisorBuilder::limit).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::builder().max_tasks(2).build();
    /// for batch in 0..10 {
    ///     supervisor
    ///         .spawn_when_ready(async move {
    ///             tokio::time::sleep(Duration::from_millis(10)).await;
    ///             batch
    ///         })
    ///         .await
    ///         .unwrap();
    /// }
    /// supervisor.wait_idle().await;
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SpawnError::ShuttingDown`] as soon as shutdown begins, before the call or while it
    /// waits. The future is then dropped without being polled.
    ///
    /// # Panics
    ///
    /// As [`spawn`](Self::spawn), at the first poll.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: nothing is spawned until it returns.
    pub async fn spawn_when_ready<F>(&self, future: F) -> Result<TaskHandle<F::Output>, SpawnError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        TaskBuilder::new(&self.inner, Origin::Outside, None)
            .spawn_when_ready(future)
            .await
    }

    /// Spawns the future that `task` builds from the new task's [`TaskContext`]: its id, name,
    /// shutdown and cancellation signals, and a way to spawn follow-up tasks.
    ///
    /// `task` is called at once, before this method returns, and only if the task is admitted.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// supervisor.spawn_with(|ctx| async move {
    ///     loop {
    ///         tokio::select! {
    ///             _ = ctx.shutdown_started() => break,
    ///             _ = tokio::time::sleep(Duration::from_secs(1)) => { /* one unit of work */ }
    ///         }
    ///     }
    /// }).unwrap();
    /// assert!(supervisor.shutdown().await.is_clean());
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
        TaskBuilder::new(&self.inner, Origin::Outside, None).spawn_with(task)
    }

    /// Runs the synchronous `function` on tokio's blocking thread pool as a supervised task.
    ///
    /// A blocking task cannot be aborted once it runs: if it is still running when the
    /// drain runs out, shutdown does not wait for it, reports it as abandoned and returns
    /// without it. Use
    /// [`spawn_blocking_with`](Self::spawn_blocking_with) to let it check for cancellation.
    /// Note that dropping a Tokio runtime, as `#[tokio::main]` does when `main` returns, waits
    /// for its blocking threads: to exit without an abandoned task, end the runtime with
    /// [`Runtime::shutdown_background`](tokio::runtime::Runtime::shutdown_background) or
    /// [`shutdown_timeout`](tokio::runtime::Runtime::shutdown_timeout), or call
    /// `std::process::exit` after logging the report.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let handle = supervisor.spawn_blocking(|| std::thread::current().name().map(str::to_owned)).unwrap();
    /// assert_ne!(handle.await.unwrap(), std::thread::current().name().map(str::to_owned));
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
        TaskBuilder::new(&self.inner, Origin::Outside, None).spawn_blocking(function)
    }

    /// Runs the synchronous `function` on tokio's blocking thread pool, handing it its
    /// [`TaskContext`] so that it can check [`TaskContext::is_cancelled`] between units of
    /// work.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let handle = supervisor.spawn_blocking_with(|ctx| {
    ///     let mut done = 0;
    ///     while done < 3 && !ctx.is_cancelled() {
    ///         done += 1; // one unit of work
    ///     }
    ///     done
    /// }).unwrap();
    /// assert_eq!(handle.await.unwrap(), 3);
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
    pub fn spawn_blocking_with<F, R>(&self, function: F) -> Result<TaskHandle<R>, SpawnError>
    where
        F: FnOnce(TaskContext) -> R + Send + 'static,
        R: Send + 'static,
    {
        TaskBuilder::new(&self.inner, Origin::Outside, None).spawn_blocking_with(function)
    }

    /// Spawns `future` as a supervised task on the runtime `handle` refers to, rather than on
    /// the runtime set with
    /// [`SupervisorBuilder::runtime`](crate::SupervisorBuilder::runtime) or the caller's, as
    /// [`TaskTracker::spawn_on`](https://docs.rs/tokio-util/0.7/tokio_util/task/task_tracker/struct.TaskTracker.html#method.spawn_on) does. The supervisor
    /// drains it, cancels and aborts it, like any task; shut the supervisor down before that
    /// runtime stops, or its tasks are dropped and reported as
    /// [`FailureKind::Dropped`](crate::FailureKind::Dropped).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // A runtime of its own for heavy work, say.
    /// let heavy = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap();
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let handle = supervisor.spawn_on(async { "done" }, heavy.handle()).unwrap();
    /// assert_eq!(handle.await.unwrap(), "done");
    /// assert!(supervisor.shutdown().await.is_clean());
    /// # heavy.shutdown_background();
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
        TaskBuilder::new(&self.inner, Origin::Outside, None).spawn_on(future, handle)
    }

    /// Runs the synchronous `function` as a supervised task on the blocking thread pool of the
    /// runtime `handle` refers to; otherwise as [`spawn_blocking`](Self::spawn_blocking).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let handle = tokio::runtime::Handle::current();
    /// let task = supervisor.spawn_blocking_on(|| (1..=10).sum::<u32>(), &handle).unwrap();
    /// assert_eq!(task.await.unwrap(), 55);
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
        TaskBuilder::new(&self.inner, Origin::Outside, None).spawn_blocking_on(function, handle)
    }

    /// Spawns `future`, which need not be `Send`, as a supervised task on the current
    /// [`LocalSet`] (or `LocalRuntime`), as [`tokio::task::spawn_local`] does.
    ///
    /// It runs only while its `LocalSet` is driven (by `run_until`, or as a future): shutdown
    /// drains, cancels and aborts it like any task, as long as its `LocalSet` keeps running
    /// until the shutdown is over. A `LocalSet` dropped with such tasks still running drops
    /// them, and each one is reported as
    /// [`FailureKind::Dropped`](crate::FailureKind::Dropped), never silently; one the abort
    /// lists stays counted by [`len`](Self::len) until its `LocalSet` runs it or drops it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::cell::Cell;
    /// use std::rc::Rc;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let local_set = tokio::task::LocalSet::new();
    /// local_set.run_until(async {
    ///     let hits = Rc::new(Cell::new(0)); // not `Send`
    ///     let counter = hits.clone();
    ///     supervisor.spawn_local(async move { counter.set(counter.get() + 1) }).unwrap();
    ///     // Drained here, while the `LocalSet` runs.
    ///     assert!(supervisor.shutdown().await.is_clean());
    ///     assert_eq!(hits.get(), 1);
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
    /// Like [`tokio::task::spawn_local`], panics when called outside of a [`LocalSet`]; the
    /// task is then never spawned, and counts as such.
    #[track_caller]
    #[inline]
    pub fn spawn_local<F>(&self, future: F) -> Result<TaskHandle<F::Output>, SpawnError>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        TaskBuilder::new(&self.inner, Origin::Outside, None).spawn_local(future)
    }

    /// Spawns the future that `task` builds from the new task's [`TaskContext`], which need
    /// not be `Send`, on the current [`LocalSet`]; otherwise as
    /// [`spawn_local`](Self::spawn_local).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// tokio::task::LocalSet::new().run_until(async {
    ///     supervisor.spawn_local_with(|ctx| async move {
    ///         let mut buffer = Vec::new(); // a `!Send` resource would do as well
    ///         while !ctx.is_shutting_down() {
    ///             tokio::select! {
    ///                 _ = ctx.shutdown_started() => {}
    ///                 _ = tokio::time::sleep(Duration::from_secs(1)) => buffer.push(1),
    ///             }
    ///         }
    ///     }).unwrap();
    ///     assert!(supervisor.shutdown().await.is_clean());
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
    pub fn spawn_local_with<F, Fut>(&self, task: F) -> Result<TaskHandle<Fut::Output>, SpawnError>
    where
        F: FnOnce(TaskContext) -> Fut,
        Fut: Future + 'static,
        Fut::Output: 'static,
    {
        TaskBuilder::new(&self.inner, Origin::Outside, None).spawn_local_with(task)
    }

    /// Spawns `future`, which need not be `Send`, as a supervised task on `local_set`, as
    /// [`TaskTracker::spawn_local_on`](https://docs.rs/tokio-util/0.7/tokio_util/task/task_tracker/struct.TaskTracker.html#method.spawn_local_on) does;
    /// it runs once `local_set` is driven. Otherwise as [`spawn_local`](Self::spawn_local).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let local_set = tokio::task::LocalSet::new();
    /// let handle = supervisor.spawn_local_on(async { 7 }, &local_set).unwrap();
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
        &self,
        future: F,
        local_set: &LocalSet,
    ) -> Result<TaskHandle<F::Output>, SpawnError>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        TaskBuilder::new(&self.inner, Origin::Outside, None).spawn_local_on(future, local_set)
    }

    /// Tracks `future`, which the caller polls itself, as a supervised task, as
    /// [`TaskTracker::track_future`](https://docs.rs/tokio-util/0.7/tokio_util/task/task_tracker/struct.TaskTracker.html#method.track_future) does: the
    /// [`TrackedFuture`] counts as a running task until it completes or is dropped.
    ///
    /// Use it for work a request handler awaits itself but wants drained at shutdown and
    /// named in the report. Shutdown waits for it during the drain; it cannot abort it, since
    /// its owner polls it: if it is still alive when the abort comes, the report lists it as
    /// abandoned and it runs on. Its panics are reported as a task's, then unwind to its owner.
    /// [`track_future_with`](Self::track_future_with) hands it a [`TaskContext`], and so the
    /// cancellation signal and the grace.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let work = supervisor.track_future(async {
    ///     tokio::time::sleep(Duration::from_millis(100)).await;
    ///     "saved"
    /// }).unwrap();
    /// assert_eq!(supervisor.len(), 1);
    /// // The caller awaits it where it likes; a shutdown meanwhile would wait for it.
    /// assert_eq!(work.await, "saved");
    /// assert!(supervisor.is_empty());
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn). The future is then dropped without being polled.
    #[inline]
    pub fn track_future<F: Future>(&self, future: F) -> Result<TrackedFuture<F>, SpawnError> {
        TaskBuilder::new(&self.inner, Origin::Outside, None).track_future(future)
    }

    /// Tracks the future that `task` builds from the new task's [`TaskContext`], which the
    /// caller polls itself; otherwise as [`track_future`](Self::track_future). Through its
    /// context, it sees the shutdown's signals and gets the grace before the abort.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::builder()
    ///     .shutdown_timeout(Duration::from_secs(1))
    ///     .build();
    /// let work = supervisor.track_future_with(|ctx| async move {
    ///     tokio::select! {
    ///         _ = ctx.cancelled() => "stopped early",
    ///         _ = tokio::time::sleep(Duration::from_secs(60)) => "finished",
    ///     }
    /// }).unwrap();
    /// let (outcome, report) = tokio::join!(work, supervisor.shutdown());
    /// assert_eq!(outcome, "stopped early");
    /// assert_eq!(report.cancelled(), 1);
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`track_future`](Self::track_future).
    #[inline]
    pub fn track_future_with<F, Fut>(&self, task: F) -> Result<TrackedFuture<Fut>, SpawnError>
    where
        F: FnOnce(TaskContext) -> Fut,
        Fut: Future,
    {
        TaskBuilder::new(&self.inner, Origin::Outside, None).track_future_with(task)
    }

    /// A builder for a task with a name, shown in its tracing span, in failure reports and in
    /// the shutdown report.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let user = 7;
    /// supervisor.task(format!("welcome-mail-{user}")).spawn(async { /* ... */ }).unwrap();
    /// # }
    /// ```
    #[inline]
    pub fn task(&self, name: impl Into<Cow<'static, str>>) -> TaskBuilder<'_> {
        TaskBuilder::new(&self.inner, Origin::Outside, Some(name.into()))
    }

    /// How many tasks are running, including blocking tasks that shutdown abandoned and that
    /// are still on their thread.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// supervisor.spawn(std::future::pending::<()>()).unwrap();
    /// assert_eq!(supervisor.len(), 1);
    /// # }
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.state.running()
    }

    /// Returns `true` when no task is running.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(background_tasks::TaskSupervisor::new().is_empty());
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The drain budget set with [`SupervisorBuilder::shutdown_timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// assert_eq!(supervisor.shutdown_timeout(), Duration::from_secs(5));
    /// ```
    #[must_use]
    pub fn shutdown_timeout(&self) -> Duration {
        self.inner.config.shutdown_timeout
    }

    /// The grace set with [`SupervisorBuilder::cancel_grace`], for tasks with a context:
    /// shutdown takes at most `shutdown_timeout() + cancel_grace()`, plus the few milliseconds
    /// of the abort, and at most `shutdown_timeout()` when no task with a context is left when
    /// it runs out.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// assert_eq!(supervisor.cancel_grace(), Duration::from_secs(1));
    /// ```
    #[must_use]
    pub fn cancel_grace(&self) -> Duration {
        self.inner.config.cancel_grace
    }

    /// The admission limit set with [`SupervisorBuilder::max_tasks`], if any.
    ///
    /// # Examples
    ///
    /// ```
    /// let supervisor = background_tasks::TaskSupervisor::builder().max_tasks(8).build();
    /// assert_eq!(supervisor.max_tasks(), Some(8));
    /// ```
    #[must_use]
    pub fn max_tasks(&self) -> Option<usize> {
        self.inner.config.max_tasks
    }

    /// The limit set with [`SupervisorBuilder::limit`] for the tasks named `name`, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks::{Limit, TaskSupervisor};
    ///
    /// let supervisor = TaskSupervisor::builder().limit("send-mail", 10).build();
    /// assert_eq!(supervisor.limit("send-mail"), Some(Limit::new(10)));
    /// ```
    #[must_use]
    pub fn limit(&self, name: &str) -> Option<crate::Limit> {
        self.inner
            .config
            .limits
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, limit)| limit.limit())
    }

    /// The runtime set with [`SupervisorBuilder::runtime`], if any, that every task is
    /// spawned onto.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::builder()
    ///     .runtime(tokio::runtime::Handle::current())
    ///     .build();
    /// assert!(supervisor.runtime().is_some());
    /// assert!(background_tasks::TaskSupervisor::new().runtime().is_none());
    /// # }
    /// ```
    #[must_use]
    pub fn runtime(&self) -> Option<&tokio::runtime::Handle> {
        self.inner.config.runtime.as_ref()
    }

    /// Returns `true` once [`shutdown`](Self::shutdown) has begun.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// assert!(!supervisor.is_shutting_down());
    /// supervisor.shutdown().await;
    /// assert!(supervisor.is_shutting_down());
    /// # }
    /// ```
    #[must_use]
    pub fn is_shutting_down(&self) -> bool {
        self.inner.state.phase() != Phase::Running
    }

    /// Waits until no task is running, counting tasks spawned while it waits, without closing
    /// the supervisor: the test helper that Quart's `test_app` gives.
    ///
    /// Call it from outside the supervisor's tasks: awaited inside a supervised task, it counts
    /// that task too, and so waits until shutdown aborts it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let done = Arc::new(AtomicBool::new(false));
    /// supervisor.spawn({
    ///     let done = done.clone();
    ///     async move { done.store(true, Ordering::SeqCst) }
    /// }).unwrap();
    /// supervisor.wait_idle().await;
    /// assert!(done.load(Ordering::SeqCst));
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: dropping the future changes nothing.
    pub async fn wait_idle(&self) {
        self.inner.wait_until_idle(std::future::pending()).await;
    }

    /// Shuts the supervisor down and reports how its tasks ended.
    ///
    /// Admission closes as soon as the returned future is first polled; then the drain,
    /// cancel and abort phases run (see the [type docs](Self) and
    /// [the shutdown budget](SupervisorBuilder#the-shutdown-budget)). It returns as soon as
    /// nothing is left to wait for, and never later than `shutdown_timeout + cancel_grace`
    /// plus the few milliseconds it takes to abort what is left: tasks without a context are
    /// aborted when the drain runs out, so only tasks with one can hold it through the grace. The report is also logged, as one line,
    /// at INFO level when it is clean and at WARN level when it is not.
    ///
    /// Calling it again, or concurrently, waits for the same shutdown and gives the same report.
    ///
    /// Call it from outside the supervisor's tasks (`main`, or `serve`): awaited inside a
    /// supervised task, it waits for that task too, so the shutdown takes its whole budget and
    /// then aborts its caller, which never sees the report (other callers do). On a
    /// `current_thread` runtime, the phases run on the same thread as the tasks: a task that
    /// blocks that thread (inside a poll, without `.await`) holds up the shutdown's timers
    /// too, and so the shutdown ends only once that poll returns.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::builder()
    ///     .shutdown_timeout(Duration::from_secs(1))
    ///     .build();
    /// supervisor.spawn_with(|ctx| async move { ctx.cancelled().await }).unwrap();
    /// let report = supervisor.shutdown().await;
    /// assert_eq!(report.cancelled(), 1);
    /// assert_eq!(report.elapsed(), Duration::from_secs(1));
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// When polled outside of a Tokio runtime with time enabled (`#[tokio::main]` and
    /// `#[tokio::test]` enable it), since the phases run in a task of their own, on timers.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: the shutdown runs in a task of its own, so dropping the
    /// future stops only the waiting, and a later call gives the report.
    pub async fn shutdown(&self) -> ShutdownReport {
        self.inner.begin_shutdown();
        self.inner.report().await
    }

    /// Shuts the supervisor down without waiting out the budget: tasks get the cancellation
    /// signal and are aborted at once. Use it when the process must stop now, such as on a
    /// second Ctrl-C; it also cuts short a [`shutdown`](Self::shutdown) already under way.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// supervisor.spawn(std::future::pending::<()>()).unwrap();
    /// let report = supervisor.shutdown_now().await;
    /// assert_eq!(report.aborted(), 1);
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// As [`shutdown`](Self::shutdown).
    ///
    /// # Cancel safety
    ///
    /// As [`shutdown`](Self::shutdown).
    pub async fn shutdown_now(&self) -> ShutdownReport {
        self.inner.begin_shutdown();
        self.inner.force.cancel();
        self.inner.report().await
    }
}

impl Default for TaskSupervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for TaskSupervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = &self.inner.config;
        f.debug_struct("TaskSupervisor")
            .field("running", &self.len())
            .field("phase", &self.inner.state.phase())
            .field("shutdown_timeout", &config.shutdown_timeout)
            .field("cancel_grace", &config.cancel_grace)
            .field("max_tasks", &config.max_tasks)
            .finish_non_exhaustive()
    }
}
