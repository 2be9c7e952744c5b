//! Reading an origin's GRIP answer: its body buffered up to `limits.max_accept_body` and its
//! instructions parsed, ready for [`crate::hold`] to carry out. The body is read under
//! `timeouts.origin_body_idle_secs`: an answer whose body stalls is a `504`, and its origin slot
//! is freed.

use bytes::{Bytes, BytesMut};
use grip::instruct::{HoldMode, Instruction};
use http::header::{self, HeaderMap};
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::OriginBody;
use super::error::ProxyError;
use crate::app::App;

/// An origin's GRIP answer, ready to be held.
pub struct Accepted {
    /// The origin's status.
    pub status: StatusCode,
    /// The origin's headers, `Grip-*` included.
    pub headers: HeaderMap,
    /// The buffered body (all of it, unless `rest` is set).
    pub body: Bytes,
    /// The body beyond the buffered prefix; only for stream holds and bare responses.
    pub rest: Option<OriginBody>,
    /// What the origin asked for.
    pub instruction: Instruction,
}

/// Buffers and parses a GRIP response.
pub async fn read_grip(
    app: &App,
    label: &str,
    resp: Response<Incoming>,
) -> Result<Accepted, ProxyError> {
    let (parts, incoming) = resp.into_parts();
    let mut incoming = super::origin_body(app, incoming);
    let limit = app.config.limits.max_accept_body;
    let bad = |reason: String| ProxyError::BadInstructions {
        target: label.to_string(),
        reason,
    };
    let mut buf = BytesMut::new();
    let mut rest = None;
    while let Some(frame) = incoming.frame().await {
        let frame = frame.map_err(|e| {
            let (target, reason) = (label.to_string(), e.to_string());
            if e.is_idle() {
                ProxyError::OriginBodyTimeout { target, reason }
            } else {
                ProxyError::Origin { target, reason }
            }
        })?;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
        }
        if buf.len() > limit {
            rest = Some(incoming);
            break;
        }
    }
    let instruction = if rest.is_some() {
        // Only a stream hold or a bare response may have an unbounded body, and then its
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
    Ok(Accepted {
        status: parts.status,
        headers: parts.headers,
        body: buf.freeze(),
        rest,
        instruction,
    })
}

fn is_instruct_body(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/grip-instruct"))
}
