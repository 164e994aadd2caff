//! The connections `serve` accepted: one task each, told together to finish gracefully, then
//! to close; and the sockets they hand to an upgrade, counted until they are dropped.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use background_tasks::TaskSupervisor;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot::error::TryRecvError;
use tokio_util::task::{TaskTracker, task_tracker::TaskTrackerToken};
use tower_service::Service;

use crate::body::AfterResponseBody;
use crate::future::ResponseFuture;
use crate::io::ConnectionIo;
use crate::layer::attach;
use crate::shared::SharedSupervisor;
use crate::stage::{CLOSE, GRACEFUL, Stage, StageWatch};

/// The connection tasks, and the upgraded sockets.
#[derive(Debug)]
pub(crate) struct Connections {
    /// A token per connection that hyper is serving: dropped when the connection closes, or
    /// hands its socket to an upgrade.
    http: TaskTracker,
    /// A token per socket handed to an upgrade (a WebSocket), from the moment the connection
    /// hands it over until the upgrade's handler drops it. Taken before the connection's
    /// `http` token is dropped, so that once `http` is empty no upgraded socket is uncounted.
    upgraded: TaskTracker,
    stage: Arc<Stage>,
    /// What every request gets, through a `BackgroundTasks` extension.
    supervisor: TaskSupervisor,
}

impl Connections {
    pub(crate) fn new(supervisor: TaskSupervisor) -> Self {
        Self {
            http: TaskTracker::new(),
            upgraded: TaskTracker::new(),
            stage: Arc::new(Stage::new()),
            supervisor,
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
        tokio::spawn(serve_connection(
            io,
            AxumService {
                service,
                // One count per connection: see `SharedSupervisor`.
                supervisor: SharedSupervisor::new(self.supervisor.clone()),
            },
            self.stage.clone(),
            self.http.token(),
            self.upgraded.clone(),
        ));
    }

    /// How many connections are open, upgraded ones left out.
    pub(crate) fn len(&self) -> usize {
        self.http.len()
    }

    /// How many sockets handed to an upgrade are still held by their handlers.
    pub(crate) fn upgraded_len(&self) -> usize {
        self.upgraded.len()
    }

    /// Tells every connection to finish its request in flight and close; connections accepted
    /// from now on are told at once. Upgraded sockets are left alone.
    pub(crate) fn shutdown_gracefully(&self) {
        self.http.close();
        self.upgraded.close();
        self.stage.advance(GRACEFUL);
    }

    /// Closes every connection now, dropping the requests in flight; upgraded sockets read
    /// as ended and fail every write from now on.
    pub(crate) fn close(&self) {
        self.http.close();
        self.upgraded.close();
        self.stage.advance(CLOSE);
    }

    /// Resolves once every connection serving HTTP has closed or handed its socket to an
    /// upgrade; only after `shutdown_gracefully` or `close`.
    pub(crate) async fn wait_http(&self) {
        self.http.wait().await;
    }

    /// Resolves once every connection has closed and every upgraded socket has been
    /// dropped; only after `shutdown_gracefully` or `close`.
    pub(crate) async fn wait(&self) {
        // In this order: see `upgraded`.
        self.http.wait().await;
        self.upgraded.wait().await;
    }
}

impl Drop for Connections {
    fn drop(&mut self) {
        // A dropped `serve` future leaves no connection behind, upgraded ones included.
        self.stage.advance(CLOSE);
    }
}

async fn serve_connection<I, S>(
    io: I,
    service: AxumService<S>,
    stage: Arc<Stage>,
    serving: TaskTrackerToken,
    upgraded: TaskTracker,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request, Response = Response, Error = Infallible, Future: Send>
        + Clone
        + Send
        + 'static,
{
    let (io, mut dropped) = ConnectionIo::new(io, stage.clone());
    serve_http(io, service, stage).await;
    // hyper ends the connection once it has handed the socket to an upgrade (axum's
    // `WebSocketUpgrade::on_upgrade` runs the handler in a task of its own): from then on
    // only this task can tell that the socket is still open.
    if dropped.try_recv() == Err(TryRecvError::Empty) {
        let _upgraded = upgraded.token();
        drop(serving);
        // Completes, with an error, once the handler drops the socket.
        let _ = dropped.await;
    }
}

/// Serves HTTP on `io` until the connection closes, hands its socket to an upgrade, or is
/// told to close.
async fn serve_http<I, S>(io: ConnectionIo<I>, service: AxumService<S>, stage: Arc<Stage>)
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
    let service = TowerToHyperService::new(service);
    let mut conn = pin!(builder.serve_connection_with_upgrades(TokioIo::new(io), service));

    let mut watch = pin!(StageWatch::new(stage));
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

/// Hands hyper's requests to an axum service with axum's [`Body`], as `axum::serve` does
/// (`Body::new` does not box a body twice, so a `Router`, which maps it again, pays nothing),
/// and the supervisor with them, as [`BackgroundTasksLayer`](crate::BackgroundTasksLayer)
/// does. Here rather than in the layer of every route: axum wraps each route of a
/// `Router::layer` in a boxed service of its own, which it clones per request, and boxes the
/// response body the layer wraps; hyper takes this body as it is.
#[derive(Clone)]
struct AxumService<S> {
    service: S,
    supervisor: SharedSupervisor,
}

impl<S> Service<http::Request<Incoming>> for AxumService<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response<AfterResponseBody<Body>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.service.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, request: http::Request<Incoming>) -> Self::Future {
        let mut request = request.map(Body::new);
        let guard = attach(&mut request, &self.supervisor);
        ResponseFuture::new(self.service.call(request), guard)
    }
}
