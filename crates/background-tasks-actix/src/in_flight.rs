//! The requests in flight that [`serve`](crate::serve) drains before it shuts the supervisor
//! down, counted by the middleware.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// What the middleware and `serve` share: how many requests are in flight, and whether the
/// server is draining them.
#[derive(Default)]
pub(crate) struct InFlight {
    /// Requests between the middleware's `call` and the end of their response body.
    count: AtomicUsize,
    /// Set once the server has stopped accepting: responses then close their connection, and
    /// the end of the last request wakes `serve`.
    draining: AtomicBool,
    /// Set by `serve` before the workers start, so that the middleware knows a shutdown will
    /// keep its worker alive until the supervisor has shut down.
    served: AtomicBool,
    /// Woken when the last request ends while draining.
    idle: Notify,
}

impl InFlight {
    /// Counts one request until the guard is dropped.
    #[inline]
    pub(crate) fn start(self: &Arc<Self>) -> InFlightGuard {
        // SeqCst: pairs with the load of `draining` in the guard's drop and the store in
        // `drain` (a store-load pattern on two variables): either `wait_idle` sees the count
        // at zero, or the guard sees `draining` and wakes it.
        self.count.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(Arc::clone(self))
    }

    pub(crate) fn len(&self) -> usize {
        // SeqCst: see `start`.
        self.count.load(Ordering::SeqCst)
    }

    /// Whether responses should close their connection.
    #[inline]
    pub(crate) fn is_draining(&self) -> bool {
        // Relaxed: only decides a `Connection: close` header, for which a response racing the
        // start of the drain may go either way.
        self.draining.load(Ordering::Relaxed)
    }

    pub(crate) fn set_served(&self) {
        // Relaxed: the workers that read it start when `serve`'s future first polls the
        // server, which happens after this store (spawning a task or a thread orders what came
        // before the spawn before what the spawned code does).
        self.served.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_served(&self) -> bool {
        // Relaxed: see `set_served`.
        self.served.load(Ordering::Relaxed)
    }

    /// Marks the start of the drain and waits until no request is in flight.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the caller races it against the request drain timeout.
    pub(crate) async fn drain(&self) {
        // SeqCst: see `start`.
        self.draining.store(true, Ordering::SeqCst);
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            // Registered before the count is read, so that a wake between the two is kept.
            idle.as_mut().enable();
            if self.len() == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl fmt::Debug for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlight")
            .field("count", &self.len())
            .field("draining", &self.is_draining())
            .field("served", &self.is_served())
            .finish_non_exhaustive()
    }
}

/// One request in flight; it ends when the guard is dropped with the response body (or with
/// the response future, when there is no response).
pub(crate) struct InFlightGuard(Arc<InFlight>);

impl InFlightGuard {
    #[inline]
    pub(crate) fn is_draining(&self) -> bool {
        self.0.is_draining()
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        // SeqCst: see `InFlight::start`.
        let before = self.0.count.fetch_sub(1, Ordering::SeqCst);
        if before == 1 && self.0.draining.load(Ordering::SeqCst) {
            self.0.idle.notify_waiters();
        }
    }
}

impl fmt::Debug for InFlightGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlightGuard").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_the_last_request_and_not_longer() {
        let in_flight = Arc::new(InFlight::default());
        let first = in_flight.start();
        let second = in_flight.start();
        let drained = tokio::spawn({
            let in_flight = Arc::clone(&in_flight);
            async move { in_flight.drain().await }
        });
        tokio::task::yield_now().await;
        assert!(in_flight.is_draining());
        drop(first);
        tokio::task::yield_now().await;
        assert!(!drained.is_finished(), "one request is still in flight");
        drop(second);
        tokio::time::timeout(std::time::Duration::from_secs(1), drained)
            .await
            .expect("the end of the last request wakes the drain")
            .unwrap();
        assert_eq!(in_flight.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn drain_with_no_request_in_flight_ends_at_once() {
        let in_flight = Arc::new(InFlight::default());
        drop(in_flight.start());
        tokio::time::timeout(std::time::Duration::from_millis(1), in_flight.drain())
            .await
            .expect("nothing to wait for");
    }
}
