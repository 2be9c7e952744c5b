//! Held HTTP/1.1 streams, written straight to the socket once hyper has parsed the request.
//!
//! hyper keeps an 8 KiB read buffer and an 8 KiB write buffer for every HTTP/1 connection, for
//! as long as the connection lasts. A held stream (SSE, HTTP streaming) can last hours and never
//! carries another request, so that is most of what it costs. So the client socket is shared
//! between hyper and this module ([`Shared`]): hyper reads the request and the handler builds
//! the response as usual; when the response is a held stream on an HTTP/1.1 connection, the
//! socket is taken away from hyper ([`Cell::take`]), hyper's connection ends (its next write
//! finds no socket) and frees its buffers, and [`write`] sends the response head and the
//! stream's chunks itself, gathering whatever is queued into one write. It writes through the
//! stream's [`Sink`], which the hub may also write plain chunks to while the session is idle.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::FutureExt;
use http::header::{CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::hold::HeldStream;
use crate::hub::Sink;
use crate::proxy::body::{Body, BoxError};

/// A client connection's socket and what must live exactly as long as it (the connection-cap
/// permit, the descriptor, the drain guard).
pub struct Owned<G> {
    stream: TcpStream,
    guards: G,
}

/// The socket, in hyper's hands until a held stream takes it.
pub struct Cell<G> {
    owned: Mutex<Option<Owned<G>>>,
}

impl<G> Cell<G> {
    /// A cell holding `stream` and its `guards`.
    pub fn new(stream: TcpStream, guards: G) -> Arc<Cell<G>> {
        Arc::new(Cell {
            owned: Mutex::new(Some(Owned { stream, guards })),
        })
    }

    /// Takes the socket away from hyper; `None` if already taken.
    pub fn take(&self) -> Option<Owned<G>> {
        self.lock().take()
    }

    fn lock(&self) -> MutexGuard<'_, Option<Owned<G>>> {
        // A panic while a poll held the lock leaves the socket as it was; keep using it.
        self.owned.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// hyper's view of the socket: reads see end-of-file and writes fail once it has been taken.
pub struct Shared<G>(pub Arc<Cell<G>>);

impl<G> AsyncRead for Shared<G> {
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

impl<G> AsyncWrite for Shared<G> {
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
            sink.attach(stream.clone(), Vec::new());
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
        self.sink.detach();
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
        self.sink.poll_write(&self.stream, cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.sink.poll_flush(&self.stream, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.as_mut().poll_flush(cx))?;
        self.sink.detach();
        match Arc::get_mut(&mut self.stream) {
            Some(stream) => Pin::new(stream).poll_shutdown(cx),
            // Only a fan-out write in progress still holds it; dropping closes the socket.
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

/// Whether a request's response may be written by [`write`]: HTTP/1.1, and a method whose
/// response has a body (not `HEAD`).
pub fn request_allows<B>(req: &http::Request<B>) -> bool {
    req.version() == http::Version::HTTP_11 && req.method() != http::Method::HEAD
}

/// Whether a response to such a request is written by [`write`]: a held stream with a body.
pub fn eligible(resp: &Response<Body>) -> bool {
    resp.extensions().get::<HeldStream>().is_some()
        && !(resp.status().is_informational()
            || resp.status() == StatusCode::NO_CONTENT
            || resp.status() == StatusCode::NOT_MODIFIED)
}

/// Bytes of queued frames gathered into one write at most (past it, the rest goes in the next).
const GATHER_LIMIT: usize = 64 * 1024;

/// Writes the held stream `resp` to the client: the head, then each chunk of the body with
/// HTTP/1.1 chunked framing, what is queued gathered into one write (up to 64 KiB). The bytes go
/// through the stream's [`Sink`], where the hub may also write plain chunks while the session
/// is idle. Ends when the body ends (with the last chunk), when the body fails (without it, as
/// hyper does), or when the client closes its side. `_count` lives as long as the stream.
pub async fn write<G, C>(owned: Owned<G>, resp: Response<Body>, _count: C) {
    // The guards are released when the stream ends, whichever way.
    let Owned {
        stream,
        guards: _guards,
    } = owned;
    let (parts, mut body) = resp.into_parts();
    let sink = match parts.extensions.get::<HeldStream>() {
        Some(HeldStream(sink)) => sink.clone(),
        None => Sink::new(),
    };
    let mut head_bytes = Vec::with_capacity(256 + parts.headers.len() * 32);
    head(&parts, &mut head_bytes);
    drop(parts);
    let stream = Arc::new(stream);
    sink.attach(stream.clone(), head_bytes);
    let ended = run(&sink, &stream, &mut body).await;
    sink.detach();
    if ended {
        if let Ok(mut stream) = Arc::try_unwrap(stream) {
            let _ = stream.shutdown().await;
        }
    }
}

/// The write loop of [`write`]: true when the body ended and the last chunk was written.
async fn run(sink: &Sink, stream: &TcpStream, body: &mut Body) -> bool {
    // Anything the client sends on a held stream (it cannot be another request) is read and
    // dropped, only so that its closing is seen.
    let mut scratch = [0u8; 64];
    let mut ended = false;
    loop {
        let mut gathered = 0;
        while !ended && gathered < GATHER_LIMIT {
            match body.frame().now_or_never() {
                None => break,
                Some(frame) => match push(frame, sink) {
                    Ok((e, n)) => {
                        ended = e;
                        gathered += n;
                    }
                    Err(()) => return false,
                },
            }
        }
        if sink.flush(stream).await.is_err() {
            return false;
        }
        if ended {
            return true;
        }
        tokio::select! {
            frame = body.frame() => match push(frame, sink) {
                Ok((e, _)) => ended = e,
                Err(()) => return false,
            },
            // The read direction's own waker slot, not a waiter list: that replaces the waker
            // hyper's finished connection task left there, which would otherwise keep its
            // memory alive as long as the stream.
            ready = std::future::poll_fn(|cx| stream.poll_read_ready(cx)) => match ready.and_then(|()| stream.try_read(&mut scratch)) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return false,
            },
            () = sink.notified() => {}
        }
    }
}

/// Appends one polled frame to the sink's unwritten bytes: `Ok((true, _))` when the body has
/// ended (the last chunk is appended), with the data's length; `Err` when it failed.
fn push(frame: Option<Result<Frame<Bytes>, BoxError>>, sink: &Sink) -> Result<(bool, usize), ()> {
    match frame {
        None => {
            sink.append(|out| out.extend_from_slice(b"0\r\n\r\n"));
            Ok((true, 0))
        }
        Some(Ok(frame)) => match frame.into_data() {
            Ok(data) if !data.is_empty() => {
                sink.append(|out| crate::hub::sink::frame(out, &data));
                Ok((false, data.len()))
            }
            _ => Ok((false, 0)),
        },
        Some(Err(e)) => {
            tracing::debug!(error = %e, "held stream failed");
            Err(())
        }
    }
}

/// The status line and headers, as hyper would write them for a chunked response.
fn head(parts: &http::response::Parts, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    let reason = parts
        .extensions
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| r.as_bytes())
        .or_else(|| parts.status.canonical_reason().map(str::as_bytes))
        .unwrap_or_default();
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !parts.headers.contains_key(DATE) {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(httpdate::fmt_http_date(SystemTime::now()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_is_a_chunked_response_with_the_reason_and_headers() {
        let mut resp = Response::builder()
            .status(200)
            .header("content-type", "text/event-stream")
            .header("content-length", "12")
            .header("date", "Tue, 01 Dec 2026 00:00:00 GMT")
            .body(())
            .unwrap();
        resp.extensions_mut()
            .insert(hyper::ext::ReasonPhrase::try_from(b"Fine".to_vec()).unwrap());
        let (parts, ()) = resp.into_parts();
        let mut out = Vec::new();
        head(&parts, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 Fine\r\ncontent-type: text/event-stream\r\n\
             date: Tue, 01 Dec 2026 00:00:00 GMT\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn chunks_are_framed_and_the_end_is_the_last_chunk() {
        let sink = Sink::new();
        let data = Frame::data(Bytes::from(vec![b'x'; 26]));
        assert_eq!(push(Some(Ok(data)), &sink), Ok((false, 26)));
        assert_eq!(
            push(Some(Ok(Frame::data(Bytes::new()))), &sink),
            Ok((false, 0))
        );
        assert_eq!(push(None, &sink), Ok((true, 0)));
        let mut want = b"1a\r\n".to_vec();
        want.extend_from_slice(&[b'x'; 26]);
        want.extend_from_slice(b"\r\n0\r\n\r\n");
        let mut out = Vec::new();
        sink.append(|o| out = std::mem::take(o));
        assert_eq!(out, want);
    }
}
