//! Configuring a supervisor.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use tokio::runtime::Handle;
use tracing::level_filters::LevelFilter;

use crate::failure::TaskFailure;
use crate::limit::{Limit, Limits};
use crate::supervisor::{Config, FailureCallback, Inner, TaskSupervisor};

/// Builds a [`TaskSupervisor`] with a shutdown budget, a task limit and a failure callback.
///
/// # The shutdown budget
///
/// With the defaults (`shutdown_timeout` 5 s, `cancel_grace` 1 s), counted from the moment the
/// supervisor's shutdown begins:
///
/// | at | tasks with a context (`spawn_with`, `spawn_blocking_with`) | tasks without one (`spawn`, `spawn_blocking`) |
/// |---|---|---|
/// | 0 s | `ctx.shutdown_started()` fires; a task that ends now is *completed* | run on; a task that ends now is *completed* |
/// | 5 s, `shutdown_timeout` | `ctx.cancelled()` fires; a task that ends in the next second is *cancelled* | cannot see that signal, so get no grace: *aborted* at once; a blocking one already on its thread cannot be stopped and is not waited for (*abandoned* if it still runs when the shutdown ends) |
/// | 6 s, `+ cancel_grace` | *aborted*; a blocking one already on its thread is *abandoned* | (none left) |
///
/// The shutdown returns as soon as nothing is left to wait for: at 5 s at the latest when no task
/// with a context still runs then, at 6 s at the latest otherwise (plus the few milliseconds of
/// the abort).
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
    runtime: Option<Handle>,
    task_span_level: LevelFilter,
    limits: Vec<(Cow<'static, str>, Limit)>,
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
    /// The default grace of tasks with a context, between the cancellation signal and their
    /// abort: 1 second.
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
    /// The default level of each task's span: `DEBUG`, so that at the usual `INFO` filter
    /// tasks cost no span; see [`task_span_level`](Self::task_span_level).
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks::SupervisorBuilder;
    /// use tracing::Level;
    ///
    /// assert_eq!(SupervisorBuilder::DEFAULT_TASK_SPAN_LEVEL, Level::DEBUG);
    /// ```
    pub const DEFAULT_TASK_SPAN_LEVEL: LevelFilter = LevelFilter::DEBUG;

    pub(crate) fn new() -> Self {
        Self {
            shutdown_timeout: Self::DEFAULT_SHUTDOWN_TIMEOUT,
            cancel_grace: Self::DEFAULT_CANCEL_GRACE,
            max_tasks: None,
            on_failure: None,
            runtime: None,
            task_span_level: Self::DEFAULT_TASK_SPAN_LEVEL,
            limits: Vec::new(),
        }
    }

    /// How long shutdown waits for tasks to end on their own before it fires the
    /// cancellation signal and aborts the tasks without a context, which cannot see it (see
    /// [the shutdown budget](Self#the-shutdown-budget)). Zero skips the drain. Default:
    /// 5 seconds.
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

    /// How long shutdown waits after the cancellation signal for the tasks with a context
    /// (spawned with `spawn_with` or `spawn_blocking_with`) before it aborts them; tasks
    /// without one cannot see the signal, and are aborted when it fires (see
    /// [the shutdown budget](Self#the-shutdown-budget)). Zero aborts at once. Default:
    /// 1 second.
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

    /// Limits the tasks named `name`: at most `limit.running()` run at once, and the others
    /// wait their turn, in the order they were spawned, without being polled; when
    /// `limit.queue_len()` of them wait already, a spawn is refused with
    /// [`SpawnError::QueueFull`](crate::SpawnError::QueueFull). A number is a limit whose
    /// queue is bounded only by [`max_tasks`](Self::max_tasks). Calling it again for the same
    /// name replaces its limit.
    ///
    /// A waiting task is a real task: [`TaskSupervisor::len`](crate::TaskSupervisor::len)
    /// and `max_tasks` count it, [`snapshot`](crate::TaskSupervisor::snapshot) shows it (not
    /// started, and in its name's `waiting` count), its [`timeout`](crate::TaskBuilder::timeout)
    /// runs while it waits, and shutdown drains it like the rest: it may still
    /// start during the drain, and one that never started is reported by name as *not
    /// started* (aborted). A tracked future ([`track_future`](crate::TaskSupervisor::track_future))
    /// waits when its owner first polls it. A blocking task cannot wait without holding a
    /// thread of the pool: beyond the limit it is refused with `QueueFull`.
    /// [`spawn_when_ready`](crate::TaskBuilder::spawn_when_ready) waits for a place instead of
    /// queueing.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use background_tasks::{Limit, SpawnError, TaskSupervisor};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let supervisor = TaskSupervisor::builder()
    ///     .limit("send-mail", Limit::new(2).queue(1))
    ///     .build();
    /// let send = || async { tokio::time::sleep(Duration::from_secs(1)).await };
    /// supervisor.task("send-mail").spawn(send()).unwrap();
    /// supervisor.task("send-mail").spawn(send()).unwrap();
    /// // The third waits for one of the first two to end.
    /// supervisor.task("send-mail").spawn(send()).unwrap();
    /// assert_eq!(supervisor.len(), 3);
    /// // The fourth finds the queue full.
    /// let refused = supervisor.task("send-mail").spawn(send());
    /// assert_eq!(refused.unwrap_err(), SpawnError::QueueFull { limit: 2, queue: 1 });
    /// supervisor.wait_idle().await;
    /// # }
    /// ```
    pub fn limit(mut self, name: impl Into<Cow<'static, str>>, limit: impl Into<Limit>) -> Self {
        let (name, limit) = (name.into(), limit.into());
        self.limits.retain(|(known, _)| *known != name);
        self.limits.push((name, limit));
        self
    }

    /// Called for every task that panics, for every task that shutdown aborts or abandons,
    /// and for every task dropped unfinished because its runtime shut down before the
    /// supervisor did ([`FailureKind::Dropped`](crate::FailureKind::Dropped)), on the thread
    /// where that happened. Failures are logged through `tracing`
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

    /// Spawns every task onto `runtime`, whatever thread or runtime spawns it. Default: the
    /// runtime of the caller, as [`tokio::spawn`].
    ///
    /// Set it when the code that spawns runs on a runtime that stops before the supervisor's
    /// shutdown, and would drop the tasks spawned on it: a runtime a thread builds for a
    /// while, for example. Spawning onto the runtime that runs `main` keeps them alive until
    /// the shutdown drains them. (An actix-web worker's runtime is such a runtime, but
    /// `background_tasks_actix::serve` keeps the workers alive until the supervisor has shut
    /// down, so that handlers' tasks run on their own worker, which is cheaper.)
    ///
    /// # Examples
    ///
    /// ```
    /// use tokio::runtime::{Builder, Handle};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::builder()
    ///     .runtime(Handle::current())
    ///     .build();
    ///
    /// // Spawned from a short-lived runtime on another thread, the task runs on this one.
    /// let spawner = supervisor.clone();
    /// let handle = std::thread::spawn(move || {
    ///     let short_lived = Builder::new_current_thread().build().unwrap();
    ///     short_lived.block_on(async { spawner.spawn(async { 7 }).unwrap() })
    /// })
    /// .join()
    /// .unwrap();
    /// assert_eq!(handle.await.unwrap(), 7);
    /// # }
    /// ```
    pub fn runtime(mut self, runtime: Handle) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// The level of the span each task runs in, `background_task{task.id=… task.name=…}`
    /// (target `background_tasks::spawn`), which puts the task's id and name on every event
    /// the task logs; [`LevelFilter::OFF`] for no span at all. The default is
    /// [`DEBUG`](Self::DEFAULT_TASK_SPAN_LEVEL).
    ///
    /// What each choice costs: a span the subscriber does not enable costs one cached check
    /// per spawn. One it enables costs what the subscriber does with a span: with
    /// `tracing-subscriber`'s `fmt` layer, about 5 000 instructions per task (formatting the
    /// fields, a slot in its registry, an enter and exit per poll), more than supervising a
    /// task costs (measured: 200 000 tasks that suspend once, 8 700 instructions each with
    /// the span enabled, 3 600 without). So at the default, with the usual `INFO` filter,
    /// a task's own events carry no task context; the supervisor's own events about a task
    /// (its panic, its abort) always carry `task.id` and `task.name` as fields. To see the
    /// context on the task's events too, raise this to `INFO`, or keep it and enable the
    /// spans alone in the filter, as in `RUST_LOG=info,background_tasks::spawn=debug`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tracing::Level;
    ///
    /// // Every event a task logs at INFO carries its id and name.
    /// let supervisor = background_tasks::TaskSupervisor::builder()
    ///     .task_span_level(Level::INFO)
    ///     .build();
    /// ```
    pub fn task_span_level(mut self, level: impl Into<LevelFilter>) -> Self {
        self.task_span_level = level.into();
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
                runtime: self.runtime,
                task_span_level: self.task_span_level,
                limits: Limits::new(self.limits),
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
            .field("runtime", &self.runtime.as_ref().map(|_| ".."))
            .field("task_span_level", &self.task_span_level)
            .field("limits", &self.limits)
            .finish()
    }
}
