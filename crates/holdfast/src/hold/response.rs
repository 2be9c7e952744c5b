//! Response holds (long-polling): wait for the first published `http-response`, or answer the
//! origin's response at the timeout; on a hint, a stale `prev-id` or a gap history cannot fill,
//! ask the origin again with `Grip-Last` and carry on with whatever it answers. Both answers are
//! marked [`Shape::Held`], for cross-origin support to wrap them as Pushpin's handler does.

use std::sync::Arc;

use bytes::Bytes;
use grip::instruct::HoldMode;
use grip::publish::{Action, HttpResponseFormat, ResponseBody};
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::link::GoneLink;
use super::{BaseResponse, HeldRequest, Positions, Verdict};
use crate::crossorigin::Shape;
use crate::http::{full, Body};
use crate::hub::{Delivery, Subscription};
use crate::proxy::body::AccessRecord;
use crate::proxy::Answer;
use crate::sink::{AnsweredByHub, Claim, Sink};
use tokio::sync::mpsc;

/// What a retry of the original request led to.
enum Next {
    /// Still a response hold, with new instructions.
    Hold(BaseResponse, Positions, u64),
    /// Anything else: send this to the client.
    Done(Response<Body>),
}

/// Holds a long-poll until a publish, the timeout, or shutdown. With a `sink`
/// ([`Sink::answering`]) the hub may write a plain answer itself while the hold waits with
/// nothing queued and nothing of its own to apply (no position, no filter); the hold then
/// returns a response marked [`AnsweredByHub`].
pub async fn hold(
    ctx: Arc<HeldRequest>,
    mut base: BaseResponse,
    mut positions: Positions,
    mut timeout_secs: u64,
    _gone: Option<Box<GoneLink>>,
    mut sink: Option<Arc<Sink>>,
) -> Response<Body> {
    // The previous round's subscription, kept across a retry so nothing published while the
    // origin was being asked is lost.
    let mut carried: Option<(Subscription, mpsc::Receiver<Delivery>)> = None;
    // Retries made only because the hold looked stale. An origin that keeps rendering the same
    // stale position is not asked forever: after this many the hold simply waits.
    const MAX_STALE_RETRIES: u32 = 2;
    let mut stale_retries = 0;
    loop {
        let requests = positions.requests();
        (ctx.app.presence).note_route(requests.iter().map(|(c, _)| c.as_str()), &ctx.route);
        let (sub, mut rx, resumes) = ctx.app.hub.subscribe_response(requests, sink.clone());
        let (mut pending, stale) = positions.resume(resumes);
        let mut update = false;
        if !stale.is_empty() {
            // Rare paths are boxed so a waiting hold is not sized for them.
            match Box::pin(super::fill_from_bus(&ctx.app, &stale)).await {
                Some(items) => pending.extend(items),
                None if stale_retries < MAX_STALE_RETRIES => {
                    update = can_update(&ctx);
                    stale_retries += u32::from(update);
                }
                None => {}
            }
        } else {
            stale_retries = 0;
        }
        if let Some((_old, mut old_rx)) = carried.take() {
            pending.extend(std::iter::from_fn(|| old_rx.try_recv().ok()));
        }
        for item in pending {
            match positions.judge(&sub, &item) {
                Verdict::Deliver(items) => {
                    if let Some(item) = items.iter().find(|i| is_send(i)) {
                        return Shape::Held.mark(published_response(base, item, &positions));
                    }
                }
                Verdict::Update => update |= can_update(&ctx),
                Verdict::Skip => {}
            }
        }
        let deadline = crate::deadline::after_secs(timeout_secs);
        while !update {
            if let Some(sink) = &sink {
                sink.park(|| rx.is_empty() && positions.is_plain());
            }
            let item = tokio::select! {
                item = rx.recv() => item,
                _ = tokio::time::sleep_until(deadline) => None,
                answer = answered(sink.as_deref()) => return by_hub(answer),
            };
            if let Some(sink) = &sink {
                // An item queued after the hub took the answer, or a timeout that raced it.
                if sink.claim() == Claim::Hub {
                    return by_hub(sink.answered().await);
                }
            }
            let Some(item) = item else {
                let body = full(base.body.clone());
                return Shape::Held.mark(base.into_response(body));
            };
            match positions.judge(&sub, &item) {
                Verdict::Deliver(items) => {
                    if let Some(item) = items.iter().find(|i| is_send(i)) {
                        return Shape::Held.mark(published_response(base, item, &positions));
                    }
                }
                Verdict::Skip => {}
                Verdict::Update if can_update(&ctx) => update = true,
                Verdict::Update => {}
            }
        }
        if let Some(sink) = sink.take() {
            // The answer may change with the retry: from here on the hold answers itself.
            if sink.claim() == Claim::Hub {
                return by_hub(sink.answered().await);
            }
        }
        match retry(&ctx, &positions).await {
            Next::Hold(b, p, t) => {
                (base, positions, timeout_secs) = (b, p, t);
                carried = Some((sub, rx));
            }
            Next::Done(resp) => return resp,
        }
    }
}

/// [`hold`], boxed to run apart from the request that started it ([`crate::http::Deferred`]).
pub fn later(
    ctx: Arc<HeldRequest>,
    base: BaseResponse,
    positions: Positions,
    timeout_secs: u64,
    gone: Option<Box<GoneLink>>,
    sink: Option<Arc<Sink>>,
) -> crate::http::Later {
    Box::pin(hold(ctx, base, positions, timeout_secs, gone, sink))
}

/// Resolves when the hub has answered through `sink`; never without one.
async fn answered(sink: Option<&Sink>) -> (StatusCode, Bytes) {
    match sink {
        Some(sink) => sink.answered().await,
        None => std::future::pending().await,
    }
}

/// The response a hold returns when the hub has written its answer: what was written, for the
/// access log, marked so that the server does not send it again.
fn by_hub((status, body): (StatusCode, Bytes)) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.extensions_mut().insert(AnsweredByHub);
    Shape::Held.mark(resp)
}

fn can_update(ctx: &HeldRequest) -> bool {
    ctx.request.is_some() && ctx.body.is_some()
}

fn is_send(item: &Delivery) -> bool {
    item.formats
        .http_response
        .as_ref()
        .is_some_and(|f| f.action == Action::Send)
}

/// Sends the original request again, with the session's positions as `Grip-Last`. Boxed (a rare
/// path, so a waiting hold is not sized for it) and a trait object: a retry may end in another
/// response hold, so this future contains [`hold`]'s, and `Send` could not be proven of either
/// otherwise.
fn retry<'a>(
    ctx: &'a Arc<HeldRequest>,
    positions: &'a Positions,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Next> + Send + 'a>> {
    Box::pin(retry_inner(ctx, positions))
}

async fn retry_inner(ctx: &Arc<HeldRequest>, positions: &Positions) -> Next {
    let (Some(request), Some(body)) = (&ctx.request, &ctx.body) else {
        unreachable!("retries need an origin request");
    };
    let mut request = request.clone();
    positions.grip_last(&mut request.headers);
    ctx.app.session_requests.acquire().await;
    tracing::debug!(path = %request.path, "retrying held request");
    let answer = crate::proxy::ask(&ctx.app, &ctx.route, &request, full(body.clone())).await;
    let (resp, target) = match answer {
        Ok((Answer::Grip(resp), target)) => (resp, target),
        Ok((Answer::Relay(resp), _)) => return Next::Done(crate::proxy::relay(&ctx.app, resp)),
        Err(e) => {
            return Next::Done(e.to_response(ctx.route.options.debug, ctx.route.options.log_level))
        }
    };
    let accepted = match crate::proxy::read_grip(&ctx.app, &target.label(), resp).await {
        Ok(a) => a,
        Err(e) => {
            return Next::Done(e.to_response(ctx.route.options.debug, ctx.route.options.log_level))
        }
    };
    if accepted.instruction.hold == Some(HoldMode::Response) {
        let bad = |reason: String| {
            Next::Done(
                crate::proxy::error::ProxyError::BadInstructions {
                    target: target.label(),
                    reason,
                }
                .to_response(ctx.route.options.debug, ctx.route.options.log_level),
            )
        };
        let base = match BaseResponse::of(&accepted) {
            Ok(b) => b,
            Err(reason) => return bad(reason),
        };
        let mut next =
            match Positions::new(&ctx.app, &ctx.route, &target.subs, &accepted.instruction) {
                Ok(p) => p,
                Err(e) => return bad(e.to_string()),
            };
        let mut merged = positions.clone();
        merged.update_from(std::mem::take(&mut next));
        return Next::Hold(base, merged, accepted.instruction.timeout_secs);
    }
    // The origin changed its mind: a stream or a plain response now.
    let mut record = AccessRecord::internal();
    match Box::pin(super::hold(
        ctx.clone(),
        Some(target),
        accepted,
        &mut record,
    ))
    .await
    {
        Ok(resp) => Next::Done(resp),
        Err(e) => Next::Done(e.to_response(ctx.route.options.debug, ctx.route.options.log_level)),
    }
}

/// A published `http-response`: its status, the original headers overridden by its headers, and
/// its body (or the original body patched).
fn published_response(
    base: BaseResponse,
    item: &Delivery,
    positions: &Positions,
) -> Response<Body> {
    let f: &HttpResponseFormat = item
        .formats
        .http_response
        .as_ref()
        .expect("only items with http-response reach response holds");
    let body = match &f.body {
        ResponseBody::Empty => Bytes::new(),
        ResponseBody::Bytes(b) => b.clone(),
        ResponseBody::Patch(_) => match f.apply_patch(&base.body) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "body-patch could not be applied");
                return crate::http::text_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("Published body-patch could not be applied: {e}\n"),
                );
            }
        },
    };
    let Some(body) = positions.filter(item, &body, f.content_filters.as_deref()) else {
        // Filtered out for this subscriber: answer as at the timeout.
        let original = full(base.body.clone());
        return base.into_response(original);
    };
    let mut published = Vec::new();
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
        published.push((name, value));
    }
    // As Pushpin: the original headers the item names are dropped, the others keep their
    // order, and the item's headers follow, every value of each.
    let mut headers = header::HeaderMap::with_capacity(base.headers.len() + published.len());
    for (name, value) in &base.headers {
        if name != header::CONTENT_LENGTH && !published.iter().any(|(p, _)| p == name) {
            headers.append(name.clone(), value.clone());
        }
    }
    for (name, value) in published {
        headers.append(name, value);
    }
    let status = StatusCode::from_u16(f.code).unwrap_or(StatusCode::OK);
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    super::set_reason(&mut resp, f.reason.as_deref());
    resp
}
