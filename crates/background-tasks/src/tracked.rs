//! A future that its owner polls, counted by the supervisor while it lives.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::handle::TaskId;
use crate::spawn::{Gate, TaskGuard};

pin_project! {
    /// A future tracked by a supervisor, from
    /// [`TaskSupervisor::track_future`](crate::TaskSupervisor::track_future) and its kin: it
    /// runs wherever its owner polls it, as the future it wraps, and counts as a running task
    /// until it completes or is dropped.
    ///
    /// While it lives, shutdown drains it like any task and [`TaskSupervisor::len`] counts
    /// it. One made with a context sees the cancellation signal in the cancel phase. Shutdown
    /// cannot abort it, since its owner polls it: if it is still alive when the abort comes, the
    /// [`ShutdownReport`](crate::ShutdownReport) lists it as abandoned, and it runs on. A
    /// panic while polling it is reported as a task's panic is, then unwinds to its owner.
    /// Dropping it unfinished is no failure: its owner ends it on purpose.
    ///
    /// [`TaskSupervisor::len`]: crate::TaskSupervisor::len
    #[must_use = "futures do nothing unless polled"]
    pub struct TrackedFuture<F> {
        // Declared first so that it is dropped first: the task ends once its future is gone.
        #[pin]
        future: F,
        guard: TaskGuard,
        id: TaskId,
    }
}

impl<F> TrackedFuture<F> {
    pub(crate) fn new(future: F, guard: TaskGuard, id: TaskId) -> Self {
        Self { future, guard, id }
    }

    /// The id of the task this future counts as.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// let tracked = supervisor.track_future(async { 1 }).unwrap();
    /// let id = tracked.id();
    /// assert_eq!(supervisor.snapshot().tasks[0].id, id);
    /// # }
    /// ```
    #[must_use]
    pub fn id(&self) -> TaskId {
        self.id
    }
}

impl<F: Future> Future for TrackedFuture<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // It waits for its place under its name's limit; its timeout fires its signal, if it
        // has a context. Only its owner can stop it.
        if matches!(this.guard.gate(cx, false), Gate::Wait) {
            return Poll::Pending;
        }
        this.guard.poll_in_span(|| this.future.poll(cx))
    }
}

impl<F> fmt::Debug for TrackedFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackedFuture")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
