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
pub mod response;
pub mod stream;

use std::sync::Arc;

use bytes::Bytes;
use grip::instruct::{HoldMode, Instruction};
use grip::publish::Action;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use hyper::body::Incoming;

use crate::app::App;
use crate::config::routes::{Route, Target};
use crate::http::{boxed, full, Body};
use crate::hub::{Delivery, Resume, Subscription};
use crate::proxy::body::AccessRecord;
use crate::proxy::error::ProxyError;
use crate::proxy::{headers, Accepted, OriginRequest};
use crate::sink::{HeldStream, Sink};

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
}

impl HeldRequest {
    /// A context for a session with no origin behind it (the test handler).
    pub fn without_origin(app: Arc<App>, route: Arc<Route>) -> HeldRequest {
        HeldRequest {
            app,
            route,
            request: None,
            body: None,
            host: String::new(),
        }
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
    let positions = Positions::new(&ctx.app, &ctx.route, subs, &ins);
    let gone = ins
        .gone_link
        .as_deref()
        .and_then(|url| link::GoneLink::new(&ctx, url));
    match ins.hold {
        Some(HoldMode::Response) => {
            record.hold = Some("response");
            Ok(response::hold(ctx, base, positions, ins.timeout_secs, gone).await)
        }
        hold => {
            if hold == Some(HoldMode::Stream) {
                record.hold = Some("stream");
            } else if ins.next_link.is_none() {
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
            Ok(resp)
        }
    }
}

impl Positions {
    fn filter_input<'a>(
        &'a self,
        pub_meta: &'a std::collections::BTreeMap<String, String>,
        positions: &'a std::collections::BTreeMap<String, String>,
        subscribed: &'a dyn Fn(&str) -> bool,
    ) -> grip::filter::Input<'a> {
        grip::filter::Input {
            sub_meta: &self.meta,
            pub_meta,
            positions,
            subscribed,
        }
    }

    fn position_map(&self) -> std::collections::BTreeMap<String, String> {
        self.channels
            .iter()
            .filter_map(|c| Some((c.origin_name.clone(), c.position.clone()?)))
            .collect()
    }

    /// Runs the filters of `item`'s channel over `content`: `None` when this subscription does
    /// not get it; the content itself (shared, not copied) when no filter rewrote it.
    pub fn filter(
        &self,
        item: &Delivery,
        content: &Bytes,
        content_filters: Option<&[String]>,
    ) -> Option<Bytes> {
        let filters = self
            .channels
            .iter()
            .find(|c| c.name == item.channel)
            .map_or(&[][..], |c| c.filters.as_slice());
        if filters.is_empty() && content_filters.is_none_or(|cf| cf.is_empty()) {
            return Some(content.clone());
        }
        let positions = self.position_map();
        let subscribed = |name: &str| {
            self.channels
                .iter()
                .any(|c| c.origin_name == name || c.name == name)
        };
        let input = self.filter_input(&item.meta, &positions, &subscribed);
        match grip::filter::apply(filters, &input, content_filters, content) {
            Ok(outcome) => outcome.into_shared(content),
            Err(e) => {
                tracing::debug!(channel = %item.channel, error = %e, "filter failed, not delivered");
                None
            }
        }
    }

    /// Applies `build-id` to a body that is not a delivery (the initial body, a next-link
    /// body), when any channel has that filter.
    pub fn build_id_body(&self, body: Bytes) -> Bytes {
        if !self
            .channels
            .iter()
            .any(|c| c.filters.iter().any(|f| f == "build-id"))
        {
            return body;
        }
        let positions = self.position_map();
        let empty = std::collections::BTreeMap::new();
        let subscribed = |_: &str| true;
        let input = self.filter_input(&empty, &positions, &subscribed);
        match grip::filter::build_id(&input, &body) {
            Ok(v) => Bytes::from(v),
            Err(e) => {
                tracing::debug!(error = %e, "build-id could not render the body; sent as is");
                body
            }
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

/// One channel of a session: its hub name, the name the origin used, and the session's position.
#[derive(Debug, Clone)]
pub struct ChannelPos {
    /// Name in the hub (route prefix applied).
    pub name: String,
    /// Name as the origin gave it (for `Grip-Last`).
    pub origin_name: String,
    /// Id of the last item the session has, if known.
    pub position: Option<String>,
    /// Filters of this subscription, in order.
    pub filters: Vec<String>,
}

/// A session's channels, its position on each, and its subscription meta.
#[derive(Debug, Clone, Default)]
pub struct Positions {
    /// Channels in subscription order.
    pub channels: Vec<ChannelPos>,
    /// Subscription meta (`Grip-Set-Meta`), read by filters.
    pub meta: std::collections::BTreeMap<String, String>,
}

/// What to do with an item that reached a session.
pub enum Verdict {
    /// Deliver these items, in order (a gap filled from history, then the item).
    Deliver(Vec<Delivery>),
    /// The session already has it.
    Skip,
    /// Ask the origin: a hint, or a gap history cannot fill.
    Update,
}

impl Positions {
    /// The channels of an instruction plus the target's implicit `sub=` channels, prefixed,
    /// without duplicates, capped at `limits.max_channels_per_connection`.
    pub fn new(app: &App, route: &Route, subs: &[String], ins: &Instruction) -> Positions {
        let prefix = &route.options.channel_prefix;
        let max = app.config.limits.max_channels_per_connection;
        let mut out = Positions {
            meta: ins.meta.clone(),
            ..Positions::default()
        };
        let explicit = ins
            .channels
            .iter()
            .map(|c| (&c.name, c.prev_id.clone(), c.filters.clone()));
        let implicit = subs.iter().map(|s| (s, None, Vec::new()));
        for (origin_name, prev, filters) in explicit.chain(implicit) {
            let name = format!("{prefix}{origin_name}");
            if out.channels.iter().any(|c| c.name == name) {
                continue;
            }
            if out.channels.len() == max {
                tracing::debug!(channel = %name, max, "too many channels for one connection, ignored");
                continue;
            }
            out.channels.push(ChannelPos {
                name,
                origin_name: origin_name.clone(),
                position: prev,
                filters,
            });
        }
        out
    }

    /// What to subscribe to, with each channel's position.
    pub fn requests(&self) -> Vec<(String, Option<String>)> {
        self.channels
            .iter()
            .map(|c| (c.name.clone(), c.position.clone()))
            .collect()
    }

    /// Adds `Grip-Last: <channel>; last-id=<id>` for every channel with a position.
    pub fn grip_last(&self, headers: &mut HeaderMap) {
        headers.remove("grip-last");
        for c in &self.channels {
            let Some(id) = &c.position else { continue };
            if let Ok(v) = HeaderValue::from_str(&format!("{}; last-id={id}", c.origin_name)) {
                headers.append("grip-last", v);
            }
        }
    }

    /// Reads the result of subscribing: items to replay, and the channels (with positions) that
    /// are behind with nothing in local history to catch up from.
    pub fn resume(&self, resumes: Vec<Resume>) -> (Vec<Delivery>, Vec<(String, String)>) {
        let mut replay = Vec::new();
        let mut stale = Vec::new();
        for (c, r) in self.channels.iter().zip(resumes) {
            match r {
                Resume::Live => {}
                // Positions advance as the replayed items are judged and delivered.
                Resume::Replay(items) => replay.extend(items),
                Resume::Stale { last_id } => {
                    tracing::debug!(channel = %c.name, position = ?c.position, ?last_id, "session may be behind its channel");
                    if let Some(pos) = &c.position {
                        stale.push((c.name.clone(), pos.clone()));
                    }
                }
            }
        }
        (replay, stale)
    }

    /// Decides what an item means for this session, and advances the position when delivered.
    pub fn judge(&mut self, sub: &Subscription, item: &Delivery) -> Verdict {
        let hint = item
            .formats
            .http_response
            .as_ref()
            .map(|f| f.action)
            .or(item.formats.http_stream.as_ref().map(|f| f.action))
            == Some(Action::Hint);
        if hint {
            return Verdict::Update;
        }
        let Some(c) = self.channels.iter_mut().find(|c| c.name == item.channel) else {
            return Verdict::Deliver(vec![item.clone()]);
        };
        if item.id.is_some() && item.id == c.position {
            // Already delivered (replayed from history, then heard live).
            return Verdict::Skip;
        }
        let verdict = match (&c.position, &item.prev_id, &item.id) {
            (Some(pos), Some(prev), _) if prev != pos && !item.no_seq => {
                if item
                    .id
                    .as_deref()
                    .is_some_and(|id| sub.is_covered(&c.name, id, pos))
                {
                    return Verdict::Skip;
                }
                match sub.history_between(&c.name, pos, item.id.as_deref()) {
                    Some(items) if items.last().is_some_and(|l| l.id == item.id) => {
                        Verdict::Deliver(items)
                    }
                    _ => return Verdict::Update,
                }
            }
            _ => Verdict::Deliver(vec![item.clone()]),
        };
        if let Some(id) = &item.id {
            c.position = Some(id.clone());
        }
        verdict
    }

    /// Takes the positions the origin gave in a new instruction; channels it names keep theirs
    /// when it gives none.
    pub fn update_from(&mut self, next: Positions) {
        self.meta.extend(next.meta);
        let old = std::mem::take(&mut self.channels);
        self.channels = next
            .channels
            .into_iter()
            .map(|mut c| {
                if c.position.is_none() {
                    c.position = old
                        .iter()
                        .find(|o| o.name == c.name)
                        .and_then(|o| o.position.clone());
                }
                c
            })
            .collect();
    }
}
