//! Helpers shared by the integration tests: an in-memory listener for `serve` (so that paused
//! time drives the whole server), a minimal hyper client, a streaming body, and log capture.
#![allow(dead_code)]

use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{Request, Response};
use bytes::Bytes;
use http_body::Frame;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::sync::mpsc;

/// The body of `response` as text.
pub(crate) async fn text<B>(response: Response<B>) -> String
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let bytes = axum::body::to_bytes(Body::new(response.into_body()), usize::MAX)
        .await
        .expect("the body is read");
    String::from_utf8(bytes.to_vec()).expect("the body is UTF-8")
}

/// A request with an empty body.
pub(crate) fn request(method: &str, uri: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .expect("a valid request")
}

/// A listener whose connections are in-memory pipes, handed over by a [`Connector`].
pub(crate) struct MemoryListener {
    incoming: mpsc::UnboundedReceiver<DuplexStream>,
}

/// Opens connections to a [`MemoryListener`].
#[derive(Clone)]
pub(crate) struct Connector {
    outgoing: mpsc::UnboundedSender<DuplexStream>,
}

pub(crate) fn memory_listener() -> (MemoryListener, Connector) {
    let (outgoing, incoming) = mpsc::unbounded_channel();
    (MemoryListener { incoming }, Connector { outgoing })
}

impl axum::serve::Listener for MemoryListener {
    type Io = DuplexStream;
    type Addr = ();

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(io) => (io, ()),
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(())
    }
}

impl Connector {
    /// A new connection, or `None` once the listener is gone.
    pub(crate) fn connect(&self) -> Option<DuplexStream> {
        let (client, server) = tokio::io::duplex(64 * 1024);
        self.outgoing.send(server).ok()?;
        Some(client)
    }
}

/// An HTTP/1 client connection over `io`.
pub(crate) async fn client<I>(io: I) -> hyper::client::conn::http1::SendRequest<Body>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("the handshake succeeds");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
}

/// Sends one request over a fresh connection.
pub(crate) async fn send<I>(
    io: I,
    request: Request<Body>,
) -> Result<Response<Incoming>, hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut sender = client(io).await;
    sender.send_request(request).await
}

/// A response body whose frames the test sends one by one.
pub(crate) struct ChannelBody {
    frames: mpsc::UnboundedReceiver<Bytes>,
}

pub(crate) fn channel_body() -> (mpsc::UnboundedSender<Bytes>, ChannelBody) {
    let (sender, frames) = mpsc::unbounded_channel();
    (sender, ChannelBody { frames })
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.frames
            .poll_recv(cx)
            .map(|frame| frame.map(|data| Ok(Frame::data(data))))
    }
}

/// Collects what is logged on this thread while the guard lives.
pub(crate) struct Logs {
    buffer: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Logs {
    pub(crate) fn capture() -> Self {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || SharedWriter(writer.clone()))
            .finish();
        Self {
            buffer,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    pub(crate) fn contents(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().expect("not poisoned")).into_owned()
    }
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl Write for SharedWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("not poisoned")
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An HTTP/2 client connection over `io`; clone the sender for more streams on it.
pub(crate) async fn client_h2<I>(io: I) -> hyper::client::conn::http2::SendRequest<Body>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(io),
    )
    .await
    .expect("the handshake succeeds");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
}
