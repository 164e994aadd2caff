//! Spawning once there is room: [`TaskBuilder::spawn_when_ready`](crate::TaskBuilder::spawn_when_ready)
//! waits for a place under the task's name's limit and under `max_tasks`, where a spawn would
//! queue the task or be refused: what a producer (a queue consumer, a batch import) wants,
//! so that it slows down to the pace of its tasks.
//!
//! Nothing is admitted while it waits, so dropping the wait changes nothing; once it has its
//! places, the spawn completes without another suspension, so the future handed over is
//! never lost to a dropped wait.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;

use crate::error::SpawnError;
use crate::handle::{TaskHandle, TaskId};
use crate::limit::Place;
use crate::snapshot::Tally;
use crate::spawn::{Admission, Flow, Runtime, Spec};
use crate::state::{Origin, Refused};
use crate::supervisor::{DecrementOnDrop, Inner};
use crate::sync::fence;
use crate::timeout::ContextDeadline;

impl Inner {
    /// Spawns the future `make` builds once the task has a place under its name's limit and
    /// under `max_tasks`.
    pub(crate) async fn spawn_when_ready<F, M>(
        self: &Arc<Self>,
        spec: Spec,
        make: M,
    ) -> Result<TaskHandle<F::Output>, SpawnError>
    where
        M: FnOnce(TaskId, Option<ContextDeadline>) -> F,
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        // Checked before anything waits: outside a runtime, or without timers for a timeout,
        // this panics at once, with nothing taken.
        let runtime = Runtime::get(self.config.runtime.as_ref());
        if spec.timeout.is_some() {
            drop(tokio::time::sleep_until(tokio::time::Instant::now()));
        }
        let place = match self.config.limits.of(spec.name.as_deref()) {
            Some(limit) => Some(Place::Held(
                self.until_shutdown(spec.origin, limit.acquire()).await?,
            )),
            None => None,
        };
        let admission = self.wait_for_room(spec.origin, spec.cooperative).await?;
        // From here on nothing waits: the spawn completes in this poll.
        let deadline = spec.deadline(self);
        let (id, supervised) = self.wrap(admission, spec.name, Flow::boxed(deadline, place), make);
        Ok(TaskHandle::new(id, runtime.spawn(supervised)))
    }

    /// Admits a task once there is room under `max_tasks`.
    async fn wait_for_room(
        self: &Arc<Self>,
        origin: Origin,
        cooperative: bool,
    ) -> Result<Admission<'_>, SpawnError> {
        loop {
            let notified = self.room.notified();
            let mut notified = pin!(notified);
            // Registered before the count is read, so that an end in between still wakes it.
            notified.as_mut().enable();
            // SeqCst pairs with the fence in `notify_room`: either this admission sees the
            // room an end made, or that end sees this waiter and wakes it.
            self.room_waiters.fetch_add(1, Ordering::SeqCst);
            let _waiting = DecrementOnDrop(&self.room_waiters);
            fence(Ordering::SeqCst);
            match self.state.admit(origin, cooperative, self.config.max_tasks) {
                Err(Refused::AtCapacity) => {}
                admitted => return self.decide(admitted, cooperative),
            }
            self.until_shutdown(origin, notified).await?;
        }
    }

    /// `future`'s output, or [`SpawnError::ShuttingDown`] as soon as the caller may no longer
    /// spawn: when shutdown begins, for an outside caller, when its cancel phase begins, for a
    /// task.
    async fn until_shutdown<T>(
        &self,
        origin: Origin,
        future: impl Future<Output = T>,
    ) -> Result<T, SpawnError> {
        let signal = match origin {
            Origin::Outside => &self.drain,
            Origin::Task => &self.cancel,
        };
        let mut stop = pin!(signal.cancelled());
        let mut future = pin!(future);
        let output = poll_fn(|cx| {
            // The signal first: once shutdown has begun, nothing more is admitted.
            if stop.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            future.as_mut().poll(cx).map(Some)
        })
        .await;
        output.ok_or_else(|| {
            Tally::bump(&self.tally.refused_shutting_down);
            #[cfg(feature = "metrics")]
            crate::metrics::refused("shutting_down");
            SpawnError::ShuttingDown
        })
    }

    /// Wakes the spawns waiting for room under `max_tasks`, if any: called by an end that
    /// left the count one below it.
    pub(crate) fn notify_room(&self) {
        // SeqCst fence against the one in `wait_for_room`, as in `notify_if_idle`; spares the
        // notify's lock when nobody waits.
        fence(Ordering::SeqCst);
        if self.room_waiters.load(Ordering::SeqCst) != 0 {
            self.room.notify_waiters();
        }
    }
}
