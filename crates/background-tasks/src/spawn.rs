//! How a task is admitted, run and accounted for when it ends.

use std::borrow::Cow;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};
use std::task::{Context, Poll, Waker};

use pin_project_lite::pin_project;
use tokio::runtime::Handle;
use tokio::task::{JoinHandle, LocalSet};
use tokio::time::Instant;
use tracing::level_filters::LevelFilter;
use tracing::{Level, Span};

use crate::error::{SpawnError, panic_message};
use crate::failure::{Kind as FailureKind, TaskFailure};
use crate::handle::{Stopped, TaskHandle, TaskId};
use crate::limit::Place;
use crate::registry::{Blocking, Entry, Key, Kind};
use crate::report::{Age, TaskRecord};
use crate::snapshot::Tally;
use crate::state::{Origin, Phase, Refused};
use crate::supervisor::Inner;
use crate::timeout::{ContextDeadline, Deadline, Stage};
use crate::tracked::TrackedFuture;

/// What a spawn asks for besides its work: who spawns, whether the task gets a
/// [`TaskContext`](crate::TaskContext) (and so sees the cancellation signal and gets the
/// grace), its name, and its timeout.
#[derive(Debug)]
pub(crate) struct Spec {
    pub(crate) origin: Origin,
    pub(crate) cooperative: bool,
    pub(crate) name: Option<Cow<'static, str>>,
    pub(crate) timeout: Option<std::time::Duration>,
}

impl Spec {
    /// The deadline of a task with a timeout, made before anything is counted (see
    /// [`Deadline::new`]).
    #[track_caller]
    #[inline]
    pub(crate) fn deadline(&self, inner: &Inner) -> Option<Box<Deadline>> {
        let timeout = self.timeout?;
        Some(Deadline::new(
            timeout,
            self.cooperative.then_some(&inner.cancel),
        ))
    }
}

impl Inner {
    /// Spawns the future `make` builds for the new task's id, on `on`, else on the runtime
    /// set on the builder, else on the current one. Inlined into the spawn methods, for the
    /// reason [`wrap`](Self::wrap) is.
    #[track_caller]
    #[inline(always)]
    pub(crate) fn spawn_async<F, M>(
        self: &Arc<Self>,
        spec: Spec,
        make: M,
        on: Option<&Handle>,
    ) -> Result<TaskHandle<F::Output>, SpawnError>
    where
        M: FnOnce(TaskId, Option<ContextDeadline>) -> F,
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let runtime = Runtime::get(on.or(self.config.runtime.as_ref()));
        let (admission, name, flow) = self.admit_spec(spec, true)?;
        let id = self.next_id();
        // User code: should it panic, the admission gives its place back as it unwinds.
        let future = make(id, Flow::for_context(flow.as_deref()));
        let guard = self.guard(admission, id, name, flow);
        // Built as the spawn's argument, not returned through a tuple and a `Result` as
        // `supervise` returns it: each of those moves copied the whole future.
        let join = runtime.spawn(Supervised { future, guard });
        Ok(TaskHandle::new(id, join))
    }

    /// Spawns `future` as a new task, on `on`, else on the runtime set on the builder, else on
    /// the current one: [`spawn_async`](Self::spawn_async) for a future made before its task's
    /// id, moved into the task once rather than through a closure.
    #[track_caller]
    #[inline(always)]
    pub(crate) fn spawn_future<F>(
        self: &Arc<Self>,
        spec: Spec,
        future: F,
        on: Option<&Handle>,
    ) -> Result<TaskHandle<F::Output>, SpawnError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let runtime = Runtime::get(on.or(self.config.runtime.as_ref()));
        let (admission, name, flow) = self.admit_spec(spec, true)?;
        let id = self.next_id();
        let guard = self.guard(admission, id, name, flow);
        let join = runtime.spawn(Supervised { future, guard });
        Ok(TaskHandle::new(id, join))
    }

    /// Spawns the future `make` builds for the new task's id, which need not be `Send`, on
    /// `on`, else on the `LocalSet` (or `LocalRuntime`) the caller runs on.
    #[track_caller]
    pub(crate) fn spawn_local<F, M>(
        self: &Arc<Self>,
        spec: Spec,
        make: M,
        on: Option<&LocalSet>,
    ) -> Result<TaskHandle<F::Output>, SpawnError>
    where
        M: FnOnce(TaskId, Option<ContextDeadline>) -> F,
        F: Future + 'static,
        F::Output: 'static,
    {
        let (id, mut supervised) = self.supervise(spec, make)?;
        supervised.guard.set(LOCAL);
        // Without a `LocalSet` to run on, tokio panics here and drops the task, which its
        // guard then tells apart from one dropped by its `LocalSet` (see
        // `local_set_is_closing`): tokio gives no way to check first.
        let join = match on {
            Some(local_set) => local_set.spawn_local(supervised),
            None => tokio::task::spawn_local(supervised),
        };
        Ok(TaskHandle::new(id, join))
    }

    /// Admits a task and wraps the future `make` builds for its id, for its owner to poll: it
    /// counts until it completes or is dropped.
    #[track_caller]
    pub(crate) fn track<F, M>(
        self: &Arc<Self>,
        spec: Spec,
        make: M,
    ) -> Result<TrackedFuture<F>, SpawnError>
    where
        M: FnOnce(TaskId, Option<ContextDeadline>) -> F,
    {
        let (admission, name, flow) = self.admit_spec(spec, true)?;
        let cooperative = admission.cooperative;
        let id = self.next_id();
        // User code: should it panic, the admission gives its place back as it unwinds.
        let future = make(id, Flow::for_context(flow.as_deref()));
        let span = task_span(self.config.task_span_level, id, name.as_deref());
        #[cfg(feature = "metrics")]
        self.labels.spawned(name.as_ref());
        let waiting = flow
            .as_deref()
            .and_then(|flow| flow.place.as_ref())
            .is_some_and(Place::is_waiting);
        let mut shard = self.registry.lock(id);
        // Registered at once, whatever the phase: only the abort's walk can name a future that
        // nothing else can stop. Read under the shard lock, as a registration does: unless
        // the abort's flag is set, its walk has yet to lock this shard, and finds the entry.
        let walk_may_have_passed = self.aborting.stops(true);
        let key = shard.insert(Entry {
            id,
            name,
            started: Instant::now(),
            cooperative,
            waiting,
            kind: Kind::Tracked { listed: false },
        });
        drop(shard);
        let mut guard = admission.into_guard(id, None, Some(key), span, flow);
        // Its owner ends it, on purpose, however it ends: never a task dropped unfinished.
        guard.set(POLLED | FINISHED);
        if walk_may_have_passed {
            self.list_if_missed(key);
        }
        Ok(TrackedFuture::new(future, guard, id))
    }

    /// Lists as abandoned a tracked future registered while the abort's walk was under way,
    /// if the walk missed it: one of the places it counted and could not see.
    #[cold]
    fn list_if_missed(&self, key: Key) {
        // The walk holds this lock from before it sets its flag until it is done.
        let mut log = self.lock_shutdown();
        let Some(abort) = log.abort.as_mut() else {
            return;
        };
        let mut shard = self.registry.lock_key(key);
        let Some(entry) = shard.get_mut(key) else {
            return;
        };
        if let Kind::Tracked { listed } = &mut entry.kind
            && !*listed
        {
            *listed = true;
            // Once the report is written, it counts this future as stuck.
            if abort.report.is_none() {
                abort.accounted += 1;
                abort.abandoned.push(TaskRecord {
                    id: entry.id,
                    name: entry.name.clone(),
                    age: Age::Known(Instant::now().saturating_duration_since(entry.started)),
                    tracked: true,
                });
                self.late.notify_waiters();
            }
        }
    }

    /// Admits a task and wraps the future `make` builds for its id, ready to be spawned.
    /// `cooperative` says whether the task has a [`TaskContext`](crate::TaskContext), and so
    /// can see the cancellation signal and gets the grace.
    #[track_caller]
    #[inline(always)]
    pub(crate) fn supervise<F, M>(
        self: &Arc<Self>,
        spec: Spec,
        make: M,
    ) -> Result<(TaskId, Supervised<F>), SpawnError>
    where
        M: FnOnce(TaskId, Option<ContextDeadline>) -> F,
    {
        let (admission, name, flow) = self.admit_spec(spec, true)?;
        Ok(self.wrap(admission, name, flow, make))
    }

    /// Admits the task `spec` describes: makes its deadline (which may panic, before anything
    /// is counted), takes its place in the count, then its place under its name's limit
    /// (`queue`: it may wait for one). Returns the admission, the name, and what the guard
    /// keeps of the deadline and the place.
    #[track_caller]
    #[inline(always)]
    fn admit_spec(self: &Arc<Self>, spec: Spec, queue: bool) -> Result<Admitted<'_>, SpawnError> {
        // Most spawns have neither a timeout nor a limited name: one test, and the spawn of
        // a task without them.
        if spec.timeout.is_none() && self.config.limits.is_empty() {
            let admission = self.admit(spec.origin, spec.cooperative)?;
            return Ok((admission, spec.name, None));
        }
        let deadline = spec.deadline(self);
        let admission = self.admit(spec.origin, spec.cooperative)?;
        let place = self.reserve(&admission, spec.name.as_ref(), queue)?;
        Ok((admission, spec.name, Flow::boxed(deadline, place)))
    }

    /// Wraps the future `make` builds for an admitted task, with its name, its place under
    /// its name's limit and its deadline. Inlined, as every step from the spawner's future to
    /// the one tokio's spawn takes, so that the future is moved as few times as it can be: a
    /// handler's future is often a hundred bytes or more, and each step that is not inlined
    /// copies it (15 copies of a 10 ms sleep's future on its way into its cell, against a
    /// bare `tokio::spawn`'s 7, before).
    #[inline(always)]
    pub(crate) fn wrap<F, M>(
        &self,
        admission: Admission<'_>,
        name: Option<Cow<'static, str>>,
        flow: Option<Box<Flow>>,
        make: M,
    ) -> (TaskId, Supervised<F>)
    where
        M: FnOnce(TaskId, Option<ContextDeadline>) -> F,
    {
        let id = self.next_id();
        // User code: should it panic, the admission gives its place back as it unwinds.
        let future = make(id, Flow::for_context(flow.as_deref()));
        let guard = self.guard(admission, id, name, flow);
        (id, Supervised { future, guard })
    }

    /// The guard of the admitted task `id`, once its future is made: from here on the guard
    /// owns the place, and gives it back exactly once however the task ends, even if tokio's
    /// spawn panics and drops the future.
    #[inline(always)]
    fn guard(
        &self,
        admission: Admission<'_>,
        id: TaskId,
        name: Option<Cow<'static, str>>,
        flow: Option<Box<Flow>>,
    ) -> TaskGuard {
        let span = task_span(self.config.task_span_level, id, name.as_deref());
        #[cfg(feature = "metrics")]
        self.labels.spawned(name.as_ref());
        admission.into_guard(id, name, None, span, flow)
    }

    /// Spawns the closure `make` builds for the new task's id on the blocking pool of `on`, else
    /// of the runtime set on the builder, else of the current one.
    #[track_caller]
    pub(crate) fn spawn_blocking<R, F, M>(
        self: &Arc<Self>,
        spec: Spec,
        make: M,
        on: Option<&Handle>,
    ) -> Result<TaskHandle<R>, SpawnError>
    where
        M: FnOnce(TaskId, Option<ContextDeadline>) -> F,
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let runtime = Runtime::get(on.or(self.config.runtime.as_ref()));
        // A blocking task cannot wait without holding a thread: it takes a place under its
        // name's limit or is refused.
        let (admission, name, flow) = self.admit_spec(spec, false)?;
        let cooperative = admission.cooperative;
        let id = self.next_id();
        let function = make(id, Flow::for_context(flow.as_deref()));
        let span = task_span(self.config.task_span_level, id, name.as_deref());
        let started = Instant::now();
        #[cfg(feature = "metrics")]
        self.labels.spawned(name.as_ref());
        let mut slab = self.registry.lock(id);
        // Checked under the shard lock that the shutdown walks, as an async task's registration
        // is: once a walk's flag stops this task, it is not registered, since that walk may have
        // passed its shard. It is not refused either: admitted before the walk, it is one of
        // the places the walk counted, and a refusal's give-back could come after the report
        // was written, which would then count a task that never was. So it is a task, aborted
        // before it starts, as an async task the abort finds unpolled: unregistered, it
        // reports itself as it ends.
        let (name, key) = if self.aborting.stops(cooperative) {
            (name, None)
        } else {
            let entry = Entry {
                id,
                name,
                started,
                cooperative,
                waiting: false,
                kind: Kind::Blocking {
                    abort: None,
                    stage: Blocking::Queued,
                },
            };
            (None, Some(slab.insert(entry)))
        };
        drop(slab);
        // From here on the task is counted: its guard accounts for its end.
        let guard = admission.into_guard(id, name, key, span, flow);
        // Spawned without the shard lock: tokio may start a thread here, or drop the closure
        // (and so end the task, which takes the shard lock) at once when its pool is shut down.
        let join = runtime.spawn_blocking(move || run_blocking(guard, function));
        if let Some(key) = key
            && let Some(Entry {
                id: registered,
                kind: Kind::Blocking { abort, .. },
                ..
            }) = self.registry.lock_key(key).get_mut(key)
        {
            // The slot may already hold another task if this one ended at once.
            if *registered == id {
                *abort = Some(join.abort_handle());
            }
        }
        Ok(TaskHandle::new(id, join))
    }

    fn next_id(&self) -> TaskId {
        // Relaxed: ids only need to be unique, which any ordering of a fetch_add gives.
        TaskId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    fn admit(
        self: &Arc<Self>,
        origin: Origin,
        cooperative: bool,
    ) -> Result<Admission<'_>, SpawnError> {
        let admitted = self.state.admit(origin, cooperative, self.config.max_tasks);
        self.decide(admitted, cooperative)
    }

    /// The admission, or the refusal, that `admitted`, what the state word said, amounts to.
    #[inline]
    pub(crate) fn decide(
        self: &Arc<Self>,
        admitted: Result<(), Refused>,
        cooperative: bool,
    ) -> Result<Admission<'_>, SpawnError> {
        match admitted {
            Ok(()) => Ok(Admission {
                inner: self,
                cooperative,
                refused: std::cell::Cell::new(false),
            }),
            Err(Refused::ShuttingDown) => {
                Tally::bump(&self.tally.refused_shutting_down);
                #[cfg(feature = "metrics")]
                crate::metrics::refused("shutting_down");
                Err(SpawnError::ShuttingDown)
            }
            Err(Refused::Undo) => {
                self.release(cooperative, false);
                Tally::bump(&self.tally.refused_shutting_down);
                #[cfg(feature = "metrics")]
                crate::metrics::refused("shutting_down");
                Err(SpawnError::ShuttingDown)
            }
            Err(Refused::AtCapacity) => {
                Tally::bump(&self.tally.refused_at_capacity);
                #[cfg(feature = "metrics")]
                crate::metrics::refused("at_capacity");
                Err(SpawnError::AtCapacity {
                    limit: self.config.max_tasks.unwrap_or(usize::MAX),
                })
            }
        }
    }

    /// A place for an admitted task of a limited name, if its name has a limit (`queue`: it
    /// may wait for one); refuses it, giving its admission back, when the name's queue is
    /// full. Tasks of other names pay for one test.
    #[inline]
    fn reserve(
        &self,
        admission: &Admission<'_>,
        name: Option<&Cow<'static, str>>,
        queue: bool,
    ) -> Result<Option<Place>, SpawnError> {
        let Some(limit) = self.config.limits.of(name.map(Cow::as_ref)) else {
            return Ok(None);
        };
        match limit.reserve(queue) {
            Some(place) => Ok(Some(place)),
            None => Err(self.queue_full(admission, limit.limit(), queue)),
        }
    }

    #[cold]
    fn queue_full(
        &self,
        admission: &Admission<'_>,
        limit: crate::Limit,
        queue: bool,
    ) -> SpawnError {
        admission.refused.set(true);
        Tally::bump(&self.tally.refused_queue_full);
        #[cfg(feature = "metrics")]
        crate::metrics::refused("queue_full");
        SpawnError::QueueFull {
            limit: limit.running(),
            queue: if queue {
                limit.queue_len().unwrap_or(usize::MAX)
            } else {
                0
            },
        }
    }

    /// Gives back the place of an admission whose task was never spawned; `counted` says
    /// whether the abort walk's snapshot of the count included it.
    fn release(&self, cooperative: bool, counted: bool) {
        let left = match self.state.end_if_running(cooperative) {
            Some(left) => left,
            None => {
                let mut log = self.lock_shutdown();
                let (phase, left) = self.state.end_in_shutdown(cooperative);
                // One of the places the walk could not see, and no task will report for it:
                // tell the wait for them. Refusals after the walk were never part of it, and
                // are no progress of the abort either.
                if let (Phase::Done, Some(abort), true) = (phase, &mut log.abort, counted) {
                    self.ends.ended_since_walk();
                    if abort.report.is_none() {
                        abort.accounted += 1;
                        self.late.notify_waiters();
                    }
                }
                left.waited_for(phase)
            }
        };
        self.notify_if_idle(left);
    }

    /// Wakes the waits for the count to reach zero when `left`, the count they wait on, is
    /// zero.
    #[inline]
    pub(crate) fn notify_if_idle(&self, left: usize) {
        // An end from a full `max_tasks` makes room: wake the spawns waiting for it. A test
        // of a plain field for supervisors without the limit.
        if let Some(max) = self.config.max_tasks
            && left.wrapping_add(1) == max
        {
            self.notify_room();
        }
        if left == 0 {
            self.notify_idle();
        }
    }

    /// Wakes the waits for the count to reach zero, which it just did. Out of line: most ends
    /// leave other tasks running.
    #[inline(never)]
    fn notify_idle(&self) {
        // SeqCst fence against the SeqCst increment in `wait_until_idle`: either that waiter
        // sees the count at zero, or this load sees the waiter and wakes it. It spares the
        // notify's lock when nobody waits, the common case.
        fence(Ordering::SeqCst);
        if self.idle_waiters.load(Ordering::SeqCst) != 0 {
            self.idle.notify_waiters();
        }
    }

    fn fail(&self, failure: TaskFailure) {
        tracing::error!(
            task.id = failure.task_id().as_u64(),
            task.name = failure.task_name(),
            "{failure}"
        );
        self.report_failure(&failure);
    }

    /// Reports a task dropped unfinished while the supervisor runs, unless its handle aborted
    /// it: logged at WARN, the first [`NAMED_DROPS`] by name (the rest are summed up when the
    /// supervisor is dropped), and handed to `on_failure`. Off the hot path: only a task's
    /// drop comes here.
    #[cold]
    fn dropped_unfinished(
        &self,
        id: TaskId,
        name: Option<Cow<'static, str>>,
        age: Age,
        local: bool,
    ) {
        if local && age == Age::NotStarted && std::thread::panicking() {
            // `spawn_local` outside of a `LocalSet` panicked, and dropped the task as it
            // unwound: never spawned, as a task whose closure panicked. The panic says why.
            Tally::bump(&self.tally.unspawned);
            return;
        }
        let dropped_by_owner = if local {
            local_set_is_closing()
        } else {
            runtime_is_shutting_down()
        };
        if !dropped_by_owner {
            // Its runtime (or `LocalSet`) runs on: the task was aborted through its handle, on
            // purpose.
            Tally::bump(&self.tally.stopped);
            return;
        }
        let failure = TaskFailure::new(id, name, FailureKind::Dropped { age });
        // Relaxed: a count, read once every task is gone (see `Inner`'s drop).
        if self.dropped.fetch_add(1, Ordering::Relaxed) < NAMED_DROPS {
            tracing::warn!(
                task.id = id.as_u64(),
                task.name = failure.task_name(),
                "{failure}; shut the supervisor down before its runtime ends: await \
                 `TaskSupervisor::shutdown`, or serve with `background_tasks_axum::serve` \
                 rather than `axum::serve`"
            );
        }
        self.report_failure(&failure);
    }

    /// Hands `failure` to the `on_failure` callback, if any.
    pub(crate) fn report_failure(&self, failure: &TaskFailure) {
        self.tally.remember(failure);
        let Some(callback) = &self.config.on_failure else {
            return;
        };
        // The callback is user code: its panic must not unwind through the supervisor.
        if catch_unwind(AssertUnwindSafe(|| callback(failure))).is_err() {
            tracing::error!(
                task.id = failure.task_id().as_u64(),
                "the on_failure callback panicked while reporting: {failure}"
            );
        }
    }
}

/// How many tasks dropped unfinished are logged by name; the rest are counted in one summary
/// line, so that a runtime dropped with thousands of tasks does not log thousands of lines.
pub(crate) const NAMED_DROPS: usize = 10;

/// Whether the current runtime is shutting down, or there is none: then it is dropping the
/// tasks it still holds, rather than one aborted through its handle.
///
/// Tokio has no public flag for it, but a runtime that shuts down refuses new tasks: it drops
/// their future at once, and their handle is finished when `spawn` returns. A running runtime
/// queues the probe instead, and the abort then drops it. Only a task's unfinished drop pays
/// for this probe.
fn runtime_is_shutting_down() -> bool {
    let Ok(handle) = Handle::try_current() else {
        return true;
    };
    let probe = handle.spawn(std::future::pending::<()>());
    let refused = probe.is_finished();
    probe.abort();
    refused
}

/// Whether the `LocalSet` running a local task is being dropped, or there is none: then it
/// is dropping the tasks it still holds, rather than one aborted through its handle.
///
/// As [`runtime_is_shutting_down`], with a probe on the `LocalSet`, which a `LocalSet` being
/// dropped refuses. A local task is only dropped by its `LocalSet`, which makes itself current
/// while it does so; the probe can only panic if it is dropped as its thread exits, after
/// tokio's thread-locals, and then the task is reported.
fn local_set_is_closing() -> bool {
    if std::thread::panicking() {
        // A panic unwinding through the `LocalSet`: a second one would abort the process.
        return true;
    }
    match catch_unwind(|| tokio::task::spawn_local(std::future::pending::<()>())) {
        Ok(probe) => {
            let refused = probe.is_finished();
            probe.abort();
            refused
        }
        Err(_) => true,
    }
}

/// The runtime to spawn on.
pub(crate) enum Runtime {
    /// The caller is a task, so a runtime is current: `tokio::spawn` finds it.
    Current,
    Handle(Handle),
}

impl Runtime {
    /// The runtime set on the builder, else the current runtime, or the panic `tokio::spawn`
    /// gives outside one.
    ///
    /// Checked before anything is counted, so that the panic leaves the supervisor as it was.
    #[track_caller]
    pub(crate) fn get(configured: Option<&Handle>) -> Self {
        if let Some(handle) = configured {
            return Runtime::Handle(handle.clone());
        }
        // Most spawns come from tasks, where reading the task id is much cheaper than cloning
        // the runtime handle.
        if tokio::task::try_id().is_some() {
            return Runtime::Current;
        }
        match Handle::try_current() {
            Ok(handle) => Runtime::Handle(handle),
            Err(_) => panic!(
                "TaskSupervisor: spawn called outside of a Tokio runtime; \
                 spawn from async code run by a runtime (e.g. under #[tokio::main]), \
                 or enter one with `Runtime::enter`"
            ),
        }
    }

    #[track_caller]
    #[inline(always)]
    pub(crate) fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self {
            Runtime::Current => tokio::spawn(future),
            Runtime::Handle(handle) => handle.spawn(future),
        }
    }

    #[track_caller]
    fn spawn_blocking<F, R>(&self, function: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        match self {
            Runtime::Current => tokio::task::spawn_blocking(function),
            Runtime::Handle(handle) => handle.spawn_blocking(function),
        }
    }
}

/// The task's span at `level`, when a subscriber wants it: kept out of line otherwise (see
/// `Cold`).
#[inline]
fn task_span(level: LevelFilter, id: TaskId, name: Option<&str>) -> Option<Span> {
    // What every span macro checks first, made here, inline, before the call: one relaxed
    // load of the most verbose level any subscriber wants, which rules out the task span
    // (`DEBUG` by default) for an app logging at `INFO`, or with no subscriber at all.
    if level > LevelFilter::current() {
        return None;
    }
    enabled_task_span(level, id, name)
}

/// The task's span at `level`, which the most verbose subscriber's level admits. One callsite
/// per level, since a callsite's level is fixed.
#[inline(never)]
fn enabled_task_span(level: LevelFilter, id: TaskId, name: Option<&str>) -> Option<Span> {
    let id = id.as_u64();
    let span = match level.into_level()? {
        Level::TRACE => tracing::trace_span!("background_task", task.id = id, task.name = name),
        Level::DEBUG => tracing::debug_span!("background_task", task.id = id, task.name = name),
        Level::INFO => tracing::info_span!("background_task", task.id = id, task.name = name),
        Level::WARN => tracing::warn_span!("background_task", task.id = id, task.name = name),
        Level::ERROR => tracing::error_span!("background_task", task.id = id, task.name = name),
    };
    (!span.is_disabled()).then_some(span)
}

/// An admitted task that is not spawned yet: dropped before [`Admission::into_guard`], it
/// gives its place back.
pub(crate) struct Admission<'a> {
    inner: &'a Arc<Inner>,
    cooperative: bool,
    /// Set when the spawn is refused after all (its name's queue is full): no task took an
    /// id, so none is counted as never spawned.
    refused: std::cell::Cell<bool>,
}

impl Admission<'_> {
    /// Hands the place over to the guard of the task: from now on, the task's end gives it
    /// back, and only that.
    #[inline]
    fn into_guard(
        self,
        id: TaskId,
        name: Option<Cow<'static, str>>,
        key: Option<Key>,
        span: Option<Span>,
        flow: Option<Box<Flow>>,
    ) -> TaskGuard {
        let (inner, cooperative) = (self.inner.clone(), self.cooperative);
        // Not dropped: the place is the guard's now. Forgetting a reference leaks nothing.
        std::mem::forget(self);
        TaskGuard::new(inner, id, cooperative, name, key, span, flow)
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        // The closure building the task panicked, after the task took its id; or the spawn
        // was refused before it took one.
        if !self.refused.get() {
            Tally::bump(&self.inner.tally.unspawned);
        }
        // Admitted places are taken before the walk's snapshot, which admits no one.
        self.inner.release(self.cooperative, true);
    }
}

/// Lives inside the task and accounts for its end, however it ends: returned, panicked, or
/// dropped by an abort.
pub(crate) struct TaskGuard(Repr);

/// A [`TaskGuard`] in 16 bytes, a tokio task's cell is no bigger for it than for a future in a
/// `TaskTracker` (8 bytes for its token): tokio rounds cells up to multiples of 128 bytes,
/// and the 24 bytes a guard took when it held the supervisor, the word and the box side by
/// side took a 10 ms sleep's cell from 256 bytes to 384. The box's pointer takes the place of
/// the supervisor's: the box holds it.
enum Repr {
    /// A task without a box: the supervisor, and the task's word (see [`Word`]).
    Lean { inner: Arc<Inner>, tagged: Word },
    /// A task with a name not interned, a span, a timeout, a limit, or a panic to report.
    Cold(Box<ColdGuard>),
}

// Two words, as the tracker's token is one: see `Repr`.
const _: () = assert!(std::mem::size_of::<TaskGuard>() <= 2 * std::mem::size_of::<u64>());

/// A [`TaskGuard`] with its box.
struct ColdGuard {
    inner: Arc<Inner>,
    tagged: Word,
    cold: Cold,
}

/// A task's word: its id until it registers, then its registry [`Key`] ([`REGISTERED`] set;
/// the entry holds the id), with the flags [`POLLED`], [`COOPERATIVE`], [`STOPPED`],
/// [`FINISHED`], [`REGISTERED`], [`LOCAL`] and [`INTERNED`] in its top bits, which neither ids
/// (2^57 spawns, 4 years at a billion a second) nor keys reach. Until the task registers, an
/// [`INTERNED`] word also holds the index of the task's name among the supervisor's [interned
/// names](crate::names::Names), above an id of at most [`NAME_SHIFT`] bits. A field of its own
/// would take the guard past 16 bytes; a key or a name kept in the box would give every task
/// that suspends, or every named task, a box.
type Word = u64;

/// Set in [`Word`] once the task's future was first polled, which the abort
/// needs to know of a task that never suspended: was it waiting for its first poll, or inside
/// it?
const POLLED: u64 = 1 << 63;

/// Set in [`Word`] for a task with a [`TaskContext`](crate::TaskContext): it
/// can see the cancellation signal, and so is given the grace before it is aborted.
const COOPERATIVE: u64 = 1 << 62;

/// Set in [`Word`] when shutdown stopped the task at a poll, which the count of
/// a task ending in the cancel phase needs: aborted, or cancelled?
const STOPPED: u64 = 1 << 61;

/// Set in [`Word`] when the task's future returned or panicked (its closure,
/// for a blocking task): a guard dropped without it or [`STOPPED`] belongs to a task dropped
/// unfinished, by its handle's abort or by its runtime shutting down.
const FINISHED: u64 = 1 << 60;

/// Set in [`Word`] once the task has a registry entry: the bits below the flags
/// then hold its [`Key`], not its id.
const REGISTERED: u64 = 1 << 59;

/// Set in [`Word`] for a task on a `LocalSet`: dropped unfinished, it asks its
/// `LocalSet`, not its runtime, whether it was dropped on purpose.
const LOCAL: u64 = 1 << 58;

/// Set in [`Word`] while the task's name is interned, as the index the bits from
/// [`NAME_SHIFT`] up hold; the bits below hold its id. Cleared when the task registers: its
/// entry takes the name.
const INTERNED: u64 = 1 << 57;

/// Where an [`INTERNED`] word keeps its name's index: ids of up to this many bits (2^49
/// spawns, 17 years at a million a second) leave room for it; a task with a later id keeps its
/// name in its box, as an owned name does.
const NAME_SHIFT: u32 = 49;

const FLAGS: u64 = POLLED | COOPERATIVE | STOPPED | FINISHED | REGISTERED | LOCAL | INTERNED;

// The flags sit above every key, and a name's index between them and an id.
const _: () = assert!(FLAGS.trailing_zeros() >= Key::BITS);
const _: () = assert!(NAME_SHIFT + u8::BITS <= FLAGS.trailing_zeros());

/// The bits of `tagged` that hold the task's id (its key, once registered).
#[inline]
fn id_bits(tagged: u64) -> u64 {
    let id_mask = if tagged & INTERNED != 0 {
        (1 << NAME_SHIFT) - 1
    } else {
        !FLAGS
    };
    tagged & id_mask
}

#[derive(Default)]
struct Cold {
    /// The task's name until it registers, when the registry entry takes it.
    name: Option<Cow<'static, str>>,
    /// Set when the task panicked, with the panic message if it had one.
    panic: Option<Option<String>>,
    /// The task's span, when a subscriber wants it.
    span: Option<Span>,
    /// The task's deadline and its place under its name's limit, if it has either. Dropped
    /// by hand (see `Drop for Cold`), so that the cold box of a named task costs its drop no
    /// call to `Flow`'s drop glue, which the compiler does not inline.
    flow: Option<ManuallyDrop<Box<Flow>>>,
}

impl Drop for Cold {
    #[inline]
    fn drop(&mut self) {
        if let Some(flow) = self.flow.take() {
            drop(ManuallyDrop::into_inner(flow));
        }
    }
}

/// An admitted task: its admission, its name, and its deadline and place, if any.
type Admitted<'a> = (Admission<'a>, Option<Cow<'static, str>>, Option<Box<Flow>>);

/// What a task with a timeout or under a per-name limit keeps in its cold box: boxed, so
/// that every other task carries one null pointer for it, from its spawn to its end.
pub(crate) struct Flow {
    /// The task's deadline, when it was spawned with a timeout.
    pub(crate) deadline: Option<Box<Deadline>>,
    /// The task's place under its name's limit, if its name has one.
    pub(crate) place: Option<Place>,
}

impl Flow {
    /// The flow of a task with `deadline` and `place`, if it has either.
    #[inline(always)]
    pub(crate) fn boxed(
        deadline: Option<Box<Deadline>>,
        place: Option<Place>,
    ) -> Option<Box<Self>> {
        if deadline.is_none() && place.is_none() {
            // Both are `None`, so there is nothing to drop: forgetting them spares every
            // spawn a call to their drop glue, which the compiler does not inline (measured:
            // 13 instructions a task).
            std::mem::forget((deadline, place));
            return None;
        }
        Some(Box::new(Self { deadline, place }))
    }

    /// What the task's context knows of its deadline.
    #[inline]
    pub(crate) fn for_context(flow: Option<&Self>) -> Option<ContextDeadline> {
        flow?.deadline.as_deref().and_then(Deadline::for_context)
    }
}

impl Cold {
    /// Whether it holds nothing: a guard needs no box for it.
    fn is_empty(&self) -> bool {
        self.name.is_none() && self.panic.is_none() && self.span.is_none() && self.flow.is_none()
    }

    fn deadline_mut(&mut self) -> Option<&mut Deadline> {
        self.flow.as_deref_mut()?.deadline.as_deref_mut()
    }

    fn place_mut(&mut self) -> Option<&mut Place> {
        self.flow.as_deref_mut()?.place.as_mut()
    }

    /// Whether the task ran past its timeout; if so, its failure: aborted by it, or not.
    fn timed_out(&self) -> Option<(std::time::Duration, bool)> {
        let deadline = self.flow.as_deref()?.deadline.as_deref()?;
        match deadline.stage() {
            Stage::Armed => None,
            Stage::Signalled => Some((deadline.timeout(), false)),
            Stage::Aborted => Some((deadline.timeout(), true)),
        }
    }
}

impl TaskGuard {
    #[inline(always)]
    fn new(
        inner: Arc<Inner>,
        id: TaskId,
        cooperative: bool,
        name: Option<Cow<'static, str>>,
        key: Option<Key>,
        span: Option<Span>,
        flow: Option<Box<Flow>>,
    ) -> Self {
        let word = key.map_or(id.0, |key| key.bits() | REGISTERED);
        let tagged = word | if cooperative { COOPERATIVE } else { 0 };
        if span.is_some() {
            return Self::boxed(inner, tagged, name, span, flow);
        }
        // It is `None`, which has nothing to drop: forgotten, so that no spawn pays for a call
        // to its drop glue, which the compiler does not always inline (a call of 18
        // instructions a spawn in the actix example's handler), as `Flow::boxed` does.
        std::mem::forget(span);
        // Matched rather than tested, so that a task without any of it leaves nothing to drop.
        match (name, flow) {
            (None, None) => Self(Repr::Lean { inner, tagged }),
            // A name alone needs no box when the task's own word can hold it: a `&'static str`
            // interned by the supervisor, for a task yet to register (a registered one's entry
            // holds its name) and with an id that leaves room for it. Inline: a named spawn is
            // as common as an unnamed one.
            (Some(Cow::Borrowed(name)), None) if key.is_none() && id.0 >> NAME_SHIFT == 0 => {
                match inner.names.index(name) {
                    Some(index) => {
                        let tagged = tagged | INTERNED | (u64::from(index) << NAME_SHIFT);
                        Self(Repr::Lean { inner, tagged })
                    }
                    None => Self::boxed(inner, tagged, Some(Cow::Borrowed(name)), None, None),
                }
            }
            (name, flow) => Self::boxed(inner, tagged, name, None, flow),
        }
    }

    /// The guard of a task with a box: a name not interned, a span or a flow. Out of line, so
    /// that a task without them pays nothing for it.
    #[inline(never)]
    fn boxed(
        inner: Arc<Inner>,
        tagged: Word,
        name: Option<Cow<'static, str>>,
        span: Option<Span>,
        flow: Option<Box<Flow>>,
    ) -> Self {
        let cold = Cold {
            name,
            panic: None,
            span,
            flow: flow.map(ManuallyDrop::new),
        };
        Self(Repr::Cold(Box::new(ColdGuard {
            inner,
            tagged,
            cold,
        })))
    }

    /// The supervisor.
    #[inline]
    fn inner(&self) -> &Arc<Inner> {
        match &self.0 {
            Repr::Lean { inner, .. } => inner,
            Repr::Cold(guard) => &guard.inner,
        }
    }

    /// The task's word.
    #[inline]
    fn tagged(&self) -> Word {
        match &self.0 {
            Repr::Lean { tagged, .. } => *tagged,
            Repr::Cold(guard) => guard.tagged,
        }
    }

    /// Sets `flags` in the task's word.
    #[inline]
    fn set(&mut self, flags: Word) {
        *self.parts().1 |= flags;
    }

    /// What a task without a box never needs, if this task has it.
    #[inline]
    fn cold(&self) -> Option<&Cold> {
        match &self.0 {
            Repr::Lean { .. } => None,
            Repr::Cold(guard) => Some(&guard.cold),
        }
    }

    #[inline]
    fn cold_mut(&mut self) -> Option<&mut Cold> {
        self.parts().2
    }

    /// The supervisor, the task's word and its box, borrowed apart.
    #[inline]
    fn parts(&mut self) -> (&Arc<Inner>, &mut Word, Option<&mut Cold>) {
        match &mut self.0 {
            Repr::Lean { inner, tagged } => (inner, tagged, None),
            Repr::Cold(guard) => {
                let ColdGuard {
                    inner,
                    tagged,
                    cold,
                } = &mut **guard;
                (inner, tagged, Some(cold))
            }
        }
    }

    /// The task's box, made if it has none: for a panic to report.
    fn cold_or_default(&mut self) -> &mut Cold {
        if let Repr::Lean { inner, tagged } = &self.0 {
            let guard = ColdGuard {
                inner: inner.clone(),
                tagged: *tagged,
                cold: Cold::default(),
            };
            self.0 = Repr::Cold(Box::new(guard));
        }
        match &mut self.0 {
            Repr::Cold(guard) => &mut guard.cold,
            Repr::Lean { .. } => unreachable!("a box was just made"),
        }
    }

    /// Drops the box of a task that no longer needs it: a long-lived task that held only its
    /// name in it, which its registry entry has taken.
    fn drop_empty_box(&mut self) {
        if let Repr::Cold(guard) = &self.0
            && guard.cold.is_empty()
        {
            let (inner, tagged) = (guard.inner.clone(), guard.tagged);
            self.0 = Repr::Lean { inner, tagged };
        }
    }

    /// The task's id, kept here until the task registers; its entry holds it from then on.
    fn unregistered_id(&self) -> TaskId {
        debug_assert!(
            self.key().is_none(),
            "a registered task's id is in its entry"
        );
        TaskId(id_bits(self.tagged()))
    }

    /// Takes the name of this task, which has not registered.
    fn take_own_name(&mut self) -> Option<Cow<'static, str>> {
        let (inner, tagged, cold) = self.parts();
        Self::take_name(inner, tagged, cold)
    }

    /// Takes the name of a task that has not registered: from its word, or from its box.
    fn take_name(
        inner: &Inner,
        tagged: &mut Word,
        cold: Option<&mut Cold>,
    ) -> Option<Cow<'static, str>> {
        if *tagged & INTERNED != 0 {
            // Truncation keeps the 8 bits above `NAME_SHIFT`, the index, and drops the flags.
            let index = (*tagged >> NAME_SHIFT) as u8;
            *tagged &= !INTERNED & !(u64::from(u8::MAX) << NAME_SHIFT);
            return inner.names.get(index).map(Cow::Borrowed);
        }
        cold.and_then(|cold| cold.name.take())
    }

    #[inline]
    fn is_cooperative(&self) -> bool {
        self.tagged() & COOPERATIVE != 0
    }

    /// Whether shutdown stops this task now; if so, marks it as stopped.
    #[inline]
    fn stopped_by_shutdown(&mut self) -> bool {
        let (inner, tagged, _) = self.parts();
        let stops = inner.aborting.stops(*tagged & COOPERATIVE != 0);
        if stops {
            *tagged |= STOPPED;
        }
        stops
    }

    #[inline]
    fn key(&self) -> Option<Key> {
        let tagged = self.tagged();
        (tagged & REGISTERED != 0).then(|| Key::from_bits(tagged & !FLAGS))
    }

    /// Counts the end of the task; returns its id, its name, or `None` for the name of a task
    /// that was never registered and ended as it should, which is left for
    /// [`take_name`](Self::take_name), should a failure or a metric need it, and when a
    /// registered task's duration began (its first suspension, or a blocking task's spawn), as
    /// its entry said.
    fn end(&mut self) -> (TaskId, Option<Cow<'static, str>>, Option<Instant>) {
        let key = self.key();
        let (cooperative, tagged) = (self.is_cooperative(), self.tagged());
        // Meaningful only for a task that never registered: the entry holds the id of one
        // that did.
        let id = TaskId(id_bits(tagged));
        // Neither returned, panicked nor stopped by shutdown: dropped by its handle's abort or
        // by its runtime. A bit test: the hot path only pays for it when that is so.
        let unfinished = tagged & (FINISHED | STOPPED) == 0;
        let local = tagged & LOCAL != 0;
        // Age is only known from a task's first suspension on: a task the walks could not see,
        // because it had never suspended, has none.
        let unseen_age = || {
            if tagged & POLLED != 0 {
                Age::FirstPoll
            } else {
                Age::NotStarted
            }
        };
        let (inner, word, mut cold) = self.parts();
        // Counted before the end, so that a snapshot never sees the task neither running nor
        // timed out (as a panic is counted before its task ends). A panic past the deadline
        // counts as a panic only.
        let timed_out = cold
            .as_deref()
            .is_some_and(|cold| cold.panic.is_none() && cold.timed_out().is_some());
        if timed_out {
            Tally::bump(&inner.tally.timed_out);
        }
        let panicked = cold.as_deref().is_some_and(|cold| cold.panic.is_some());
        // A registered task's shard lock, kept from the attempt below for the count that
        // follows it once shutdown has begun, rather than taken a second time.
        let mut held = None;
        let mut take_name = || Self::take_name(inner, word, cold.as_deref_mut());
        match key {
            None => {
                if let Some(left) = inner.state.end_if_running(cooperative) {
                    inner.notify_if_idle(left);
                    if unfinished {
                        inner.dropped_unfinished(id, take_name(), unseen_age(), local);
                        return (id, None, None);
                    }
                    return (id, None, None);
                }
            }
            Some(key) => {
                let mut slab = inner.registry.lock_key(key);
                if let Some(left) = inner.state.end_if_running(cooperative) {
                    // Removed under the same shard lock as the count drops, so that the
                    // registry and the count agree for the shutdown walking the shards.
                    let entry = own_entry(slab.remove(key));
                    drop(slab);
                    inner.notify_if_idle(left);
                    if unfinished {
                        let age = Instant::now().saturating_duration_since(entry.started);
                        inner.dropped_unfinished(entry.id, entry.name, Age::Known(age), local);
                        return (entry.id, None, Some(entry.started));
                    }
                    return (entry.id, entry.name, Some(entry.started));
                }
                // Shutdown has begun, and from the drain on phases move only with every shard
                // locked: under this lock the phase is now stable, and the end can be counted
                // below without letting go of it.
                if !timed_out && !panicked {
                    held = Some(slab);
                }
            }
        }
        // Shutdown has begun. Most ends need nothing of the shutdown log but a count: an end
        // in the drain, an end in the cancel phase that no walk stopped (cancelled) or that
        // the cancel walk listed, an end after the abort walk of a task it listed. Those of
        // registered tasks that neither panicked nor timed out are counted under their shard's
        // lock alone (see `ShardEnds`), since the phase is stable there: phases move on
        // only with every shard locked, and each walk keeps them locked until it is over. The
        // rest is counted under the shutdown lock, which the driver holds to walk and to write
        // the report, with 100 000 tasks ending at the cancellation signal or 200 000 woken
        // by the abort.
        if let (Some(key), Some(mut slab)) = (key, held) {
            let phase = inner.state.phase();
            // Listed by a walk, which stopped it: in the log already.
            let listed = slab.get_mut(key).is_some_and(|entry| entry.is_stopped());
            let counted = match phase {
                Phase::Draining => true,
                // Unless the abort flag stopped it at a poll though the walk did not list it
                // (it had not registered then): the log lists it as aborted.
                Phase::Cancelling => listed || tagged & STOPPED == 0,
                // Unless the walk did not list it (a blocking task on its thread, a tracked
                // future listed after the walk): the log has the rest of its story.
                Phase::Done => listed,
                Phase::Running => unreachable!("phases never go back to Running"),
            };
            if counted {
                // Under the shard lock, as an end while running: the registry and the count
                // agree for the next walk. Counted before the lock is released too: the next
                // phase change, and the report after it, wait for this shard only.
                let entry = own_entry(slab.remove(key));
                let (_, left) = inner.state.end_in_shutdown(cooperative);
                slab.ends().count(phase, listed);
                drop(slab);
                inner.notify_if_idle(left.waited_for(phase));
                return (entry.id, entry.name, Some(entry.started));
            }
            // Left in the registry until the shutdown lock is held, below, as every end under
            // that lock does: the registry and the count then agree for any walk. The shard
            // lock goes first, since the shutdown lock is never taken under one.
            drop(slab);
        }
        // Otherwise the end is counted under the shutdown lock, where phases change, so that
        // it is counted in exactly the phase it happened in.
        let mut log = inner.lock_shutdown();
        let (phase, left) = inner.state.end_in_shutdown(cooperative);
        let entry = key.map(|key| own_entry(inner.registry.lock_key(key).remove(key)));
        let (id, name, started, listed) = match entry {
            Some(entry) => {
                let listed = entry.is_stopped();
                (entry.id, entry.name, Some(entry.started), listed)
            }
            None => (id, Self::take_name(inner, word, cold), None, false),
        };
        // Snapshots count panics apart from the report's `completed` and `cancelled`.
        let panicked = usize::from(panicked);
        let timed_out = usize::from(timed_out);
        match (phase, &mut log.abort) {
            (Phase::Draining, _) => {
                log.completed += 1;
                log.panicked_draining += panicked;
                log.timed_out_draining += timed_out;
            }
            // Listed as aborted by the walk of the cancel phase, which stopped it.
            (Phase::Cancelling, _) if listed => {}
            // A task without a context that the walk could not see, stopped by the flag at its
            // first poll (or when it first suspended): aborted, as the walk would have said.
            (Phase::Cancelling, _) if tagged & STOPPED != 0 => log.aborted_early.push(TaskRecord {
                id,
                name: name.clone(),
                age: unseen_age(),
                tracked: false,
            }),
            (Phase::Cancelling, _) => {
                log.cancelled += 1;
                log.panicked_cancelling += panicked;
                log.timed_out_cancelling += timed_out;
            }
            (Phase::Done, Some(abort)) => {
                inner.ends.ended_since_walk();
                // A task the abort walk could not see, because it had never suspended, reports
                // itself while the report is still open. One whose first poll was under way
                // when the abort came held its thread then: abandoned, as the walk would have
                // said.
                if key.is_none() && abort.report.is_none() {
                    abort.accounted += 1;
                    let age = unseen_age();
                    let list = if age == Age::FirstPoll {
                        &mut abort.abandoned
                    } else {
                        &mut abort.aborted
                    };
                    list.push(TaskRecord {
                        id,
                        name: name.clone(),
                        age,
                        tracked: false,
                    });
                    inner.late.notify_waiters();
                }
            }
            // Running cannot come back once shutdown has begun, and the walk that moves to
            // `Done` writes the abort log under this lock.
            (Phase::Running, _) | (Phase::Done, None) => {}
        }
        // Stopped by shutdown, which reports it as aborted or abandoned, not as timed out.
        let by_shutdown = match phase {
            Phase::Cancelling => listed || tagged & STOPPED != 0,
            Phase::Done => true,
            Phase::Running | Phase::Draining => false,
        };
        if by_shutdown {
            log.timed_out_by_shutdown += timed_out;
        }
        drop(log);
        inner.notify_if_idle(left.waited_for(phase));
        (id, name, started)
    }

    /// How the task is ending, as the `outcome` label of the metrics says: read from the phase
    /// just before the end is counted, so a task that ends at the very instant the phase
    /// changes may be labelled as of the phase before.
    #[cfg(feature = "metrics")]
    fn outcome(&self) -> crate::metrics::Outcome {
        use crate::metrics::Outcome;
        if self.cold().is_some_and(|cold| cold.panic.is_some()) {
            return Outcome::Panicked;
        }
        let tagged = self.tagged();
        let (stopped, finished) = (tagged & STOPPED != 0, tagged & FINISHED != 0);
        if !stopped && self.cold().is_some_and(|cold| cold.timed_out().is_some()) {
            return Outcome::TimedOut;
        }
        match self.inner().state.phase() {
            // Dropped unfinished: aborted through its handle, or by its runtime.
            Phase::Running if !stopped && !finished => Outcome::Aborted,
            // During the drain every end but a panic completes, as the report counts them.
            Phase::Running | Phase::Draining => Outcome::Completed,
            Phase::Cancelling if stopped => Outcome::Aborted,
            Phase::Cancelling => Outcome::Cancelled,
            // Still running when the abort came, and ran to its end: abandoned.
            Phase::Done if finished => Outcome::Abandoned,
            Phase::Done => Outcome::Aborted,
        }
    }

    fn panicked(&mut self, payload: &(dyn std::any::Any + Send)) {
        self.set(FINISHED);
        Tally::bump(&self.inner().tally.panicked);
        self.cold_or_default().panic = Some(panic_message(payload).map(str::to_owned));
    }

    /// Registers a suspended async task, so that shutdown can name it and wake it to abort
    /// it; returns `false` if shutdown is already aborting, and the task must stop.
    fn register(&mut self, waker: &Waker, waiting: bool) -> bool {
        let (id, cooperative) = (self.unregistered_id(), self.is_cooperative());
        let (inner, tagged, cold) = self.parts();
        let mut shard = inner.registry.lock(id);
        // Checked under the shard lock: each walk sets the flag while it holds every shard, so
        // either it finds this entry, or this task sees the flag. A task waiting for a place
        // is stopped by the cancel phase's walk with or without a context, so it checks the
        // flag as a task without one does.
        if inner.aborting.stops(cooperative && !waiting) {
            *tagged |= STOPPED;
            return false;
        }
        // The clock is read here rather than at spawn: a task that never suspends never needs
        // it, and a clock read per spawn is a measurable share of a short task's cost.
        let key = shard.insert(Entry {
            id,
            name: Self::take_name(inner, tagged, cold),
            started: Instant::now(),
            cooperative,
            waiting,
            kind: Kind::Async(waker.clone()),
        });
        drop(shard);
        *tagged = (*tagged & FLAGS) | REGISTERED | key.bits();
        // A box that held only the name is empty now: a long-lived named task keeps no box.
        self.drop_empty_box();
        true
    }

    /// Marks a blocking task as started, unless shutdown aborted it first.
    fn start_blocking(&self) -> bool {
        let Some(key) = self.key() else {
            return false;
        };
        match self.inner().registry.lock_key(key).get_mut(key) {
            Some(Entry {
                kind: Kind::Blocking { stage, .. },
                ..
            }) if *stage == Blocking::Queued => {
                *stage = Blocking::Running;
                true
            }
            _ => false,
        }
    }
}

/// The entry a registered task's end removed: only that end removes it, once, so it is there.
fn own_entry(entry: Option<Entry>) -> Entry {
    match entry {
        Some(entry) => entry,
        None => unreachable!("a registered task's entry is removed by its own end, once"),
    }
}

impl Drop for TaskGuard {
    #[inline]
    fn drop(&mut self) {
        // The common end, on its own so that it pays for none of the rest (the compiler saves
        // every register the whole of `end` uses, on entry): a task without a box that ran to
        // its end and never registered, while the supervisor runs. `end` would do the same, and
        // then find nothing more to do; without `metrics`, whose labels need the name.
        #[cfg(not(feature = "metrics"))]
        if let Repr::Lean { inner, tagged } = &self.0
            && tagged & (REGISTERED | FINISHED | STOPPED) == FINISHED
            && let Some(left) = inner.state.end_if_running(tagged & COOPERATIVE != 0)
        {
            inner.notify_if_idle(left);
            return;
        }
        self.end_and_report();
    }
}

impl TaskGuard {
    /// Counts the end of the task and reports its failure, if it failed.
    #[inline(never)]
    fn end_and_report(&mut self) {
        #[cfg(feature = "metrics")]
        let outcome = self.outcome();
        #[cfg_attr(not(feature = "metrics"), expect(unused_variables))]
        let (id, name, started) = self.end();
        #[cfg(feature = "metrics")]
        let name = {
            let name = name.or_else(|| self.take_own_name());
            let duration = started.map_or(std::time::Duration::ZERO, |started| {
                Instant::now().saturating_duration_since(started)
            });
            self.inner()
                .labels
                .finished(name.as_ref(), outcome, duration);
            name
        };
        // Only a task with a cold box can have failed.
        if self.cold().is_none() {
            return;
        }
        let name = name.or_else(|| self.take_own_name());
        let (inner, tagged, Some(cold)) = self.parts() else {
            return;
        };
        if let Some(message) = cold.panic.take() {
            inner.fail(TaskFailure::new(id, name, FailureKind::Panic { message }));
        } else if *tagged & STOPPED == 0
            && let Some((timeout, aborted)) = cold.timed_out()
        {
            // Past its deadline, unless shutdown stopped it first: then the report names it.
            let kind = FailureKind::TimedOut { timeout, aborted };
            inner.fail(TaskFailure::new(id, name, kind));
        }
    }
}

pin_project! {
    /// A task's future as the supervisor runs it: inside the task's span, with panics caught,
    /// registered when it first suspends, stopped when shutdown aborts, and accounted for when
    /// it is dropped. A panic, once reported, unwinds on to tokio, which hands it to the
    /// handle.
    pub(crate) struct Supervised<F> {
        // Declared first so that it is dropped first: the task ends once its future is gone.
        #[pin]
        future: F,
        guard: TaskGuard,
    }
}

impl<F: Future> Future for Supervised<F> {
    type Output = Result<F::Output, Stopped>;

    // Into tokio's poll of the task, as a plain `tokio::spawn`'s future is: left a function of
    // its own (which `#[inline]` alone left it), each poll paid a frame that holds the user's
    // whole future, its prologue saving every register that future uses: 121 instructions
    // over the two polls of the actix example's 10 ms sleep (`benchmarks/http-instructions-workers
    // --functions`), 0.5 % of its request.
    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.guard.begin_poll(cx) {
            Gate::Go => {}
            Gate::Wait => return Poll::Pending,
            Gate::Stop(stopped) => return Poll::Ready(Err(stopped)),
        }
        match this.guard.poll_in_span(|| this.future.poll(cx)) {
            Poll::Ready(output) => {
                // A plain store to the task's own memory, as for `POLLED`.
                this.guard.set(FINISHED);
                Poll::Ready(Ok(output))
            }
            Poll::Pending => {
                // The waker of a task's top-level future is the task's own and never changes,
                // so registering once is enough.
                if this.guard.tagged() & REGISTERED == 0 && !this.guard.register(cx.waker(), false)
                {
                    return Poll::Ready(Err(Stopped::ByShutdown));
                }
                Poll::Pending
            }
        }
    }
}

/// What a task's limit and timeout say before its future is polled.
pub(crate) enum Gate {
    Go,
    /// Waiting for a place under its name's limit.
    Wait,
    Stop(Stopped),
}

impl TaskGuard {
    /// What shutdown, and the task's per-name limit and timeout, say before its future is
    /// polled with `cx`; marks it as polled if it goes on. A task without a box has neither a
    /// limit nor a timeout: it only checks the abort.
    #[inline]
    fn begin_poll(&mut self, cx: &mut Context<'_>) -> Gate {
        if let Repr::Lean { inner, tagged } = &mut self.0 {
            if inner.aborting.stops(*tagged & COOPERATIVE != 0) {
                *tagged |= STOPPED;
                return Gate::Stop(Stopped::ByShutdown);
            }
            // A plain store to the task's own memory: cheaper than testing whether it is
            // needed.
            *tagged |= POLLED;
            return Gate::Go;
        }
        self.begin_cold_poll(cx)
    }

    /// [`begin_poll`](Self::begin_poll) for a task with a box.
    #[inline(never)]
    fn begin_cold_poll(&mut self, cx: &mut Context<'_>) -> Gate {
        if self.stopped_by_shutdown() {
            return Gate::Stop(Stopped::ByShutdown);
        }
        let gate = self.gate(cx, true);
        if matches!(gate, Gate::Go) {
            self.set(POLLED);
        }
        gate
    }

    /// What the task's per-name limit and timeout say before its future is polled with
    /// `cx`: go on, wait for a place, or stop. `abortable` is false for a tracked future,
    /// which only its owner can stop.
    #[inline]
    pub(crate) fn gate(&mut self, cx: &mut Context<'_>, abortable: bool) -> Gate {
        // A test of a word the guard holds anyway: only a task with a cold box (a name not yet
        // registered, a span, a timeout, a limit) looks further.
        let (inner, tagged, Some(cold)) = self.parts() else {
            return Gate::Go;
        };
        let Some(flow) = cold.flow.as_deref_mut() else {
            return Gate::Go;
        };
        // The timeout runs from the spawn, waiting included, as `tokio::time::timeout`'s.
        if let Some(deadline) = flow.deadline.as_deref_mut()
            && deadline.poll_expired(cx, inner.config.cancel_grace, abortable)
        {
            // Ended by its timeout, not dropped unfinished: its end is a failure of its own.
            *tagged |= FINISHED;
            return Gate::Stop(Stopped::TimedOut);
        }
        if flow.place.as_ref().is_some_and(Place::is_waiting) {
            return self.wait_for_place(cx, abortable).unwrap_or(Gate::Go);
        }
        Gate::Go
    }

    /// Waits for the task's place under its name's limit; `None` once it has it (and has
    /// started: its entry says so).
    #[cold]
    fn wait_for_place(&mut self, cx: &mut Context<'_>, abortable: bool) -> Option<Gate> {
        // Never started, and from the cancel phase on never will: stopped, and named as not
        // started (a walk listed it so, or its end does).
        if abortable && self.inner().state.phase() >= Phase::Cancelling {
            self.set(STOPPED);
            return Some(Gate::Stop(Stopped::ByShutdown));
        }
        let place = self.cold_mut().and_then(Cold::place_mut)?;
        if place.poll_held(cx).is_pending() {
            // Registered while it waits, so that snapshots show it and the walks find it.
            if abortable && self.tagged() & REGISTERED == 0 && !self.register(cx.waker(), true) {
                return Some(Gate::Stop(Stopped::ByShutdown));
            }
            return Some(Gate::Wait);
        }
        if let Some(key) = self.key() {
            let mut shard = self.inner().registry.lock_key(key);
            if let Some(entry) = shard.get_mut(key) {
                // Under the shard lock the walks take: a walk that listed it as not started
                // stopped it, and it does not start now.
                if abortable && entry.is_stopped() {
                    drop(shard);
                    self.set(STOPPED);
                    return Some(Gate::Stop(Stopped::ByShutdown));
                }
                entry.waiting = false;
                entry.started = Instant::now();
            }
        }
        None
    }

    /// Runs `poll`, a poll of the task's future, inside the task's span. A panic is caught
    /// here rather than only by tokio (or the owner of a tracked future), so that it is logged
    /// and reported even when nobody awaits the handle; it then unwinds on.
    #[inline]
    pub(crate) fn poll_in_span<T>(&mut self, poll: impl FnOnce() -> Poll<T>) -> Poll<T> {
        let span = self.cold().and_then(|cold| cold.span.as_ref());
        let entered = span.map(Span::enter);
        let polled = catch_unwind(AssertUnwindSafe(poll));
        drop(entered);
        polled.unwrap_or_else(|payload| {
            self.panicked(&*payload);
            resume_unwind(payload)
        })
    }
}

fn run_blocking<R>(mut guard: TaskGuard, function: impl FnOnce() -> R) -> Result<R, Stopped> {
    if !guard.start_blocking() {
        // A walk aborted it before it started, or it was admitted as one was under way and
        // never registered: stopped, as an async task is at its first poll.
        guard.set(STOPPED);
        return Err(Stopped::ByShutdown);
    }
    let deadline = guard.cold_mut().and_then(Cold::deadline_mut);
    if let Some(deadline) = deadline
        && deadline.expired_before_start()
    {
        // Queued past its deadline: it does not start, and its end is a failure of its own.
        guard.set(FINISHED);
        return Err(Stopped::TimedOut);
    }
    let span = guard.cold().and_then(|cold| cold.span.clone());
    let run = || match catch_unwind(AssertUnwindSafe(function)) {
        Ok(output) => {
            guard.set(FINISHED);
            // Nothing could stop it once it ran: past its deadline, it is reported as such.
            let deadline = guard.cold_mut().and_then(Cold::deadline_mut);
            if let Some(deadline) = deadline {
                deadline.check_after_run();
            }
            Ok(output)
        }
        Err(payload) => {
            guard.panicked(&*payload);
            resume_unwind(payload)
        }
    };
    let Some(span) = span else {
        return run();
    };
    // Events go to the thread's default subscriber, and a blocking thread has none of its own
    // when the subscriber was set for the spawning thread only (as in tests): log to the
    // span's subscriber, as the spawning code would have.
    let dispatch = span.with_subscriber(|(_, dispatch)| dispatch.clone());
    let _entered = span.enter();
    match dispatch {
        Some(dispatch) => tracing::dispatcher::with_default(&dispatch, run),
        None => run(),
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::TaskSupervisor;

    /// A named task's spec, as `task(name)` makes it.
    fn named(name: &'static str) -> Spec {
        Spec {
            origin: Origin::Outside,
            cooperative: false,
            name: Some(Cow::Borrowed(name)),
            timeout: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_name_is_interned_only_below_the_ids_that_leave_room_for_it_and_reported_either_way()
    {
        let failures = Arc::new(Mutex::new(Vec::new()));
        let supervisor = TaskSupervisor::builder()
            .on_failure({
                let failures = failures.clone();
                move |failure| failures.lock().unwrap().push(failure.clone())
            })
            .build();
        let inner = &supervisor.inner;
        // Ids on both sides of the largest an interned word holds.
        let first = (1 << NAME_SHIFT) - 2;
        inner.next_id.store(first, Ordering::Relaxed);
        for offset in 0..4 {
            let (id, supervised) = inner
                .supervise(named("job"), |_, _| async { panic!("job failed") })
                .unwrap();
            assert_eq!(id.as_u64(), first + offset);
            let interned = supervised.guard.tagged() & INTERNED != 0;
            assert_eq!(interned, id.as_u64() >> NAME_SHIFT == 0, "{id:?}");
            assert_eq!(supervised.guard.cold().is_some(), !interned, "{id:?}");
            assert_eq!(supervised.guard.unregistered_id(), id);
            let handle = TaskHandle::new(id, tokio::spawn(supervised));
            assert!(handle.await.unwrap_err().is_panic());
        }
        let failures = failures.lock().unwrap();
        let reported: Vec<_> = failures
            .iter()
            .map(|failure| (failure.task_id().as_u64(), failure.task_name()))
            .collect();
        let expected: Vec<_> = (0..4).map(|offset| (first + offset, Some("job"))).collect();
        assert_eq!(reported, expected);
    }
}
