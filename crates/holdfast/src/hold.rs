//! Held HTTP sessions: turning an origin's GRIP answer into a response hold (long-poll) or a
//! stream hold.
//!
//! [`accept`] reads a GRIP response from an origin — buffering at most `limits.max_accept_body`
//! bytes; a bigger body is allowed only for stream holds, whose initial body then streams through
//! — and [`hold`] carries out the instruction. Both the proxy and the built-in test handler end
//! in [`hold`]. A hold subscribes to its channels *before* anything is sent to the client, so any
//! publish made after the client saw its first byte reaches it.

pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use grip::instruct::{HoldMode, Instruction};
use grip::publish::{Action, HttpResponseFormat, ResponseBody};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::app::App;
use crate::config::routes::{Route, Target, TargetKind};
use crate::hub::Want;
use crate::proxy::body::{boxed, full, AccessRecord, Body};
use crate::proxy::error::ProxyError;
use crate::proxy::headers;

/// An origin's GRIP answer, ready to be held.
pub struct Accepted {
    /// The origin's status.
    pub status: StatusCode,
    /// The origin's headers, `Grip-*` included.
    pub headers: HeaderMap,
    /// The buffered body (all of it, unless `rest` is set).
    pub body: Bytes,
    /// The body beyond the buffered prefix; only for stream holds.
    pub rest: Option<Incoming>,
    /// What the origin asked for.
    pub instruction: Instruction,
}

/// Reads an origin's GRIP response and holds it.
pub async fn accept(
    app: &Arc<App>,
    route: &Route,
    target: &Target,
    resp: Response<Incoming>,
    record: &mut AccessRecord,
) -> Result<Response<Body>, ProxyError> {
    let label = target.label();
    let (parts, mut incoming) = resp.into_parts();
    let limit = app.config.limits.max_accept_body;
    let mut buf = BytesMut::new();
    let mut rest = None;
    while let Some(frame) = incoming.frame().await {
        let frame = frame.map_err(|e| ProxyError::Origin {
            target: label.clone(),
            reason: crate::proxy::error_chain(&e),
        })?;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
        }
        if buf.len() > limit {
            rest = Some(incoming);
            break;
        }
    }
    let bad = |reason: String| ProxyError::BadInstructions {
        target: label.clone(),
        reason,
    };
    let instruction = if rest.is_some() {
        // Only a stream hold (or a bare response) may have an unbounded body, and then its
        // instructions must be in headers.
        let instruction =
            grip::instruct::parse_instruction(parts.status.as_u16(), &parts.headers, b"")
                .map_err(|e| bad(e.to_string()))?;
        if instruction.hold == Some(HoldMode::Response) || is_instruct_body(&parts.headers) {
            return Err(bad(format!("GRIP response body larger than {limit} bytes")));
        }
        instruction
    } else {
        grip::instruct::parse_instruction(parts.status.as_u16(), &parts.headers, &buf)
            .map_err(|e| bad(e.to_string()))?
    };
    let accepted = Accepted {
        status: parts.status,
        headers: parts.headers,
        body: buf.freeze(),
        rest,
        instruction,
    };
    hold(app, route, Some(target), accepted, record).await
}

fn is_instruct_body(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/grip-instruct"))
}

/// The response the client gets when no publish arrives: the origin's, rewritten.
struct BaseResponse {
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
        let mut headers = ins.client_headers(&accepted.headers);
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

/// Carries out an instruction: relay, response hold or stream hold.
pub async fn hold(
    app: &Arc<App>,
    route: &Route,
    target: Option<&Target>,
    accepted: Accepted,
    record: &mut AccessRecord,
) -> Result<Response<Body>, ProxyError> {
    let label = target.map_or_else(|| "test".to_string(), Target::label);
    let base = BaseResponse::of(&accepted).map_err(|reason| ProxyError::BadInstructions {
        target: label.clone(),
        reason,
    })?;
    let ins = accepted.instruction;
    let channels = channel_names(app, route, target, &ins);
    match ins.hold {
        None => {
            let body = match accepted.rest {
                Some(rest) => boxed(stream::Prefixed::new(base.body.clone(), rest)),
                None => full(base.body.clone()),
            };
            Ok(base.into_response(body))
        }
        Some(HoldMode::Response) => {
            record.hold = Some("response");
            Ok(response_hold(app, base, channels, ins.timeout_secs).await)
        }
        Some(HoldMode::Stream) => {
            record.hold = Some("stream");
            let (sub, rx) = app.hub.subscribe(channels, Want::HttpStream);
            let mut base = base;
            base.headers.remove(header::CONTENT_LENGTH);
            let initial = std::mem::take(&mut base.body);
            let body = stream::StreamHold::new(initial, accepted.rest, rx, ins.keep_alive, sub);
            Ok(base.into_response(boxed(body)))
        }
    }
}

fn channel_names(
    app: &App,
    route: &Route,
    target: Option<&Target>,
    ins: &Instruction,
) -> Vec<String> {
    let prefix = &route.options.channel_prefix;
    let max = app.config.limits.max_channels_per_connection;
    let implicit = target.map(|t| t.subs.as_slice()).unwrap_or_default();
    let mut names: Vec<String> = Vec::new();
    for name in ins.channels.iter().map(|c| &c.name).chain(implicit) {
        let name = format!("{prefix}{name}");
        if names.contains(&name) {
            continue;
        }
        if names.len() == max {
            tracing::debug!(channel = %name, max, "too many channels for one connection, ignored");
            continue;
        }
        names.push(name);
    }
    names
}

async fn response_hold(
    app: &Arc<App>,
    base: BaseResponse,
    channels: Vec<String>,
    timeout_secs: u64,
) -> Response<Body> {
    let (sub, mut rx) = app.hub.subscribe(channels, Want::HttpResponse);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout_secs);
    let delivered = loop {
        tokio::select! {
            item = rx.recv() => match item {
                None => break None,
                Some(item) => match &item.formats.http_response {
                    Some(f) if f.action == Action::Send => break Some(item.clone()),
                    _ => continue,
                },
            },
            _ = tokio::time::sleep_until(deadline) => break None,
        }
    };
    drop(sub);
    match delivered {
        None => {
            let body = full(base.body.clone());
            base.into_response(body)
        }
        Some(item) => {
            let format = item
                .formats
                .http_response
                .as_ref()
                .expect("only items with http-response are delivered");
            published_response(base, format)
        }
    }
}

/// A published `http-response`: its status, the original headers overridden by its headers, and
/// its body (or the original body patched).
fn published_response(base: BaseResponse, f: &HttpResponseFormat) -> Response<Body> {
    let body = match &f.body {
        ResponseBody::Empty => Bytes::new(),
        ResponseBody::Bytes(b) => b.clone(),
        ResponseBody::Patch(_) => match f.apply_patch(&base.body) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "body-patch could not be applied");
                return crate::proxy::error::text_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("Published body-patch could not be applied: {e}\n"),
                );
            }
        },
    };
    let mut headers = base.headers;
    headers.remove(header::CONTENT_LENGTH);
    for (k, v) in &f.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) else {
            tracing::debug!(header = %k, "published header is invalid, skipped");
            continue;
        };
        if name.as_str().starts_with("grip-") || name == header::CONTENT_LENGTH {
            continue;
        }
        headers.insert(name, value);
    }
    let status = StatusCode::from_u16(f.code).unwrap_or(StatusCode::OK);
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    set_reason(&mut resp, f.reason.as_deref());
    resp
}

/// Whether a target is the built-in test handler.
pub fn is_test(target: &Target) -> bool {
    target.kind == TargetKind::Test
}
