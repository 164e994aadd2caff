//! Per-task timeouts, set with [`TaskBuilder::timeout`](crate::TaskBuilder::timeout): the
//! deadline a task carries in its guard's cold box, so that only tasks with a timeout pay for
//! it.
//!
//! At the deadline a task with a context sees its cancellation signal fire (its own token, a
//! child of the supervisor's), and is aborted when the supervisor's `cancel_grace` has passed
//! too; a task without one cannot see the signal, and is aborted at the deadline, as shutdown
//! treats such tasks. The task's own timer wakes it, so a task idle on something that never
//! comes is stopped all the same.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::CancellationToken;

/// The deadline of a task with a timeout.
#[derive(Debug)]
pub(crate) struct Deadline {
    timeout: Duration,
    at: Instant,
    /// The task's own cancellation signal, for a task with a context: a child of the
    /// supervisor's, which its [`TaskContext`](crate::TaskContext) waits on.
    token: Option<CancellationToken>,
    /// Made at the spawn, in the caller's runtime context, so that a runtime without timers
    /// panics there, before anything is counted, rather than inside the task. Registered with
    /// the timer at the task's first poll.
    sleep: Pin<Box<Sleep>>,
    stage: Stage,
}

/// How far past its deadline a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Before the deadline.
    Armed,
    /// Past the deadline: the signal fired (for a task with a context), and the task runs
    /// on, in its grace, or because nothing can abort it (a running blocking task, a tracked
    /// future).
    Signalled,
    /// Stopped by its timeout: it will not be polled again.
    Aborted,
}

/// What a task's context knows of its deadline.
#[derive(Debug, Clone)]
pub(crate) struct ContextDeadline {
    pub(crate) at: Instant,
    pub(crate) token: CancellationToken,
}

impl Deadline {
    /// The deadline `timeout` from now, with a signal of its own when the task has a context
    /// (`parent` being the supervisor's cancellation token).
    ///
    /// # Panics
    ///
    /// Outside of a Tokio runtime with time enabled.
    #[track_caller]
    pub(crate) fn new(timeout: Duration, parent: Option<&CancellationToken>) -> Box<Self> {
        let now = Instant::now();
        let at = now.checked_add(timeout).unwrap_or_else(|| far_future(now));
        Box::new(Self {
            timeout,
            at,
            token: parent.map(CancellationToken::child_token),
            sleep: Box::pin(sleep_until(at)),
            stage: Stage::Armed,
        })
    }

    /// What the task's context is given: the instant, and the signal.
    pub(crate) fn for_context(&self) -> Option<ContextDeadline> {
        self.token.as_ref().map(|token| ContextDeadline {
            at: self.at,
            token: token.clone(),
        })
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn stage(&self) -> Stage {
        self.stage
    }

    /// Polls the deadline for an async task (or, with `abortable` false, a tracked future,
    /// which only its owner can stop) about to be polled with `cx`; returns `true` when the
    /// task must stop now instead. Registers `cx`'s waker with the timer while the task may
    /// still need waking: at the deadline, then at its end of the grace.
    pub(crate) fn poll_expired(
        &mut self,
        cx: &mut Context<'_>,
        grace: Duration,
        abortable: bool,
    ) -> bool {
        loop {
            match self.stage {
                Stage::Aborted => return true,
                Stage::Armed => {
                    if self.sleep.as_mut().poll(cx).is_pending() {
                        return false;
                    }
                    self.stage = Stage::Signalled;
                    let Some(token) = &self.token else {
                        // Without a context, nothing tells the task to stop: abort it now.
                        if abortable {
                            self.stage = Stage::Aborted;
                        }
                        return abortable;
                    };
                    token.cancel();
                    if !abortable {
                        return false;
                    }
                    // The grace, counted from the deadline, not from this poll.
                    let end = self
                        .at
                        .checked_add(grace)
                        .unwrap_or_else(|| far_future(self.at));
                    self.sleep.as_mut().reset(end);
                }
                Stage::Signalled => {
                    if !abortable || self.sleep.as_mut().poll(cx).is_pending() {
                        return false;
                    }
                    self.stage = Stage::Aborted;
                    return true;
                }
            }
        }
    }

    /// For a blocking task about to start: returns `true` if its deadline has passed, and so
    /// it must not start (it is then aborted).
    pub(crate) fn expired_before_start(&mut self) -> bool {
        if Instant::now() < self.at {
            return false;
        }
        self.signal();
        self.stage = Stage::Aborted;
        true
    }

    /// For a blocking task that returned: notes whether it ran past its deadline.
    pub(crate) fn check_after_run(&mut self) {
        if self.stage == Stage::Armed && Instant::now() >= self.at {
            self.signal();
        }
    }

    fn signal(&mut self) {
        self.stage = Stage::Signalled;
        if let Some(token) = &self.token {
            token.cancel();
        }
    }
}

/// About 30 years from `now`, as tokio's own far-future deadline: a timeout too long to fit
/// in an `Instant` never fires.
fn far_future(now: Instant) -> Instant {
    const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);
    now.checked_add(FAR).unwrap_or(now)
}
