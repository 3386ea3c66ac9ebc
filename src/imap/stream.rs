//! The byte stream under the IMAP session: plain TCP or TLS, with read and
//! write timeouts.
//!
//! async-imap has no timeouts of its own, so a server that stops answering
//! would hang the session forever. Every read or write that makes no progress
//! for the configured time fails with `ErrorKind::TimedOut`; the session is
//! then dropped and the caller reconnects. IDLE lifts the read timeout for its
//! duration, since the server is silent by design then.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_rustls::client::TlsStream;

/// Plain TCP (before STARTTLS, or `security = "none"` on loopback) or TLS.
#[derive(Debug)]
pub(crate) enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One armed-or-not deadline: armed when an operation first returns
/// `Pending`, disarmed as soon as it makes progress.
struct Deadline {
    sleep: Pin<Box<Sleep>>,
    armed: bool,
}

impl Deadline {
    fn new() -> Self {
        Deadline {
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: false,
        }
    }

    /// Called when the inner operation is pending: errors once the timeout
    /// has passed without progress.
    fn poll_expired(&mut self, cx: &mut Context<'_>, timeout: Duration) -> Poll<io::Error> {
        if !self.armed {
            self.sleep.as_mut().reset(Instant::now() + timeout);
            self.armed = true;
        }
        ready!(self.sleep.as_mut().poll(cx));
        self.armed = false;
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no data for {} s", timeout.as_secs()),
        ))
    }
}

/// A stream whose reads and writes fail with `TimedOut` after a stall.
pub(crate) struct TimeoutStream<S> {
    inner: S,
    read_timeout: Duration,
    write_timeout: Duration,
    read: Deadline,
    write: Deadline,
}

impl<S> TimeoutStream<S> {
    pub(crate) fn new(inner: S, timeout: Duration) -> Self {
        TimeoutStream {
            inner,
            read_timeout: timeout,
            write_timeout: timeout,
            read: Deadline::new(),
            write: Deadline::new(),
        }
    }

    /// Changes the read timeout from the next read on (IDLE lifts it).
    pub(crate) fn set_read_timeout(&mut self, timeout: Duration) {
        self.read_timeout = timeout;
        self.read.armed = false;
    }

    pub(crate) fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for TimeoutStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutStream")
            .field("inner", &self.inner)
            .field("read_timeout", &self.read_timeout)
            .field("write_timeout", &self.write_timeout)
            .finish()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TimeoutStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.read.armed = false;
                Poll::Ready(r)
            }
            Poll::Pending => this.read.poll_expired(cx, this.read_timeout).map(Err),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimeoutStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.write.armed = false;
                Poll::Ready(r)
            }
            Poll::Pending => this.write.poll_expired(cx, this.write_timeout).map(Err),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(r) => {
                this.write.armed = false;
                Poll::Ready(r)
            }
            Poll::Pending => this.write.poll_expired(cx, this.write_timeout).map(Err),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Ready(r) => {
                this.write.armed = false;
                Poll::Ready(r)
            }
            Poll::Pending => this.write.poll_expired(cx, this.write_timeout).map(Err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn stalled_read_times_out() {
        let (client, _server) = tokio::io::duplex(64);
        let mut stream = TimeoutStream::new(client, 50 * MS);
        let mut buf = [0u8; 8];
        let err = stream.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn progress_resets_the_deadline() {
        let (client, mut server) = tokio::io::duplex(64);
        let mut stream = TimeoutStream::new(client, 200 * MS);
        let writer = tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(120 * MS).await;
                server.write_all(b"x").await.unwrap();
            }
            server
        });
        let mut buf = [0u8; 1];
        for _ in 0..3 {
            stream.read_exact(&mut buf).await.unwrap();
        }
        let _server = writer.await.unwrap();
        let err = stream.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn lifted_read_timeout() {
        let (client, mut server) = tokio::io::duplex(64);
        let mut stream = TimeoutStream::new(client, 30 * MS);
        stream.set_read_timeout(2000 * MS);
        let writer = tokio::spawn(async move {
            tokio::time::sleep(150 * MS).await;
            server.write_all(b"y").await.unwrap();
            server
        });
        let mut buf = [0u8; 1];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"y");
        drop(writer.await.unwrap());
    }
}
