//! A client connection's socket, shared between hyper and the handlers that take it away from
//! hyper: a held HTTP/1.1 stream ([`crate::server`] writes it itself) and a WebSocket after its
//! upgrade ([`crate::ws`]).
//!
//! hyper reads the request through [`Shared`]; a handler that takes the socket ([`Cell::take`])
//! leaves hyper reading end-of-file and failing its writes, so hyper's connection ends and frees
//! its buffers. What must live exactly as long as the socket (the connection-cap permit, the
//! descriptor, the drain guard: [`Guards`]) moves with it. The cell also records whether hyper
//! has handed a request on the connection to the service yet, which ends the connection's
//! header timeout.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::sink::{Sink, Wire};

/// What must live exactly as long as a client socket: the connection-cap permit (none on the
/// publish listener), the descriptor (from the client budget, or the publish API's share), the
/// drain guard, and the count of its address's connections (only under a per-address cap).
pub type Guards = (
    Option<tokio::sync::OwnedSemaphorePermit>,
    crate::descriptors::Held,
    crate::shutdown::DrainGuard,
    Option<Box<crate::limiter::PeerGuard>>,
);

/// A client connection's socket, found in the extensions of every request with an `Upgrade`
/// header, for a handler that takes the socket from hyper after an upgrade.
#[derive(Clone)]
pub struct ClientSocket(pub Arc<Cell<Guards>>);

/// A client socket taken from hyper after a WebSocket upgrade.
pub type UpgradedSocket = Upgraded<Guards>;

impl ClientSocket {
    /// Takes the socket back from hyper once it has upgraded the connection to `up` (an
    /// HTTP/1.1 upgrade of this connection), its writes to go through `sink`. `Ok(None)`: the
    /// client has already gone.
    pub fn take_upgraded(
        &self,
        up: hyper::upgrade::Upgraded,
        sink: Arc<Sink>,
    ) -> io::Result<Option<UpgradedSocket>> {
        Upgraded::take(&self.0, up, sink)
    }
}

/// A client connection's socket and what must live exactly as long as it (the connection-cap
/// permit, the descriptor, the drain guard). `S` is the TCP socket, or the TLS session over it,
/// which never leaves hyper.
pub struct Owned<G, S = TcpStream> {
    stream: S,
    guards: G,
}

/// The socket, in hyper's hands until a held stream takes it.
pub struct Cell<G, S = TcpStream> {
    owned: Mutex<Option<Owned<G, S>>>,
    requested: AtomicBool,
}

impl<G, S> Owned<G, S> {
    /// The socket and its guards, for a writer that owns them from now on.
    pub fn into_parts(self) -> (S, G) {
        (self.stream, self.guards)
    }
}

impl<G, S> Cell<G, S> {
    /// A cell holding `stream` and its `guards`.
    pub fn new(stream: S, guards: G) -> Arc<Cell<G, S>> {
        Arc::new(Cell {
            owned: Mutex::new(Some(Owned { stream, guards })),
            requested: AtomicBool::new(false),
        })
    }

    /// Records that a request on this connection has reached the service.
    pub fn mark_requested(&self) {
        self.requested.store(true, Ordering::Relaxed);
    }

    /// Whether a request on this connection has reached the service.
    pub fn was_requested(&self) -> bool {
        self.requested.load(Ordering::Relaxed)
    }

    /// Takes the socket away from hyper; `None` if already taken.
    pub fn take(&self) -> Option<Owned<G, S>> {
        self.lock().take()
    }

    fn lock(&self) -> MutexGuard<'_, Option<Owned<G, S>>> {
        // A panic while a poll held the lock leaves the socket as it was; keep using it.
        self.owned.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// hyper's view of the socket: reads see end-of-file and writes fail once it has been taken.
pub struct Shared<G, S = TcpStream>(pub Arc<Cell<G, S>>);

impl<G, S: AsyncRead + Unpin> AsyncRead for Shared<G, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.0.lock().as_mut() {
            Some(o) => Pin::new(&mut o.stream).poll_read(cx, buf),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl<G, S: AsyncWrite + Unpin> AsyncWrite for Shared<G, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.0.lock().as_mut() {
            Some(o) => Pin::new(&mut o.stream).poll_write(cx, buf),
            None => Poll::Ready(Err(taken())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.0.lock().as_mut() {
            Some(o) => Pin::new(&mut o.stream).poll_write_vectored(cx, bufs),
            None => Poll::Ready(Err(taken())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        // Both a TCP socket and tokio-rustls's TLS stream take vectored writes.
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.0.lock().as_mut() {
            Some(o) => Pin::new(&mut o.stream).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.0.lock().as_mut() {
            Some(o) => Pin::new(&mut o.stream).poll_shutdown(cx),
            // The socket is someone else's now: leave it open.
            None => Poll::Ready(Ok(())),
        }
    }
}

/// A client socket taken back from hyper after a WebSocket upgrade: what hyper had read past
/// the handshake (usually nothing), then the socket itself, with its guards. Reads and writes go
/// straight to the socket instead of through hyper's upgraded-connection wrappers and the
/// shared cell's lock. Writes go through the connection's [`Sink`], so the hub may write
/// published frames to the socket while the connection is idle.
pub struct Upgraded<G> {
    pre: Bytes,
    stream: Arc<TcpStream>,
    sink: Arc<Sink>,
    _guards: G,
}

/// Bytes a client may have sent past its upgrade request before the `101`; a client must wait
/// for the `101` (RFC 6455 §4.1), so more is refused.
const EARLY_DATA_LIMIT: usize = 1 << 20;

impl<G> Upgraded<G> {
    /// Takes the socket of `cell` back from hyper once hyper has upgraded its connection `up`.
    /// What hyper has already read past the request (usually nothing) is drained from `up`
    /// first and replayed before the socket's own bytes; the socket is attached to `sink`.
    /// `Ok(None)`: the client has already closed, or the socket was taken before.
    pub fn take(
        cell: &Cell<G>,
        up: hyper::upgrade::Upgraded,
        sink: Arc<Sink>,
    ) -> io::Result<Option<Upgraded<G>>> {
        let mut up = hyper_util::rt::TokioIo::new(up);
        let mut pre = Vec::new();
        let mut chunk = [0u8; 1024];
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        loop {
            let mut buf = ReadBuf::new(&mut chunk);
            match Pin::new(&mut up).poll_read(&mut cx, &mut buf) {
                Poll::Pending => break,
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Ok(None),
                Poll::Ready(Ok(())) => pre.extend_from_slice(buf.filled()),
                Poll::Ready(Err(e)) => return Err(e),
            }
            if pre.len() > EARLY_DATA_LIMIT {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "client sent over 1 MiB before the 101",
                ));
            }
        }
        Ok(cell.take().map(|owned| {
            let stream = Arc::new(owned.stream);
            sink.attach(Wire::Tcp(stream.clone()), Vec::new());
            Upgraded {
                pre: Bytes::from(pre),
                stream,
                sink,
                _guards: owned.guards,
            }
        }))
    }
}

impl<G> Drop for Upgraded<G> {
    fn drop(&mut self) {
        drop(self.sink.detach());
    }
}

impl<G: Unpin> AsyncRead for Upgraded<G> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre.split_to(n));
            return Poll::Ready(Ok(()));
        }
        loop {
            std::task::ready!(self.stream.poll_read_ready(cx))?;
            match self.stream.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl<G: Unpin> AsyncWrite for Upgraded<G> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.sink.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.sink.poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.as_mut().poll_flush(cx))?;
        drop(self.sink.detach());
        match Arc::get_mut(&mut self.stream) {
            Some(stream) => Pin::new(stream).poll_shutdown(cx),
            // Someone else still holds it; dropping closes the socket.
            None => Poll::Ready(Ok(())),
        }
    }
}

fn taken() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the socket now carries a held stream",
    )
}
