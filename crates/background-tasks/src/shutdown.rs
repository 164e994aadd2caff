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
use crate::report::{ShutdownReport, TaskRecord};
use crate::state::Phase;
use crate::supervisor::Inner;

impl Inner {
    /// Closes admission and starts the shutdown driver, the first time only.
    #[track_caller]
    pub(crate) fn begin_shutdown(self: &Arc<Self>) {
        // The phases run on tokio's timers: without them (or without a runtime) this panics
        // here, in the caller, before anything changed, rather than in the driver, which
        // would leave the supervisor closed and the report never written.
        drop(sleep_until(Instant::now()));
        let started = Instant::now();
        {
            let mut log = self.lock_shutdown();
            if log.started.is_some() {
                return;
            }
            log.started = Some(started);
            self.state.advance(Phase::Draining);
        }
        self.drain.cancel();
        tracing::info!(
            running = self.state.running(),
            "background task shutdown started"
        );
        // The phases run in a task of their own, so that dropping a `shutdown` future cannot
        // leave the supervisor half shut down.
        tokio::spawn(drive(self.clone(), started));
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

    /// Aborts what still runs, and names it: the first part of the report.
    ///
    /// Returns the aborted and abandoned tasks the walk found, and how many running tasks it
    /// could not see: async tasks that had not suspended yet, which report themselves.
    fn abort_remaining(&self) -> Walk {
        let mut wakers = Vec::new();
        let walk = self.walk(&mut wakers);
        // Woken once the locks are released: a woken task ends at once, and its end takes the
        // shutdown lock, which the walk holds.
        for waker in wakers {
            waker.wake();
        }
        walk
    }

    fn walk(&self, wakers: &mut Vec<Waker>) -> Walk {
        let mut log = self.lock_shutdown();
        self.state.advance(Phase::Done);
        // Before any shard is locked: see `TaskGuard::register`.
        self.aborting.set();
        let running = self.state.running();
        let now = Instant::now();
        let mut walk = Walk::default();
        let mut seen = 0;
        // Under the shutdown lock, which every task ending now must take, and each shard's lock
        // in turn, which every registration must take: the count is stable, and every
        // registered task is found.
        for mut slab in self.registry.lock_all() {
            for entry in slab.iter_mut() {
                seen += 1;
                let record = TaskRecord {
                    id: entry.id,
                    name: entry.name.clone(),
                    age: Some(now.saturating_duration_since(entry.started)),
                };
                match &mut entry.kind {
                    // Woken to see the abort flag; it stops at once unless it is stuck inside
                    // a poll, where tokio's abort could not stop it either.
                    Kind::Async(waker) => {
                        wakers.push(std::mem::replace(waker, Waker::noop().clone()));
                        walk.aborted.push(record);
                    }
                    Kind::Blocking {
                        stage: Blocking::Running,
                        ..
                    } => walk.abandoned.push(record),
                    Kind::Blocking { abort, stage } => {
                        // Not started yet: abort it, and make sure that a thread picking it up
                        // right now does not run it after all.
                        *stage = Blocking::Aborted;
                        if let Some(abort) = abort {
                            abort.abort();
                        }
                        walk.aborted.push(record);
                    }
                }
            }
        }
        walk.unseen = running.saturating_sub(seen);
        walk.completed = log.completed;
        walk.cancelled = log.cancelled;
        log.late = Some(Vec::new());
        walk
    }

    /// Waits a little for the tasks the walk could not see to report themselves, then closes
    /// the report.
    async fn collect_late(&self, walk: Walk, started: Instant) -> ShutdownReport {
        let deadline = deadline(Instant::now(), LATE_WAIT);
        loop {
            let notified = self.late.notified();
            let mut notified = pin!(notified);
            // Registered before the list is read, so that a report in between still wakes it.
            notified.as_mut().enable();
            let accounted = {
                let log = self.lock_shutdown();
                log.late.as_ref().map_or(0, Vec::len) + log.released
            };
            if accounted >= walk.unseen
                || tokio::time::timeout_at(deadline, notified).await.is_err()
            {
                break;
            }
        }
        self.close_report(walk, started)
    }

    /// Writes the report from the walk and the late reports so far.
    fn close_report(&self, mut walk: Walk, started: Instant) -> ShutdownReport {
        let (late, released) = {
            let mut log = self.lock_shutdown();
            (log.late.take().unwrap_or_default(), log.released)
        };
        let stuck = walk.unseen.saturating_sub(late.len() + released);
        walk.aborted.extend(late);
        walk.aborted.sort_unstable_by_key(|task| task.id);
        walk.abandoned.sort_unstable_by_key(|task| task.id);
        ShutdownReport {
            completed: walk.completed,
            cancelled: walk.cancelled,
            aborted: walk.aborted,
            abandoned: walk.abandoned,
            stuck,
            elapsed: Instant::now().saturating_duration_since(started),
        }
    }

    /// Makes the report visible to every `shutdown` call, the first time only.
    fn publish(&self, report: ShutdownReport) {
        // `set` fails only if a report was already written: the first one stands.
        let _ = self.report.set(report);
        self.report_ready.notify_waiters();
    }
}

/// How long shutdown waits, after the abort, for running tasks that had never suspended to
/// report themselves: they are queued to be polled, and stop at their first poll.
const LATE_WAIT: Duration = Duration::from_millis(20);

/// What the abort walk found.
#[derive(Debug, Default)]
struct Walk {
    completed: usize,
    cancelled: usize,
    aborted: Vec<TaskRecord>,
    abandoned: Vec<TaskRecord>,
    unseen: usize,
}

/// Runs the phases and publishes the report.
async fn drive(inner: Arc<Inner>, started: Instant) {
    // Should the driver be dropped before it publishes (its runtime shut down), the report is
    // written all the same, so that no `shutdown` call waits forever.
    let guard = PublishOnDrop {
        inner: inner.clone(),
        started,
    };
    let config = &inner.config;
    let drain_deadline = deadline(started, config.shutdown_timeout);
    let cancel_deadline = deadline(drain_deadline, config.cancel_grace);

    let idle = inner
        .wait_until_idle(until(drain_deadline, &inner.force))
        .await;
    {
        let _log = inner.lock_shutdown();
        inner.state.advance(Phase::Cancelling);
    }
    inner.cancel.cancel();
    if !idle {
        inner
            .wait_until_idle(until(cancel_deadline, &inner.force))
            .await;
    }

    let walk = inner.abort_remaining();
    let report = inner.collect_late(walk, started).await;
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
                FailureKind::Abandoned { age: task.age() }
            };
            inner.report_failure(&TaskFailure::new(task.id, task.name.clone(), kind));
        }
    }
}

/// Publishes a report from wherever the shutdown is, if the driver did not.
struct PublishOnDrop {
    inner: Arc<Inner>,
    started: Instant,
}

impl Drop for PublishOnDrop {
    fn drop(&mut self) {
        if self.inner.report.get().is_some() {
            return;
        }
        let walk = self.inner.abort_remaining();
        let report = self.inner.close_report(walk, self.started);
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
