//! The synchronization of the stage watch, from `std` and tokio, or from `loom` when the
//! crate's own tests are built with `--cfg loom`, so that the loom model checks the code that
//! runs. Only this crate is built with the flag (see `.ci/run`): tokio leaves out its `net`
//! module under a global `--cfg loom`, which `serve` needs.

#[cfg(not(all(loom, test)))]
pub(crate) use std::sync::atomic::AtomicU8;
#[cfg(not(all(loom, test)))]
pub(crate) use tokio::sync::{Notify, futures::OwnedNotified};

/// Marks a retry that waits for another thread's next few instructions: a no-op here, where
/// the scheduler's re-poll is the wait.
#[cfg(not(all(loom, test)))]
#[inline]
pub(crate) fn spin_wait() {}

#[cfg(all(loom, test))]
pub(crate) use self::model::{Notify, OwnedNotified, spin_wait};
#[cfg(all(loom, test))]
pub(crate) use loom::sync::atomic::AtomicU8;

/// What loom needs in place of tokio's `Notify`, whose internals it cannot see: the same
/// contract for the two calls the watch makes, on loom's lock, so that the model sees the
/// ordering a notification gives. The contract, from tokio's docs: `notify_waiters` wakes
/// every `Notified` made before the call, polled yet or not, and no later one.
#[cfg(all(loom, test))]
mod model {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};

    use loom::sync::Mutex;

    /// A spin that does not say so looks to loom like a livelock.
    pub(crate) fn spin_wait() {
        loom::thread::yield_now();
    }

    #[derive(Debug, Default)]
    struct Waiters {
        /// How many `notify_waiters` calls were made.
        calls: u64,
        wakers: Vec<Waker>,
    }

    #[derive(Debug)]
    pub(crate) struct Notify {
        waiters: Mutex<Waiters>,
    }

    impl Notify {
        pub(crate) fn new() -> Self {
            Self {
                waiters: Mutex::new(Waiters::default()),
            }
        }

        pub(crate) fn notified_owned(self: Arc<Self>) -> OwnedNotified {
            let calls = self.waiters.lock().unwrap().calls;
            OwnedNotified {
                notify: self,
                calls,
            }
        }

        pub(crate) fn notify_waiters(&self) {
            let wakers = {
                let mut waiters = self.waiters.lock().unwrap();
                waiters.calls += 1;
                std::mem::take(&mut waiters.wakers)
            };
            wakers.into_iter().for_each(Waker::wake);
        }
    }

    #[derive(Debug)]
    pub(crate) struct OwnedNotified {
        notify: Arc<Notify>,
        /// The calls made before this was.
        calls: u64,
    }

    impl Future for OwnedNotified {
        type Output = ();

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let mut waiters = self.notify.waiters.lock().unwrap();
            if waiters.calls != self.calls {
                return Poll::Ready(());
            }
            // A waker given twice is woken twice: spurious, which loom explores anyway.
            waiters.wakers.push(cx.waker().clone());
            Poll::Pending
        }
    }
}
