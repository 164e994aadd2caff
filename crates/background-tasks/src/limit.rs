//! Per-name limits, set with [`SupervisorBuilder::limit`](crate::SupervisorBuilder::limit):
//! at most so many tasks of one name run at once, the others wait their turn, in the order
//! they were spawned, in a queue that may be bounded.
//!
//! A waiting task is a real task: admitted (so [`TaskSupervisor::len`](crate::TaskSupervisor::len)
//! and `max_tasks` count it), spawned onto its runtime, and suspended at its first poll until
//! its name's semaphore gives it a place; only then is its future polled. So shutdown drains,
//! cancels and aborts it as any task, and names it *not started* if it never got its place.
//! The places are a tokio [`Semaphore`], which is fair: a waiter joins its queue at its first
//! poll, which for a task waiting here is made by the spawn itself, so that tasks wait in the
//! order they were spawned whichever worker polls them first.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

/// A limit on the tasks of one name: how many may run at once, and how many may wait for a
/// place beyond those; see [`SupervisorBuilder::limit`](crate::SupervisorBuilder::limit).
///
/// A number converts into a limit with a queue bounded only by `max_tasks`.
///
/// # Examples
///
/// ```
/// use background_tasks::{Limit, TaskSupervisor};
///
/// let supervisor = TaskSupervisor::builder()
///     // At most 10 mails at once; the rest wait, however many.
///     .limit("send-mail", 10)
///     // At most 2 exports at once, 20 waiting; beyond, spawns are refused.
///     .limit("export", Limit::new(2).queue(20))
///     .build();
/// assert_eq!(supervisor.limit("export"), Some(Limit::new(2).queue(20)));
/// assert_eq!(supervisor.limit("resize"), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    running: usize,
    queue: Option<usize>,
}

impl Limit {
    /// At most `running` tasks of the name at once; the others wait, in a queue bounded only
    /// by `max_tasks`. With 0, none runs: they wait until shutdown reports them not started,
    /// or (with a bounded queue) are refused.
    ///
    /// # Examples
    ///
    /// ```
    /// let limit = background_tasks::Limit::new(10);
    /// assert_eq!(limit.running(), 10);
    /// assert_eq!(limit.queue_len(), None);
    /// ```
    #[must_use]
    pub const fn new(running: usize) -> Self {
        Self {
            running,
            queue: None,
        }
    }

    /// At most `len` tasks of the name wait for a place; a spawn beyond them is refused with
    /// [`SpawnError::QueueFull`](crate::SpawnError::QueueFull). With 0, none waits: the limit
    /// refuses, as `max_tasks` does.
    ///
    /// # Examples
    ///
    /// ```
    /// let limit = background_tasks::Limit::new(10).queue(100);
    /// assert_eq!(limit.queue_len(), Some(100));
    /// ```
    #[must_use]
    pub const fn queue(self, len: usize) -> Self {
        Self {
            queue: Some(len),
            ..self
        }
    }

    /// How many tasks of the name may run at once.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(background_tasks::Limit::new(3).running(), 3);
    /// ```
    #[must_use]
    pub const fn running(&self) -> usize {
        self.running
    }

    /// How many tasks of the name may wait for a place, if that is bounded.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(background_tasks::Limit::new(3).queue(0).queue_len(), Some(0));
    /// ```
    #[must_use]
    pub const fn queue_len(&self) -> Option<usize> {
        self.queue
    }
}

impl From<usize> for Limit {
    fn from(running: usize) -> Self {
        Self::new(running)
    }
}

/// The limits of a supervisor, fixed when it is built: looked up without a lock.
#[derive(Debug, Default)]
pub(crate) struct Limits {
    by_name: HashMap<Cow<'static, str>, Arc<NameLimit>>,
}

impl Limits {
    pub(crate) fn new(limits: impl IntoIterator<Item = (Cow<'static, str>, Limit)>) -> Self {
        Self {
            by_name: limits
                .into_iter()
                .map(|(name, limit)| (name, Arc::new(NameLimit::new(limit))))
                .collect(),
        }
    }

    /// The limit of the tasks named `name`, if any. Costs unnamed tasks, and every task of a
    /// supervisor without limits, one test.
    #[inline]
    pub(crate) fn of(&self, name: Option<&str>) -> Option<&Arc<NameLimit>> {
        if self.by_name.is_empty() {
            return None;
        }
        self.by_name.get(name?)
    }

    /// Whether no name has a limit.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &NameLimit)> {
        self.by_name
            .iter()
            .map(|(name, limit)| (name.as_ref(), &**limit))
    }
}

/// The places of one name.
pub(crate) struct NameLimit {
    limit: Limit,
    places: Arc<Semaphore>,
    /// Tasks waiting for a place: what the queue bound and the snapshot count.
    waiting: AtomicUsize,
}

impl NameLimit {
    fn new(limit: Limit) -> Self {
        Self {
            limit,
            // Tokio's semaphore holds at most `MAX_PERMITS`: a limit above it is no limit.
            places: Arc::new(Semaphore::new(limit.running.min(Semaphore::MAX_PERMITS))),
            waiting: AtomicUsize::new(0),
        }
    }

    pub(crate) fn limit(&self) -> Limit {
        self.limit
    }

    /// A place, once one is free: waits in the same queue as the waiting tasks.
    ///
    /// # Cancel safety
    ///
    /// Dropped while waiting, it leaves the queue, and passes on a place granted meanwhile.
    pub(crate) async fn acquire(&self) -> OwnedSemaphorePermit {
        match self.places.clone().acquire_owned().await {
            Ok(permit) => permit,
            Err(_) => unreachable!("a limit's semaphore is never closed"),
        }
    }

    /// How many tasks wait for a place now.
    pub(crate) fn waiting(&self) -> usize {
        // Relaxed: a count for snapshots, which order nothing by it.
        self.waiting.load(Ordering::Relaxed)
    }

    /// A place for a new task of this name: taken now, or a place in the queue (`queue`
    /// false: none, for a task that cannot wait), or `None` when the queue is full.
    pub(crate) fn reserve(self: &Arc<Self>, queue: bool) -> Option<Place> {
        if let Ok(permit) = self.places.clone().try_acquire_owned() {
            return Some(Place::Held(permit));
        }
        let bound = if queue {
            self.limit.queue.unwrap_or(usize::MAX)
        } else {
            0
        };
        // Relaxed: the bound needs only the count to be exact, which a read-modify-write
        // gives; nothing else is published through it.
        self.waiting
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |waiting| {
                (waiting < bound).then_some(waiting + 1)
            })
            .ok()?;
        let mut waiter = Waiter {
            // Unconstrained: tokio's budget could otherwise refuse this first poll in a
            // spawning loop, and the waiter would join the queue later, out of order.
            acquire: Box::pin(tokio::task::unconstrained(
                self.places.clone().acquire_owned(),
            )),
            limit: self.clone(),
        };
        // Joins the semaphore's queue now, in spawn order. A place freed since the try above
        // may be granted at once.
        match waiter.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(permit) => Some(Place::Held(permit)),
            Poll::Pending => Some(Place::Waiting(waiter)),
        }
    }
}

impl fmt::Debug for NameLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NameLimit")
            .field("limit", &self.limit)
            .field("waiting", &self.waiting())
            .finish_non_exhaustive()
    }
}

/// A task's place under its name's limit.
#[derive(Debug)]
pub(crate) enum Place {
    /// Taken: given back when the task ends, to the next one waiting.
    Held(
        #[expect(dead_code, reason = "held for its drop, which gives the place back")]
        OwnedSemaphorePermit,
    ),
    Waiting(Waiter),
}

type Acquire = dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send;

/// A task waiting for a place; leaves the queue (and counts one fewer waiting) when dropped.
pub(crate) struct Waiter {
    acquire: Pin<Box<Acquire>>,
    limit: Arc<NameLimit>,
}

impl Waiter {
    /// Waits for the place, with `cx`'s waker.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<OwnedSemaphorePermit> {
        match self.acquire.as_mut().poll(cx) {
            Poll::Ready(Ok(permit)) => Poll::Ready(permit),
            Poll::Ready(Err(_)) => unreachable!("a limit's semaphore is never closed"),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        // Relaxed: as in `reserve`.
        self.limit.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for Waiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiter")
            .field("limit", &self.limit.limit)
            .finish_non_exhaustive()
    }
}

impl Place {
    /// Waits for the place if the task has none yet, with `cx`'s waker; `Ready` once it has.
    pub(crate) fn poll_held(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Place::Waiting(waiter) = self else {
            return Poll::Ready(());
        };
        let permit = std::task::ready!(waiter.poll(cx));
        // Drops the waiter, which counts one fewer waiting.
        *self = Place::Held(permit);
        Poll::Ready(())
    }

    pub(crate) fn is_waiting(&self) -> bool {
        matches!(self, Place::Waiting(_))
    }
}
