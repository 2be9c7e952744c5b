//! What each Bayeux message does, whatever the transport carried it: the five meta channels,
//! and publishes.

use bytes::Bytes;
use serde_json::Value;

use super::message::{self, Message, CONNECTION_TYPES};
use super::origin::Verdict;
use super::session::{self, Events, Session};
use super::Endpoint;
use crate::app::InsertError;

/// The replies to a batch, and the connect it held, if any.
pub struct Processed {
    /// Replies ready now, in the order of their messages.
    pub replies: Vec<Bytes>,
    /// A `/meta/connect` waiting for events.
    pub connect: Option<HeldConnect>,
}

/// A `/meta/connect` waiting for its session's events.
pub struct HeldConnect {
    reply: Bytes,
    events: tokio::sync::oneshot::Receiver<Events>,
}

impl HeldConnect {
    /// The connect's reply followed by its events, once the session hands them over.
    pub async fn finish(self) -> Vec<Bytes> {
        let mut out = vec![self.reply];
        // The session ended meanwhile: the reply alone; the next connect finds it unknown.
        if let Ok(events) = self.events.await {
            out.extend(events);
        }
        out
    }
}

impl Endpoint {
    /// Carries out a batch in order. A connect is answered last (its reply waits for events),
    /// and of several connects in one batch only the last waits.
    pub async fn process(&self, batch: Vec<Message>) -> Processed {
        let mut out = Processed {
            replies: Vec::with_capacity(batch.len()),
            connect: None,
        };
        for m in batch {
            match self.one(&m).await {
                Ok(reply) => out.replies.push(message::to_bytes(&reply)),
                Err(held) => {
                    if let Some(earlier) = out.connect.replace(held) {
                        out.replies.push(earlier.reply);
                    }
                }
            }
        }
        out
    }

    /// One message: its reply, or (`Err`) a held connect.
    async fn one(&self, m: &Message) -> Result<Message, HeldConnect> {
        let Some(channel) = message::str_field(m, "channel") else {
            return Ok(message::error(
                m,
                402,
                "channel",
                "Missing required parameter",
            ));
        };
        Ok(match channel {
            "/meta/handshake" => self.handshake(m).await,
            "/meta/connect" => return self.connect(m).await,
            "/meta/subscribe" => self.subscribe(m, true).await,
            "/meta/unsubscribe" => self.subscribe(m, false).await,
            "/meta/disconnect" => self.disconnect(m).await,
            c if grip::bayeux::is_meta(c) => message::error(m, 403, c, "Forbidden channel"),
            c => self.publish(m, c).await,
        })
    }

    async fn handshake(&self, m: &Message) -> Message {
        let c = &self.app.config.bayeux;
        if message::str_field(m, "version").is_none() {
            return self.refuse_handshake(message::error(
                m,
                402,
                "version",
                "Missing required parameter",
            ));
        }
        let Some(types) = m.get("supportedConnectionTypes").and_then(Value::as_array) else {
            return self.refuse_handshake(message::error(
                m,
                402,
                "supportedConnectionTypes",
                "Missing required parameter",
            ));
        };
        let common = types
            .iter()
            .filter_map(Value::as_str)
            .any(|t| CONNECTION_TYPES.contains(&t));
        if !common {
            let theirs: Vec<&str> = types.iter().filter_map(Value::as_str).collect();
            return self.refuse_handshake(message::error(
                m,
                301,
                &theirs.join(","),
                "Connection types not supported",
            ));
        }
        let sessions = &self.app.bayeux_sessions;
        if sessions.len() >= c.max_sessions {
            return self.refuse_handshake(message::error(m, 503, "", "Too many sessions"));
        }
        match self.ask(m).await {
            Verdict::Allowed(_) => {}
            Verdict::Refused(status) => {
                return self.refuse_handshake(message::error(
                    m,
                    403,
                    &status.to_string(),
                    "Handshake refused by the application",
                ))
            }
            Verdict::Failed(why) => {
                tracing::debug!(error = %why, "Bayeux handshake: origin failed");
                return self.refuse_handshake(message::error(m, 503, "", "Origin unavailable"));
            }
        }
        let id = client_id();
        let key = self.key(&id);
        let (session, task) = session::start(
            &self.app,
            key.clone(),
            self.route.options.channel_prefix.clone(),
        );
        match sessions.insert(key, session) {
            Ok(()) => task.spawn(),
            Err(InsertError::Full(_) | InsertError::Taken) => {
                return self.refuse_handshake(message::error(m, 503, "", "Too many sessions"))
            }
        }
        let mut r = message::reply(m);
        r.insert("clientId".into(), id.into());
        r.insert("version".into(), "1.0".into());
        r.insert("supportedConnectionTypes".into(), CONNECTION_TYPES.into());
        r.insert("advice".into(), message::advice(c));
        r
    }

    fn refuse_handshake(&self, mut r: Message) -> Message {
        r.insert("version".into(), "1.0".into());
        r.insert("supportedConnectionTypes".into(), CONNECTION_TYPES.into());
        r.insert(
            "advice".into(),
            message::advice_handshake(&self.app.config.bayeux),
        );
        r
    }

    async fn connect(&self, m: &Message) -> Result<Message, HeldConnect> {
        let session = match self.session(m) {
            Ok(s) => s,
            Err(r) => return Ok(r),
        };
        match message::str_field(m, "connectionType") {
            None => {
                return Ok(message::error(
                    m,
                    402,
                    "connectionType",
                    "Missing required parameter",
                ))
            }
            Some(t) if !CONNECTION_TYPES.contains(&t) => {
                return Ok(message::error(m, 301, t, "Connection types not supported"))
            }
            Some(_) => {}
        }
        // The client may ask for a shorter hold in the connect's own advice (milliseconds).
        let most = self.app.config.bayeux.timeout_secs.saturating_mul(1000);
        let asked = m
            .get("advice")
            .and_then(|a| a.get("timeout"))
            .and_then(Value::as_u64)
            .map_or(most, |t| t.min(most));
        let timeout = std::time::Duration::from_millis(asked);
        let Ok(events) = session.connect(timeout).await else {
            return Ok(self.unknown(m));
        };
        let mut r = message::reply(m);
        r.insert("advice".into(), message::advice(&self.app.config.bayeux));
        Err(HeldConnect {
            reply: message::to_bytes(&r),
            events,
        })
    }

    /// `/meta/subscribe` (`on`) or `/meta/unsubscribe`: every channel must be a channel name
    /// or a pattern, never `/meta/…` or `/service/…`; a subscribe is allowed by the origin.
    async fn subscribe(&self, m: &Message, on: bool) -> Message {
        let session = match self.session(m) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let channels: Vec<&str> = match m.get("subscription") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) if !a.is_empty() => {
                match a.iter().map(Value::as_str).collect::<Option<Vec<_>>>() {
                    Some(c) => c,
                    None => return message::error(m, 405, "", "Invalid channel"),
                }
            }
            _ => return message::error(m, 402, "subscription", "Missing required parameter"),
        };
        let mut r = message::reply(m);
        r.insert("subscription".into(), m["subscription"].clone());
        for c in &channels {
            if grip::bayeux::is_meta(c) || grip::bayeux::is_service(c) {
                return with_subscription(message::error(m, 403, c, "Forbidden channel"), m);
            }
            if !grip::bayeux::is_channel(c) && !grip::bayeux::is_pattern(c) {
                return with_subscription(message::error(m, 405, c, "Invalid channel"), m);
            }
        }
        let prefix = &self.route.options.channel_prefix;
        if !on {
            for c in channels {
                if session.unsubscribe(format!("{prefix}{c}")).await.is_err() {
                    return self.unknown(m);
                }
            }
            return r;
        }
        let allowed = match self.ask(m).await {
            Verdict::Allowed(allowed) => allowed,
            Verdict::Refused(_) => Vec::new(),
            Verdict::Failed(why) => {
                tracing::debug!(error = %why, "Bayeux subscribe: origin failed");
                return with_subscription(message::error(m, 503, "", "Origin unavailable"), m);
            }
        };
        for c in &channels {
            if !allowed.iter().any(|a| a.name == *c) {
                return with_subscription(message::error(m, 403, c, "Forbidden channel"), m);
            }
        }
        for c in channels {
            let prev_id = allowed
                .iter()
                .find(|a| a.name == c)
                .and_then(|a| a.prev_id.clone());
            if session
                .subscribe(format!("{prefix}{c}"), prev_id)
                .await
                .is_err()
            {
                return self.unknown(m);
            }
        }
        r
    }

    async fn disconnect(&self, m: &Message) -> Message {
        let session = match self.session(m) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let _ = session.disconnect().await;
        message::reply(m)
    }

    /// A message to a channel of the application: forwarded to the origin, which publishes
    /// it (or not) itself.
    async fn publish(&self, m: &Message, channel: &str) -> Message {
        if !grip::bayeux::is_channel(channel) {
            return message::error(m, 405, channel, "Invalid channel");
        }
        if !m.contains_key("data") {
            return message::error(m, 402, "data", "Missing required parameter");
        }
        if m.contains_key("clientId") {
            if let Err(r) = self.session(m) {
                return r;
            }
        }
        match self.ask(m).await {
            Verdict::Allowed(_) => message::reply(m),
            Verdict::Refused(status) => {
                message::error(m, 403, &format!("{channel},{status}"), "Publish refused")
            }
            Verdict::Failed(why) => {
                tracing::debug!(error = %why, "Bayeux publish: origin failed");
                message::error(m, 407, channel, "Failed to publish")
            }
        }
    }

    /// The session `m`'s `clientId` names, or the reply saying why there is none.
    fn session(&self, m: &Message) -> Result<std::sync::Arc<Session>, Message> {
        let Some(id) = message::str_field(m, "clientId") else {
            return Err(message::error(
                m,
                402,
                "clientId",
                "Missing required parameter",
            ));
        };
        self.app
            .bayeux_sessions
            .get::<Session>(&self.key(id))
            .ok_or_else(|| self.unknown(m))
    }

    fn unknown(&self, m: &Message) -> Message {
        let id = message::str_field(m, "clientId").unwrap_or_default();
        let mut r = message::error(m, 402, id, "Unknown client");
        r.insert(
            "advice".into(),
            message::advice_handshake(&self.app.config.bayeux),
        );
        r
    }

    /// The session table's key of client `id`: client ids are per route.
    fn key(&self, id: &str) -> String {
        format!("{}\u{0}{id}", self.route.id)
    }
}

fn with_subscription(mut r: Message, m: &Message) -> Message {
    if let Some(s) = m.get("subscription") {
        r.insert("subscription".into(), s.clone());
    }
    r
}

/// A new client id: 128 random bits in hex.
fn client_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}
