//! A held HTTP/1.1 stream's socket as the hub sees it, so that a publish can be written to an
//! idle stream by the fan-out itself, without a trip through the connection's queue and task.
//!
//! Three parties write to one socket: the connection's writer (`server::direct`: the response
//! head, the session's output), the session (which says when it is idle), and the hub's fan-out.
//! One mutex per connection orders them:
//!
//! - everything the session has produced and the socket has not yet taken is in `State::out`,
//!   appended frame by frame while the writer gathers, so no byte is ever held outside the lock;
//! - the session marks itself idle (under the lock) only when it waits with its queue empty and
//!   nothing of its own to send; the hub clears that mark, under the same lock, whenever it
//!   queues an item instead of writing it;
//! - the hub writes a chunk itself only to a stream that is idle, has nothing unwritten and no
//!   other chunk reserved. It reserves the stream under its channel's lock and writes it soon
//!   after, from a fan-out task; until then the writer does not write, so whatever the session
//!   produces meanwhile goes out after the reserved chunk.
//!
//! So a stream gets its bytes in the order the hub published them, whichever way each went.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::net::TcpStream;
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
    stream: Option<Arc<TcpStream>>,
    /// Bytes not yet written, in order.
    out: Vec<u8>,
    /// The session waits with nothing queued and would pass a plain chunk through unchanged.
    idle: bool,
    /// A fan-out task will write the next chunk.
    reserved: bool,
    /// When the fan-out last wrote here (the session's idle keep-alive counts it as traffic).
    last_write: Option<Instant>,
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
        if direct && st.idle && !st.reserved && st.out.is_empty() && st.stream.is_some() {
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
        let written = match st.stream.as_ref().map(|s| s.try_write(chunk)) {
            Some(Ok(n)) => n,
            Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => 0,
            // The client is gone; its writer finds out by itself.
            Some(Err(_)) | None => chunk.len(),
        };
        if written < chunk.len() {
            st.out.splice(0..0, chunk[written..].iter().copied());
        }
        if !st.out.is_empty() {
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
    pub fn attach(&self, stream: Arc<TcpStream>, head: Vec<u8>) {
        let mut st = self.lock();
        st.stream = Some(stream);
        st.out = head;
    }

    /// The stream has ended: no more writes here.
    pub fn detach(&self) {
        let mut st = self.lock();
        st.stream = None;
        st.idle = false;
        st.out = Vec::new();
    }

    /// Appends bytes for the client (under the lock, so the hub sees them as unwritten).
    pub fn append(&self, f: impl FnOnce(&mut Vec<u8>)) {
        f(&mut self.lock().out);
    }

    /// Writes everything unwritten to `stream`, waiting for the socket or for a reservation to
    /// be written first.
    pub async fn flush(&self, stream: &TcpStream) -> io::Result<()> {
        enum Wait {
            Reservation,
            Socket,
        }
        loop {
            let wait = {
                let mut st = self.lock();
                if st.out.is_empty() {
                    return Ok(());
                }
                if st.reserved {
                    Wait::Reservation
                } else {
                    match stream.try_write(&st.out) {
                        Ok(n) if n == st.out.len() => {
                            // Idle between messages, a stream keeps no buffer.
                            st.out = Vec::new();
                            return Ok(());
                        }
                        Ok(n) => {
                            st.out.drain(..n);
                            Wait::Socket
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Wait::Socket,
                        Err(e) => return Err(e),
                    }
                }
            };
            match wait {
                Wait::Reservation => self.notify.notified().await,
                Wait::Socket => std::future::poll_fn(|cx| stream.poll_write_ready(cx)).await?,
            }
        }
    }

    /// Resolves when a fan-out has left bytes for the writer.
    pub async fn notified(&self) {
        self.notify.notified().await
    }
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
