//! Held HTTP/1.1 streams, written straight to the socket once hyper has parsed the request.
//!
//! hyper keeps an 8 KiB read buffer and an 8 KiB write buffer for every HTTP/1 connection, for
//! as long as the connection lasts. A held stream (SSE, HTTP streaming) can last hours and never
//! carries another request, so that is most of what it costs. So the client socket is shared
//! between hyper and this module ([`Shared`](crate::socket::Shared)): hyper reads the request and the handler builds
//! the response as usual; when the response is a held stream on an HTTP/1.1 connection, the
//! socket is taken away from hyper ([`Cell::take`](crate::socket::Cell::take)), hyper's connection ends (its next write
//! finds no socket) and frees its buffers, and [`write`] sends the response head and the
//! stream's chunks itself, gathering whatever is queued into one write. It writes through the
//! stream's [`Sink`], which the hub may also write plain chunks to while the session is idle.
//!
//! Over TLS the same happens to the TLS session: hyper's buffers and `tokio-rustls`'s wrapper
//! go, and the sink keeps the TCP socket and rustls's record state ([`Wire`]), so a held stream
//! over TLS costs what one in plaintext does plus rustls's own state.

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::http::{says_close, Body, BoxError, Later};
use crate::sink::{
    date_line, header_lines, status_line, AnsweredByHub, HeldStream, Input, Sink, Wire,
};
use crate::socket::{Cell, Guards};

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
/// is idle. Ends when the body ends (with the last chunk, then TLS `close_notify`), when the
/// body fails (without it, as hyper does), or when the client closes its side. `_count` lives
/// as long as the stream, and so do `_guards` (the socket's permit, descriptor and drain guard).
///
/// It takes the socket as a [`Wire`], not as the stream it was: an `async fn` keeps room for its
/// arguments for its whole life, and a `tokio-rustls` stream is 1.2 KiB.
pub async fn write<G, C>(wire: Wire, _guards: G, resp: Response<Body>, _count: C) {
    let (parts, mut body) = resp.into_parts();
    let sink = match parts.extensions.get::<HeldStream>() {
        Some(HeldStream(sink)) => sink.clone(),
        None => Sink::new(),
    };
    let mut head_bytes = Vec::with_capacity(256 + parts.headers.len() * 32);
    head(&parts, &mut head_bytes);
    drop(parts);
    // The writer's own handle on the socket, to wait until it can be read.
    let tcp = wire.tcp().clone();
    sink.attach(wire, head_bytes);
    let ended = run(&sink, &tcp, &mut body).await;
    drop(tcp);
    if ended {
        let _ = sink.shutdown().await;
    }
    drop(sink.detach());
}

/// The write loop of [`write`]: true when the body ended and the last chunk was written.
async fn run(sink: &Sink, tcp: &TcpStream, body: &mut Body) -> bool {
    // A client may have left before the stream was taken from hyper.
    if !matches!(sink.read_input(), Ok(Input::Open)) {
        return false;
    }
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
        if sink.flush().await.is_err() {
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
            // Anything the client sends on a held stream (it cannot be another request) is
            // read and dropped, only so that its closing is seen.
            ready = std::future::poll_fn(|cx| tcp.poll_read_ready(cx)) => match ready.and_then(|()| sink.read_input()) {
                Ok(Input::Open) => {}
                Ok(Input::Closed) | Err(_) => return false,
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
                sink.append(|out| crate::sink::frame(out, &data));
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

/// Whether the connection of `req` may carry another request after this one's response (an
/// HTTP/1.1 request without `Connection: close`).
pub fn keeps_alive<B>(req: &http::Request<B>) -> bool {
    !says_close(req.headers())
}

/// Answers a held long-poll with the socket out of hyper's hands. The hold's future (`held`, from
/// [`crate::http::Deferred`]) runs in this task while the socket is watched for the client
/// leaving (which drops the hold and its subscriptions); its response is written whole, with a
/// `content-length`, and then the connection is served by hyper again, with fresh buffers, for
/// the client's next request — unless the request or the response said `Connection: close`,
/// or shutdown has begun, which close it instead.
///
/// With a `sink` ([`crate::sink::HeldAnswer`]) on a connection that stays open, the socket is
/// attached to it while the hold waits, so that the hub can write a plain published answer
/// itself, as it writes plain chunks to held streams ([`crate::sink`]): the hold then returns a
/// response marked [`AnsweredByHub`], and only what the socket did not take at once is left to
/// write.
///
/// A client that pipelined its next request behind a held one is not supported: hyper may have
/// read part of it before the socket left it.
pub async fn answer_later(
    stream: TcpStream,
    guards: Guards,
    held: Later,
    keep_alive: bool,
    conn: super::Conn,
    sink: Option<std::sync::Arc<Sink>>,
) {
    let waiting = LongPollCount::new(&conn.app);
    let stream = std::sync::Arc::new(stream);
    let sink = sink.filter(|_| keep_alive);
    if let Some(sink) = &sink {
        sink.attach(Wire::Tcp(stream.clone()), Vec::new());
    }
    let resp = tokio::select! {
        resp = held => resp,
        () = client_left(&stream) => {
            drop(sink.map(|s| s.detach()));
            return;
        }
    };
    drop(waiting);
    if resp.extensions().get::<AnsweredByHub>().is_some() {
        // The access log's body: ended, not written.
        let _ = resp.into_body().collect().await;
        // Only an attached sink is answered by the hub.
        let Some(sink) = sink else { return };
        let flushed = sink.flush().await;
        drop(sink.detach());
        let Ok(stream) = std::sync::Arc::try_unwrap(stream) else {
            return;
        };
        if flushed.is_ok() {
            serve_next(stream, guards, conn).await;
        }
        return;
    }
    drop(sink.and_then(|s| s.detach()));
    let Ok(mut stream) = std::sync::Arc::try_unwrap(stream) else {
        return;
    };
    let keep_alive = keep_alive && !says_close(resp.headers()) && !conn.app.shutdown.is_announced();
    let (parts, body) = resp.into_parts();
    let bodiless = parts.status.is_informational()
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED;
    let body = match body.collect().await {
        Ok(b) if !bodiless => b.to_bytes(),
        Ok(_) => Bytes::new(),
        Err(e) => {
            tracing::debug!(error = %e, "held response failed");
            return;
        }
    };
    let mut out = Vec::with_capacity(256 + parts.headers.len() * 32 + body.len());
    head_lines(&parts, &mut out);
    drop(parts);
    if !bodiless {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    drop(body);
    if stream.write_all(&out).await.is_err() {
        return;
    }
    drop(out);
    if !keep_alive {
        let _ = stream.shutdown().await;
        return;
    }
    serve_next(stream, guards, conn).await;
}

/// Serves the client's next request on a connection whose held long-poll was answered; closes
/// it instead once shutdown has begun.
async fn serve_next(mut stream: TcpStream, guards: Guards, conn: super::Conn) {
    if conn.app.shutdown.is_announced() {
        let _ = stream.shutdown().await;
        return;
    }
    // The header timeout for the next request runs from the end of this response, not from
    // when the hold began (which may be longer ago than the timeout itself).
    let mut conn = conn;
    conn.deadline = crate::deadline::after(super::head_timeout(&conn.app, conn.kind));
    // Boxed as a trait object: the connection's own future contains this one.
    let again: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
        Box::pin(super::serve_connection(Cell::new(stream, guards), conn));
    again.await;
}

/// Counts a long-poll in `holdfast_direct_long_polls` while it waits.
struct LongPollCount<'a>(&'a crate::app::App);

impl<'a> LongPollCount<'a> {
    fn new(app: &'a crate::app::App) -> Self {
        app.direct_long_polls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        LongPollCount(app)
    }
}

impl Drop for LongPollCount<'_> {
    fn drop(&mut self) {
        self.0
            .direct_long_polls
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Resolves when the client has closed its side (or the socket failed). Bytes it sends ahead
/// are left unread, for hyper; after them, closing can no longer be seen, and this waits forever.
///
/// `poll_peek`, not `peek`: `peek` waits in the socket's list of waiters, so the waker that
/// hyper's finished connection task left in the socket's read slot would stay there and keep
/// that task's memory (~2 KiB) alive for as long as the long-poll is held; `poll_peek` waits in
/// the read slot itself, replacing it.
async fn client_left(stream: &TcpStream) {
    let mut byte = [0u8; 1];
    let mut buf = tokio::io::ReadBuf::new(&mut byte);
    match std::future::poll_fn(|cx| stream.poll_peek(cx, &mut buf)).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

/// The status line and headers, as hyper would write them for a chunked response.
fn head(parts: &http::response::Parts, out: &mut Vec<u8>) {
    head_lines(parts, out);
    out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
}

/// The status line, the headers but the body's framing, and a `date` if there is none.
fn head_lines(parts: &http::response::Parts, out: &mut Vec<u8>) {
    let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>();
    status_line(parts.status, reason.map(|r| r.as_bytes()), out);
    if !header_lines(&parts.headers, out) {
        date_line(out);
    }
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
