//! The connections `serve` accepted: one task each, told together to finish gracefully, then
//! to close.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::sync::{AtomicU8, Notified, Notify, spin_wait};

/// Serving requests.
const SERVING: u8 = 0;
/// Finish the request in flight, then close.
const GRACEFUL: u8 = 1;
/// Close now.
const CLOSE: u8 = 2;

/// What the connection tasks are told, in one place they all watch.
#[derive(Debug)]
struct Stage {
    value: AtomicU8,
    /// The highest stage whose `notify_waiters` has returned: see [`StageWatch::poll_stage`].
    announced: AtomicU8,
    changed: Notify,
}

impl Stage {
    fn new() -> Self {
        Self {
            value: AtomicU8::new(SERVING),
            announced: AtomicU8::new(SERVING),
            changed: Notify::new(),
        }
    }

    fn advance(&self, to: u8) {
        // SeqCst, with the loads in `StageWatch::poll_stage`: a watch that reads the new stage
        // also reads whether its notification is out.
        if self.value.fetch_max(to, Ordering::SeqCst) >= to {
            // Nothing changed: a notification now would only spend the watches' `Notified`s.
            return;
        }
        self.changed.notify_waiters();
        self.announced.fetch_max(to, Ordering::SeqCst);
    }
}

pin_project! {
    /// One connection's view of the [`Stage`], cheap to poll: a `Notified` locks its `Notify`
    /// on every poll while it waits, and all connections share this one, while a connection is
    /// polled on every read and write. So the `Notified` is polled only to register, and again
    /// only if the task's waker changes; otherwise a poll reads one atomic.
    struct StageWatch<'a> {
        stage: &'a Stage,
        #[pin]
        changed: Notified<'a>,
        registered: Option<Waker>,
        seen: u8,
    }
}

impl<'a> StageWatch<'a> {
    fn new(stage: &'a Stage) -> Self {
        Self {
            stage,
            changed: stage.changed.notified(),
            registered: None,
            seen: SERVING,
        }
    }

    /// Ready with the stage when it has moved since the last call; otherwise registered to
    /// be woken when it moves.
    fn poll_stage(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u8> {
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
                this.changed.set(this.stage.changed.notified());
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
            this.changed.set(this.stage.changed.notified());
            *this.registered = None;
        }
    }
}

/// The connection tasks.
#[derive(Debug)]
pub(crate) struct Connections {
    tracker: TaskTracker,
    stage: Arc<Stage>,
}

impl Connections {
    pub(crate) fn new() -> Self {
        Self {
            tracker: TaskTracker::new(),
            stage: Arc::new(Stage::new()),
        }
    }

    /// Serves `io` with `service` in a task of its own, as `axum::serve` does.
    pub(crate) fn spawn<I, S>(&self, io: I, service: S)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: Service<Request, Response = Response, Error = Infallible, Future: Send>
            + Clone
            + Send
            + 'static,
    {
        self.tracker
            .spawn(serve_connection(io, service, self.stage.clone()));
    }

    /// How many connections are open.
    pub(crate) fn len(&self) -> usize {
        self.tracker.len()
    }

    /// Tells every connection to finish its request in flight and close; connections accepted
    /// from now on are told at once.
    pub(crate) fn shutdown_gracefully(&self) {
        self.tracker.close();
        self.stage.advance(GRACEFUL);
    }

    /// Closes every connection now, dropping the requests in flight.
    pub(crate) fn close(&self) {
        self.tracker.close();
        self.stage.advance(CLOSE);
    }

    /// Resolves once every connection has closed; only after `shutdown_gracefully` or `close`.
    pub(crate) async fn wait(&self) {
        self.tracker.wait().await;
    }
}

impl Drop for Connections {
    fn drop(&mut self) {
        // A dropped `serve` future leaves no connection behind.
        self.stage.advance(CLOSE);
    }
}

async fn serve_connection<I, S>(io: I, service: S, stage: Arc<Stage>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request, Response = Response, Error = Infallible, Future: Send>
        + Clone
        + Send
        + 'static,
{
    let mut builder = Builder::new(TokioExecutor::new());
    // The CONNECT protocol, for WebSockets over HTTP/2, as `axum::serve` enables it.
    builder.http2().enable_connect_protocol();
    let service = TowerToHyperService::new(AxumBody(service));
    let mut conn = pin!(builder.serve_connection_with_upgrades(TokioIo::new(io), service));

    let mut watch = pin!(StageWatch::new(&stage));
    poll_fn(|cx| {
        loop {
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                if let Err(error) = result {
                    tracing::trace!("connection ended with an error: {error:#}");
                }
                return Poll::Ready(());
            }
            match watch.as_mut().poll_stage(cx) {
                Poll::Pending => return Poll::Pending,
                // Dropping the connection closes it.
                Poll::Ready(stage) if stage >= CLOSE => return Poll::Ready(()),
                Poll::Ready(_) => conn.as_mut().graceful_shutdown(),
            }
        }
    })
    .await;
}

/// A loom model of the stage watch, run by `.ci/run` (only this crate is built with
/// `--cfg loom`). The model runs the watch's poll at every point of `advance`, between its
/// `fetch_max` and its `notify_waiters` included.
#[cfg(all(loom, test))]
mod loom_models {
    use std::future::poll_fn;
    use std::pin::pin;
    use std::sync::Arc;
    use std::task::Poll;

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
                let mut watch = pin!(StageWatch::new(&stage));
                poll_fn(|cx| {
                    loop {
                        match watch.as_mut().poll_stage(cx) {
                            Poll::Ready(seen) if seen >= CLOSE => return Poll::Ready(()),
                            Poll::Ready(_) => continue,
                            Poll::Pending => return Poll::Pending,
                        }
                    }
                })
                .await;
            });
            advancing.join().unwrap();
        });
    }
}

/// Hands hyper's requests to an axum service with axum's [`Body`], as `axum::serve` does
/// (`Body::new` does not box a body twice, so a `Router`, which maps it again, pays nothing).
#[derive(Clone)]
struct AxumBody<S>(S);

impl<S> Service<http::Request<Incoming>> for AxumBody<S>
where
    S: Service<Request>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, request: http::Request<Incoming>) -> Self::Future {
        self.0.call(request.map(Body::new))
    }
}
