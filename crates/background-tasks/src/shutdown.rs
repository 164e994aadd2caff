//! The phased shutdown: drain, cancel, abort.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::failure::{Kind, TaskFailure};
use crate::registry::Blocking;
use crate::report::{ShutdownReport, TaskRecord};
use crate::state::Phase;
use crate::supervisor::Inner;

impl Inner {
    /// Closes admission and starts the shutdown driver, the first time only.
    pub(crate) fn begin_shutdown(self: &Arc<Self>) {
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

    /// Ends the shutdown: aborts what still runs, and writes the report.
    fn finish_shutdown(&self, started: Instant) -> ShutdownReport {
        let log = self.lock_shutdown();
        self.state.advance(Phase::Done);
        let now = Instant::now();
        let mut aborted = Vec::new();
        let mut abandoned = Vec::new();
        // Under the shutdown lock and each shard's lock in turn: every task still registered
        // is counted here, every task that ended was counted by `Inner::end`, and no task can
        // be registered any more (spawns check for `Done` under the shard lock).
        for mut slab in self.registry.lock_all() {
            for entry in slab.iter_mut() {
                let record = TaskRecord {
                    id: entry.id,
                    name: entry.name.clone(),
                    age: now.saturating_duration_since(entry.started),
                };
                match &mut entry.blocking {
                    Some(Blocking::Running) => abandoned.push(record),
                    Some(blocking) => {
                        // Not started yet: abort it, and make sure that a thread picking it up
                        // right now does not run it after all.
                        *blocking = Blocking::Aborted;
                        entry.abort.abort();
                        aborted.push(record);
                    }
                    None => {
                        entry.abort.abort();
                        aborted.push(record);
                    }
                }
            }
        }
        aborted.sort_unstable_by_key(|task| task.id);
        abandoned.sort_unstable_by_key(|task| task.id);
        ShutdownReport {
            completed: log.completed,
            cancelled: log.cancelled,
            aborted,
            abandoned,
            elapsed: now.saturating_duration_since(started),
        }
    }
}

/// Runs the phases and publishes the report.
async fn drive(inner: Arc<Inner>, started: Instant) {
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

    let report = inner.finish_shutdown(started);
    if report.is_clean() {
        tracing::info!("{report}");
    } else {
        tracing::warn!("{report}");
    }
    for (tasks, aborted) in [(&report.aborted, true), (&report.abandoned, false)] {
        for task in tasks {
            let kind = if aborted {
                Kind::Aborted { age: task.age }
            } else {
                Kind::Abandoned { age: task.age }
            };
            inner.report_failure(&TaskFailure::new(task.id, task.name.clone(), kind));
        }
    }
    // `set` fails only if a report was already written, and the driver runs once.
    let _ = inner.report.set(report);
    inner.report_ready.notify_waiters();
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
