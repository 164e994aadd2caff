//! What `serve` tells its connections, in one place they all watch: serving, finish
//! gracefully, close.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};

use pin_project_lite::pin_project;

use crate::sync::{AtomicU8, Notify, OwnedNotified, spin_wait};

/// Serving requests.
pub(crate) const SERVING: u8 = 0;
/// Finish the request in flight, then close.
pub(crate) const GRACEFUL: u8 = 1;
/// Close now.
pub(crate) const CLOSE: u8 = 2;

/// The stage every connection of one `serve` watches.
#[derive(Debug)]
pub(crate) struct Stage {
    value: AtomicU8,
    /// The highest stage whose `notify_waiters` has returned: see [`StageWatch::poll_stage`].
    announced: AtomicU8,
    /// In an `Arc` of its own so that a watch can own its `Notified`: the watches of an
    /// upgraded socket live inside the socket, not on a stack.
    changed: Arc<Notify>,
}

impl Stage {
    pub(crate) fn new() -> Self {
        Self {
            value: AtomicU8::new(SERVING),
            announced: AtomicU8::new(SERVING),
            changed: Arc::new(Notify::new()),
        }
    }

    pub(crate) fn advance(&self, to: u8) {
        // SeqCst, with the loads in `StageWatch::poll_stage`: a watch that reads the new stage
        // also reads whether its notification is out.
        if self.value.fetch_max(to, Ordering::SeqCst) >= to {
            // Nothing changed: a notification now would only spend the watches' `Notified`s.
            return;
        }
        self.changed.notify_waiters();
        self.announced.fetch_max(to, Ordering::SeqCst);
    }

    /// Whether the stage is [`CLOSE`]: a read, with no registration to be woken.
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        // Acquire: nothing is published with the stage, but a stale `false` only costs one
        // more trip through the watch, which then reads it with SeqCst.
        self.value.load(Ordering::Acquire) >= CLOSE
    }
}

pin_project! {
    /// One waker's view of the [`Stage`], cheap to poll: a `Notified` locks its `Notify`
    /// on every poll while it waits, and all connections share this one, while a connection is
    /// polled on every read and write. So the `Notified` is polled only to register, and again
    /// only if the waker changes; otherwise a poll reads one atomic.
    ///
    /// One watch keeps one waker: two tasks that wait on the same connection (the read and
    /// the write half of a split socket) need a watch each, or the one that registered last
    /// would take the other's place.
    pub(crate) struct StageWatch {
        stage: Arc<Stage>,
        #[pin]
        changed: OwnedNotified,
        registered: Option<Waker>,
        seen: u8,
    }
}

impl StageWatch {
    pub(crate) fn new(stage: Arc<Stage>) -> Self {
        Self {
            changed: stage.changed.clone().notified_owned(),
            stage,
            registered: None,
            seen: SERVING,
        }
    }

    /// Ready with the stage when it has moved since the last call; otherwise registered to
    /// be woken when it moves.
    pub(crate) fn poll_stage(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u8> {
        let mut this = self.project();
        loop {
            // SeqCst: see `Stage::advance`.
            let current = this.stage.value.load(Ordering::SeqCst);
            if current != *this.seen {
                if this.stage.announced.load(Ordering::SeqCst) < current {
                    // The notification of this stage is still on its way: a `Notified` made
                    // now could be spent by it, and then miss the next stage, since the
                    // shortcut below does not poll it again. It is a few instructions away:
                    // come back once it is out.
                    spin_wait();
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                *this.seen = current;
                // Made once the notification of `current` is out: only a later stage can
                // complete it.
                this.changed
                    .set(this.stage.changed.clone().notified_owned());
                *this.registered = None;
                return Poll::Ready(current);
            }
            if this
                .registered
                .as_ref()
                .is_some_and(|waker| waker.will_wake(cx.waker()))
            {
                return Poll::Pending;
            }
            if this.changed.as_mut().poll(cx).is_pending() {
                *this.registered = Some(cx.waker().clone());
                return Poll::Pending;
            }
            // Notified: watch again, and read the stage that caused it.
            this.changed
                .set(this.stage.changed.clone().notified_owned());
            *this.registered = None;
        }
    }

    /// Ready once the stage is [`CLOSE`]; otherwise registered to be woken when it moves.
    pub(crate) fn poll_closed(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // `seen` rather than the value of `poll_stage`: once it has returned the close, it
        // returns `Pending` ever after.
        while self.seen < CLOSE {
            if self.as_mut().poll_stage(cx).is_pending() {
                return Poll::Pending;
            }
        }
        Poll::Ready(())
    }
}

impl std::fmt::Debug for StageWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageWatch")
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

/// A loom model of the stage watch, run by `.ci/run` (only this crate is built with
/// `--cfg loom`). The model runs the watch's poll at every point of `advance`, between its
/// `fetch_max` and its `notify_waiters` included. Several watches, as the halves of a split
/// socket keep (see `io.rs`), are each this one watch: `notify_waiters` wakes every
/// registered `Notified`.
#[cfg(all(loom, test))]
mod loom_models {
    use std::future::poll_fn;
    use std::pin::pin;
    use std::sync::Arc;

    use super::{CLOSE, GRACEFUL, Stage, StageWatch};

    /// A connection that acts on every stage it sees, as `serve_connection` does, is woken for
    /// the close even when it reads the graceful stage before that stage's notification is out.
    /// Without `Stage::announced` (defect 4 of issue 8), the `Notified` made then was spent by
    /// the pending notification, the close never woke the connection, and this model
    /// deadlocked.
    #[test]
    fn loom_models_a_watch_polled_during_advance_sees_the_close() {
        loom::model(|| {
            let stage = Arc::new(Stage::new());
            let advancing = loom::thread::spawn({
                let stage = stage.clone();
                move || {
                    stage.advance(GRACEFUL);
                    stage.advance(CLOSE);
                }
            });
            loom::future::block_on(async {
                // `poll_closed` acts on every stage `poll_stage` gives, as `serve_connection`
                // does, until the close: the wait of a socket's halves.
                let mut watch = pin!(StageWatch::new(stage.clone()));
                poll_fn(|cx| watch.as_mut().poll_closed(cx)).await;
            });
            advancing.join().unwrap();
        });
    }
}
