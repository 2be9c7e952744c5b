//! A SockJS session over HTTP transports: one task that owns the session's side of its
//! [`crate::ws::Bridge`] and outlives the requests that reach it.
//!
//! Requests reach the session through its [`Session`] handle in the app's session table: a
//! polling or streaming request hands it a [`Receiver`] (where the task writes frames, framed
//! for its transport, and which ends the response when dropped), an `xhr_send` writes its
//! messages towards the origin through [`Session::send`]. The task:
//!
//! - sends the open frame to the first receiver, then, to each receiver, every message queued
//!   for the client in one `a[…]` frame; a polling receiver is done after one frame, a
//!   streaming one after `sockjs.streaming_limit` bytes;
//! - sends the heartbeat `h` to a receiver that got nothing for `sockjs.heartbeat_secs`;
//! - answers a second receiver with `c[2010,"Another connection still open"]`;
//! - ends the session when no receiver has been attached for `sockjs.disconnect_secs` (the
//!   client is gone): the bridge is dropped, and the origin sees its client go away;
//! - when the origin (or a publish) closes the WebSocket, sends `c[code,"reason"]` to the
//!   receiver and, for `sockjs.disconnect_secs` more, to every later request, then ends.
//!
//! Queues: messages for the client wait in the task (at most `sockjs.max_queued` bytes; when
//! full, the task stops reading the bridge, so the origin sees a slow client and the hub's
//! bounded per-connection queue drops the newest publishes); the client's messages wait for
//! the origin in a bounded channel whose bytes are counted by a semaphore of the same size
//! (an `xhr_send` waits for room, so a fast sender is slowed, never buffered without bound).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::frame::{self, CloseValue, Framing};
use crate::app::App;
use crate::deadline;
use crate::ws::BridgeSocket;

/// Messages from the client, queued for the bridge's writer, each with its share of the byte
/// budget.
type Outgoing = (String, OwnedSemaphorePermit);

/// A session's handle, kept in the app's session table.
pub struct Session {
    commands: mpsc::Sender<Receiver>,
    outgoing: mpsc::Sender<Outgoing>,
    budget: Arc<Semaphore>,
    max_queued: usize,
    closed: Mutex<Option<CloseValue>>,
}

/// A request waiting for frames: the task writes framed bytes to `tx`; dropping it ends the
/// response.
pub struct Receiver {
    /// Where the response's body comes from.
    pub tx: mpsc::Sender<Bytes>,
    /// How frames are written.
    pub framing: Framing,
    /// Whether the request takes several frames (xhr-streaming, eventsource).
    pub streaming: bool,
}

/// Why [`Session::send`] did not send.
#[derive(Debug)]
pub enum SendError {
    /// The session has closed: the client gets its close frame.
    Closed(CloseValue),
    /// The session has ended.
    Gone,
    /// One message is larger than the session's queue.
    TooLarge(usize),
}

impl Session {
    /// The close value, once the session has closed.
    pub fn close_value(&self) -> Option<CloseValue> {
        self.closed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Hands a receiver to the session; `Err` gives it back when the session has ended.
    pub async fn receive(&self, receiver: Receiver) -> Result<(), Receiver> {
        self.commands.send(receiver).await.map_err(|e| e.0)
    }

    /// Queues the client's messages for the origin, in order, waiting for room in the
    /// session's queue.
    pub async fn send(&self, messages: Vec<String>) -> Result<(), SendError> {
        if let Some(v) = self.close_value() {
            return Err(SendError::Closed(v));
        }
        for m in messages {
            // Empty messages still take a place in the queue.
            let n = m.len().max(1);
            if n > self.max_queued {
                return Err(SendError::TooLarge(self.max_queued));
            }
            let permit = self
                .budget
                .clone()
                .acquire_many_owned(n as u32)
                .await
                .map_err(|_| self.gone())?;
            self.outgoing
                .send((m, permit))
                .await
                .map_err(|_| self.gone())?;
        }
        Ok(())
    }

    fn gone(&self) -> SendError {
        match self.close_value() {
            Some(v) => SendError::Closed(v),
            None => SendError::Gone,
        }
    }
}

/// A session on `bridge` and its task, which runs once [`Pending::spawn`]ed (dropped instead,
/// it closes the bridge). `key` is the session's entry in the app's session table, which the
/// task removes when it ends.
pub fn start(app: &Arc<App>, key: String, bridge: BridgeSocket) -> (Arc<Session>, Pending) {
    let c = &app.config.sockjs;
    // A message is at most max_queued bytes, and a semaphore counts at most u32::MAX.
    let max_queued = c.max_queued.min(u32::MAX as usize);
    let (commands, commands_rx) = mpsc::channel(4);
    let (outgoing, outgoing_rx) = mpsc::channel(64);
    let budget = Arc::new(Semaphore::new(max_queued));
    let session = Arc::new(Session {
        commands,
        outgoing,
        budget: budget.clone(),
        max_queued,
        closed: Mutex::new(None),
    });
    let (sink, stream) = bridge.split();
    let task = Task {
        app: app.clone(),
        key,
        session: session.clone(),
        stream: Some(stream),
        queue: VecDeque::new(),
        queued: 0,
        max_queued,
        opened: false,
        receiver: None,
        written: 0,
        last_frame: Instant::now(),
        idle_since: Instant::now(),
        budget,
    };
    let pending = Pending {
        task,
        commands: commands_rx,
        sink,
        outgoing: outgoing_rx,
    };
    (session, pending)
}

/// A session's task, not running yet.
pub struct Pending {
    task: Task,
    commands: mpsc::Receiver<Receiver>,
    sink: SplitSink<BridgeSocket, Message>,
    outgoing: mpsc::Receiver<Outgoing>,
}

impl Pending {
    /// Runs the session.
    pub fn spawn(self) {
        let guard = self.task.app.shutdown.guard();
        tokio::spawn(write_to_origin(self.sink, self.outgoing));
        tokio::spawn(self.task.run(self.commands, guard));
    }
}

/// Writes the client's messages to the bridge, several per write when they queue up. Ends when
/// the session drops its sender; the bridge closes once both halves are gone.
async fn write_to_origin(
    mut sink: SplitSink<BridgeSocket, Message>,
    mut rx: mpsc::Receiver<Outgoing>,
) {
    while let Some((first, permit)) = rx.recv().await {
        let mut permits = vec![permit];
        let mut batch = vec![first];
        while batch.len() < 64 {
            match rx.try_recv() {
                Ok((m, p)) => {
                    batch.push(m);
                    permits.push(p);
                }
                Err(_) => break,
            }
        }
        for m in batch {
            if sink.feed(Message::text(m)).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
        drop(permits);
    }
}

struct Task {
    app: Arc<App>,
    key: String,
    session: Arc<Session>,
    /// The bridge's reading half; `None` once the origin side has closed.
    stream: Option<SplitStream<BridgeSocket>>,
    /// Messages for the client that no receiver has taken yet.
    queue: VecDeque<String>,
    queued: usize,
    max_queued: usize,
    opened: bool,
    receiver: Option<Receiver>,
    /// Bytes written to the current (streaming) receiver.
    written: usize,
    /// When the current receiver last got a frame.
    last_frame: Instant,
    /// Since when no receiver has been attached.
    idle_since: Instant,
    budget: Arc<Semaphore>,
}

enum Input {
    Shutdown,
    Receiver(Option<Receiver>),
    Origin(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
    Writable,
    ReceiverGone,
    Heartbeat,
    Idle,
}

impl Task {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Receiver>,
        _drain: Option<crate::shutdown::DrainGuard>,
    ) {
        let heartbeat = Duration::from_secs(self.app.config.sockjs.heartbeat_secs);
        let disconnect = Duration::from_secs(self.app.config.sockjs.disconnect_secs);
        let mut shutdown = std::pin::pin!(self.app.shutdown.signal().into_stopped());
        let mut shutting_down = false;
        loop {
            let closed = self.session.close_value().is_some();
            // After the close, the bridge is read to its end (which also sends the reply to the
            // origin side's close), and what it carries is dropped.
            let can_read = self.stream.is_some() && (closed || self.queued < self.max_queued);
            let has_output = !self.queue.is_empty() || closed || !self.opened;
            let heartbeat_at = deadline::later(self.last_frame, heartbeat);
            let idle_at = deadline::later(self.idle_since, disconnect);
            let input = tokio::select! {
                () = &mut shutdown, if !shutting_down => Input::Shutdown,
                r = commands.recv() => Input::Receiver(r),
                m = next(&mut self.stream), if can_read => Input::Origin(m),
                () = writable(&self.receiver), if has_output => Input::Writable,
                () = gone(&self.receiver) => Input::ReceiverGone,
                () = tokio::time::sleep_until(heartbeat_at), if self.receiver.is_some() => Input::Heartbeat,
                () = tokio::time::sleep_until(idle_at), if self.receiver.is_none() => Input::Idle,
            };
            match input {
                Input::Shutdown => {
                    // The bridge's other side closes the origin; this session tells its client.
                    shutting_down = true;
                    self.close(CloseValue::new(1001, "server shutting down"));
                }
                Input::Receiver(None) => break,
                Input::Receiver(Some(r)) => self.attach(r),
                Input::Origin(m) => self.on_origin(m),
                Input::Writable => self.write(),
                Input::ReceiverGone => self.detach(),
                Input::Heartbeat => self.frame(frame::HEARTBEAT),
                Input::Idle => {
                    if !closed {
                        tracing::debug!(session = %self.key, "SockJS session timed out: no request from the client");
                    }
                    break;
                }
            }
            if shutting_down && self.receiver.is_none() {
                break;
            }
        }
        self.app.sockjs_sessions.remove(&self.key, &self.session);
        // Requests that arrive from now on find no session; a send waiting for room ends.
        self.budget.close();
    }

    fn attach(&mut self, r: Receiver) {
        if self.receiver.is_some() {
            let f = r.framing.wrap(&CloseValue::another_connection().to_frame());
            let _ = r.tx.try_send(f);
            return;
        }
        self.written = 0;
        if r.streaming {
            let prelude = r.framing.prelude();
            self.written = prelude.len();
            let _ = r.tx.try_send(prelude);
        }
        self.receiver = Some(r);
        self.last_frame = Instant::now();
    }

    fn detach(&mut self) {
        self.receiver = None;
        self.idle_since = Instant::now();
    }

    fn on_origin(&mut self, m: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) {
        if self.session.close_value().is_some() {
            if !matches!(m, Some(Ok(_))) {
                self.stream = None;
            }
            return;
        }
        match m {
            Some(Ok(Message::Text(t))) => self.push(t.to_string()),
            // SockJS carries text only; binary is passed on as text, as Pushpin does.
            Some(Ok(Message::Binary(b))) => self.push(String::from_utf8_lossy(&b).into_owned()),
            Some(Ok(Message::Close(f))) => self.close(CloseValue::of_close(f.as_ref())),
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::debug!(session = %self.key, error = %e, "SockJS session's WebSocket failed");
                self.stream = None;
                self.close(CloseValue::new(1011, "origin error"));
            }
            None => {
                self.stream = None;
                self.close(CloseValue::new(1011, "origin went away"));
            }
        }
    }

    fn push(&mut self, m: String) {
        self.queued += m.len().max(1);
        self.queue.push_back(m);
    }

    /// Marks the session closed; the close frame goes to the current and every later receiver.
    fn close(&mut self, v: CloseValue) {
        let mut closed = self
            .session
            .closed
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if closed.is_none() {
            *closed = Some(v);
        }
        drop(closed);
        if self.receiver.is_none() {
            self.idle_since = Instant::now();
        }
    }

    /// Writes what is due to the receiver: the open frame, the queued messages, or the close.
    fn write(&mut self) {
        if !self.opened {
            self.opened = true;
            self.frame(frame::OPEN);
            return;
        }
        if !self.queue.is_empty() {
            let f = frame::messages_frame(self.queue.iter().map(String::as_str));
            self.queue.clear();
            self.queued = 0;
            self.frame(&f);
            return;
        }
        if let Some(v) = self.session.close_value() {
            let f = v.to_frame();
            self.frame(&f);
            // After the close, a receiver gets nothing more.
            self.detach();
        }
    }

    /// Sends one frame to the receiver; a polling receiver is done after it, a streaming one
    /// once it has carried `sockjs.streaming_limit` bytes.
    fn frame(&mut self, f: &str) {
        let Some(r) = &self.receiver else { return };
        let bytes = r.framing.wrap(f);
        self.written += bytes.len();
        // The caller waited for room (`writable`), or it is a heartbeat: if there is no room
        // for that, the client is not reading and gets nothing.
        let _ = r.tx.try_send(bytes);
        self.last_frame = Instant::now();
        if !r.streaming || self.written >= self.app.config.sockjs.streaming_limit {
            self.detach();
        }
    }
}

async fn next(
    stream: &mut Option<SplitStream<BridgeSocket>>,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match stream {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// Ready when the receiver has room for a frame; pending without a receiver.
async fn writable(r: &Option<Receiver>) {
    match r {
        Some(r) if r.tx.capacity() > 0 => {}
        Some(r) => {
            // Wait for room without taking it: the frame is sent by `frame` right after.
            if let Ok(permit) = r.tx.reserve().await {
                drop(permit);
            } else {
                std::future::pending::<()>().await
            }
        }
        None => std::future::pending().await,
    }
}

/// Ready when the receiver's request has gone (the client closed it).
async fn gone(r: &Option<Receiver>) {
    match r {
        Some(r) => r.tx.closed().await,
        None => std::future::pending().await,
    }
}
