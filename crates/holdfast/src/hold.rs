//! Held HTTP sessions: turning an origin's GRIP answer into a response hold (long-poll), a stream
//! hold, or a relayed response followed by next links — and keeping each session in step with
//! its channels.
//!
//! [`accept`] reads a GRIP response from an origin — buffering at most `limits.max_accept_body`
//! bytes; a bigger body is allowed only for stream holds and bare responses, whose body then
//! streams through — and [`hold`] carries out the instruction. The proxy, the built-in test
//! handler and a session's own retries all end in [`hold`].
//!
//! A hold subscribes to its channels *before* anything is sent to the client, so any publish made
//! after the client saw its first byte reaches it. Each session tracks its position (last item
//! id) per channel in [`Positions`]; [`Positions::judge`] decides for every item whether it is
//! delivered, already covered, or reveals a gap, which is filled from the hub's history when it
//! can be and otherwise by asking the origin again ([`link`]).

pub mod link;
pub mod positions;
pub mod response;
pub mod stream;

use std::sync::Arc;

use bytes::Bytes;
use grip::instruct::HoldMode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use hyper::body::Incoming;

use crate::app::App;
use crate::config::routes::{Route, Target};
use crate::crossorigin::Shape;
use crate::http::{boxed, full, Body};
use crate::hub::Delivery;
use crate::proxy::body::AccessRecord;
use crate::proxy::error::ProxyError;
use crate::proxy::{headers, Accepted, OriginRequest};
use crate::sink::{HeldAnswer, HeldStream, Sink};
pub use positions::{ChannelPos, ChannelsError, Positions, Verdict};

/// What a session needs to ask its origin again: for retries, next links and gone links.
pub struct HeldRequest {
    /// Shared state.
    pub app: Arc<App>,
    /// The route the request came in on (kept across route reloads).
    pub route: Arc<Route>,
    /// The request as sent to the origin; `None` for the test handler, which has no origin.
    pub request: Option<OriginRequest>,
    /// The whole request body, for retries; `None` when it was over `limits.max_accept_body`.
    pub body: Option<Bytes>,
    /// The host the client asked for.
    pub host: String,
    /// Where the client connects from.
    pub client: crate::conns::Client,
    /// The session's entry in the connection registry, once it holds.
    pub conn: std::sync::OnceLock<crate::conns::ConnGuard>,
    /// Counted in `holdfast_connections` while it holds.
    pub held: std::sync::OnceLock<crate::metrics::Held>,
    /// The server can take the client's socket from hyper while a long-poll is held
    /// (`can_defer` of [`crate::route::handle`]); the first response hold uses it and clears it.
    pub defer: std::sync::atomic::AtomicBool,
}

impl HeldRequest {
    /// A context for a session with no origin behind it (the test handler).
    pub fn without_origin(
        app: Arc<App>,
        route: Arc<Route>,
        client: crate::conns::Client,
    ) -> HeldRequest {
        HeldRequest {
            app,
            route,
            request: None,
            body: None,
            host: String::new(),
            client,
            conn: std::sync::OnceLock::new(),
            held: std::sync::OnceLock::new(),
            defer: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Registers the session in the connection registry and counts it, once.
    fn register(&self, transport: crate::metrics::Transport) {
        self.held
            .get_or_init(|| self.app.connections.hold(transport, &self.route.id));
        self.conn.get_or_init(|| {
            self.app
                .conns
                .open(None, transport, self.client, self.route.explicit_id(), None)
        });
    }
}

/// Reads an origin's GRIP response and holds it.
pub async fn accept(
    ctx: HeldRequest,
    target: &Target,
    resp: Response<Incoming>,
    record: &mut AccessRecord,
) -> Result<Response<Body>, ProxyError> {
    let accepted = crate::proxy::read_grip(&ctx.app, &target.label(), resp).await?;
    hold(Arc::new(ctx), Some(target), accepted, record).await
}

/// The response the client gets when no publish arrives: the origin's, rewritten.
pub struct BaseResponse {
    status: StatusCode,
    reason: Option<String>,
    headers: HeaderMap,
    body: Bytes,
}

impl BaseResponse {
    fn of(accepted: &Accepted) -> Result<BaseResponse, String> {
        let ins = &accepted.instruction;
        if let Some(r) = &ins.response {
            let mut headers = HeaderMap::new();
            for (k, v) in &r.headers {
                let name = HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| format!("response header name {k:?} is invalid"))?;
                let value = HeaderValue::from_str(v)
                    .map_err(|_| format!("response header {k:?} has an invalid value"))?;
                headers.append(name, value);
            }
            headers::remove_grip(&mut headers);
            return Ok(BaseResponse {
                status: status_code(r.code)?,
                reason: r.reason.clone(),
                headers,
                body: r.body.clone(),
            });
        }
        // Owned copies: a hold keeps these for as long as its client stays.
        let mut headers = headers::detached(&ins.client_headers(&accepted.headers));
        headers::remove_hop_by_hop(&mut headers);
        let (status, reason) = match &ins.status {
            Some(s) => (status_code(s.code)?, s.reason.clone()),
            None => (accepted.status, None),
        };
        Ok(BaseResponse {
            status,
            reason,
            headers,
            body: accepted.body.clone(),
        })
    }

    /// A sink the hub may answer this hold through ([`Sink::answering`]) with its header
    /// lines; `None` when they say `Connection: close` (that answer ends the connection, and
    /// the server writes it).
    fn answering_sink(&self) -> Option<Arc<Sink>> {
        if crate::http::says_close(&self.headers) {
            return None;
        }
        let mut head = Vec::with_capacity(self.headers.len() * 32);
        let dated = crate::sink::header_lines(&self.headers, &mut head);
        Some(Sink::answering(head, dated))
    }

    fn into_response(self, body: Body) -> Response<Body> {
        let mut resp = Response::new(body);
        *resp.status_mut() = self.status;
        *resp.headers_mut() = self.headers;
        set_reason(&mut resp, self.reason.as_deref());
        resp
    }
}

fn status_code(code: u16) -> Result<StatusCode, String> {
    StatusCode::from_u16(code).map_err(|_| format!("status code {code} cannot be sent over HTTP"))
}

fn set_reason(resp: &mut Response<Body>, reason: Option<&str>) {
    if let Some(reason) = reason {
        if let Ok(r) = hyper::ext::ReasonPhrase::try_from(reason.as_bytes().to_vec()) {
            resp.extensions_mut().insert(r);
        }
    }
}

/// Carries out an instruction: relay (with next links), response hold or stream hold.
pub async fn hold(
    ctx: Arc<HeldRequest>,
    target: Option<&Target>,
    accepted: Accepted,
    record: &mut AccessRecord,
) -> Result<Response<Body>, ProxyError> {
    let label = target.map_or_else(|| "test".to_string(), Target::label);
    let bad = |reason: String| ProxyError::BadInstructions {
        target: label.clone(),
        reason,
    };
    let mut base = BaseResponse::of(&accepted).map_err(bad)?;
    let ins = accepted.instruction;
    let subs = target.map(|t| t.subs.as_slice()).unwrap_or_default();
    let positions =
        Positions::new(&ctx.app, &ctx.route, subs, &ins).map_err(|e| bad(e.to_string()))?;
    let gone = ins
        .gone_link
        .as_deref()
        .and_then(|url| link::GoneLink::new(&ctx, url));
    match ins.hold {
        Some(HoldMode::Response) => {
            record.hold = Some("response");
            ctx.register(crate::metrics::Transport::LongPoll);
            // The gone link is rare: boxed, a waiting hold keeps a pointer, not room for it.
            let gone = gone.map(Box::new);
            if ctx.defer.swap(false, std::sync::atomic::Ordering::Relaxed) {
                // Answered at once with a placeholder: the server frees hyper's connection while
                // the request waits, and writes the response when it comes, or lets the hub
                // write a plain one through the sink.
                let sink = base.answering_sink();
                let held =
                    response::later(ctx, base, positions, ins.timeout_secs, gone, sink.clone());
                let mut resp = crate::http::Deferred::response(held);
                if let Some(sink) = sink {
                    resp.extensions_mut().insert(HeldAnswer(sink));
                }
                return Ok(resp);
            }
            Ok(response::hold(ctx, base, positions, ins.timeout_secs, gone, None).await)
        }
        hold => {
            if hold == Some(HoldMode::Stream) {
                record.hold = Some("stream");
                ctx.register(crate::metrics::Transport::Stream);
            } else if ins.next_link.is_none() {
                // Pushpin sends these without the origin's length (hyper recounts a whole body).
                base.headers.remove(header::CONTENT_LENGTH);
                let body = match accepted.rest {
                    Some(rest) => boxed(stream::Prefixed::new(base.body.clone(), rest)),
                    None => full(base.body.clone()),
                };
                return Ok(base.into_response(body));
            }
            base.headers.remove(header::CONTENT_LENGTH);
            let initial = std::mem::take(&mut base.body);
            let sink = Sink::new();
            let body = stream::session_body(
                ctx,
                stream::Start {
                    initial,
                    rest: accepted.rest,
                    positions,
                    live: hold == Some(HoldMode::Stream),
                    keep_alive: ins.keep_alive,
                    next_link: ins.next_link,
                    gone,
                    sink: sink.clone(),
                },
            );
            let mut resp = base.into_response(body);
            resp.extensions_mut().insert(HeldStream(sink));
            Ok(Shape::Stream.mark(resp))
        }
    }
}

/// Asks the cluster's shared history for what `stale` channels missed. Returns the items to
/// replay, or `None` when any channel cannot be caught up that way.
pub async fn fill_from_bus(app: &App, stale: &[(String, String)]) -> Option<Vec<Delivery>> {
    let mut out = Vec::new();
    for (channel, after) in stale {
        out.extend(app.bus.history_after(channel, after).await?);
    }
    Some(out)
}
