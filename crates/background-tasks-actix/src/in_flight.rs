//! The requests in flight that [`serve`](crate::serve) drains before it shuts the supervisor
//! down, counted by the middleware.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// What the middleware and `serve` share: how many requests are in flight, and whether the
/// server is draining them.
#[derive(Default)]
pub(crate) struct InFlight {
    /// One counter per worker's service, so that counting a request writes a cache line that
    /// only its worker's thread writes. Locked only when a worker starts and by `serve`, to
    /// sum them.
    shards: Mutex<Vec<Arc<InFlightShard>>>,
    /// Set once the server has stopped accepting: responses then close their connection, and
    /// the end of the last request of a shard wakes `serve`.
    draining: AtomicBool,
    /// Set by `serve` before the workers start, so that the middleware knows a shutdown will
    /// keep its worker alive until the supervisor has shut down.
    served: AtomicBool,
    /// Woken when the last request of a shard ends while draining.
    idle: Notify,
}

impl InFlight {
    /// A counter for one worker's service.
    pub(crate) fn shard(self: &Arc<Self>) -> Arc<InFlightShard> {
        let shard = Arc::new(InFlightShard {
            count: AtomicUsize::new(0),
            shared: Arc::clone(self),
        });
        self.lock_shards().push(Arc::clone(&shard));
        shard
    }

    fn lock_shards(&self) -> std::sync::MutexGuard<'_, Vec<Arc<InFlightShard>>> {
        // Poisoning cannot leave the list inconsistent: a push either happened or not.
        self.shards.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many requests are in flight, over every worker.
    pub(crate) fn len(&self) -> usize {
        self.lock_shards()
            .iter()
            // SeqCst: see `InFlightShard::start`.
            .map(|shard| shard.count.load(Ordering::SeqCst))
            .sum()
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
        // SeqCst: see `InFlightShard::start`.
        self.draining.store(true, Ordering::SeqCst);
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            // Registered before the counts are read, so that a wake between the two is kept.
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

/// The requests in flight on one worker's service.
pub(crate) struct InFlightShard {
    count: AtomicUsize,
    shared: Arc<InFlight>,
}

impl InFlightShard {
    /// Counts one request, until [`end`](Self::end): the guard of its after-response gate
    /// calls both.
    #[inline]
    pub(crate) fn start(&self) {
        // SeqCst: pairs with the load of `draining` in `end` and the store in `drain` (a
        // store-load pattern on two variables): either `drain` sees the count at zero, or
        // `end` sees `draining` and wakes it.
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    /// Ends one request counted by [`start`](Self::start).
    #[inline]
    pub(crate) fn end(&self) {
        // SeqCst: see `start`.
        let before = self.count.fetch_sub(1, Ordering::SeqCst);
        if before == 1 && self.shared.draining.load(Ordering::SeqCst) {
            self.shared.idle.notify_waiters();
        }
    }

    /// Whether responses should close their connection.
    #[inline]
    pub(crate) fn is_draining(&self) -> bool {
        self.shared.is_draining()
    }
}

impl fmt::Debug for InFlightShard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlightShard")
            .field("count", &self.count.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_the_last_request_of_every_worker_and_not_longer() {
        let in_flight = Arc::new(InFlight::default());
        let (one, other) = (in_flight.shard(), in_flight.shard());
        one.start();
        other.start();
        assert_eq!(in_flight.len(), 2);
        let drained = tokio::spawn({
            let in_flight = Arc::clone(&in_flight);
            async move { in_flight.drain().await }
        });
        tokio::task::yield_now().await;
        assert!(in_flight.is_draining());
        one.end();
        tokio::task::yield_now().await;
        assert!(!drained.is_finished(), "one request is still in flight");
        other.end();
        tokio::time::timeout(Duration::from_secs(1), drained)
            .await
            .expect("the end of the last request wakes the drain")
            .unwrap();
        assert_eq!(in_flight.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn drain_with_no_request_in_flight_ends_at_once() {
        let in_flight = Arc::new(InFlight::default());
        let shard = in_flight.shard();
        shard.start();
        shard.end();
        tokio::time::timeout(Duration::from_millis(1), in_flight.drain())
            .await
            .expect("nothing to wait for");
    }
}
