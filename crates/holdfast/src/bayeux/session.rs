//! A Bayeux session: one task per client id, which outlives the requests (or WebSocket frames)
//! that reach it.
//!
//! Requests reach the task through its [`Session`] handle in the app's session table. The task
//! owns the session's hub [`Subscription`] and a queue of events (each a Bayeux message's JSON
//! text) waiting for the next `/meta/connect`:
//!
//! - a connect takes everything queued at once; with nothing queued it is held until an event
//!   arrives (then the events that arrived with it go out together) or its timeout passes
//!   (`bayeux.timeout_secs`, or less when the client's advice asks: Faye asks for 0 when it
//!   batches a connect with other messages); a second connect answers the first with nothing;
//! - an event whose connect has gone (the client's request broke off) is put back, in order;
//! - the queue holds at most `bayeux.max_queued` events: past that the oldest is dropped and
//!   counted in [`crate::app::App::bayeux_dropped`];
//! - the session ends on `/meta/disconnect`, at shutdown, or when no connect has been seen for
//!   `bayeux.timeout_secs` + `bayeux.session_grace_secs`; it then leaves the table and the hub.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::message;
use crate::app::App;
use crate::hub::{Delivery, Resume, Subscription, Want};

/// Events handed to a connect.
pub type Events = Vec<Bytes>;

/// What a request asks of a session.
enum Command {
    Connect(oneshot::Sender<Events>, Duration),
    Subscribe {
        channel: String,
        prev_id: Option<String>,
        done: oneshot::Sender<()>,
    },
    Unsubscribe(String),
    Disconnect,
}

/// A session's handle, kept in the app's session table under [`Session::key`].
pub struct Session {
    commands: mpsc::Sender<Command>,
}

/// The session has ended.
#[derive(Debug)]
pub struct Gone;

impl Session {
    /// Asks for the next events: the receiver gets them when there are some, or nothing once
    /// `timeout` has passed.
    pub async fn connect(&self, timeout: Duration) -> Result<oneshot::Receiver<Events>, Gone> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Connect(tx, timeout)).await?;
        Ok(rx)
    }

    /// Subscribes to the hub channel `channel`; with `prev_id`, what was published after it and
    /// is still in history is queued first.
    pub async fn subscribe(&self, channel: String, prev_id: Option<String>) -> Result<(), Gone> {
        let (done, rx) = oneshot::channel();
        self.send(Command::Subscribe {
            channel,
            prev_id,
            done,
        })
        .await?;
        rx.await.map_err(|_| Gone)
    }

    /// Leaves the hub channel `channel`.
    pub async fn unsubscribe(&self, channel: String) -> Result<(), Gone> {
        self.send(Command::Unsubscribe(channel)).await
    }

    /// Ends the session.
    pub async fn disconnect(&self) -> Result<(), Gone> {
        self.send(Command::Disconnect).await
    }

    async fn send(&self, c: Command) -> Result<(), Gone> {
        self.commands.send(c).await.map_err(|_| Gone)
    }
}

/// Starts a session whose events name channels without the route's channel `prefix`; `key` is
/// its entry in the app's session table, which the task removes when it ends. The task runs
/// once the returned [`Pending`] is spawned.
pub fn start(app: &Arc<App>, key: String, prefix: String) -> (Arc<Session>, Pending) {
    let (commands, rx) = mpsc::channel(16);
    let session = Arc::new(Session { commands });
    let task = Task {
        app: app.clone(),
        key,
        prefix,
        session: session.clone(),
        subscription: None,
        queue: VecDeque::new(),
        waiting: None,
        seen: Instant::now(),
    };
    (session, Pending { task, commands: rx })
}

/// A session's task, not running yet.
pub struct Pending {
    task: Task,
    commands: mpsc::Receiver<Command>,
}

impl Pending {
    /// Runs the session.
    pub fn spawn(self) {
        let guard = self.task.app.shutdown.guard();
        tokio::spawn(self.task.run(self.commands, guard));
    }
}

struct Task {
    app: Arc<App>,
    key: String,
    prefix: String,
    session: Arc<Session>,
    /// The hub membership and its queue; `None` while subscribed to nothing.
    subscription: Option<(Subscription, mpsc::Receiver<Delivery>)>,
    queue: VecDeque<Bytes>,
    /// The held connect and when it is answered with nothing.
    waiting: Option<(oneshot::Sender<Events>, Instant)>,
    /// When a connect was last answered (or the session began).
    seen: Instant,
}

enum Input {
    Shutdown,
    Command(Option<Command>),
    Delivery(Option<Delivery>),
    Timeout,
    Idle,
}

impl Task {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        _drain: Option<crate::shutdown::DrainGuard>,
    ) {
        let c = &self.app.config.bayeux;
        let idle = Duration::from_secs(c.timeout_secs.saturating_add(c.session_grace_secs));
        let mut shutdown = std::pin::pin!(self.app.shutdown.signal().into_stopped());
        loop {
            let timeout_at = self.waiting.as_ref().map(|w| w.1);
            let idle_at = crate::deadline::later(self.seen, idle);
            let input = tokio::select! {
                () = &mut shutdown => Input::Shutdown,
                c = commands.recv() => Input::Command(c),
                d = next(&mut self.subscription) => Input::Delivery(d),
                () = sleep_until(timeout_at) => Input::Timeout,
                () = tokio::time::sleep_until(idle_at), if self.waiting.is_none() => Input::Idle,
            };
            match input {
                Input::Shutdown | Input::Command(None | Some(Command::Disconnect)) => break,
                Input::Idle => {
                    tracing::debug!(session = %self.key, "Bayeux session ended: no /meta/connect");
                    break;
                }
                Input::Command(Some(c)) => self.command(c).await,
                Input::Delivery(Some(d)) => {
                    self.push(&d);
                    // What arrived with it goes in the same answer.
                    while let Some(d) = self
                        .subscription
                        .as_mut()
                        .and_then(|(_, rx)| rx.try_recv().ok())
                    {
                        self.push(&d);
                    }
                    self.flush();
                }
                // The hub closed the queue (shutdown): the membership is over.
                Input::Delivery(None) => self.subscription = None,
                Input::Timeout => self.answer(),
            }
        }
        // A held connect is answered with what is queued; the client's next finds no session
        // and handshakes again.
        self.answer();
        self.app.bayeux_sessions.remove(&self.key, &self.session);
    }

    async fn command(&mut self, c: Command) {
        match c {
            Command::Connect(tx, timeout) => {
                self.answer();
                self.waiting = Some((tx, crate::deadline::after(timeout)));
                if timeout.is_zero() {
                    self.answer();
                } else {
                    self.flush();
                }
            }
            Command::Subscribe {
                channel,
                prev_id,
                done,
            } => {
                self.subscribe(channel, prev_id).await;
                let _ = done.send(());
            }
            Command::Unsubscribe(channel) => {
                if let Some((sub, _)) = &mut self.subscription {
                    sub.remove(&channel);
                    if sub.channels().is_empty() {
                        self.subscription = None;
                    }
                }
            }
            Command::Disconnect => {}
        }
    }

    async fn subscribe(&mut self, channel: String, prev_id: Option<String>) {
        let resume = match &mut self.subscription {
            Some((sub, _)) => sub.add_resuming(channel.clone(), prev_id.as_deref()),
            None => {
                let (sub, rx, mut resumes) = self
                    .app
                    .hub
                    .subscribe_resuming(vec![(channel.clone(), prev_id.clone())], Want::Bayeux);
                self.subscription = Some((sub, rx));
                resumes.pop()
            }
        };
        match resume {
            Some(Resume::Replay(items)) => items.iter().for_each(|d| self.push(d)),
            Some(Resume::Stale { .. }) => {
                // Not in local history: a cluster's shared history may still have it.
                if let Some(after) = &prev_id {
                    if let Some(items) = self.app.bus.history_after(&channel, after).await {
                        items.iter().for_each(|d| self.push(d));
                    }
                }
            }
            Some(Resume::Live) | None => {}
        }
    }

    fn push(&mut self, d: &Delivery) {
        let Some(event) = message::event(d, &self.prefix) else {
            return;
        };
        if self.queue.len() >= self.app.config.bayeux.max_queued {
            self.queue.pop_front();
            self.app.bayeux_dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.queue.push_back(event);
    }

    /// Answers the held connect if there is something to send.
    fn flush(&mut self) {
        if !self.queue.is_empty() {
            self.answer();
        }
    }

    /// Answers the held connect with everything queued; if its request has gone, the events
    /// are put back.
    fn answer(&mut self) {
        let Some((tx, _)) = self.waiting.take() else {
            return;
        };
        self.seen = Instant::now();
        let events: Events = self.queue.drain(..).collect();
        if let Err(events) = tx.send(events) {
            for e in events.into_iter().rev() {
                self.queue.push_front(e);
            }
        }
    }
}

async fn next(s: &mut Option<(Subscription, mpsc::Receiver<Delivery>)>) -> Option<Delivery> {
    match s {
        Some((_, rx)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
