//! The socket of a connection `serve` accepted, which `serve` can still close once hyper has
//! handed it to an upgrade (a WebSocket), where no connection task polls it any more.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use crate::stage::{Stage, StageWatch};

/// A socket that ends once `serve` closes its connections: reads then return end of stream,
/// and writes and flushes fail, so that whatever holds it (hyper's connection, or the
/// handler of an upgrade) stops. Until then it only reads the stage, one atomic, per call.
pub(crate) struct ConnectionIo<I> {
    io: I,
    stage: Arc<Stage>,
    /// Boxed, as a watch is `!Unpin` and hyper wants an `Unpin` socket; one allocation per
    /// connection.
    watches: Pin<Box<Watches>>,
    /// Dropped with the socket: tells the connection task when an upgraded socket is gone.
    _alive: oneshot::Sender<Infallible>,
}

pin_project! {
    /// A watch per direction: the halves of a split socket wait in different tasks, and one
    /// watch keeps one waker.
    struct Watches {
        #[pin]
        read: StageWatch,
        #[pin]
        write: StageWatch,
    }
}

impl<I> ConnectionIo<I> {
    /// Wraps `io`; the receiver completes (with an error) once the socket is dropped.
    pub(crate) fn new(io: I, stage: Arc<Stage>) -> (Self, oneshot::Receiver<Infallible>) {
        let (alive, dropped) = oneshot::channel();
        let watches = Box::pin(Watches {
            read: StageWatch::new(stage.clone()),
            write: StageWatch::new(stage.clone()),
        });
        let io = Self {
            io,
            stage,
            watches,
            _alive: alive,
        };
        (io, dropped)
    }

    /// Whether the stage is the close, registering `cx` on the write watch otherwise.
    fn poll_write_closed(&mut self, cx: &mut Context<'_>) -> bool {
        self.watches
            .as_mut()
            .project()
            .write
            .poll_closed(cx)
            .is_ready()
    }
}

/// What reads and writes of a closed connection's socket fail with.
fn closed_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the server closed this connection: its shutdown's request drain timeout ran out",
    )
}

impl<I> ConnectionIo<I>
where
    I: AsyncWrite + Unpin,
{
    /// Runs a write-side operation unless the connection is closed; when it waits, also waits
    /// for the close.
    fn poll_write_side<T>(
        &mut self,
        cx: &mut Context<'_>,
        operation: impl FnOnce(Pin<&mut I>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if self.stage.is_closed() {
            return Poll::Ready(Err(closed_error()));
        }
        match operation(Pin::new(&mut self.io), cx) {
            Poll::Pending if self.poll_write_closed(cx) => Poll::Ready(Err(closed_error())),
            polled => polled,
        }
    }
}

impl<I> AsyncRead for ConnectionIo<I>
where
    I: AsyncRead + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Nothing read: the end of the stream.
        if this.stage.is_closed() {
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Pending
                if this
                    .watches
                    .as_mut()
                    .project()
                    .read
                    .poll_closed(cx)
                    .is_ready() =>
            {
                Poll::Ready(Ok(()))
            }
            polled => polled,
        }
    }
}

impl<I> AsyncWrite for ConnectionIo<I>
where
    I: AsyncWrite + Unpin,
{
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_side(cx, |io, cx| io.poll_write(cx, buf))
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_side(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_write_side(cx, AsyncWrite::poll_flush)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Shutting down is what a closed connection wants anyway: let it through, so that the
        // peer learns of the close before the socket is dropped.
        match Pin::new(&mut this.io).poll_shutdown(cx) {
            Poll::Pending if this.poll_write_closed(cx) => Poll::Ready(Err(closed_error())),
            polled => polled,
        }
    }
}

impl<I> std::fmt::Debug for ConnectionIo<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionIo")
            .field("io", &std::any::type_name::<I>())
            .field("closed", &self.stage.is_closed())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::future::{Future, poll_fn};
    use std::io::ErrorKind;
    use std::pin::{Pin, pin};
    use std::sync::Arc;
    use std::task::Poll;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::{Notify, oneshot::error::TryRecvError};

    use super::ConnectionIo;
    use crate::stage::{CLOSE, GRACEFUL, Stage};

    /// Polls `future` once, in the calling task: `true` if it is still waiting.
    async fn waits<F: Future>(future: Pin<&mut F>) -> bool {
        let mut future = Some(future);
        poll_fn(|cx| {
            let future = future.take().expect("polled once");
            Poll::Ready(future.poll(cx).is_pending())
        })
        .await
    }

    /// The two halves of a split socket wait in two tasks, one for data that never comes, the
    /// other for room in a full pipe: the close wakes both, the reader with the end of the
    /// stream and the writer with an error. With one watch for both directions, the half that
    /// waited last took the other's place and the reader never woke.
    #[tokio::test(start_paused = true)]
    async fn the_close_wakes_both_halves_of_a_split_socket() {
        let stage = Arc::new(Stage::new());
        // The peer neither reads nor writes: a 64-byte pipe fills at once.
        let (_peer, socket) = tokio::io::duplex(64);
        let (socket, mut dropped) = ConnectionIo::new(socket, stage.clone());
        let (mut read_half, mut write_half) = tokio::io::split(socket);
        let waiting = Arc::new(Notify::new());

        // The reader waits first, then the writer, each in its own task.
        let reader = tokio::spawn({
            let waiting = waiting.clone();
            async move {
                let mut buffer = [0; 16];
                let mut read = pin!(read_half.read(&mut buffer));
                assert!(waits(read.as_mut()).await, "nothing to read");
                waiting.notify_one();
                let read = read.await;
                (read_half, read)
            }
        });
        waiting.notified().await;
        let writer = tokio::spawn({
            let waiting = waiting.clone();
            async move {
                let mut write = pin!(write_half.write_all(&[7; 4096]));
                assert!(waits(write.as_mut()).await, "the pipe is full");
                waiting.notify_one();
                let written = write.await;
                (write_half, written)
            }
        });
        waiting.notified().await;

        stage.advance(GRACEFUL);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !writer.is_finished() && !reader.is_finished(),
            "the graceful stage leaves the socket alone"
        );

        stage.advance(CLOSE);
        let (read_half, read) = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("the close wakes the reader")
            .unwrap();
        assert_eq!(read.unwrap(), 0, "the end of the stream");
        let (write_half, written) = tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .expect("the close wakes the writer")
            .unwrap();
        assert_eq!(written.unwrap_err().kind(), ErrorKind::ConnectionAborted);

        assert_eq!(dropped.try_recv(), Err(TryRecvError::Empty));
        drop(read_half.unsplit(write_half));
        assert!(
            dropped.await.is_err(),
            "the receiver learns that the socket is gone"
        );
    }

    /// A socket with data waiting still reads as ended once closed, and refuses writes: its
    /// holder stops even if its peer keeps it busy.
    #[tokio::test]
    async fn a_closed_socket_reads_as_ended_and_refuses_writes_though_data_waits() {
        let stage = Arc::new(Stage::new());
        let (mut peer, socket) = tokio::io::duplex(1024);
        let (mut socket, _dropped) = ConnectionIo::new(socket, stage.clone());
        peer.write_all(b"more").await.unwrap();
        stage.advance(CLOSE);
        assert_eq!(socket.read(&mut [0; 16]).await.unwrap(), 0);
        assert_eq!(
            socket.write(b"reply").await.unwrap_err().kind(),
            ErrorKind::ConnectionAborted
        );
    }
}
