//! WebSocket-over-HTTP (target param `over_http`, reference §3.4): the client's WebSocket
//! becomes a series of `POST`s of `application/websocket-events` to the origin, and the events
//! in each response drive the client, as an origin's messages do in GRIP WebSocket mode.
//!
//! [`open`] sends `OPEN`; any answer but `200` with `application/websocket-events` goes to the
//! client as it is. [`Conn::run`] then keeps at most one request in flight, so events reach the
//! origin in order: client events wait in an [`outbox::Outbox`] (bounded by
//! `websocket.over_http_max_pending`; over it the connection closes with 1011) and go out
//! together in the next request. Every request carries `Connection-Id`, the meta the origin
//! set (`Meta-*`), and a freshly signed `Grip-Sig`; requests go through the proxy's pooled
//! origin clients. A request that cannot reach the origin is
//! tried again after 1, 2, 4, 8 and 16 s plus up to 1 s of jitter (never the `OPEN`); any other
//! failure, a non-`200` answer, a body over `websocket.over_http_max_response_body` or a
//! malformed event stream closes the client with 1011 and a log line naming the reason.

mod outbox;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use grip::instruct::MAX_TIMEOUT_SECS;
use grip::wsevents::{self, Event, EventKind};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::handshake::{self, ClientHandshake};
use super::session::{Published, Session, SessionSpec};
use super::{close_for, close_frame, finish, flush_left, send_all, Opened, Socket};
use crate::app::App;
use crate::config::routes::{Route, Target};
use crate::deadline;
use crate::http::full;
use crate::origin::Reclaimable;
use crate::proxy::error::ProxyError;
use crate::proxy::{headers, Failure};
use outbox::Outbox;

/// The shortest `Keep-Alive-Interval` honoured, as Pushpin's.
const MIN_KEEP_ALIVE: Duration = Duration::from_secs(20);

/// Headers of the origin's `OPEN` answer that are not for the client's `101`.
const NOT_FOR_CLIENT: &[&str] = &["content-type", "keep-alive-interval"];

/// An origin's answer to one request.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn is_events(&self) -> bool {
        self.status == StatusCode::OK
            && self
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case(wsevents::CONTENT_TYPE))
    }
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
enum PostError {
    #[error("cannot connect: {0}")]
    Unreachable(String),
    #[error("no response within {0} s")]
    Timeout(u64),
    #[error("response body over {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Failed(String),
}

/// Everything a request needs, owned, so it can run while the connection goes on.
#[derive(Clone)]
struct Origin {
    app: Arc<App>,
    route: Arc<Route>,
    uri: Uri,
    access: crate::origin::Access,
    label: String,
    headers: HeaderMap,
}

impl Origin {
    /// POSTs `events`, trying again while the origin cannot be reached when `retry`.
    async fn post(self, body: Bytes, extra: HeaderMap, retry: bool) -> Result<Reply, PostError> {
        let timeout = self.app.config.timeouts.origin_response();
        let mut retries = crate::retry::origin_retries();
        loop {
            let (lent, _) = Reclaimable::new(full(body.clone()));
            let mut req = Request::post(self.uri.clone())
                .body(lent)
                .expect("a valid URI and method");
            let h = req.headers_mut();
            h.clone_from(&self.headers);
            h.extend(extra.clone());
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            self.app.grip_headers(&self.route, h);
            let sent = self.app.origins.request(&self.label, self.access, req);
            let why = match crate::proxy::exchange(&self.app, &self.label, sent).await {
                Ok(resp) => return self.read(resp).await,
                Err(Failure::Unreachable(why)) => why,
                Err(Failure::Fatal(ProxyError::OriginTimeout(_))) => {
                    return Err(PostError::Timeout(timeout.as_secs()))
                }
                Err(Failure::Fatal(ProxyError::Origin { reason, .. })) => {
                    return Err(PostError::Failed(reason))
                }
                Err(Failure::Fatal(e)) => return Err(PostError::Failed(e.to_string())),
            };
            let Some(delay) = retries.next().filter(|_| retry) else {
                return Err(PostError::Unreachable(why));
            };
            tracing::warn!(target = %self.label, error = %why, retry_in_ms = delay.as_millis() as u64,
                "WebSocket-over-HTTP origin unreachable, retrying");
            tokio::time::sleep(delay).await;
        }
    }

    async fn read(&self, resp: Response<hyper::body::Incoming>) -> Result<Reply, PostError> {
        let limit = self.app.config.websocket.over_http_max_response_body;
        let (parts, body) = resp.into_parts();
        let body = match Limited::new(body, limit).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(PostError::TooLarge(limit))
            }
            Err(e) => return Err(PostError::Failed(e.to_string())),
        };
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

type InFlight = Pin<Box<dyn Future<Output = Result<Reply, PostError>> + Send>>;

/// An accepted WebSocket-over-HTTP connection, waiting for the client's upgrade.
pub struct Conn {
    origin: Origin,
    session: Session,
    cid: HeaderValue,
    outbox: Outbox,
    in_flight: Option<InFlight>,
    refresh: bool,
    keep_alive: Option<Duration>,
    last_request: Instant,
    initial: Vec<Event>,
    /// The server's drain guard, set by [`Conn::run`]; last, so it is released after the rest
    /// of the connection has been dropped.
    drain: Option<crate::shutdown::DrainGuard>,
}

/// The headers every request of one connection starts from: the client's, as the proxy
/// rewrote them, without what the events protocol sets itself, and with the target's `Host`.
fn open_headers(base: &HeaderMap, target: &Target) -> HeaderMap {
    // Owned copies: the connection keeps these for every request it makes, for as long as the
    // client stays, and slices of the client's request head would pin hyper's 8 KiB buffer.
    let mut h = crate::proxy::headers::detached(base);
    for name in [header::ACCEPT, header::CONTENT_TYPE, header::CONTENT_LENGTH] {
        h.remove(name);
    }
    let client_meta: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with("meta-") || k.as_str() == "connection-id")
        .cloned()
        .collect();
    for name in client_meta {
        h.remove(name);
    }
    let events = HeaderValue::from_static(wsevents::CONTENT_TYPE);
    h.insert(header::ACCEPT, events.clone());
    h.insert(header::CONTENT_TYPE, events);
    if let Some(host) = target.host_header.as_deref() {
        if let Ok(host) = HeaderValue::from_str(host) {
            h.insert(header::HOST, host);
        }
    }
    h
}

/// Sends `OPEN` to `target`.
pub async fn open(
    app: &Arc<App>,
    route: &Arc<Route>,
    target: &Target,
    path: &str,
    base: &HeaderMap,
    client: &ClientHandshake,
) -> Result<Opened<Conn>, ProxyError> {
    let label = target.label();
    let h = open_headers(base, target);
    let cid = HeaderValue::from_str(&connection_id()).expect("hex is a valid header value");
    let origin = Origin {
        app: app.clone(),
        route: route.clone(),
        uri: crate::proxy::origin_uri(target, path)?,
        access: crate::origin::Access::of(target),
        label: label.clone(),
        headers: h,
    };
    let mut extra = HeaderMap::new();
    extra.insert("connection-id", cid.clone());
    let body = Bytes::from_static(b"OPEN\r\n");
    let reply = match origin.clone().post(body, extra, false).await {
        Ok(reply) => reply,
        Err(PostError::Unreachable(why)) => return Ok(Opened::Unreachable(why)),
        Err(PostError::Timeout(_)) => return Err(ProxyError::OriginTimeout(label)),
        Err(e) => {
            return Err(ProxyError::Origin {
                target: label,
                reason: e.to_string(),
            })
        }
    };
    if !reply.is_events() {
        tracing::debug!(target = %label, status = reply.status.as_u16(), "origin refused the WebSocket-over-HTTP OPEN");
        let mut resp = Response::new(full(reply.body));
        *resp.status_mut() = reply.status;
        *resp.headers_mut() = reply.headers;
        headers::to_client(resp.headers_mut());
        return Ok(Opened::Refused(resp));
    }
    let events = opened_events(&reply.body, &label)?;
    // An upstream GRIP proxy gets the origin's messages as they are and does the GRIP work.
    let message_prefix = if route.options.no_grip || client.upstream {
        None
    } else {
        handshake::grip_prefix(&reply.headers)
    };
    let spec = SessionSpec {
        channel_prefix: route.options.channel_prefix.clone(),
        implicit: target.subs.clone(),
        message_prefix,
        label,
        client: client.client,
        conn_id: cid.to_str().ok().map(str::to_string),
        route_id: route.explicit_id().map(str::to_string),
        counted: (crate::metrics::Transport::WsOverHttp, route.id.clone()),
        presence_origin: app.presence.origin_of(route),
    };
    spec.check(app).map_err(|e| ProxyError::BadInstructions {
        target: spec.label.clone(),
        reason: e.to_string(),
    })?;
    let mut conn = Conn {
        session: Session::new(app.clone(), spec),
        cid,
        outbox: Outbox::new(app.config.websocket.over_http_max_pending, target.one_event),
        in_flight: None,
        refresh: false,
        keep_alive: None,
        last_request: Instant::now(),
        initial: events,
        drain: None,
        origin,
    };
    conn.apply_headers(&reply.headers);
    let mut extra = handshake::client_headers(reply.headers.clone(), NOT_FOR_CLIENT);
    if client.upstream && !route.options.no_grip {
        handshake::pass_grip_up(&reply.headers, &mut extra);
    }
    let set_meta: Vec<HeaderName> = extra
        .keys()
        .filter(|k| k.as_str().starts_with("set-meta-"))
        .cloned()
        .collect();
    for name in set_meta {
        extra.remove(name);
    }
    Ok(Opened::Accepted(client.accept(extra), conn))
}

/// The events of the origin's answer to `OPEN`, past the `OPEN` it must start with.
fn opened_events(body: &Bytes, label: &str) -> Result<Vec<Event>, ProxyError> {
    let bad = |reason: String| ProxyError::Origin {
        target: label.to_string(),
        reason,
    };
    let mut events = wsevents::parse_events_shared(body).map_err(|e| {
        bad(format!(
            "malformed websocket-events in the OPEN answer: {e}"
        ))
    })?;
    if events.first().map(|e| e.kind) != Some(EventKind::Open) {
        return Err(bad("the OPEN answer does not start with OPEN".to_string()));
    }
    events.remove(0);
    Ok(events)
}

/// A random version-4 UUID, the `Connection-Id` of one client connection.
fn connection_id() -> String {
    let b = (rand::random::<u128>() & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    let h = format!("{b:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

enum Input {
    Shutdown,
    Client(Option<Result<Message, WsError>>),
    Reply(Result<Reply, PostError>),
    Published(crate::hub::Delivery),
    Timer,
    /// The hub left bytes on the client socket.
    Left,
    /// The `refresh` command named this connection.
    Refresh,
}

/// How the connection ends.
enum End {
    /// Close the client with this frame (or complete the close it began), then tell the origin
    /// with `DISCONNECT` if `notify`.
    Close(Option<CloseFrame>, bool),
    /// A publish closed the connection: close the client with this frame, then tell the origin
    /// with a `CLOSE` that has no code, as Pushpin 1.36 does.
    ClosedByPublish(Option<CloseFrame>),
    /// Drop the client without a close; tell the origin if `notify`.
    Drop(bool),
}

impl Conn {
    /// Completes the client's upgrade and runs the connection until it closes; `drain` (the
    /// server's drain guard) is held until then.
    pub async fn run(
        mut self,
        upgrade: super::ClientUpgrade,
        drain: Option<crate::shutdown::DrainGuard>,
    ) {
        self.drain = drain;
        // The rare and large steps are boxed, so a connection waiting for input is not sized
        // for them (the task keeps its future for as long as the client stays): the upgrade,
        // origin replies, timers, the close and the DISCONNECT. This took the future from
        // 3,240 to 2,776 bytes (2,840 with the hub's sink); boxing the per-message step too
        // would save only 48 more and cost an allocation per message. The future is spawned
        // as it is: wrapped in an `async` block, the moved `Conn` (864 bytes) was kept twice.
        let sink = self.session.sink().clone();
        let upgraded = super::upgrade_client(&self.origin.app, upgrade, &sink);
        let Some(mut client) = Box::pin(upgraded).await else {
            Box::pin(self.tell_gone(EventKind::Disconnect)).await;
            return;
        };
        let initial = std::mem::take(&mut self.initial);
        let mut end = Box::pin(self.on_origin(&mut client, initial)).await;
        let mut client_open = true;
        let mut shutdown = std::pin::pin!(self.origin.app.shutdown.signal().into_stopped());
        let refresh = self.session.refresh_signal().cloned();
        while end.is_none() {
            self.maybe_request();
            let deadline = self.deadline();
            self.session.park();
            let input = tokio::select! {
                () = &mut shutdown => Input::Shutdown,
                m = next_if(&mut client, client_open) => Input::Client(m),
                r = in_flight(&mut self.in_flight) => Input::Reply(r),
                item = self.session.next_delivery() => Input::Published(item),
                () = sleep_until(deadline) => Input::Timer,
                () = sink.notified() => Input::Left,
                () = notified(refresh.as_deref()) => Input::Refresh,
            };
            self.session.unpark();
            end = match input {
                Input::Shutdown => {
                    Some(End::Close(close_frame(1001, "server shutting down"), true))
                }
                Input::Client(m) => self.on_client(m, &mut client_open),
                Input::Reply(r) => {
                    self.in_flight = None;
                    self.last_request = Instant::now();
                    Box::pin(self.on_reply(&mut client, r, client_open)).await
                }
                Input::Published(item) => self.published(&mut client, item).await,
                Input::Timer => Box::pin(self.timer(&mut client)).await,
                Input::Left => (!flush_left(&mut client).await).then_some(End::Drop(true)),
                Input::Refresh => {
                    self.refresh = true;
                    None
                }
            };
            if end.is_none() && !client_open && self.in_flight.is_none() && self.outbox.is_empty() {
                end = Some(End::Close(None, false));
            }
        }
        let within = self.origin.app.config.websocket.close_timeout();
        let tell = match end {
            Some(End::Close(frame, notify)) => {
                Box::pin(finish(&mut client, frame, within)).await;
                notify.then_some(EventKind::Disconnect)
            }
            Some(End::ClosedByPublish(frame)) => {
                Box::pin(finish(&mut client, frame, within)).await;
                Some(EventKind::Close)
            }
            Some(End::Drop(notify)) => notify.then_some(EventKind::Disconnect),
            None => None,
        };
        drop(client);
        if let Some(kind) = tell {
            Box::pin(self.tell_gone(kind)).await;
        }
    }

    /// Tells the origin the client is gone, with `DISCONNECT` or `CLOSE` (best effort, one
    /// attempt). A request still in flight is abandoned: nothing it could answer can reach the
    /// client any more.
    async fn tell_gone(&mut self, kind: EventKind) {
        self.in_flight = None;
        self.outbox.settle(None);
        let _ = self.outbox.push(Event::new(kind));
        let (events, replayed) = self.outbox.offer();
        let (body, extra) = self.encode(&events, replayed);
        if let Err(e) = self.origin.clone().post(body, extra, false).await {
            tracing::debug!(target = %self.origin.label, error = %e, ?kind, "last event not delivered");
        }
    }

    fn encode(&self, events: &[Event], replayed: usize) -> (Bytes, HeaderMap) {
        let mut body = Vec::new();
        wsevents::encode_events(events, &mut body);
        let mut extra = HeaderMap::new();
        extra.insert("connection-id", self.cid.clone());
        for (name, value) in self.session.meta() {
            let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(format!("meta-{name}").as_bytes()),
                HeaderValue::from_str(value),
            ) else {
                continue;
            };
            extra.insert(n, v);
        }
        if replayed > 0 {
            extra.insert("content-bytes-replayed", HeaderValue::from(replayed));
        }
        (Bytes::from(body), extra)
    }

    /// Starts a request when none is in flight and there is something to send.
    fn maybe_request(&mut self) {
        if self.in_flight.is_some() || (self.outbox.is_empty() && !self.refresh) {
            return;
        }
        self.refresh = false;
        let (events, replayed) = self.outbox.offer();
        let (body, extra) = self.encode(&events, replayed);
        self.in_flight = Some(Box::pin(self.origin.clone().post(body, extra, true)));
    }

    fn deadline(&self) -> Option<Instant> {
        let ka = self
            .keep_alive
            .filter(|_| self.in_flight.is_none())
            .map(|every| deadline::later(self.last_request, every));
        match (ka, self.session.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn apply_headers(&mut self, h: &HeaderMap) {
        for (name, value) in h {
            if let Some(meta) = name.as_str().strip_prefix("set-meta-") {
                let value = value.to_str().ok().filter(|v| !v.is_empty());
                self.session
                    .set_meta(meta.to_string(), value.map(str::to_string));
            }
        }
        let Some(value) = h.get("keep-alive-interval") else {
            return;
        };
        match value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|secs| *secs <= MAX_TIMEOUT_SECS)
        {
            Some(secs) => self.keep_alive = Some(Duration::from_secs(secs).max(MIN_KEEP_ALIVE)),
            // Pushpin ignores a value it cannot read as an int; so does this, but says so.
            None => tracing::warn!(
                target = %self.origin.label,
                value = %String::from_utf8_lossy(value.as_bytes()),
                "ignoring Keep-Alive-Interval from origin: not a whole number of seconds from 0 to {MAX_TIMEOUT_SECS}"
            ),
        }
    }

    fn on_client(
        &mut self,
        m: Option<Result<Message, WsError>>,
        client_open: &mut bool,
    ) -> Option<End> {
        let label = &self.origin.label;
        let event = match m {
            None => {
                tracing::debug!(target = %label, "WebSocket client went away");
                *client_open = false;
                Event::new(EventKind::Disconnect)
            }
            Some(Err(e)) => {
                *client_open = false;
                match close_for(&e) {
                    Some((code, why)) => {
                        tracing::debug!(target = %label, error = %e, code, "closing WebSocket: client sent {why}");
                        return Some(End::Close(close_frame(code, why), true));
                    }
                    None => {
                        tracing::debug!(target = %label, error = %e, "WebSocket client went away");
                        Event::new(EventKind::Disconnect)
                    }
                }
            }
            Some(Ok(Message::Close(frame))) => {
                *client_open = false;
                match frame {
                    Some(f) => Event::close(f.code.into(), f.reason.as_str()),
                    None => Event::new(EventKind::Close),
                }
            }
            Some(Ok(_)) if self.session.is_detached() => return None,
            Some(Ok(Message::Text(t))) => Event::with_content(EventKind::Text, Bytes::from(t)),
            Some(Ok(Message::Binary(b))) => Event::with_content(EventKind::Binary, b),
            Some(Ok(Message::Ping(p))) => Event::with_content(EventKind::Ping, p),
            Some(Ok(Message::Pong(p))) => Event::with_content(EventKind::Pong, p),
            Some(Ok(Message::Frame(_))) => return None,
        };
        match self.outbox.push(event) {
            Ok(()) => None,
            Err(waiting) => {
                tracing::warn!(target = %label, waiting, limit = self.origin.app.config.websocket.over_http_max_pending,
                    "closing WebSocket: too much client data waiting for the origin");
                Some(End::Close(close_frame(1011, "origin too slow"), true))
            }
        }
    }

    async fn on_reply(
        &mut self,
        client: &mut Socket,
        reply: Result<Reply, PostError>,
        client_open: bool,
    ) -> Option<End> {
        let label = self.origin.label.clone();
        if !client_open {
            // Only the client's CLOSE or DISCONNECT was waiting for this; the answer no longer
            // matters.
            self.outbox.settle(None);
            if let Err(e) = reply {
                tracing::debug!(target = %label, error = %e, "last WebSocket-over-HTTP request failed");
            }
            return None;
        }
        let reply = match reply {
            Ok(r) if r.is_events() => r,
            Ok(r) => {
                tracing::warn!(target = %label, status = r.status.as_u16(), content_type = ?r.headers.get(header::CONTENT_TYPE),
                    "closing WebSocket: origin did not answer 200 with application/websocket-events");
                return Some(End::Close(close_frame(1011, "origin error"), false));
            }
            Err(e) => {
                tracing::warn!(target = %label, error = %e, "closing WebSocket: WebSocket-over-HTTP request failed");
                return Some(End::Close(close_frame(1011, "origin error"), false));
            }
        };
        let accepted = reply
            .headers
            .get("content-bytes-accepted")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        self.outbox.settle(accepted);
        self.apply_headers(&reply.headers);
        let events = match wsevents::parse_events_shared(&reply.body) {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(target = %label, error = %e, "closing WebSocket: malformed websocket-events from origin");
                return Some(End::Close(close_frame(1011, "origin error"), true));
            }
        };
        self.on_origin(client, events).await
    }

    /// Carries out the origin's events on the client.
    async fn on_origin(&mut self, client: &mut Socket, events: Vec<Event>) -> Option<End> {
        let mut out = Vec::new();
        let mut end = None;
        for event in events {
            let msg = match event.kind {
                EventKind::Text => {
                    match tokio_tungstenite::tungstenite::Utf8Bytes::try_from(event.content) {
                        Ok(t) => Message::Text(t),
                        Err(_) => {
                            tracing::warn!(target = %self.origin.label, "closing WebSocket: origin TEXT event is not UTF-8");
                            end = Some(End::Close(close_frame(1011, "origin error"), true));
                            break;
                        }
                    }
                }
                EventKind::Binary => Message::Binary(event.content),
                EventKind::Ping => Message::Ping(event.content),
                EventKind::Pong => Message::Pong(event.content),
                EventKind::Close => {
                    let frame = event
                        .close_code_and_reason()
                        .and_then(|(code, reason)| close_frame(code, &reason));
                    end = Some(End::Close(frame, false));
                    break;
                }
                EventKind::Disconnect => {
                    end = Some(End::Drop(false));
                    break;
                }
                EventKind::Open => continue,
            };
            match self.session.on_origin_message(msg) {
                Ok(Some(m)) => out.push(m),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(target = %self.origin.label, error = %e, "closing WebSocket: bad control message from origin");
                    end = Some(End::Close(
                        close_frame(1011, "bad control message from origin"),
                        true,
                    ));
                    break;
                }
            }
        }
        if !out.is_empty() {
            self.session.sent();
            if !send_all(client, out).await {
                return Some(End::Drop(true));
            }
        }
        end
    }

    async fn published(&mut self, client: &mut Socket, first: crate::hub::Delivery) -> Option<End> {
        let mut out = Vec::new();
        let mut next = Some(first);
        let mut end = None;
        while let Some(item) = next.take().or_else(|| self.session.try_delivery()) {
            match self.session.published(&item) {
                Published::Send(m) => out.push(m),
                Published::Close(frame) => {
                    end = Some(End::ClosedByPublish(frame));
                    break;
                }
                Published::Refresh => self.refresh = true,
                Published::Ignore => {}
            }
            if out.len() >= 64 {
                break;
            }
        }
        if !out.is_empty() {
            self.session.sent();
            if !send_all(client, out).await {
                return Some(End::Drop(true));
            }
        }
        end
    }

    async fn timer(&mut self, client: &mut Socket) -> Option<End> {
        let now = Instant::now();
        if self.keep_alive.is_some_and(|every| {
            self.in_flight.is_none() && deadline::later(self.last_request, every) <= now
        }) {
            self.refresh = true;
        }
        let due = self.session.due(now);
        if !due.is_empty() && !send_all(client, due).await {
            return Some(End::Drop(true));
        }
        None
    }
}

async fn in_flight(f: &mut Option<InFlight>) -> Result<Reply, PostError> {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// The `refresh` command's signal; pending for a connection without one.
async fn notified(signal: Option<&tokio::sync::Notify>) {
    match signal {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The client's next message; pending once it has closed.
async fn next_if(client: &mut Socket, open: bool) -> Option<Result<Message, WsError>> {
    if open {
        futures_util::StreamExt::next(client).await
    } else {
        std::future::pending().await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn connection_ids_are_version_4_uuids() {
        let a = super::connection_id();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
        assert_ne!(a, super::connection_id());
    }
}
