//! The gate of a request's after-response tasks: opened once its response has been sent or
//! dropped, which also ends the request's count in flight.

use std::fmt;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{self, AtomicBool, Ordering};

use background_tasks::TaskSupervisor;
use tokio::sync::Notify;

use crate::in_flight::InFlightShard;

/// Opened once by its [`GateGuard`]; after-response tasks wait for it. It carries the
/// supervisor that the request's tasks are spawned on, so that the extractor is one reference
/// count (cloning it for a handler, and dropping it, touch one word rather than two), and the
/// worker's count of requests in flight, which its guard counts the request in, so that the
/// guard is one reference count too.
///
/// One per request, so it is lighter than a `CancellationToken`: cloning and dropping it are
/// reference counts, with no lock, and opening it takes a lock only when a task waits for it.
#[derive(Clone)]
pub(crate) struct Gate(Arc<Inner>);

struct Inner {
    supervisor: TaskSupervisor,
    /// None outside of a request.
    in_flight: Option<Arc<InFlightShard>>,
    open: AtomicBool,
    /// Set before a task first waits: most requests have no after-response task, and their
    /// gate opens without `Notify`'s lock.
    waiting: AtomicBool,
    opened: Notify,
}

impl Gate {
    /// A closed gate, for the tasks of `supervisor`, whose guards count their request in
    /// `in_flight`.
    pub(crate) fn new(supervisor: TaskSupervisor, in_flight: Option<Arc<InFlightShard>>) -> Self {
        Self(Arc::new(Inner {
            supervisor,
            in_flight,
            open: AtomicBool::new(false),
            waiting: AtomicBool::new(false),
            opened: Notify::new(),
        }))
    }

    /// A gate that is open already: there is no response to wait for.
    pub(crate) fn open(supervisor: TaskSupervisor) -> Self {
        let gate = Self::new(supervisor, None);
        gate.0.open.store(true, Ordering::Release);
        gate
    }

    /// The supervisor of the request's tasks.
    #[inline]
    pub(crate) fn supervisor(&self) -> &TaskSupervisor {
        &self.0.supervisor
    }

    #[inline]
    pub(crate) fn is_open(&self) -> bool {
        // Acquire: pairs with the store in `GateGuard::drop`, so that what happened before the
        // response was sent happens before what sees the gate open.
        self.0.open.load(Ordering::Acquire)
    }

    /// Resolves once the gate is open.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it holds nothing but its registration.
    pub(crate) async fn opened(&self) {
        // SeqCst: pairs with the store and load in `GateGuard::drop` (a store-load pattern on
        // two flags): either the flag read below is open, or the guard sees `waiting` and
        // wakes the `Notified` created after this store.
        self.0.waiting.store(true, Ordering::SeqCst);
        loop {
            // A `Notified` sees every `notify_waiters` from its creation on.
            let opened = self.0.opened.notified();
            if self.0.open.load(Ordering::SeqCst) {
                return;
            }
            opened.await;
        }
    }

    /// The guard that opens the gate when dropped, and counts the request in flight until
    /// then. It holds the worker's own copy of the gate, whose count is not atomic, so that
    /// taking and dropping it costs no locked instruction: a guard stays on its worker, in the
    /// response future and then the body, which actix never sends to another thread.
    #[inline]
    pub(crate) fn guard(self: &Rc<Self>) -> GateGuard {
        if let Some(in_flight) = &self.0.in_flight {
            in_flight.start();
        }
        GateGuard(Rc::clone(self))
    }

    /// Closes it again for the next request, if nothing holds it but `holders` copies, the
    /// caller's: no guard, extractor or task, and so no task waits on it. Returns whether it
    /// did; the caller then makes a new gate. A worker's requests mostly end before its next
    /// one starts, so keeping the last gate spares most requests an allocation and its free.
    #[inline]
    pub(crate) fn close_again(&self, holders: usize) -> bool {
        // A strong count, not `Arc::get_mut`, whose compare-and-swap on the weak count (a
        // locked instruction: a tenth of the samples of the middleware's inlined `call` under
        // perf) guards against a `Weak` being upgraded meanwhile: a gate has no `Weak`, so the
        // count of its holders is all there is, and no one else can get a copy from anyone.
        if Arc::strong_count(&self.0) != holders {
            return false;
        }
        // Acquire: pairs with the release decrement of every other holder's drop, so that all
        // they did with the gate happens before it is closed again. Held by no one else, no
        // task waits on its `Notify`: it is as new once closed.
        atomic::fence(Ordering::Acquire);
        // Relaxed: no one else reads them until the gate is handed over again (to a request,
        // then a task), which orders these stores before what it does.
        self.0.open.store(false, Ordering::Relaxed);
        self.0.waiting.store(false, Ordering::Relaxed);
        true
    }
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("open", &self.is_open())
            .finish()
    }
}

/// Opens its [`Gate`] when dropped, then ends the request's count in flight: with the
/// response body, once sent, or with the response future, when there is no response.
pub(crate) struct GateGuard(Rc<Gate>);

impl GateGuard {
    /// Whether the server is draining its requests: responses should close their connection.
    #[inline]
    pub(crate) fn is_draining(&self) -> bool {
        self.0
            .0
            .in_flight
            .as_ref()
            .is_some_and(|in_flight| in_flight.is_draining())
    }
}

impl Drop for GateGuard {
    fn drop(&mut self) {
        let inner = &self.0.0;
        // SeqCst: see `Gate::opened`; it is also a release, for `Gate::is_open`.
        inner.open.store(true, Ordering::SeqCst);
        if inner.waiting.load(Ordering::SeqCst) {
            inner.opened.notify_waiters();
        }
        // After the gate has opened: once the drain sees no request in flight, the
        // after-response tasks of every request have been let run.
        if let Some(in_flight) = &inner.in_flight {
            in_flight.end();
        }
    }
}

impl fmt::Debug for GateGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateGuard").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_waiting_task_sees_the_gate_open_when_its_guard_drops() {
        let gate = Rc::new(Gate::new(TaskSupervisor::new(), None));
        let guard = gate.guard();
        let waiting = tokio::spawn({
            let gate = Gate::clone(&gate);
            async move { gate.opened().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished() && !gate.is_open());
        drop(guard);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("the guard's drop wakes it")
            .unwrap();
        assert!(gate.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_waits_once_the_guard_dropped_does_not_wait() {
        let gate = Rc::new(Gate::new(TaskSupervisor::new(), None));
        drop(gate.guard());
        tokio::time::timeout(Duration::from_millis(1), gate.opened())
            .await
            .expect("opened before anyone waited");
    }

    #[tokio::test(start_paused = true)]
    async fn a_gate_closes_again_only_once_no_one_but_its_holders_has_it() {
        let gate = Rc::new(Gate::new(TaskSupervisor::new(), None));
        // A task still waits on it after its response was sent: left open as it is.
        let waiting = tokio::spawn({
            let gate = Gate::clone(&gate);
            async move { gate.opened().await }
        });
        tokio::task::yield_now().await;
        drop(gate.guard());
        assert!(!gate.close_again(1), "a task holds a copy");
        assert!(gate.is_open());
        waiting.await.unwrap();
        // Held by no one else now: closed again, and its next guard opens it.
        assert!(gate.close_again(1));
        assert!(!gate.is_open());
        let waiting = tokio::spawn({
            let gate = Gate::clone(&gate);
            async move { gate.opened().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "closed again");
        drop(gate.guard());
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("its next guard opens it")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_gate_does_not_wait() {
        tokio::time::timeout(
            Duration::from_millis(1),
            Gate::open(TaskSupervisor::new()).opened(),
        )
        .await
        .expect("open from the start");
    }
}
