//! The connections `serve` accepted: one task each, told together to finish gracefully, then
//! to close.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Poll, Waker};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

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
    changed: Notify,
}

impl Stage {
    fn advance(&self, to: u8) {
        // SeqCst, with the load in `serve_connection`: a connection that read the old stage
        // created its `Notified` before this store, and so before `notify_waiters` below,
        // which it will therefore see.
        self.value.fetch_max(to, Ordering::SeqCst);
        self.changed.notify_waiters();
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
            stage: Arc::new(Stage {
                value: AtomicU8::new(SERVING),
                changed: Notify::new(),
            }),
        }
    }

    /// Serves `io` with `router` in a task of its own, as `axum::serve` does.
    pub(crate) fn spawn<I>(&self, io: I, router: Router)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.tracker
            .spawn(serve_connection(io, router, self.stage.clone()));
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

async fn serve_connection<I>(io: I, router: Router, stage: Arc<Stage>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = Builder::new(TokioExecutor::new());
    // The CONNECT protocol, for WebSockets over HTTP/2, as `axum::serve` enables it.
    builder.http2().enable_connect_protocol();
    // `Router` maps the body of each request with `Body::new` itself.
    let service = TowerToHyperService::new(router);
    let mut conn = pin!(builder.serve_connection_with_upgrades(TokioIo::new(io), service));

    // Watching the stage must cost next to nothing per poll, since the connection is polled on
    // every read and write: a `Notified` locks its `Notify` on every poll while it waits, and
    // all connections share this one. So it is polled only to register, and again only if the
    // task's waker changes; otherwise a poll reads one atomic.
    let mut changed = pin!(stage.changed.notified());
    let mut registered: Option<Waker> = None;
    let mut seen = SERVING;
    poll_fn(|cx| {
        loop {
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                if let Err(error) = result {
                    tracing::trace!("connection ended with an error: {error:#}");
                }
                return Poll::Ready(());
            }
            // SeqCst: see `Stage::advance`.
            let current = stage.value.load(Ordering::SeqCst);
            if current == seen {
                if registered
                    .as_ref()
                    .is_some_and(|waker| waker.will_wake(cx.waker()))
                {
                    return Poll::Pending;
                }
                if changed.as_mut().poll(cx).is_pending() {
                    registered = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                // Notified: watch again, and read the stage that caused it.
                changed.set(stage.changed.notified());
                registered = None;
                continue;
            }
            seen = current;
            // A fresh `Notified` before the next read of the stage, for the next change.
            changed.set(stage.changed.notified());
            registered = None;
            if current >= CLOSE {
                // Dropping the connection closes it.
                return Poll::Ready(());
            }
            conn.as_mut().graceful_shutdown();
        }
    })
    .await;
}
