//! A client socket as the hub sees it, so that a publish can be written to an idle connection
//! by the fan-out itself, without a trip through the connection's queue and task: a held
//! HTTP/1.1 stream (the hub writes a chunk) or a WebSocket taken back from hyper (the hub writes
//! a frame).
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
use grip::publish::{Action, MessageType, PublishItem};
use tokio::sync::Notify;
use tokio::time::Instant;

/// A held stream's socket, shared by its writer, its session and the hub.
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
            return Offer::Reserved;
        }
        st.idle = false;
        Offer::Queued(queue())
    }

    /// Writes the chunk of a reservation: what the socket does not take at once is left, in
    /// front of anything queued since, for the writer to send.
    pub fn write_reserved(&self, chunk: &Bytes, now: Instant) {
        let mut st = self.lock();
        st.reserved = false;
        st.last_write = Some(now);
        let written = match st.wire.as_mut().map(|w| w.try_write(chunk)) {
            Some(Ok(n)) => n,
            Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => 0,
            // The client is gone; its writer finds out by itself.
            Some(Err(_)) | None => chunk.len(),
        };
        if written < chunk.len() {
            st.out.splice(0..0, chunk[written..].iter().copied());
        }
        if let Some(waker) = st.waker.take() {
            waker.wake();
        }
        if !st.out.is_empty() || st.wire.as_ref().is_some_and(Wire::is_pending) {
            drop(st);
            self.notify.notify_one();
        }
    }

    // --- the session's side

    /// The session is about to wait: idle when `queue_empty` says nothing is queued.
    pub fn park(&self, queue_empty: impl FnOnce() -> bool) {
        let mut st = self.lock();
        st.idle = queue_empty();
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

    #[tokio::test]
    async fn a_framer_write_waits_for_the_reserved_chunk_and_goes_after_it() {
        let (sink, mut client) = idle_sink().await;
        assert!(matches!(sink.offer(true, || ()), Offer::Reserved));
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(sink.poll_write(&mut cx, b"second").is_pending());
        assert!(!flag.0.load(Ordering::SeqCst));
        sink.write_reserved(&Bytes::from_static(b"first"), Instant::now());
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
