//! A client socket as the hub sees it, so that a publish can be written to an idle connection
//! by the fan-out itself, without a trip through the connection's queue and task: a held
//! HTTP/1.1 stream (the hub writes a chunk), a WebSocket taken back from hyper (the hub writes
//! a frame) or a held HTTP/1.1 long-poll waiting outside hyper (the hub writes the whole
//! answer, once: [`Sink::answering`]).
//!
//! Three parties write to one socket: the connection's writer (`server::direct` for a stream:
//! the response head, the session's output; the WebSocket framer, through [`Sink::poll_write`],
//! for a WebSocket), the session (which says when it is idle), and the hub's fan-out. One mutex
//! per connection orders them:
//!
//! - everything the session has produced and the socket has not yet taken is in `State::out`,
//!   appended frame by frame while the writer gathers, so no byte is ever held outside the lock;
//! - the session marks itself idle (under the lock) only when it waits with its queue empty and
//!   nothing of its own to send; the hub clears that mark, under the same lock, whenever it
//!   queues an item instead of writing it;
//! - the hub writes a chunk itself only to a stream that is idle, has nothing unwritten and no
//!   other chunk reserved. It reserves the stream under its channel's lock and writes it soon
//!   after, from a fan-out task; until then the writer does not write, so whatever the session
//!   produces meanwhile goes out after the reserved chunk;
//! - a WebSocket framer may hold part of a frame the socket did not take ([`State::tail`]);
//!   until it has written all it holds, the hub writes nothing, so frames never interleave.
//!
//! So a connection gets its bytes in the order the hub published them, whichever way each went.
//!
//! A long-poll is answered once. The hold parks its sink while it waits with nothing queued and
//! nothing of its own to apply; a reservation then makes the sink busy for good, so every later
//! item is queued. Before the hold answers by itself (an item through its queue, the timeout,
//! a retry) it claims the sink ([`Sink::claim`]): either the hub has it, and the hold waits for
//! the write ([`Sink::answered`]), or no reservation can come any more.
//!
//! Which items the hub may write itself is decided here too ([`plain_chunk`], [`plain_ws_frame`]),
//! with the wire encoders ([`chunk`], [`frame`], [`ws_frame`]) and the [`HeldStream`] marker a
//! held session's response carries to the server: the hub holds state and shared bytes, this
//! module the wire formats. The socket itself is a [`Wire`]: a TCP socket, or a TLS session on
//! one, whose records are made under the same lock.

mod wire;

pub use wire::{Input, Wire};

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use grip::publish::{Action, MessageType, PublishItem, ResponseBody};
use http::{HeaderMap, StatusCode};
use tokio::sync::Notify;
use tokio::time::Instant;

/// A held stream's socket, shared by its writer, its session and the hub; or a held long-poll's,
/// shared by the server's waiting task, the hold and the hub ([`Sink::answering`]).
#[derive(Default)]
pub struct Sink {
    state: Mutex<State>,
    /// Wakes the writer: a fan-out left bytes behind, or released its reservation.
    notify: Notify,
}

#[derive(Default)]
struct State {
    /// The socket, once the writer has it and until the stream ends.
    wire: Option<Wire>,
    /// Bytes not yet written, in order.
    out: Vec<u8>,
    /// The session waits with nothing queued and would pass a plain chunk through unchanged.
    idle: bool,
    /// A fan-out task will write the next chunk.
    reserved: bool,
    /// When the fan-out last wrote here (the session's idle keep-alive counts it as traffic).
    last_write: Option<Instant>,
    /// The WebSocket framer holds bytes the socket has not taken (its last write was partial
    /// or would block): they may end in the middle of a frame.
    tail: bool,
    /// The WebSocket framer's write, waiting for a reservation or for `out` to be written.
    waker: Option<Waker>,
    /// A held long-poll's part of its answer, and whether the hub wrote it (boxed: streams and
    /// WebSockets keep a pointer's room for it).
    answering: Option<Box<Answering>>,
}

/// What the fan-out needs to answer a held long-poll itself, besides the item.
struct Answering {
    /// The hold's header lines, each ending in CRLF: no status line, no framing.
    head: Box<[u8]>,
    /// `head` has a `date` line (the origin's), so the answer gets no fresh one.
    dated: bool,
    /// What the hub answered (status and body), once it has written it.
    answered: Option<(StatusCode, Bytes)>,
}

/// What a fan-out writes to the connections it reserved.
#[derive(Clone)]
pub enum Payload {
    /// The same bytes to each (an HTTP/1.1 chunk, a WebSocket frame).
    Bytes(Bytes),
    /// A held long-poll's whole answer: the shared parts, around each hold's own header lines.
    Answer(Arc<PlainAnswer>),
}

/// The shared parts of a published `http-response` a held long-poll answers with unchanged
/// ([`plain_answer`]).
pub struct PlainAnswer {
    status: StatusCode,
    /// The status line.
    lead: Vec<u8>,
    /// A `date` line, then the `content-length` line and the blank line; `date_len` is the
    /// length of the first.
    framing: Vec<u8>,
    date_len: usize,
    body: Bytes,
}

/// Who answers a held long-poll, as [`Sink::claim`] finds it.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// The hold: the hub has not written to it, and will not.
    Hold,
    /// The hub has written the answer, or is about to ([`Sink::answered`] waits for it).
    Hub,
}

/// What [`Sink::offer`] did with an item.
pub enum Offer<R> {
    /// The stream is reserved: write the chunk with [`Sink::write_reserved`].
    Reserved,
    /// The item went through the connection's queue (the closure's result).
    Queued(R),
}

impl Sink {
    /// A sink with no socket yet: until one is attached every item is queued.
    pub fn new() -> Arc<Sink> {
        Arc::new(Sink::default())
    }

    /// A held long-poll's sink, whose answer the fan-out may write itself once a socket is
    /// attached and the hold parks: a published plain `http-response` ([`plain_answer`]) with
    /// the hold's header lines `head` ([`header_lines`]; `dated` when they have a `date`).
    pub fn answering(head: Vec<u8>, dated: bool) -> Arc<Sink> {
        let sink = Sink::default();
        sink.lock().answering = Some(Box::new(Answering {
            head: head.into_boxed_slice(),
            dated,
            answered: None,
        }));
        Arc::new(sink)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent; a panic elsewhere does not matter.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    // --- the hub's side

    /// Reserves the stream for a chunk the fan-out will write when `direct` (the item is a plain
    /// chunk) and the stream is idle; otherwise runs `queue` (the queue send) under the lock and
    /// marks the stream busy, so that no later chunk overtakes the queued item.
    pub fn offer<R>(&self, direct: bool, queue: impl FnOnce() -> R) -> Offer<R> {
        let mut st = self.lock();
        let quiet = st.wire.as_ref().is_some_and(|w| !w.is_pending());
        if direct && st.idle && !st.reserved && !st.tail && st.out.is_empty() && quiet {
            st.reserved = true;
            // A long-poll is answered once: later items are queued (and dropped with the hold).
            if st.answering.is_some() {
                st.idle = false;
            }
            return Offer::Reserved;
        }
        st.idle = false;
        Offer::Queued(queue())
    }

    /// Writes the payload of a reservation: what the socket does not take at once is left, in
    /// front of anything queued since, for the writer to send.
    pub fn write_reserved(&self, payload: &Payload, now: Instant) {
        let mut st = self.lock();
        let st = &mut *st;
        st.reserved = false;
        st.last_write = Some(now);
        let answer;
        let parts: &[&[u8]] = match (payload, &mut st.answering) {
            (Payload::Bytes(bytes), _) => &[bytes],
            (Payload::Answer(a), Some(ours)) => {
                ours.answered = Some((a.status, a.body.clone()));
                let date = if ours.dated { a.date_len } else { 0 };
                answer = [&a.lead[..], &ours.head, &a.framing[date..], &a.body];
                &answer
            }
            // Only a long-poll's sink is offered an answer.
            (Payload::Answer(_), None) => &[],
        };
        let total = parts.iter().map(|p| p.len()).sum::<usize>();
        let written = match st.wire.as_mut().map(|w| w.try_write_vectored(parts)) {
            Some(Ok(n)) => n,
            Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => 0,
            // The client is gone; its writer finds out by itself.
            Some(Err(_)) | None => total,
        };
        if written < total {
            let mut rest = Vec::with_capacity(total - written + st.out.len());
            let mut skip = written;
            for part in parts {
                rest.extend_from_slice(&part[skip.min(part.len())..]);
                skip = skip.saturating_sub(part.len());
            }
            rest.append(&mut st.out);
            st.out = rest;
        }
        if let Some(waker) = st.waker.take() {
            waker.wake();
        }
        // A long-poll's hold is woken by `answered_wake`, once the whole batch is written.
        if st.answering.is_none()
            && (!st.out.is_empty() || st.wire.as_ref().is_some_and(Wire::is_pending))
        {
            self.notify.notify_one();
        }
    }

    /// Wakes a long-poll's hold after [`Sink::write_reserved`] wrote its answer.
    pub fn answered_wake(&self) {
        self.notify.notify_one();
    }

    // --- a held long-poll's side

    /// The hold has something to do by itself (an item came through its queue, its timeout,
    /// a retry): from now on the hub queues everything, unless it has already taken the
    /// answer ([`Claim::Hub`]).
    pub fn claim(&self) -> Claim {
        let mut st = self.lock();
        let hub = st.reserved || st.answering.as_ref().is_some_and(|a| a.answered.is_some());
        st.idle = false;
        if hub {
            Claim::Hub
        } else {
            Claim::Hold
        }
    }

    /// Resolves once the hub has written the long-poll's answer, with its status and body.
    pub async fn answered(&self) -> (StatusCode, Bytes) {
        loop {
            if let Some(answered) =
                (self.lock().answering.as_ref()).and_then(|a| a.answered.clone())
            {
                return answered;
            }
            self.notify.notified().await;
        }
    }

    // --- the session's side

    /// The session is about to wait: idle when `queue_empty` says nothing is queued (a
    /// long-poll's only until it is answered).
    pub fn park(&self, queue_empty: impl FnOnce() -> bool) {
        let mut st = self.lock();
        let answered = st.answering.as_ref().is_some_and(|a| a.answered.is_some());
        st.idle = !answered && queue_empty();
    }

    /// The session woke up and may produce output.
    pub fn unpark(&self) {
        self.lock().idle = false;
    }

    /// When the fan-out last wrote to this stream.
    pub fn last_write(&self) -> Option<Instant> {
        self.lock().last_write
    }

    // --- the writer's side

    /// Gives the sink its socket, with `head` (the response head) as the first bytes to send.
    pub fn attach(&self, wire: Wire, head: Vec<u8>) {
        let mut st = self.lock();
        st.wire = Some(wire);
        st.out = head;
    }

    /// The stream has ended: no more writes here. Returns the socket.
    pub fn detach(&self) -> Option<Wire> {
        let mut st = self.lock();
        st.idle = false;
        st.tail = false;
        st.waker = None;
        st.out = Vec::new();
        st.wire.take()
    }

    /// Reads what the client sent and drops it (a held stream carries no other request),
    /// so that its closing is seen; call it when the socket is readable.
    pub fn read_input(&self) -> io::Result<Input> {
        match self.lock().wire.as_mut() {
            Some(wire) => wire.read_input(),
            None => Ok(Input::Closed),
        }
    }

    /// Appends bytes for the client (under the lock, so the hub sees them as unwritten).
    pub fn append(&self, f: impl FnOnce(&mut Vec<u8>)) {
        f(&mut self.lock().out);
    }

    /// Writes everything unwritten, waiting for the socket or for a reservation to be written
    /// first.
    pub async fn flush(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// Sends `close_notify` over TLS, and shuts the socket's sending side, once no reservation
    /// is pending and everything unwritten is out.
    pub async fn shutdown(&self) -> io::Result<()> {
        if let Some(wire) = self.lock().wire.as_mut() {
            wire.close_notify();
        }
        self.flush().await?;
        match self.detach() {
            Some(wire) => {
                let tcp = wire.tcp().clone();
                drop(wire);
                match Arc::try_unwrap(tcp) {
                    Ok(mut tcp) => tokio::io::AsyncWriteExt::shutdown(&mut tcp).await,
                    // Someone still holds the socket; dropping it closes it.
                    Err(_) => Ok(()),
                }
            }
            None => Ok(()),
        }
    }

    /// Resolves when a fan-out has left bytes for the writer.
    pub async fn notified(&self) {
        self.notify.notified().await
    }

    // --- the WebSocket framer's side: its socket writes come here; `poll_flush` also serves
    // the writer's `flush`

    /// Writes what the WebSocket framer gives, once a reservation is written and what the hub
    /// left behind has gone out first.
    pub fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut st = self.lock();
        if let Err(e) = std::task::ready!(self.poll_drain(&mut st, cx)) {
            return Poll::Ready(Err(e));
        }
        let st = &mut *st;
        let Some(wire) = st.wire.as_mut() else {
            return Poll::Ready(Err(gone()));
        };
        loop {
            match wire.try_write(buf) {
                Ok(n) => {
                    st.tail = n < buf.len();
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    st.tail = true;
                    std::task::ready!(wire.tcp().poll_write_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Writes everything unwritten (what the writer appended, or what a fan-out left behind),
    /// after a reservation ahead of it.
    pub fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.lock();
        if st.out.is_empty() && !st.wire.as_ref().is_some_and(Wire::is_pending) {
            return Poll::Ready(Ok(()));
        }
        self.poll_drain(&mut st, cx)
    }

    /// Ready once no reservation is pending and `out` is written (idle between messages, a
    /// connection keeps no buffer).
    fn poll_drain(&self, st: &mut State, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if st.reserved {
            st.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let Some(wire) = st.wire.as_mut() else {
            // The stream has ended; what was left is dropped with it.
            return Poll::Ready(if st.out.is_empty() {
                Ok(())
            } else {
                Err(gone())
            });
        };
        loop {
            // Records already made go first (TLS), then what is unwritten.
            let written = if wire.is_pending() {
                wire.send_pending().map(|()| None)
            } else if !st.out.is_empty() {
                wire.try_write(&st.out).map(Some)
            } else {
                return Poll::Ready(Ok(()));
            };
            match written {
                Ok(None) => {}
                Ok(Some(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(Some(n)) if n == st.out.len() => st.out = Vec::new(),
                Ok(Some(n)) => drop(st.out.drain(..n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::task::ready!(wire.tcp().poll_write_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// The error of a write to a sink whose stream has ended.
fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the stream has ended")
}

/// Appends `data` to `out` as one HTTP/1.1 chunk: the size line, the data and the line end.
pub fn frame(out: &mut Vec<u8>, data: &[u8]) {
    use std::io::Write as _;
    out.reserve(data.len() + 20);
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends the status line of an HTTP/1.1 response: `reason`, or the status's own.
pub fn status_line(status: StatusCode, reason: Option<&[u8]>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    let reason = reason.or_else(|| status.canonical_reason().map(str::as_bytes));
    out.extend_from_slice(reason.unwrap_or_default());
    out.extend_from_slice(b"\r\n");
}

/// Appends the header lines of a response but its framing (`content-length`,
/// `transfer-encoding`, `connection`, which the writer sets); true when there is a `date`.
pub fn header_lines(headers: &HeaderMap, out: &mut Vec<u8>) -> bool {
    use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
    for (name, value) in headers {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING || name == CONNECTION {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    headers.contains_key(http::header::DATE)
}

/// Appends a `date` line for now.
pub fn date_line(out: &mut Vec<u8>) {
    out.extend_from_slice(b"date: ");
    out.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The status and body of an answer a held long-poll sends unchanged, as the hub writes it: an
/// `http-response` send with no headers, no reason, no content filters and a body that is not
/// a patch, with a status that has a body. (Whether the hold would send it unchanged, with no
/// position or filter of its own, is the hold's to say when it parks.) Cheap: the bytes are
/// made by [`PlainAnswer::new`], once a hold is reserved for them.
pub fn plain_answer(item: &PublishItem) -> Option<(StatusCode, Bytes)> {
    let f = item.formats.http_response.as_ref()?;
    let unfiltered = f.content_filters.as_ref().is_none_or(|c| c.is_empty());
    if f.action != Action::Send || !f.headers.is_empty() || f.reason.is_some() || !unfiltered {
        return None;
    }
    let body = match &f.body {
        ResponseBody::Empty => Bytes::new(),
        ResponseBody::Bytes(b) => b.clone(),
        ResponseBody::Patch(_) => return None,
    };
    let status = StatusCode::from_u16(f.code).ok()?;
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    (!bodiless).then_some((status, body))
}

impl PlainAnswer {
    /// The shared parts of an answer with `status` and `body` ([`plain_answer`]), dated now.
    pub fn new(status: StatusCode, body: Bytes) -> PlainAnswer {
        let mut lead = Vec::with_capacity(24);
        status_line(status, None, &mut lead);
        let mut framing = Vec::with_capacity(64);
        date_line(&mut framing);
        let date_len = framing.len();
        framing.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
        PlainAnswer {
            status,
            lead,
            framing,
            date_len,
            body,
        }
    }
}

/// An item's `http-stream` content as the chunk the hub writes.
pub fn chunk(content: &[u8]) -> Bytes {
    let mut out = Vec::new();
    frame(&mut out, content);
    Bytes::from(out)
}

/// An item's `ws-message` content as the (unmasked, server-to-client) frame the hub writes;
/// `None` for text that is not UTF-8, which the session drops instead.
pub fn ws_frame(content: &Bytes, binary: bool) -> Option<Bytes> {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    if !binary && std::str::from_utf8(content).is_err() {
        return None;
    }
    let opcode = OpCode::Data(if binary { Data::Binary } else { Data::Text });
    let frame = Frame::message(content.clone(), opcode, true);
    let mut out = Vec::with_capacity(frame.len());
    frame.format(&mut out).ok()?;
    Some(Bytes::from(out))
}

/// On a held long-poll's placeholder response ([`crate::http::Deferred`]): the sink the hub
/// may answer it through, once the server attaches the socket.
#[derive(Clone)]
pub struct HeldAnswer(pub Arc<Sink>);

/// Marks the response a held long-poll returns when the hub has written its answer (status and
/// body as written, for the access log): the server sends nothing more of it.
#[derive(Clone, Copy)]
pub struct AnsweredByHub;

/// Marks a response whose body is a held session (a stream hold, or a chain of next links):
/// on HTTP/1.1 the server writes it to the socket itself instead of through hyper, through the
/// session's sink, which the hub may also write plain chunks to.
#[derive(Clone)]
pub struct HeldStream(pub Arc<Sink>);

/// The content of an item a held stream passes through unchanged: an `http-stream` send with
/// content and no filters, and no id or `prev-id` for the session to track.
pub fn plain_chunk(item: &PublishItem) -> Option<&[u8]> {
    if item.id.is_some() || item.prev_id.is_some() {
        return None;
    }
    let f = item.formats.http_stream.as_ref()?;
    let unfiltered = f.content_filters.as_ref().is_none_or(|c| c.is_empty());
    (f.action == Action::Send && !f.content.is_empty() && unfiltered).then_some(&f.content[..])
}

/// The frame of an item a WebSocket session passes through unchanged: a `ws-message` text or
/// binary send with no filters.
pub fn plain_ws_frame(item: &PublishItem) -> Option<Bytes> {
    let f = item.formats.ws_message.as_ref()?;
    let unfiltered = f.content_filters.as_ref().is_none_or(|c| c.is_empty());
    let binary = match f.message_type {
        MessageType::Text => false,
        MessageType::Binary => true,
        MessageType::Ping | MessageType::Pong => return None,
    };
    (f.action == Action::Send && unfiltered)
        .then(|| ws_frame(&f.content, binary))
        .flatten()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::Wake;

    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// A connected pair: the server side in a sink, attached and idle, and the client side.
    async fn idle_sink() -> (Arc<Sink>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let server = listener.accept().await.unwrap().0;
        let sink = Sink::new();
        sink.attach(Wire::from(server), Vec::new());
        sink.park(|| true);
        (sink, client)
    }

    async fn read_exactly(client: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut got = vec![0; n];
        client.read_exact(&mut got).await.unwrap();
        got
    }

    /// A long-poll's sink, attached and parked, and the client side.
    async fn answering_sink(head: &[u8], dated: bool) -> (Arc<Sink>, TcpStream) {
        let (plain, client) = idle_sink().await;
        let sink = Sink::answering(head.to_vec(), dated);
        sink.attach(plain.detach().unwrap(), Vec::new());
        sink.park(|| true);
        (sink, client)
    }

    fn answer(body: &str) -> Payload {
        let item = grip::publish::parse_publish_item(&serde_json::json!({
            "channel": "c", "formats": {"http-response": {"body": body}}
        }))
        .unwrap();
        let (status, body) = plain_answer(&item).expect("a plain answer");
        Payload::Answer(Arc::new(PlainAnswer::new(status, body)))
    }

    #[tokio::test]
    async fn the_hub_answers_a_long_poll_once_with_its_head_and_a_date() {
        let (sink, mut client) = answering_sink(b"x-a: 1\r\n", false).await;
        assert!(matches!(sink.offer(true, || ()), Offer::Reserved));
        // Until the answer is written, and after, later items are queued.
        assert!(matches!(sink.offer(true, || ()), Offer::Queued(())));
        assert_eq!(sink.claim(), Claim::Hub);
        sink.write_reserved(&answer("hello"), Instant::now());
        sink.answered_wake();
        assert_eq!(
            sink.answered().await,
            (StatusCode::OK, Bytes::from_static(b"hello"))
        );
        sink.park(|| true);
        assert!(matches!(sink.offer(true, || ()), Offer::Queued(())));
        let mut got = Vec::new();
        while !got.ends_with(b"hello") {
            let mut buf = [0u8; 256];
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8(got).unwrap();
        let (head, date) = text.split_once("date: ").unwrap();
        assert_eq!(head, "HTTP/1.1 200 OK\r\nx-a: 1\r\n");
        let (date, rest) = date.split_once("\r\n").unwrap();
        assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
        assert_eq!(rest, "content-length: 5\r\n\r\nhello");
    }

    #[tokio::test]
    async fn a_long_poll_that_claimed_its_answer_gets_no_write_from_the_hub() {
        let (sink, _client) = answering_sink(b"", true).await;
        assert_eq!(sink.claim(), Claim::Hold);
        assert!(matches!(sink.offer(true, || ()), Offer::Queued(())));
        // Parked again (the item was not for it), it may be answered by the hub.
        sink.park(|| true);
        assert!(matches!(sink.offer(true, || ()), Offer::Reserved));
    }

    #[tokio::test]
    async fn what_the_socket_does_not_take_of_an_answer_is_flushed_after_it() {
        let (sink, mut client) =
            answering_sink(b"date: Tue, 01 Dec 2026 00:00:00 GMT\r\n", true).await;
        // More than the socket buffers take while nobody reads.
        let body = "y".repeat(32 << 20);
        assert!(matches!(sink.offer(true, || ()), Offer::Reserved));
        sink.write_reserved(&answer(&body), Instant::now());
        let head = format!(
            "HTTP/1.1 200 OK\r\ndate: Tue, 01 Dec 2026 00:00:00 GMT\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let len = head.len() + body.len();
        let reader = tokio::spawn(async move { read_exactly(&mut client, len).await });
        sink.flush().await.unwrap();
        let got = reader.await.unwrap();
        assert_eq!(&got[..head.len()], head.as_bytes());
        assert!(got[head.len()..].iter().all(|&b| b == b'y'));
    }

    #[tokio::test]
    async fn a_framer_write_waits_for_the_reserved_chunk_and_goes_after_it() {
        let (sink, mut client) = idle_sink().await;
        assert!(matches!(sink.offer(true, || ()), Offer::Reserved));
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(sink.poll_write(&mut cx, b"second").is_pending());
        assert!(!flag.0.load(Ordering::SeqCst));
        sink.write_reserved(
            &Payload::Bytes(Bytes::from_static(b"first")),
            Instant::now(),
        );
        assert!(flag.0.load(Ordering::SeqCst), "the framer was not woken");
        match sink.poll_write(&mut cx, b"second") {
            Poll::Ready(Ok(6)) => {}
            other => panic!("expected the whole write, got {other:?}"),
        }
        assert_eq!(read_exactly(&mut client, 11).await, b"firstsecond");
    }

    #[tokio::test]
    async fn the_hub_writes_nothing_while_the_framer_holds_part_of_a_frame() {
        let (sink, mut client) = idle_sink().await;
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        // More than the socket buffers take while nobody reads.
        let frame = vec![7u8; 32 << 20];
        let taken = match sink.poll_write(&mut cx, &frame) {
            Poll::Ready(Ok(n)) => n,
            other => panic!("expected a partial write, got {other:?}"),
        };
        assert!(taken < frame.len());
        assert!(matches!(sink.offer(true, || ()), Offer::Queued(())));
        // The framer finishes its frame while the client reads it.
        let len = frame.len();
        let reader = tokio::spawn(async move {
            let got = read_exactly(&mut client, len).await;
            assert!(got.iter().all(|&b| b == 7));
        });
        let mut rest = &frame[taken..];
        while !rest.is_empty() {
            let n = std::future::poll_fn(|cx| sink.poll_write(cx, rest))
                .await
                .unwrap();
            rest = &rest[n..];
        }
        reader.await.unwrap();
        sink.park(|| true);
        assert!(matches!(sink.offer(true, || ()), Offer::Reserved));
    }
}
