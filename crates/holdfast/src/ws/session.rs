//! What a WebSocket connection holds besides its sockets: its channels in the hub, the meta the
//! origin set, the keep-alive and the delayed message, and the `grip` message prefix. GRIP
//! WebSocket and WebSocket-over-HTTP share it, so an origin's control messages mean the same in
//! both.
//!
//! Invariants: the connection is in at most `limits.max_channels_per_connection` channels, all
//! with the route's prefix and valid names (a `subscribe` past the limit is an error that closes
//! the connection, never a subscription silently left out); implicit (`sub=`) channels cannot
//! be left; the hub queue is the only queue of published items (bounded, newest dropped when
//! full, see [`crate::hub`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use grip::channel::{check_channel_name, ChannelNameError};
use grip::control::{parse_control_message, ControlError, ControlMessage, CONTROL_PREFIX};
use grip::instruct::KeepAliveMode;
use grip::publish::{Action, MessageType};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::app::App;
use crate::deadline;
use crate::hub::{filter_delivery, Delivery, FilterScope, Subscription};
use crate::sink::Sink;

/// How a connection was set up by its route and origin.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    /// The route's `prefix=`.
    pub channel_prefix: String,
    /// The target's `sub=` channels, without prefix.
    pub implicit: Vec<String>,
    /// The message prefix when the origin speaks `grip`; `None` relays origin messages as they
    /// are.
    pub message_prefix: Option<String>,
    /// The target, for log lines.
    pub label: String,
    /// Where the client connects from, for the connection registry.
    pub client: crate::conns::Client,
    /// A WebSocket-over-HTTP connection's `Connection-Id`: its id in the registry, where the
    /// `refresh` command finds it.
    pub conn_id: Option<String>,
    /// The route's explicit `id=`, for stats.
    pub route_id: Option<String>,
    /// The transport and route id (explicit or derived) it is counted under in
    /// `holdfast_connections`.
    pub counted: (crate::metrics::Transport, String),
    /// The route's origin, which presence events about its channels go to (`None` when
    /// presence is off, or sends them elsewhere).
    pub presence_origin: Option<String>,
}

impl SessionSpec {
    /// Checks the implicit channels against `limits.max_channels_per_connection` and the
    /// channel-name rules, before the connection is accepted.
    pub fn check(&self, app: &App) -> Result<(), SubscribeError> {
        let max = app.config.limits.max_channels_per_connection;
        let mut names: Vec<String> = Vec::new();
        for c in &self.implicit {
            let name = format!("{}{c}", self.channel_prefix);
            check_channel_name(&name)?;
            if !names.contains(&name) {
                names.push(name);
            }
        }
        if names.len() > max {
            return Err(SubscribeError::TooManyImplicit {
                count: names.len(),
                max,
            });
        }
        Ok(())
    }
}

/// A channel the connection cannot be subscribed to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// A `subscribe` past `limits.max_channels_per_connection`.
    #[error("subscribe to '{channel}' is over limits.max_channels_per_connection ({max})")]
    TooMany {
        /// The channel (route prefix included), shortened when long.
        channel: String,
        /// The limit.
        max: usize,
    },
    /// The target's `sub=` channels (or the test handler's) are already over the limit.
    #[error("{count} implicit channels, over limits.max_channels_per_connection ({max})")]
    TooManyImplicit {
        /// Distinct implicit channels.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The name, route prefix included, is not a valid channel name.
    #[error("{0} (with the route's prefix=)")]
    Name(#[from] ChannelNameError),
}

/// Why an origin message cannot be carried out; the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum OriginMessageError {
    /// The control message does not parse.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// A `subscribe` that cannot be honoured.
    #[error(transparent)]
    Subscribe(#[from] SubscribeError),
}

/// What a published `ws-message` asks of a connection.
pub enum Published {
    /// Send this message to the client.
    Send(Message),
    /// Close the client with this frame.
    Close(Option<CloseFrame>),
    /// Ask a WebSocket-over-HTTP origin for a request.
    Refresh,
    /// Nothing this connection can do (`hint`, or content that cannot be sent).
    Ignore,
}

struct KeepAlive {
    message: Message,
    every: Duration,
    mode: KeepAliveMode,
    next: Instant,
}

/// The GRIP state of one WebSocket connection.
pub struct Session {
    app: Arc<App>,
    spec: SessionSpec,
    implicit: Vec<String>,
    sub: Option<(Subscription, mpsc::Receiver<Delivery>)>,
    /// The client socket as the hub sees it, once the client's upgrade attaches it.
    sink: Arc<Sink>,
    meta: BTreeMap<String, String>,
    /// Filters of each channel subscribed with `subscribe` (prefixed name).
    filters: BTreeMap<String, Vec<String>>,
    keep_alive: Option<KeepAlive>,
    delayed: Option<(Message, Instant)>,
    detached: bool,
    /// Notified by the `refresh` command (WebSocket-over-HTTP only).
    refresh: Option<Arc<tokio::sync::Notify>>,
    /// This connection's user on each member channel (per-connection presence).
    members: Vec<crate::presence::MemberGuard>,
    _conn: crate::conns::ConnGuard,
    _held: crate::metrics::Held,
}

impl Session {
    /// A session subscribed to the target's implicit channels.
    pub fn new(app: Arc<App>, spec: SessionSpec) -> Session {
        let implicit: Vec<String> = spec
            .implicit
            .iter()
            .map(|c| format!("{}{c}", spec.channel_prefix))
            .collect();
        let refresh = spec
            .conn_id
            .as_ref()
            .filter(|_| app.conns.is_on())
            .map(|_| Arc::new(tokio::sync::Notify::new()));
        let conn = app.conns.open(
            spec.conn_id.as_deref(),
            spec.counted.0,
            spec.client,
            spec.route_id.as_deref(),
            refresh.clone(),
        );
        let held = (app.connections).hold(spec.counted.0, &spec.counted.1);
        let mut session = Session {
            _held: held,
            app,
            spec,
            refresh,
            _conn: conn,
            implicit: implicit.clone(),
            sub: None,
            sink: Sink::new(),
            meta: BTreeMap::new(),
            filters: BTreeMap::new(),
            keep_alive: None,
            delayed: None,
            detached: false,
            members: Vec::new(),
        };
        for name in implicit {
            // `SessionSpec::check` passed before the connection was accepted.
            if let Err(e) = session.subscribe_prefixed(name) {
                tracing::warn!(error = %e, "implicit channel not subscribed");
            }
        }
        session
    }

    /// Notified when the `refresh` command names this connection (WebSocket-over-HTTP).
    pub fn refresh_signal(&self) -> Option<&Arc<tokio::sync::Notify>> {
        self.refresh.as_ref()
    }

    /// How long a close handshake may take.
    pub fn close_timeout(&self) -> Duration {
        self.app.config.websocket.close_timeout()
    }

    /// The target label, for log lines.
    pub fn label(&self) -> &str {
        &self.spec.label
    }

    /// The client socket as the hub sees it: the client's upgrade attaches it, and the hub writes
    /// plain published messages to it while the session is parked.
    pub fn sink(&self) -> &Arc<Sink> {
        &self.sink
    }

    /// The connection is about to wait: the hub may write plain messages itself when nothing is
    /// queued and no channel has filters of this connection's own.
    pub fn park(&self) {
        self.sink.park(|| {
            self.filters.is_empty() && self.sub.as_ref().is_some_and(|(_, rx)| rx.is_empty())
        });
    }

    /// The connection woke up and may write.
    pub fn unpark(&self) {
        self.sink.unpark();
    }

    /// Whether the origin sent `detach`.
    pub fn is_detached(&self) -> bool {
        self.detached
    }

    /// The meta the origin set (`set-meta`, `Set-Meta-*`).
    pub fn meta(&self) -> &BTreeMap<String, String> {
        &self.meta
    }

    /// Sets (`Some`) or deletes (`None`) one meta value.
    pub fn set_meta(&mut self, name: String, value: Option<String>) {
        let user = name == "user";
        match value {
            Some(v) => self.meta.insert(name, v),
            None => self.meta.remove(&name),
        };
        if user {
            self.sync_members();
        }
    }

    /// Makes the connection a member, as its `user` meta, of exactly the member channels it
    /// is subscribed to (per-connection presence; nothing when presence is off).
    fn sync_members(&mut self) {
        let presence = &self.app.presence;
        if !presence.is_enabled() {
            return;
        }
        let user = self.meta.get("user").filter(|u| !u.is_empty());
        let channels = self.sub.as_ref().map_or(&[][..], |(s, _)| s.channels());
        self.members.retain(|m| {
            let (channel, member) = m.key();
            Some(member) == user.map(String::as_str) && channels.iter().any(|c| c == channel)
        });
        let Some(user) = user else { return };
        for channel in channels {
            if self.members.iter().any(|m| m.key().0 == channel) {
                continue;
            }
            if let Some(guard) = presence.member(channel, user) {
                self.members.push(guard);
            }
        }
    }

    /// Subscribes to `channel` (route prefix added). Already subscribed is fine; a channel past
    /// `limits.max_channels_per_connection`, or a name too long with the prefix, is an error.
    pub fn subscribe(&mut self, channel: &str) -> Result<(), SubscribeError> {
        let name = format!("{}{channel}", self.spec.channel_prefix);
        self.subscribe_prefixed(name)
    }

    fn subscribe_prefixed(&mut self, name: String) -> Result<(), SubscribeError> {
        let current = self.sub.as_ref().map_or(0, |(s, _)| s.channels().len());
        if self
            .sub
            .as_ref()
            .is_some_and(|(s, _)| s.channels().contains(&name))
        {
            return Ok(());
        }
        check_channel_name(&name)?;
        let max = self.app.config.limits.max_channels_per_connection;
        if current >= max {
            let mut channel: String = name.chars().take(32).collect();
            if channel.len() < name.len() {
                channel.push('…');
            }
            return Err(SubscribeError::TooMany { channel, max });
        }
        if let Some(origin) = &self.spec.presence_origin {
            self.app.presence.note_origin([name.as_str()], origin);
        }
        if let Some((sub, _)) = &mut self.sub {
            if sub.add(name.clone()) {
                self.sync_members();
                return Ok(());
            }
        }
        // No subscription yet, or its queue ended with its last channel: start a new one.
        let mut channels = self
            .sub
            .take()
            .map(|(s, _)| s.channels().to_vec())
            .unwrap_or_default();
        channels.push(name);
        self.sub = Some(
            self.app
                .hub
                .subscribe_websocket(channels, self.sink.clone()),
        );
        self.sync_members();
        Ok(())
    }

    /// Leaves `channel` (route prefix added); implicit channels stay.
    pub fn unsubscribe(&mut self, channel: &str) {
        let name = format!("{}{channel}", self.spec.channel_prefix);
        if self.implicit.contains(&name) {
            tracing::debug!(channel = %name, "cannot unsubscribe from an implicit channel");
            return;
        }
        self.filters.remove(&name);
        if let Some((sub, _)) = &mut self.sub {
            sub.remove(&name);
            if sub.channels().is_empty() {
                self.sub = None;
            }
        }
        self.sync_members();
    }

    /// The next published item. Pending while the connection has no channels; cancel-safe.
    pub async fn next_delivery(&mut self) -> Delivery {
        loop {
            match &mut self.sub {
                None => std::future::pending::<()>().await,
                Some((_, rx)) => match rx.recv().await {
                    Some(item) => return item,
                    // The hub let go of the queue (shutdown); the connection finishes on the
                    // shutdown signal.
                    None => self.sub = None,
                },
            }
        }
    }

    /// A published item already queued, without waiting.
    pub fn try_delivery(&mut self) -> Option<Delivery> {
        self.sub.as_mut()?.1.try_recv().ok()
    }

    /// What a published item asks for.
    pub fn published(&self, item: &Delivery) -> Published {
        let Some(f) = &item.formats.ws_message else {
            return Published::Ignore;
        };
        match f.action {
            Action::Send => match self
                .filtered(item, &f.content, f.content_filters.as_deref())
                .and_then(|content| to_message(f.message_type, content))
            {
                Some(m) => Published::Send(m),
                None => {
                    tracing::debug!(channel = %item.channel, "published ws-message filtered out or not sendable as its type, dropped");
                    Published::Ignore
                }
            },
            Action::Close => Published::Close(f.close_code.map(|code| CloseFrame {
                code: CloseCode::from(code),
                reason: Utf8Bytes::from(f.close_reason.clone().unwrap_or_default()),
            })),
            Action::Refresh => Published::Refresh,
            Action::Hint => Published::Ignore,
        }
    }

    /// Runs the channel's filters over published content: `None` when this connection does not
    /// get it. Content is shared, not copied, unless a filter rewrites it.
    fn filtered(
        &self,
        item: &Delivery,
        content: &Bytes,
        content_filters: Option<&[String]>,
    ) -> Option<Bytes> {
        let prefix = &self.spec.channel_prefix;
        let subscribed = |name: &str| {
            self.sub.as_ref().is_some_and(|(s, _)| {
                s.channels()
                    .iter()
                    .any(|c| c == name || c.strip_prefix(prefix.as_str()) == Some(name))
            })
        };
        let filters = self
            .filters
            .get(&item.channel)
            .map_or(&[][..], Vec::as_slice);
        let scope = FilterScope {
            filters,
            sub_meta: &self.meta,
            // A WebSocket keeps no positions.
            positions: &BTreeMap::new,
            subscribed: &subscribed,
        };
        filter_delivery(item, content, content_filters, scope)
    }

    /// Handles one message from the origin: a control message changes the session, a prefixed
    /// message is returned without its prefix for the client, an unprefixed one is dropped.
    /// Without `grip` the message is returned as it is.
    pub fn on_origin_message(
        &mut self,
        msg: Message,
    ) -> Result<Option<Message>, OriginMessageError> {
        let Some(prefix) = &self.spec.message_prefix else {
            return Ok(Some(msg));
        };
        let payload = match &msg {
            Message::Text(t) => {
                if let Some(json) = t.as_str().strip_prefix(CONTROL_PREFIX) {
                    let control = parse_control_message(json.as_bytes())?;
                    return self.control(control);
                }
                Bytes::from(t.clone())
            }
            Message::Binary(b) => b.clone(),
            _ => return Ok(Some(msg)),
        };
        let Some(rest) = payload.strip_prefix(prefix.as_bytes()) else {
            tracing::debug!(target = %self.spec.label, "dropping unprefixed message from origin");
            return Ok(None);
        };
        let rest = payload.slice(payload.len() - rest.len()..);
        Ok(match msg {
            Message::Text(_) => Some(Message::Text(
                Utf8Bytes::try_from(rest).expect("UTF-8 without a UTF-8 prefix is UTF-8"),
            )),
            _ => Some(Message::Binary(rest)),
        })
    }

    fn control(&mut self, control: ControlMessage) -> Result<Option<Message>, OriginMessageError> {
        match control {
            ControlMessage::Subscribe { channel, filters } => {
                self.subscribe(&channel)?;
                let name = format!("{}{channel}", self.spec.channel_prefix);
                // Most subscriptions have no filters; they cost no map node.
                if filters.is_empty() {
                    self.filters.remove(&name);
                } else {
                    self.filters.insert(name, filters);
                }
            }
            ControlMessage::Unsubscribe { channel } => self.unsubscribe(&channel),
            ControlMessage::Detach => self.detached = true,
            ControlMessage::Session { .. } => {}
            ControlMessage::SetMeta { name, value } => self.set_meta(name, value),
            ControlMessage::KeepAlive(None) => self.keep_alive = None,
            ControlMessage::KeepAlive(Some(ka)) => {
                let every = Duration::from_secs(ka.timeout_secs);
                match to_message(ka.message_type, ka.content) {
                    Some(message) => {
                        self.keep_alive = Some(KeepAlive {
                            message,
                            every,
                            mode: ka.mode,
                            next: deadline::after(every),
                        })
                    }
                    None => {
                        tracing::debug!("keep-alive content cannot be sent as its type, ignored")
                    }
                }
            }
            ControlMessage::SendDelayed(d) => match to_message(d.message_type, d.content) {
                Some(m) => {
                    let at = deadline::after_secs(d.timeout_secs);
                    self.delayed = Some((m, at));
                }
                None => tracing::debug!("send-delayed content cannot be sent as its type, ignored"),
            },
            ControlMessage::FlushDelayed => return Ok(self.delayed.take().map(|(m, _)| m)),
        }
        Ok(None)
    }

    /// When a keep-alive or the delayed message is next due.
    pub fn deadline(&self) -> Option<Instant> {
        let ka = self.keep_alive.as_ref().map(|k| k.next);
        let delayed = self.delayed.as_ref().map(|(_, at)| *at);
        match (ka, delayed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The messages due at `now`.
    pub fn due(&mut self, now: Instant) -> Vec<Message> {
        let mut out = Vec::new();
        if self.delayed.as_ref().is_some_and(|(_, at)| *at <= now) {
            out.extend(self.delayed.take().map(|(m, _)| m));
        }
        if let Some(ka) = &mut self.keep_alive {
            // What the hub wrote itself counts as traffic too.
            let written = self
                .sink
                .last_write()
                .map(|at| deadline::later(at, ka.every));
            if let Some(w) = written.filter(|w| ka.mode == KeepAliveMode::Idle && *w > ka.next) {
                ka.next = w;
            }
            if ka.next <= now {
                out.push(ka.message.clone());
                ka.next = deadline::later(now, ka.every);
            }
        }
        out
    }

    /// Notes that something was written to the client: an idle keep-alive starts over.
    pub fn sent(&mut self) {
        if let Some(ka) = &mut self.keep_alive {
            if ka.mode == KeepAliveMode::Idle {
                ka.next = deadline::after(ka.every);
            }
        }
    }
}

/// A message of `kind` with `content`; `None` when the content cannot be sent as that kind
/// (text that is not UTF-8, a ping or pong over 125 bytes).
pub fn to_message(kind: MessageType, content: Bytes) -> Option<Message> {
    match kind {
        MessageType::Text => Utf8Bytes::try_from(content).ok().map(Message::Text),
        MessageType::Binary => Some(Message::Binary(content)),
        MessageType::Ping if content.len() <= 125 => Some(Message::Ping(content)),
        MessageType::Pong if content.len() <= 125 => Some(Message::Pong(content)),
        MessageType::Ping | MessageType::Pong => None,
    }
}
