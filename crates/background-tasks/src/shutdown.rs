//! The phased shutdown: drain, cancel, abort.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Poll, Waker};
use std::time::Duration;

use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::failure::{Kind as FailureKind, TaskFailure};
use crate::registry::{Blocking, Entry, Kind};
use crate::report::{Age, ShutdownReport, TaskList, TaskRecord};
use crate::snapshot::RECENT_FAILURES;
use crate::state::{Abort, Phase, State};
use crate::supervisor::{AbortLog, Inner};
use crate::sync::AtomicUsize;

impl Inner {
    /// Closes admission and starts the shutdown driver, the first time only.
    #[track_caller]
    pub(crate) fn begin_shutdown(self: &Arc<Self>) {
        // The phases run on tokio's timers: without them (or without a runtime) this panics
        // here, in the caller, before anything changed, rather than in the driver, which
        // would leave the supervisor closed and the report never written.
        drop(sleep_until(Instant::now()));
        let started = Instant::now();
        let Some(running) = self.close_admission(started) else {
            return;
        };
        self.drain.cancel();
        tracing::info!(running, "background task shutdown started");
        // The phases run in a task of their own, so that dropping a `shutdown` future cannot
        // leave the supervisor half shut down. The guard is made here, not inside the driver,
        // so that it is part of the driver's future from the start: should the runtime drop
        // the driver before its first poll, the report is still written.
        let guard = PublishOnDrop {
            inner: self.clone(),
            started,
        };
        tokio::spawn(drive(guard));
    }

    /// Moves from `Running` to `Draining`; returns the number of tasks running at that
    /// instant, or `None` if shutdown had begun already.
    pub(crate) fn close_admission(&self, started: Instant) -> Option<usize> {
        let mut log = self.lock_shutdown();
        if log.started.is_some() {
            return None;
        }
        log.started = Some(started);
        let running = self.state.advance(Phase::Draining).1;
        // Ends from now on are counted in this log, under this lock.
        log.completed_before = self.completed_while_running(running) as usize;
        Some(running)
    }

    /// Moves to `Cancelling` and aborts the tasks without a context: they cannot see the
    /// cancellation signal, so the grace would only delay their abort. Blocking ones already
    /// on their thread cannot be stopped: they are left to end, or to be abandoned when the
    /// grace ends, but not waited for.
    ///
    /// Returns the wakers of the async tasks it stopped, which stop when woken: the driver
    /// wakes them at once when a grace is to be waited out, and after the report otherwise.
    pub(crate) fn begin_cancel(&self) -> Wakes {
        let mut wakers = Vec::new();
        // Under the shutdown lock, as every phase change, and in the same hold as the walk: a
        // task without a context that ends in this phase was either stopped by this walk,
        // which lists it, or never seen by it.
        let mut log = self.lock_shutdown();
        // Every shard locked, from before the phase changes until the walk is over: an end
        // counted under a shard's lock alone (see `ShardEnds`) is counted in the drain, or
        // after this walk.
        let mut shards = self.registry.lock_every();
        if self.state.advance(Phase::Cancelling).0 >= Phase::Cancelling {
            return Wakes(wakers);
        }
        // Before the shards are unlocked: see `TaskGuard::register`.
        self.aborting.set(Abort::Plain);
        // Every registered task has its place in the word, with a context or without, and
        // none registers or ends while this holds every shard (an admission racing the move
        // can only raise the count): with no place without a context, and no name's limit for
        // a task with one to wait under, the walk would stop nothing. Then it is skipped,
        // rather than visiting 100 000 entries with every shard locked before the
        // cancellation signal can fire.
        let plain = self.state.without_context();
        if plain == 0 && self.config.limits.is_empty() {
            return Wakes(wakers);
        }
        // Room for all of them at once, rather than growing through copies of 56-byte
        // records: at most `plain` tasks, but for tasks waiting under a limit.
        wakers.reserve(plain);
        log.aborted_early.reserve(plain);
        let now = Instant::now();
        for slab in &mut shards {
            // Tracked futures are left to the abort: only their owner can stop them. Tasks
            // waiting for a place under their name's limit never start from now on, with a
            // context or without: there is no grace to give them.
            let plain = slab.iter_mut().filter(|entry| {
                (!entry.cooperative || entry.waiting) && !matches!(entry.kind, Kind::Tracked { .. })
            });
            for entry in plain {
                if let Some(Stop::Aborted(record)) = stop(entry, now, &mut wakers) {
                    log.aborted_early.push(record);
                }
            }
        }
        // Woken once the locks are released (when the caller drops them): a woken task ends
        // at once, and its end takes its shard's lock, which this holds.
        Wakes(wakers)
    }

    /// The report, once the driver has written it.
    pub(crate) async fn report(&self) -> ShutdownReport {
        loop {
            let notified = self.report_ready.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the report is read, so that a report written in between still
            // wakes this future.
            notified.as_mut().enable();
            if let Some(report) = self.report.get() {
                return report.clone();
            }
            notified.await;
        }
    }

    /// Aborts what still runs and names it, the first time only: the first part of the
    /// report, kept in the shutdown log. Returns the wakers of the async tasks it stopped,
    /// for the caller to wake once the locks are released; the driver wakes them after the
    /// report is published, since the report waits for none of them.
    pub(crate) fn abort_remaining(&self) -> Wakes {
        let mut log = self.lock_shutdown();
        if log.abort.is_some() {
            return Wakes(Vec::new());
        }
        // Every shard locked, from before the phase changes until the walk is over, as in
        // `begin_cancel`: an end counted under a shard's lock alone is counted before this
        // walk, or after it.
        let mut shards = self.registry.lock_every();
        // The count at the instant of the move: ends and give-backs wait for the shutdown
        // lock, or for a shard's, which this holds, and admissions from now on are refused
        // without being part of it (see `Refused::Undo`).
        let (_, running) = self.state.advance(Phase::Done);
        // Before the shards are unlocked: see `TaskGuard::register`.
        self.aborting.set(Abort::All);
        let now = Instant::now();
        let mut abort = AbortLog {
            aborted: std::mem::take(&mut log.aborted_early),
            ..AbortLog::default()
        };
        // Room for every place not listed yet, at most: each is a task to list, or one the
        // cancel phase's walk listed and that has not ended yet.
        let unlisted = running.saturating_sub(abort.aborted.len());
        abort.aborted.reserve(unlisted);
        let mut wakers = Vec::with_capacity(unlisted);
        let mut seen = 0;
        // Under the shutdown lock and every shard's, one of which every task ending now and
        // every registration must take: every registered task is found, and each is one of
        // the `running` places.
        for slab in &mut shards {
            for entry in slab.iter_mut() {
                seen += 1;
                match stop(entry, now, &mut wakers) {
                    Some(Stop::Aborted(record)) => abort.aborted.push(record),
                    Some(Stop::Abandoned(record)) => abort.abandoned.push(record),
                    // Listed by the cancel phase's walk already.
                    None => {}
                }
            }
        }
        debug_assert!(
            seen <= running,
            "{seen} registered tasks, {running} counted"
        );
        abort.unseen = running.saturating_sub(seen);
        log.abort = Some(abort);
        // Woken once the locks are released (when the caller drops them): a woken task ends
        // at once, and its end takes the shutdown lock, or its shard's, which this holds.
        Wakes(wakers)
    }

    /// Waits for the places the walk could not see to be accounted for, as long as tasks keep
    /// ending: the wait ends when they all are, when no task has ended for [`LATE_QUIET`]
    /// (what is left blocks its thread in a first poll), or [`LATE_CAP`] after `due`, the
    /// instant the abort was due.
    async fn collect_late(&self, due: Instant) {
        let cap = deadline(due, LATE_CAP);
        let mut progress = None;
        loop {
            let notified = self.late.notified();
            let mut notified = pin!(notified);
            // Registered before the log is read, so that a report in between still wakes it.
            notified.as_mut().enable();
            let done = {
                let log = self.lock_shutdown();
                log.abort
                    .as_ref()
                    .is_none_or(|abort| abort.accounted >= abort.unseen)
            };
            let ended = self.since_walk();
            let now = Instant::now();
            if done || progress == Some(ended) || now >= cap {
                return;
            }
            progress = Some(ended);
            let quiet = deadline(now, LATE_QUIET).min(cap);
            // Woken early by each unseen place accounted for; otherwise, once the quiet period
            // is over, to see whether tasks are still ending.
            let _ = tokio::time::timeout_at(quiet, notified).await;
        }
    }

    /// Writes the report from the shutdown log, the first time only; returns it.
    pub(crate) fn close_report(&self, started: Instant) -> ShutdownReport {
        let mut log = self.lock_shutdown();
        let (completed, cancelled) = self.completed_and_cancelled();
        let (completed, cancelled) = (log.completed + completed, log.cancelled + cancelled);
        let abort = log.abort.get_or_insert_with(AbortLog::default);
        if let Some(report) = &abort.report {
            return report.clone();
        }
        // Moved, not sorted: each list sorts itself when it is first read in full (see
        // `TaskList`), which the one-line report does not do.
        let aborted = TaskList::new(std::mem::take(&mut abort.aborted));
        let abandoned = TaskList::new(std::mem::take(&mut abort.abandoned));
        let report = ShutdownReport {
            completed,
            cancelled,
            aborted: Arc::new(aborted),
            abandoned: Arc::new(abandoned),
            stuck: abort.unseen.saturating_sub(abort.accounted),
            elapsed: Instant::now().saturating_duration_since(started),
        };
        abort.report = Some(report.clone());
        report
    }

    /// Makes the report visible to every `shutdown` call, the first time only.
    fn publish(&self, report: ShutdownReport) {
        // `set` fails only if a report was already written: the first one stands.
        let _ = self.report.set(report);
        self.report_ready.notify_waiters();
    }
}

/// What the ends of tasks during shutdown count without the shutdown lock (see
/// `TaskGuard::end`): most of them need nothing of the shutdown log but a count, and 100 000
/// tasks ending at once at the cancellation signal (or 200 000 woken by the abort) queued on
/// that lock, behind each other and behind the driver, which holds it to walk and to write
/// the report.
///
/// Such an end is counted under its shard's lock, where the phase is stable: each phase
/// change from the drain on (`begin_cancel`, `abort_remaining`) is made with every shard
/// locked, and the walk of that phase keeps them locked until it is over. So a count made in
/// a phase is made before the next phase begins, and the report, written after the abort
/// walk, sees every count of the drain and of the cancel phase. The counts live in each
/// shard, beside its entries ([`ShardEnds`]), and are summed when read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ShardEnds {
    /// Tasks that ended during the drain, beside `ShutdownLog::completed`.
    completed: usize,
    /// Tasks that ended during the cancel phase, beside `ShutdownLog::cancelled`.
    cancelled: usize,
    /// Places of the abort walk's count given back since the walk by tasks it listed: part
    /// of the progress that the wait for unseen tasks watches.
    since_walk: usize,
}

impl ShardEnds {
    /// Counts the end, in `phase`, of a task that neither panicked nor timed out, and that a
    /// walk `listed` or not (in the cancel phase, a listed task is aborted, not cancelled).
    #[inline]
    pub(crate) fn count(&mut self, phase: Phase, listed: bool) {
        match phase {
            Phase::Draining => self.completed += 1,
            Phase::Cancelling if listed => {}
            Phase::Cancelling => self.cancelled += 1,
            Phase::Done => self.since_walk += 1,
            Phase::Running => {}
        }
    }
}

/// The places of the abort walk's count given back under the shutdown lock rather than a
/// shard's: ends the walk did not list, and admissions given back. With the shards'
/// `since_walk`, the progress that the wait for unseen tasks watches; refusals after the
/// walk are not among them.
#[derive(Debug)]
pub(crate) struct ShutdownEnds {
    since_walk: AtomicUsize,
}

impl ShutdownEnds {
    pub(crate) fn new() -> Self {
        Self {
            since_walk: AtomicUsize::new(0),
        }
    }

    /// Counts one place of the abort walk's count given back.
    #[inline]
    pub(crate) fn ended_since_walk(&self) {
        // Relaxed: progress, which the wait for unseen tasks only compares with its last
        // reading.
        self.since_walk.fetch_add(1, Ordering::Relaxed);
    }
}

impl Inner {
    /// The ends counted under the shards' locks, summed: one shard locked at a time, each
    /// holding whole counts.
    pub(crate) fn shard_ends(&self) -> ShardEnds {
        self.registry
            .lock_all()
            .fold(ShardEnds::default(), |sum, part| ShardEnds {
                completed: sum.completed + part.ends.completed,
                cancelled: sum.cancelled + part.ends.cancelled,
                since_walk: sum.since_walk + part.ends.since_walk,
            })
    }

    /// The tasks counted as completed and as cancelled outside the shutdown log.
    pub(crate) fn completed_and_cancelled(&self) -> (usize, usize) {
        let ends = self.shard_ends();
        (ends.completed, ends.cancelled)
    }

    /// Places of the abort walk's count given back since the walk, seen or not.
    fn since_walk(&self) -> usize {
        // Relaxed: see `ShutdownEnds::ended_since_walk`.
        self.ends.since_walk.load(Ordering::Relaxed) + self.shard_ends().since_walk
    }
}

/// The wakers of the async tasks a walk stopped: each task stops at the poll its wake brings
/// (see `Supervised::poll`), so they are woken when this is dropped, once the walk's locks
/// are released, or later: with 200 000 stuck tasks, the wakes (and the ends they bring on
/// the other worker) took a fifth of the time from the end of the budget to the report,
/// which needs none of them.
#[must_use = "the tasks are woken when this is dropped"]
pub(crate) struct Wakes(Vec<Waker>);

impl Drop for Wakes {
    fn drop(&mut self) {
        for waker in self.0.drain(..) {
            waker.wake();
        }
    }
}

/// How a walk of the shutdown lists a task it stops.
enum Stop {
    Aborted(TaskRecord),
    /// A blocking task already on its thread, which nothing can stop.
    Abandoned(TaskRecord),
}

/// Stops the task of `entry` as far as anything can: an async task is woken (its waker is
/// pushed on `wakers`) to see the abort flag, and a blocking task not started yet is aborted;
/// a blocking task on its thread and a tracked future are left to run, as abandoned.
/// Returns how to list it, or `None` if a walk stopped it already.
///
/// Inlined into the walks: called for each of 200 000 entries, a call's saving and restoring
/// of registers, and the record returned through memory, were a quarter of its cost.
#[inline(always)]
fn stop(entry: &mut Entry, now: Instant, wakers: &mut Vec<Waker>) -> Option<Stop> {
    if entry.is_stopped() {
        return None;
    }
    let age = if entry.waiting {
        // Waiting for a place under its name's limit: it never started.
        Age::NotStarted
    } else {
        Age::Known(now.saturating_duration_since(entry.started))
    };
    let record = TaskRecord {
        id: entry.id,
        name: entry.name.clone(),
        age,
        tracked: matches!(entry.kind, Kind::Tracked { .. }),
    };
    match &mut entry.kind {
        // Woken to see the abort flag; it stops at once unless it is stuck inside a poll,
        // where tokio's abort could not stop it either.
        kind @ Kind::Async(_) => {
            if let Kind::Async(waker) = std::mem::replace(kind, Kind::Stopped) {
                wakers.push(waker);
            }
            Some(Stop::Aborted(record))
        }
        Kind::Blocking {
            stage: Blocking::Running,
            ..
        } => Some(Stop::Abandoned(record)),
        // Its owner polls it: listed once, and left to run.
        Kind::Tracked { listed } => {
            *listed = true;
            Some(Stop::Abandoned(record))
        }
        Kind::Blocking {
            abort: handle,
            stage,
        } => {
            // Not started yet: abort it, and make sure that a thread picking it up right now
            // does not run it after all.
            *stage = Blocking::Aborted;
            if let Some(handle) = handle {
                handle.abort();
            }
            Some(Stop::Aborted(record))
        }
        Kind::Stopped => None,
    }
}

/// How long the wait for tasks the walk could not see goes on without any task ending: they
/// are queued to be polled, and stop at their first poll, unless the runtime is stuck.
const LATE_QUIET: Duration = Duration::from_millis(10);

/// How long past the instant the abort was due (the end of the budget, or the force) the wait
/// for tasks the walk could not see may go on, however busy the runtime: what shutdown may
/// take past its budget, but for the walk and the report.
const LATE_CAP: Duration = Duration::from_millis(80);

/// Runs the phases and publishes the report.
async fn drive(guard: PublishOnDrop) {
    let (inner, started) = (guard.inner.clone(), guard.started);
    let config = &inner.config;
    let drain_deadline = deadline(started, config.shutdown_timeout);
    let cancel_deadline = deadline(drain_deadline, config.cancel_grace);

    let idle = inner
        .wait_until_idle(until(drain_deadline, &inner.force))
        .await;
    let stopped = inner.begin_cancel();
    inner.cancel.cancel();
    // The tasks without a context that the cancel phase stopped end when woken. With a grace
    // to wait out, they are woken now, and end during it. Without one (a zero grace, a
    // force, a budget already spent, or no task with a context left), the abort and the
    // report follow at once, and need none of them: they are woken after the report is
    // published, so that 200 000 wakes, and the ends they bring on the other workers, do not
    // hold it up, nor compete with the wait for tasks the walk could not see.
    let after_report = if idle
        || inner.state.cooperative() == 0
        || inner.force.is_cancelled()
        || Instant::now() >= cancel_deadline
    {
        Some(stopped)
    } else {
        drop(stopped);
        // The grace is for the tasks that can see the signal; the others were just aborted.
        inner
            .wait_until_none(State::cooperative, until(cancel_deadline, &inner.force))
            .await;
        None
    };

    // When the budget (or a force) said to abort: the wait for late reports is capped from
    // there, not from whenever a busy runtime got round to the walk.
    let due = if inner.force.is_cancelled() {
        Instant::now()
    } else {
        Instant::now().min(cancel_deadline)
    };
    let aborted = inner.abort_remaining();
    inner.collect_late(due).await;
    let report = inner.close_report(started);
    // Logged before it is published, so that the line is out before a caller that exits on
    // the report can end the process.
    if report.is_clean() {
        tracing::info!("{report}");
    } else {
        tracing::warn!("{report}");
    }
    inner.publish(report.clone());
    drop(guard);
    // The tasks the walks stopped end now: counted already, as aborted.
    drop(after_report);
    drop(aborted);
    // The callbacks run after the report is published: however slow they are, they do not
    // lengthen the shutdown.
    let report_failures = |tasks: &[TaskRecord], aborted: bool| {
        for task in tasks {
            let kind = if aborted {
                FailureKind::Aborted { age: task.age }
            } else {
                FailureKind::Abandoned {
                    age: task.age,
                    tracked: task.tracked,
                }
            };
            inner.report_failure(&TaskFailure::new(task.id, task.name.clone(), kind));
        }
    };
    if inner.config.on_failure.is_some() {
        report_failures(report.aborted_tasks(), true);
        report_failures(report.abandoned_tasks(), false);
    } else {
        // Without a callback, a failure is only remembered among the recent ones, which keep
        // the last `RECENT_FAILURES` (the last by id, abandoned after aborted, as the callback
        // sees them): making the others as well (200 000 with as many stuck tasks), or
        // sorting them to find the last, would hold a worker for tens of milliseconds as the
        // process exits, for nothing.
        let abandoned = report.abandoned.last_by_id(RECENT_FAILURES);
        let aborted = report.aborted.last_by_id(RECENT_FAILURES - abandoned.len());
        report_failures(&aborted, true);
        report_failures(&abandoned, false);
    }
}

/// Publishes a report from wherever the shutdown is, if the driver did not: when the driver is
/// dropped before it publishes, whether it never ran (its runtime shut down first), was
/// waiting out a phase, or was collecting late reports.
struct PublishOnDrop {
    inner: Arc<Inner>,
    started: Instant,
}

impl Drop for PublishOnDrop {
    fn drop(&mut self) {
        if self.inner.report.get().is_some() {
            return;
        }
        // The walk and the report do nothing if the driver got that far: what was found and
        // collected stands.
        self.inner.cancel.cancel();
        // Woken once the report is published, as by the driver.
        let _aborted = self.inner.abort_remaining();
        let report = self.inner.close_report(self.started);
        tracing::warn!("the shutdown was cut short: {report}");
        self.inner.publish(report);
    }
}

/// Resolves at `deadline`, or when `force` fires.
async fn until(deadline: Instant, force: &CancellationToken) {
    // A deadline already past (a zero budget or grace, or a phase that began late) resolves at
    // once, rather than after a round trip through the timer driver, which fires it only at
    // its next tick and then queues the shutdown's driver behind whatever else is runnable.
    if Instant::now() >= deadline {
        return;
    }
    let mut sleep = pin!(sleep_until(deadline));
    let mut forced = pin!(force.cancelled());
    poll_fn(|cx| {
        if sleep.as_mut().poll(cx).is_ready() || forced.as_mut().poll(cx).is_ready() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}

/// `start + budget`, or a deadline too far to matter when that does not fit in an `Instant`.
fn deadline(start: Instant, budget: Duration) -> Instant {
    // About 30 years, as tokio's own far-future deadline.
    const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);
    start
        .checked_add(budget)
        .or_else(|| start.checked_add(FAR))
        .unwrap_or(start)
}

/// A supervisor's state for the tests and the loom models: no budget, no span, `limits`.
#[cfg(test)]
fn test_inner(limits: crate::limit::Limits) -> Arc<Inner> {
    Arc::new(Inner::new(crate::supervisor::Config {
        shutdown_timeout: Duration::ZERO,
        cancel_grace: Duration::ZERO,
        max_tasks: None,
        on_failure: None,
        runtime: None,
        task_span_level: tracing::level_filters::LevelFilter::OFF,
        limits,
    }))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::future::{Future, pending};
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::task::{Context, Wake};

    use super::*;
    use crate::spawn::Spec;
    use crate::state::Origin;

    /// A waker that records that it was woken.
    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn inner() -> Arc<Inner> {
        super::test_inner(crate::limit::Limits::default())
    }

    /// Admits a task that never ends, with a context or without, and polls it once, so that
    /// it registers; returns the task and its waker's flag.
    fn registered(inner: &Arc<Inner>, cooperative: bool) -> (impl Future + Unpin, Arc<Flag>) {
        let spec = Spec {
            origin: Origin::Outside,
            cooperative,
            name: None,
            timeout: None,
        };
        let (_, mut task) = inner
            .supervise(spec, |_, _| pending::<()>())
            .expect("admitted");
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = std::task::Waker::from(flag.clone());
        assert!(
            Pin::new(&mut task)
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        (task, flag)
    }

    #[test]
    fn the_tasks_a_walk_stops_are_listed_at_once_and_woken_only_when_its_wakes_drop() {
        let inner = inner();
        let (_plain, plain) = registered(&inner, false);
        let (_cooperative, cooperative) = registered(&inner, true);
        inner
            .close_admission(Instant::now())
            .expect("first shutdown");
        let stopped = inner.begin_cancel();
        assert_eq!(inner.lock_shutdown().aborted_early.len(), 1, "listed");
        assert!(
            !plain.0.load(Ordering::SeqCst),
            "woken by the walk, not after the report"
        );
        drop(stopped);
        assert!(plain.0.load(Ordering::SeqCst));
        let aborted = inner.abort_remaining();
        assert!(!cooperative.0.load(Ordering::SeqCst));
        let report = inner.close_report(Instant::now());
        assert_eq!(report.aborted(), 2, "{report}");
        drop(aborted);
        assert!(cooperative.0.load(Ordering::SeqCst));
    }
}

/// Models of the accounting protocol: admission, task ends and registration racing the phase
/// changes and the abort walk, on the real code, with the real atomics and locks swapped for
/// loom's. `.ci/run` runs them:
/// `RUSTFLAGS="--cfg loom" cargo test -p background-tasks --lib --release loom_models`.
///
/// Each model checks the invariant the report rests on: once every task has ended, the report
/// counts exactly the tasks that were running when admission closed (nobody else may spawn in
/// these models), and every place the walk could not see was accounted for exactly once.
#[cfg(all(loom, test))]
mod loom_models {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake};

    use loom::sync::atomic::AtomicBool;

    use super::*;
    use crate::spawn::{Spec, Supervised};
    use crate::state::Origin;

    fn inner() -> Arc<Inner> {
        with_limits(crate::limit::Limits::default())
    }

    fn with_limits(limits: crate::limit::Limits) -> Arc<Inner> {
        super::test_inner(limits)
    }

    /// A waker that records that it was woken.
    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Pending once, then ready: a task that suspends, and so registers, once.
    #[derive(Default)]
    struct YieldOnce(bool);

    impl Future for YieldOnce {
        type Output = ();

        fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            if std::mem::replace(&mut self.0, true) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    /// Polls `task` once, as tokio would, with a waker of its own; returns the waker's flag
    /// if the task is left waiting.
    fn poll_once<F: Future>(task: Pin<&mut F>) -> Option<Arc<Flag>> {
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = std::task::Waker::from(flag.clone());
        task.poll(&mut Context::from_waker(&waker))
            .is_pending()
            .then_some(flag)
    }

    fn is_woken(flag: &Flag) -> bool {
        flag.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Shuts down as the driver does, without its waits: admission closes, the cancel phase
    /// begins, the walk aborts what is left. Returns the count when admission closed.
    fn shut_down(inner: &Inner) -> usize {
        let at_close = inner
            .close_admission(Instant::now())
            .expect("first shutdown");
        drop(inner.begin_cancel());
        drop(inner.abort_remaining());
        at_close
    }

    /// Writes the report once every task has ended, and checks it against the count at the
    /// close and the spawns admitted as they raced it.
    fn check(inner: &Inner, at_close: usize) {
        {
            let log = inner.lock_shutdown();
            let abort = log.abort.as_ref().expect("walked");
            assert_eq!(
                abort.accounted, abort.unseen,
                "every place the walk could not see is accounted for once"
            );
        }
        let report = inner.close_report(Instant::now());
        let total = report.completed() + report.cancelled() + report.aborted() + report.abandoned();
        let racing = inner
            .state
            .admitted_racing
            .load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(total, at_close + racing as usize, "{report}");
        assert_eq!(inner.state.running(), 0);
    }

    /// A spawn from outside, without a name or a timeout.
    fn spec(cooperative: bool) -> Spec {
        Spec {
            origin: Origin::Outside,
            cooperative,
            name: None,
            timeout: None,
        }
    }

    /// Admits a task that suspends once, as a spawn from outside does.
    fn admit(inner: &Arc<Inner>) -> Option<Supervised<YieldOnce>> {
        admit_as(inner, false)
    }

    /// Admits a task that suspends once, with a context (`cooperative`) or without.
    fn admit_as(inner: &Arc<Inner>, cooperative: bool) -> Option<Supervised<YieldOnce>> {
        let admitted = inner.supervise(spec(cooperative), |_, _| YieldOnce::default());
        admitted.ok().map(|(_, task)| task)
    }

    /// A spawn racing the shutdown, its first poll racing the abort flag, while a registered
    /// task ends during the walk.
    #[test]
    fn spawns_first_polls_and_ends_racing_the_walk_are_counted_once() {
        loom::model(|| {
            let inner = inner();
            let mut waiting = admit(&inner).unwrap();
            // Registered before the shutdown: the walk finds it, unless it ends first.
            assert!(poll_once(Pin::new(&mut waiting)).is_some());
            let spawner = loom::thread::spawn({
                let inner = inner.clone();
                move || {
                    let mut task = admit(&inner)?;
                    let waiting = poll_once(Pin::new(&mut task));
                    Some((task, waiting))
                }
            });
            let ender = loom::thread::spawn(move || drop(waiting));
            let at_close = shut_down(&inner);
            ender.join().unwrap();
            if let Some((mut task, Some(flag))) = spawner.join().unwrap() {
                // Left waiting, so registered before the flag was set: the walk found it and
                // woke it, and its next poll stops it without polling its future.
                assert!(is_woken(&flag), "a registered task escaped the walk");
                assert!(poll_once(Pin::new(&mut task)).is_none());
            }
            check(&inner, at_close);
        });
    }

    /// Two registered tasks with a context (so only the abort walk stops them), on the two
    /// shards, ending one after the other as the shutdown runs, each counted under its shard's
    /// lock alone (see `ShardEnds`): in the drain, in the cancel phase, or after the abort
    /// walk. Each is counted once, in the report written as soon as the walk is over:
    /// completed or cancelled if it ended before the walk, else aborted, and then counted as
    /// progress once. It fails if the walk unlocks a shard before it is over, so that an end
    /// slips in between the phase change and the walk's visit (a place the walk counted and
    /// could not see, which nothing accounts for), or if an end counts itself after it
    /// unlocks its shard (a report short of that end).
    #[test]
    fn ends_counted_under_a_shard_lock_alone_are_counted_once() {
        loom::model(|| {
            let inner = inner();
            let mut tasks = [
                admit_as(&inner, true).unwrap(),
                admit_as(&inner, true).unwrap(),
            ];
            // Registered before the shutdown, on the two shards of the registry.
            for task in &mut tasks {
                assert!(poll_once(Pin::new(task)).is_some());
            }
            let ender = loom::thread::spawn(move || drop(tasks));
            let at_close = shut_down(&inner);
            // Written as soon as the walk is over, as the driver may: an end counted before
            // the walk is in it, however far that end got since.
            let report = inner.close_report(Instant::now());
            ender.join().unwrap();
            check(&inner, at_close);
            assert_eq!(
                inner.since_walk(),
                report.aborted(),
                "every task the walk listed ended once, as progress: {report}"
            );
        });
    }

    /// Panics at its second poll: a task that registers at its first and then fails.
    #[derive(Default)]
    struct PanicsOnSecondPoll(bool);

    /// The message of [`PanicsOnSecondPoll`]'s panic, which the model's hook keeps quiet.
    const MODEL_PANIC: &str = "a loom model's task panics";

    impl Future for PanicsOnSecondPoll {
        type Output = ();

        fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            if std::mem::replace(&mut self.0, true) {
                panic!("{MODEL_PANIC}");
            }
            Poll::Pending
        }
    }

    /// A registered task with a context that panics as the shutdown moves from the cancel
    /// phase to the abort (or is stopped by the abort first): a panic is counted under the
    /// shutdown lock, not under its shard's alone, and the task is counted once, cancelled or
    /// aborted, with every place the walk could not see accounted for.
    #[test]
    fn a_registered_task_that_panics_as_the_abort_walks_is_counted_once() {
        let print = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info.payload().downcast_ref::<String>().map(String::as_str);
            if message != Some(MODEL_PANIC) {
                print(info);
            }
        }));
        loom::model(|| {
            let inner = inner();
            let admitted = inner.supervise(spec(true), |_, _| PanicsOnSecondPoll::default());
            let mut task = admitted.ok().map(|(_, task)| task).unwrap();
            assert!(poll_once(Pin::new(&mut task)).is_some());
            let at_close = inner
                .close_admission(Instant::now())
                .expect("first shutdown");
            drop(inner.begin_cancel());
            // Panics, unless the abort's flag stops it first.
            let ender = loom::thread::spawn(move || {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    poll_once(Pin::new(&mut task))
                }));
                drop(task);
            });
            drop(inner.abort_remaining());
            ender.join().unwrap();
            check(&inner, at_close);
        });
    }

    /// A tracked future made as the shutdown runs: refused, or admitted and then registered
    /// before, during or after the abort's walk. Shutdown cannot stop it, so it is listed as
    /// abandoned, by the walk or by its own registration, exactly once.
    #[test]
    fn a_tracked_future_made_as_the_walk_runs_is_listed_abandoned_once() {
        loom::model(|| {
            let inner = inner();
            let tracker = loom::thread::spawn({
                let inner = inner.clone();
                move || inner.track(spec(false), |_, _| YieldOnce::default()).ok()
            });
            let at_close = shut_down(&inner);
            let tracked = tracker.join().unwrap();
            {
                let log = inner.lock_shutdown();
                let abandoned = log.abort.as_ref().expect("walked").abandoned.len();
                assert_eq!(abandoned, usize::from(tracked.is_some()));
            }
            // Its owner ends it after the abort: counted, and listed no second time.
            drop(tracked);
            check(&inner, at_close);
        });
    }

    /// Refused spawns during the walk, beside a task the walk cannot see (admitted, not polled
    /// yet) whose first poll races the abort flag.
    #[test]
    fn refusals_during_the_walk_do_not_account_for_unseen_tasks() {
        loom::model(|| {
            let inner = inner();
            let queued = admit(&inner).unwrap();
            let refuser = loom::thread::spawn({
                let inner = inner.clone();
                move || {
                    for _ in 0..2 {
                        drop(admit(&inner));
                    }
                }
            });
            let poller = loom::thread::spawn(move || {
                let mut queued = queued;
                drop(poll_once(Pin::new(&mut queued)));
            });
            let at_close = shut_down(&inner);
            refuser.join().unwrap();
            poller.join().unwrap();
            check(&inner, at_close);
        });
    }

    /// The cancel phase's walk racing the first poll of a task without a context, and the end
    /// of a task with one: the first is stopped, by the walk or by the flag, and listed as
    /// aborted exactly once, before the grace; the second is counted in the phase it ends in.
    #[test]
    fn the_cancel_walk_stops_tasks_without_a_context_once_and_spares_the_others() {
        loom::model(|| {
            let inner = inner();
            let plain = admit_as(&inner, false).unwrap();
            let plain_id = crate::handle::TaskId(1);
            let mut cooperative = admit_as(&inner, true).unwrap();
            // Registered before the shutdown: the cancel phase's walk must leave it alone.
            assert!(poll_once(Pin::new(&mut cooperative)).is_some());
            let poller = loom::thread::spawn(move || {
                let mut plain = plain;
                let waiting = poll_once(Pin::new(&mut plain));
                (plain, waiting)
            });
            let ender = loom::thread::spawn(move || drop(cooperative));
            let at_close = inner
                .close_admission(Instant::now())
                .expect("first shutdown");
            drop(inner.begin_cancel());
            let (mut plain, waiting) = poller.join().unwrap();
            if let Some(flag) = waiting {
                // Registered before the flag was set: the walk found it and woke it, and its
                // next poll stops it.
                assert!(is_woken(&flag), "a task without a context escaped the walk");
                assert!(poll_once(Pin::new(&mut plain)).is_none());
            }
            // Ends in the cancel phase, stopped: aborted, not cancelled.
            drop(plain);
            ender.join().unwrap();
            {
                let log = inner.lock_shutdown();
                let early: Vec<_> = log.aborted_early.iter().map(|task| task.id).collect();
                assert_eq!(
                    early,
                    [plain_id],
                    "listed as aborted once, before the grace"
                );
            }
            drop(inner.abort_remaining());
            check(&inner, at_close);
            let report = inner.close_report(Instant::now());
            assert_eq!(report.aborted(), 1, "{report}");
        });
    }

    /// A task with a context waiting for a place under its name's limit (a limit of 0: it
    /// never gets one), whose first poll, and so its registration, races the cancel phase's
    /// walk: it never starts, and is listed as aborted, not started, exactly once, by the walk
    /// or by its own end, with no grace to wait for.
    #[test]
    fn a_waiting_task_registering_as_the_cancel_walk_runs_is_stopped_and_listed_once() {
        loom::model(|| {
            let limits = crate::limit::Limits::new([(
                std::borrow::Cow::Borrowed("job"),
                crate::limit::Limit::new(0),
            )]);
            let inner = with_limits(limits);
            let spec = Spec {
                name: Some(std::borrow::Cow::Borrowed("job")),
                ..spec(true)
            };
            let (id, waiting) = inner
                .supervise(spec, |_, _| YieldOnce::default())
                .ok()
                .expect("admitted, to wait");
            let poller = loom::thread::spawn(move || {
                let mut waiting = waiting;
                let flag = poll_once(Pin::new(&mut waiting));
                (waiting, flag)
            });
            let at_close = inner
                .close_admission(Instant::now())
                .expect("first shutdown");
            drop(inner.begin_cancel());
            let (mut waiting, flag) = poller.join().unwrap();
            if let Some(flag) = flag {
                // Registered, waiting: the walk found it and woke it, and its next poll stops
                // it before its future is polled.
                assert!(is_woken(&flag), "a waiting task escaped the cancel walk");
                assert!(poll_once(Pin::new(&mut waiting)).is_none());
            }
            drop(waiting);
            assert_eq!(inner.state.cooperative(), 0, "no grace left to wait for");
            {
                let log = inner.lock_shutdown();
                let early: Vec<_> = log
                    .aborted_early
                    .iter()
                    .map(|task| (task.id, task.is_started()))
                    .collect();
                assert_eq!(early, [(id, false)], "listed once, not started");
            }
            drop(inner.abort_remaining());
            check(&inner, at_close);
        });
    }
}
