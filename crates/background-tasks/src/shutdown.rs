//! The phased shutdown: drain, cancel, abort.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::failure::{Kind as FailureKind, TaskFailure};
use crate::registry::{Blocking, Kind};
use crate::report::{Age, ShutdownReport, TaskRecord};
use crate::state::Phase;
use crate::supervisor::{AbortLog, Inner};

impl Inner {
    /// Closes admission and starts the shutdown driver, the first time only.
    #[track_caller]
    pub(crate) fn begin_shutdown(self: &Arc<Self>) {
        // The phases run on tokio's timers: without them (or without a runtime) this panics
        // here, in the caller, before anything changed, rather than in the driver, which
        // would leave the supervisor closed and the report never written.
        drop(sleep_until(Instant::now()));
        let started = Instant::now();
        if !self.close_admission(started) {
            return;
        }
        self.drain.cancel();
        tracing::info!(
            running = self.state.running(),
            "background task shutdown started"
        );
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

    /// Moves from `Running` to `Draining`; returns `false` if shutdown had begun already.
    pub(crate) fn close_admission(&self, started: Instant) -> bool {
        let mut log = self.lock_shutdown();
        if log.started.is_some() {
            return false;
        }
        log.started = Some(started);
        self.state.advance(Phase::Draining);
        true
    }

    /// Moves to `Cancelling`, under the shutdown lock, as every phase change.
    pub(crate) fn begin_cancel(&self) {
        let _log = self.lock_shutdown();
        self.state.advance(Phase::Cancelling);
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
    /// report, kept in the shutdown log.
    pub(crate) fn abort_remaining(&self) {
        let mut wakers = Vec::new();
        self.walk(&mut wakers);
        // Woken once the locks are released: a woken task ends at once, and its end takes the
        // shutdown lock, which the walk holds.
        for waker in wakers {
            waker.wake();
        }
    }

    fn walk(&self, wakers: &mut Vec<Waker>) {
        let mut log = self.lock_shutdown();
        if log.abort.is_some() {
            return;
        }
        // The count at the instant of the move: ends and give-backs wait for the shutdown
        // lock, which this holds, and admissions from now on are refused without being part
        // of it (see `Phase::counted_by_walk`).
        let (_, running) = self.state.advance(Phase::Done);
        // Before any shard is locked: see `TaskGuard::register`.
        self.aborting.set();
        let now = Instant::now();
        let mut abort = AbortLog::default();
        let mut seen = 0;
        // Under the shutdown lock, which every task ending now must take, and each shard's lock
        // in turn, which every registration must take: every registered task is found, and
        // each is one of the `running` places.
        for mut slab in self.registry.lock_all() {
            for entry in slab.iter_mut() {
                seen += 1;
                let record = TaskRecord {
                    id: entry.id,
                    name: entry.name.clone(),
                    age: Age::Known(now.saturating_duration_since(entry.started)),
                };
                match &mut entry.kind {
                    // Woken to see the abort flag; it stops at once unless it is stuck inside
                    // a poll, where tokio's abort could not stop it either.
                    Kind::Async(waker) => {
                        wakers.push(std::mem::replace(waker, Waker::noop().clone()));
                        abort.aborted.push(record);
                    }
                    Kind::Blocking {
                        stage: Blocking::Running,
                        ..
                    } => abort.abandoned.push(record),
                    Kind::Blocking {
                        abort: handle,
                        stage,
                    } => {
                        // Not started yet: abort it, and make sure that a thread picking it up
                        // right now does not run it after all.
                        *stage = Blocking::Aborted;
                        if let Some(handle) = handle {
                            handle.abort();
                        }
                        abort.aborted.push(record);
                    }
                }
            }
        }
        debug_assert!(
            seen <= running,
            "{seen} registered tasks, {running} counted"
        );
        abort.unseen = running.saturating_sub(seen);
        log.abort = Some(abort);
    }

    /// Waits for the places the walk could not see to be accounted for, as long as tasks keep
    /// ending: the wait ends when they all are, when no task has ended for [`LATE_QUIET`]
    /// (what is left blocks its thread in a first poll), or [`LATE_CAP`] after the walk.
    async fn collect_late(&self) {
        let cap = deadline(Instant::now(), LATE_CAP);
        let mut progress = None;
        loop {
            let notified = self.late.notified();
            let mut notified = pin!(notified);
            // Registered before the log is read, so that a report in between still wakes it.
            notified.as_mut().enable();
            let (done, ended) = {
                let log = self.lock_shutdown();
                log.abort.as_ref().map_or((true, 0), |abort| {
                    (abort.accounted >= abort.unseen, abort.ended)
                })
            };
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
    fn close_report(&self, started: Instant) -> ShutdownReport {
        let mut log = self.lock_shutdown();
        let (completed, cancelled) = (log.completed, log.cancelled);
        let abort = log.abort.get_or_insert_with(AbortLog::default);
        if let Some(report) = &abort.report {
            return report.clone();
        }
        let mut aborted = std::mem::take(&mut abort.aborted);
        let mut abandoned = std::mem::take(&mut abort.abandoned);
        aborted.sort_unstable_by_key(|task| task.id);
        abandoned.sort_unstable_by_key(|task| task.id);
        let report = ShutdownReport {
            completed,
            cancelled,
            aborted,
            abandoned,
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

/// How long the wait for tasks the walk could not see goes on without any task ending: they
/// are queued to be polled, and stop at their first poll, unless the runtime is stuck.
const LATE_QUIET: Duration = Duration::from_millis(10);

/// The longest the wait for tasks the walk could not see goes on, however busy the runtime:
/// what shutdown may take past its budget.
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
    inner.begin_cancel();
    inner.cancel.cancel();
    if !idle {
        inner
            .wait_until_idle(until(cancel_deadline, &inner.force))
            .await;
    }

    inner.abort_remaining();
    inner.collect_late().await;
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
    // The callbacks run after the report is published: however slow they are, they do not
    // lengthen the shutdown.
    for (tasks, aborted) in [(&report.aborted, true), (&report.abandoned, false)] {
        for task in tasks {
            let kind = if aborted {
                FailureKind::Aborted { age: task.age }
            } else {
                FailureKind::Abandoned { age: task.age }
            };
            inner.report_failure(&TaskFailure::new(task.id, task.name.clone(), kind));
        }
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
        self.inner.abort_remaining();
        let report = self.inner.close_report(self.started);
        tracing::warn!("the shutdown was cut short: {report}");
        self.inner.publish(report);
    }
}

/// Resolves at `deadline`, or when `force` fires.
async fn until(deadline: Instant, force: &CancellationToken) {
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
