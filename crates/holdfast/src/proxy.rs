//! The upstream: sending a request to its route's origins, and telling what the answer is.
//!
//! [`send`] tries the route's targets in order (a target that cannot be connected to hands the
//! untouched body on to the next, see [`crate::origin::Reclaimable`]); every origin request, the
//! WebSocket handshakes and WebSocket-over-HTTP posts included, is timed and its failure
//! classified once, in [`exchange`]: a request body that broke off or stalled is the client's
//! fault, whatever hyper's client calls it. [`ask`] tells a relayed answer from a GRIP one, for
//! the entrance and for a held session's retries alike; [`relay`] passes a plain answer on with
//! hop-by-hop headers removed, its body under the origin body idle timeout ([`origin_body`]).
//! The header rewriting ([`headers`]), the body wrappers and the proxy's error type live here
//! too.

pub mod body;
pub mod error;
pub mod headers;
mod instructions;

pub use instructions::{read_grip, Accepted};

use std::future::Future;
use std::net::SocketAddr;

use futures_util::FutureExt;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use hyper::body::Incoming;

use crate::app::App;
use crate::config::routes::{Route, Target, TargetKind};
use crate::descriptors::Exhausted;
use crate::http::{boxed, error_chain, Body};
use crate::origin::Reclaimable;
use body::{ClientBodyError, OriginBody};
use error::ProxyError;

/// The facts about a request that routing and forwarding need.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// Host as the client named it (with port, if any).
    pub host: String,
    /// Arrived over TLS, or accepted as such via `X-Forwarded-Proto`.
    pub tls: bool,
    /// A WebSocket upgrade.
    pub websocket: bool,
    /// From an upstream GRIP proxy: its `Grip-Sig` verifies with `grip.upstream_key`. Its
    /// `Grip-*` headers reach the origin, Holdfast adds no `Grip-Sig` of its own, and the
    /// origin's GRIP answer goes back to it as it is, for it to act on (Pushpin's trusted
    /// client).
    pub trusted: bool,
    /// The server can take the socket and write the response itself, so a long-poll held on
    /// this request may wait outside hyper ([`crate::route::handle`]'s `can_defer`).
    pub can_defer: bool,
}

impl RequestInfo {
    /// Reads the routing facts off a request; `tls`: it arrived on a TLS listener.
    pub fn of<B>(req: &Request<B>, tls: bool, app: &App) -> RequestInfo {
        let accept_xfp = app.config.forwarding.accept_x_forwarded_proto;
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let tls = tls
            || accept_xfp
                && req
                    .headers()
                    .get("x-forwarded-proto")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| {
                        v.eq_ignore_ascii_case("https") || v.eq_ignore_ascii_case("wss")
                    });
        let websocket = req
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        RequestInfo {
            host,
            tls,
            websocket,
            trusted: app.is_trusted_upstream(req.headers()),
            can_defer: false,
        }
    }
}

/// A request for a route's origins, kept so a held session can send it again (retries) or
/// derive next-link requests from it.
#[derive(Debug, Clone)]
pub struct OriginRequest {
    /// Method.
    pub method: Method,
    /// Path and query as the origin sees them (route rewrites applied).
    pub path: String,
    /// Headers for the origin; `Grip-Sig` is added on each send.
    pub headers: HeaderMap,
}

impl OriginRequest {
    /// The same request with header values copied out of the connection's read buffer.
    ///
    /// Parsed header values are slices of the 8 KiB buffer the request head was read into; a
    /// session that kept them would pin that buffer for as long as the client stays, and hyper
    /// would allocate a second one for its next read. A held session keeps this copy instead.
    pub fn detached(self) -> OriginRequest {
        OriginRequest {
            method: self.method,
            path: self.path,
            headers: headers::detached(&self.headers),
        }
    }
}

/// Sends a request to the route's targets in order, moving on when a target cannot be
/// connected to. Returns the response and the target that gave it.
pub async fn send<'r>(
    app: &App,
    route: &'r Route,
    request: &OriginRequest,
    body: Body,
) -> Result<(Response<Incoming>, &'r Target), ProxyError> {
    let mut headers = request.headers.clone();
    if !route.options.no_grip {
        app.grip_headers(route, &mut headers);
    }
    send_with(app, route, request, headers, body).await
}

/// Sends `request` with its headers as they are — no `Grip-Sig` or `Grip-Feature` of
/// Holdfast's — for an answer that is relayed whatever it is: on a `no_grip` route, and for an
/// upstream GRIP proxy ([`RequestInfo::trusted`]), whose own `Grip-Sig` the origin checks.
pub async fn pass<'r>(
    app: &App,
    route: &'r Route,
    request: &OriginRequest,
    body: Body,
) -> Result<(Response<Incoming>, &'r Target), ProxyError> {
    send_with(app, route, request, request.headers.clone(), body).await
}

async fn send_with<'r>(
    app: &App,
    route: &'r Route,
    request: &OriginRequest,
    headers: HeaderMap,
    body: Body,
) -> Result<(Response<Incoming>, &'r Target), ProxyError> {
    let (mut lent, mut slot) = Reclaimable::new(body);
    let mut tried = Vec::new();
    for target in route.targets.iter().filter(|t| t.kind != TargetKind::Test) {
        let label = target.label();
        let mut req = Request::new(lent);
        *req.method_mut() = request.method.clone();
        *req.uri_mut() = origin_uri(target, &request.path)?;
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = headers.clone();
        if let Some(h) = target.host_header.as_deref() {
            if let Ok(h) = HeaderValue::from_str(h) {
                req.headers_mut().insert(header::HOST, h);
            }
        }
        match exchange(
            app,
            &label,
            app.origins
                .request(&label, crate::origin::Access::of(target), req),
        )
        .await
        {
            Ok(resp) => return Ok((resp, target)),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Unreachable(why)) => {
                tracing::debug!(target = %label, error = %why, "origin connect failed");
                tried.push((label, why));
                match Reclaimable::reclaim(&slot) {
                    Some(body) => (lent, slot) = Reclaimable::new(body),
                    None => break,
                }
            }
        }
    }
    Err(ProxyError::Unreachable(tried))
}

/// An origin's non-GRIP response, relayed with hop-by-hop headers removed. Its body is cut
/// (the client sees it end early) if the origin sends nothing for
/// `timeouts.origin_body_idle_secs`.
pub fn relay(app: &App, resp: Response<Incoming>) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    headers::to_client(&mut parts.headers);
    Response::from_parts(parts, boxed(origin_body(app, body)))
}

/// An origin's response body under `timeouts.origin_body_idle_secs`.
pub fn origin_body(app: &App, body: Incoming) -> OriginBody {
    OriginBody::new(body, app.config.timeouts.origin_body_idle())
}

/// A client's request body under `timeouts.client_body_idle_secs`, its failures the client's.
pub fn client_body(app: &App, body: Incoming) -> body::ClientBody {
    body::ClientBody::new(body, app.config.timeouts.client_body_idle())
}

/// How an origin request failed, classified once for every kind of origin request.
#[derive(Debug)]
pub enum Failure {
    /// The target could not be connected to (carries why): the next target, or a retry, may do
    /// better.
    Unreachable(String),
    /// Anything else: no response within `timeouts.origin_response_secs`, no descriptor left,
    /// the client's request body broke off or stalled, or the origin failed mid-exchange. The
    /// client gets this error.
    Fatal(ProxyError),
}

/// Awaits an origin request to target `label` within `timeouts.origin_response_secs` and
/// classifies its failure.
///
/// Neither an `async fn` nor an `async` block: both keep what they are given in their state and
/// move it again to await it, so the request future would be stored twice, and every future
/// that awaits this one (the entrance's, a held long-poll's retry) would carry both copies.
pub fn exchange<'a>(
    app: &'a App,
    label: &'a str,
    sent: impl Future<Output = Result<Response<Incoming>, hyper_util::client::legacy::Error>> + 'a,
) -> impl Future<Output = Result<Response<Incoming>, Failure>> + 'a {
    tokio::time::timeout(app.config.timeouts.origin_response(), sent)
        .map(move |outcome| classify(app, label, outcome))
}

fn classify(
    app: &App,
    label: &str,
    outcome: Result<
        Result<Response<Incoming>, hyper_util::client::legacy::Error>,
        tokio::time::error::Elapsed,
    >,
) -> Result<Response<Incoming>, Failure> {
    use crate::origin::health::Outcome;
    let health = app.origins.health();
    match outcome {
        Err(_) => {
            let e = ProxyError::OriginTimeout(label.to_string());
            health.record(label, Outcome::Failed(&e.to_string()));
            Err(Failure::Fatal(e))
        }
        Ok(Ok(resp)) => {
            health.record(label, Outcome::Answered(resp.status().as_u16()));
            Ok(resp)
        }
        // Every other target would fail the same way.
        Ok(Err(e)) if crate::descriptors::is_exhausted(&e) => Err(Failure::Fatal(
            ProxyError::NoDescriptors(Exhausted(app.descriptors.total())),
        )),
        Ok(Err(e)) if e.is_connect() => {
            let why = match crate::outbound::refusal(&e) {
                Some(refused) => {
                    tracing::warn!(target = %label, host = %refused.host, address = %refused.addr,
                        class = refused.class.label(), "untrusted target refused by the outbound policy");
                    refused.brief()
                }
                None => error_chain(&e),
            };
            health.record(label, Outcome::Failed(&format!("connect: {why}")));
            Err(Failure::Unreachable(why))
        }
        // hyper's client reports the request body's failure as its own; the body says whose.
        Ok(Err(e)) => Err(Failure::Fatal(match client_body_error(&e) {
            Some(stalled @ ClientBodyError::Idle(_)) => {
                ProxyError::RequestBodyTimeout(stalled.to_string())
            }
            Some(broken) => ProxyError::RequestBody(broken.to_string()),
            None => {
                let reason = error_chain(&e);
                health.record(label, Outcome::Failed(&reason));
                ProxyError::Origin {
                    target: label.to_string(),
                    reason,
                }
            }
        })),
    }
}

/// The [`ClientBodyError`] among `e` and its sources, if the client's body is what failed.
fn client_body_error<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e ClientBodyError> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<ClientBodyError>() {
            return Some(found);
        }
        next = e.source();
    }
    None
}

/// What an origin answered, as far as the proxy is concerned.
pub enum Answer {
    /// A plain answer (or any answer on a `no_grip` route): relay it to the client.
    Relay(Response<Incoming>),
    /// GRIP instructions: a hold, next links, or a response to rewrite ([`crate::hold`]).
    Grip(Response<Incoming>),
}

impl Answer {
    /// Tells a GRIP answer from a plain one on `route`.
    pub fn of(route: &Route, resp: Response<Incoming>) -> Answer {
        if !route.options.no_grip && grip::instruct::is_grip_response(resp.headers()) {
            Answer::Grip(resp)
        } else {
            Answer::Relay(resp)
        }
    }
}

/// Sends `request` ([`send`]) and tells what kind of answer came back; the entrance and a held
/// session's retries both ask this way.
pub async fn ask<'r>(
    app: &App,
    route: &'r Route,
    request: &OriginRequest,
    body: Body,
) -> Result<(Answer, &'r Target), ProxyError> {
    let (resp, target) = send(app, route, request, body).await?;
    Ok((Answer::of(route, resp), target))
}

/// The client's request headers rewritten for the route's origins: `Host` (the client's, or
/// the one it named in the request line), then hop-by-hop, `Grip-*` (kept from an upstream GRIP
/// proxy), `X-Forwarded-*` (with the trusted rules for an upstream GRIP proxy) and the route's
/// `header=` options ([`headers::to_origin`]); last, with route `orig_headers`, a marked copy of
/// every header as the client sent it ([`headers::take_originals`]).
pub fn origin_headers(
    app: &App,
    route: &Route,
    peer: SocketAddr,
    info: &RequestInfo,
    websocket: bool,
    mut h: HeaderMap,
) -> HeaderMap {
    if !h.contains_key(header::HOST) {
        if let Ok(host) = HeaderValue::from_str(&info.host) {
            h.insert(header::HOST, host);
        }
    }
    let originals = headers::take_originals(&mut h, route.options.orig_headers, info.trusted);
    headers::to_origin(
        &mut h,
        &headers::Forwarding {
            peer: peer.ip(),
            tls: info.tls,
            websocket,
            xff: if info.trusted {
                &app.xff_trusted
            } else {
                &app.xff
            },
            keep_grip: info.trusted,
            xfp: app.config.forwarding.set_x_forwarded_proto,
            host: route.options.as_host.as_deref(),
            route_headers: &route.options.headers,
        },
    );
    for (name, value) in originals {
        h.append(name, value);
    }
    h
}

/// The URI of `path` on `target` (`https` with `ssl`; hyper's client speaks HTTP schemes, a
/// WebSocket upgrade happens on that connection).
pub fn origin_uri(target: &Target, path: &str) -> Result<Uri, ProxyError> {
    let scheme = if target.ssl { "https" } else { "http" };
    let authority = match &target.kind {
        TargetKind::Origin { .. } => target.label(),
        TargetKind::Test => unreachable!("test targets are served locally"),
    };
    format!("{scheme}://{authority}{path}")
        .parse()
        .map_err(|e| ProxyError::BadRequest(format!("cannot build origin URI for {path:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detached_request_owns_its_header_values() {
        // Parsed values share one buffer, as hyper's do.
        let head = bytes::Bytes::from_static(b"token-1secret-2");
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-a",
            HeaderValue::from_maybe_shared(head.slice(0..7)).unwrap(),
        );
        let mut secret = HeaderValue::from_maybe_shared(head.slice(7..15)).unwrap();
        secret.set_sensitive(true);
        headers.append(header::AUTHORIZATION, secret);
        headers.append("x-a", HeaderValue::from_static("again"));
        let request = OriginRequest {
            method: Method::POST,
            path: "/p?q".into(),
            headers,
        };
        let copy = request.detached();
        assert_eq!(copy.method, Method::POST);
        assert_eq!(copy.path, "/p?q");
        let a: Vec<_> = copy.headers.get_all("x-a").iter().collect();
        assert_eq!(a, ["token-1", "again"]);
        let auth = &copy.headers[header::AUTHORIZATION];
        assert_eq!(auth, "secret-2");
        assert!(auth.is_sensitive());
        let range = head.as_ptr_range();
        for value in copy.headers.values() {
            assert!(
                !range.contains(&value.as_bytes().as_ptr()),
                "{value:?} still shares the buffer"
            );
        }
    }
}
