//! Forwarding a client request to its route's origin and relaying — or accepting as GRIP — the
//! answer.
//!
//! The flow for one request: pick the route ([`crate::config::routes::RouteTable::find`]), rewrite
//! path and headers, try each target in order (a target that cannot be connected to hands the
//! untouched body on to the next, see [`body::Reclaimable`]), then either stream the origin's
//! response back unchanged but for hop-by-hop headers, or hand a GRIP response to
//! [`crate::hold`]. Errors become responses only in [`error::ProxyError::to_response`]. Every
//! response is wrapped in [`body::Logged`], which writes the access-log line when it ends.

pub mod body;
pub mod error;
pub mod headers;
pub mod origin;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use hyper::body::Incoming;

use crate::app::App;
use crate::config::routes::{Proto, Route, Target, TargetKind};
use body::{boxed, AccessRecord, Body, Logged, Reclaimable};
use error::ProxyError;

/// Handles one client request end to end; never fails (errors become responses).
pub async fn handle(app: Arc<App>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let mut record = AccessRecord {
        method: req.method().clone(),
        uri: req.uri().to_string(),
        peer: peer.ip(),
        route: None,
        target: None,
        status: 0,
        hold: None,
        started: Instant::now(),
    };
    let mut debug = app.config.server.debug;
    let resp = match forward(&app, req, peer, &mut record, &mut debug).await {
        Ok(resp) => resp,
        Err(e) => e.to_response(debug),
    };
    record.status = resp.status().as_u16();
    resp.map(|b| boxed(Logged::new(b, record)))
}

/// The facts about a request that routing needs.
pub struct RequestInfo {
    /// Host as the client named it (with port, if any).
    pub host: String,
    /// Arrived over TLS, or accepted as such via `X-Forwarded-Proto`.
    pub tls: bool,
    /// A WebSocket upgrade.
    pub websocket: bool,
}

impl RequestInfo {
    /// Reads the routing facts off a request.
    pub fn of<B>(req: &Request<B>, accept_xfp: bool) -> RequestInfo {
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
        let tls = accept_xfp
            && req
                .headers()
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("https") || v.eq_ignore_ascii_case("wss"));
        let websocket = req
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        RequestInfo {
            host,
            tls,
            websocket,
        }
    }
}

async fn forward(
    app: &Arc<App>,
    req: Request<Incoming>,
    peer: SocketAddr,
    record: &mut AccessRecord,
    debug: &mut bool,
) -> Result<Response<Body>, ProxyError> {
    let info = RequestInfo::of(&req, app.config.forwarding.accept_x_forwarded_proto);
    if is_websocket_events(req.headers()) {
        return Ok(error::text_response(
            http::StatusCode::FORBIDDEN,
            "Client not allowed to send WebSocket events directly.\n",
        ));
    }
    let routes = app.routes.current();
    let proto = if info.websocket {
        Proto::Ws
    } else {
        Proto::Http
    };
    let route = routes
        .find(&info.host, proto, info.tls, req.uri().path())
        .ok_or_else(|| ProxyError::NoRoute(info.host.clone()))?;
    record.route = Some(route.id.clone());
    *debug |= route.options.debug;
    if route.targets[0].kind == TargetKind::Test {
        record.target = Some("test".to_string());
        return crate::testhandler::serve(app, route, req, record).await;
    }
    if info.websocket {
        return crate::ws::serve(app, route, req, peer, &info, record).await;
    }

    let path = route.rewrite_path(req.uri().path_and_query().map_or("/", |p| p.as_str()));
    let (parts, body) = req.into_parts();
    let mut headers = parts.headers;
    if !headers.contains_key(header::HOST) {
        if let Ok(h) = HeaderValue::from_str(&info.host) {
            headers.insert(header::HOST, h);
        }
    }
    headers::to_origin(
        &mut headers,
        &headers::Forwarding {
            peer: peer.ip(),
            tls: info.tls,
            websocket: info.websocket,
            xff: &app.xff,
            xfp: app.config.forwarding.set_x_forwarded_proto,
            host: route.options.as_host.as_deref(),
            route_headers: &route.options.headers,
        },
    );
    let request = OriginRequest {
        method: parts.method,
        path,
        headers,
    };
    if route.options.no_grip {
        let (resp, target) = send(app, route, &request, boxed(body)).await?;
        record.target = Some(target.label());
        return Ok(relay(resp));
    }
    let (captured, capture) = body::Captured::new(body, app.config.limits.max_accept_body);
    let (resp, target) = send(app, route, &request, boxed(captured)).await?;
    record.target = Some(target.label());
    if !grip::instruct::is_grip_response(resp.headers()) {
        return Ok(relay(resp));
    }
    let ctx = crate::hold::SessionCtx {
        app: app.clone(),
        route: route.clone(),
        request: Some(request.detached()),
        body: capture.take(),
        host: info.host,
    };
    crate::hold::accept(ctx, target, resp, record).await
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
        let sent = tokio::time::timeout(
            app.config.timeouts.origin_response(),
            app.origins.request(&label, target.insecure, req),
        )
        .await;
        match sent {
            Err(_) => return Err(ProxyError::OriginTimeout(label)),
            Ok(Ok(resp)) => return Ok((resp, target)),
            Ok(Err(e)) if crate::descriptors::is_exhausted(&e) => {
                // Every other target would fail the same way.
                return Err(ProxyError::NoDescriptors(crate::descriptors::Exhausted(
                    app.descriptors.total(),
                )));
            }
            Ok(Err(e)) if e.is_connect() => {
                tracing::debug!(target = %label, error = %error_chain(&e), "origin connect failed");
                tried.push((label, error_chain(&e)));
                match Reclaimable::reclaim(&slot) {
                    Some(body) => (lent, slot) = Reclaimable::new(body),
                    None => break,
                }
            }
            Ok(Err(e)) => {
                return Err(ProxyError::Origin {
                    target: label,
                    reason: error_chain(&e),
                })
            }
        }
    }
    Err(ProxyError::Unreachable(tried))
}

/// An origin's non-GRIP response, relayed with hop-by-hop headers removed.
pub fn relay(resp: Response<Incoming>) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    headers::to_client(&mut parts.headers);
    Response::from_parts(parts, boxed(body))
}

/// Whether a request says its body is WebSocket-over-HTTP events, which only Holdfast may send.
fn is_websocket_events(h: &http::HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(grip::wsevents::CONTENT_TYPE))
}

fn origin_uri(target: &Target, path: &str) -> Result<Uri, ProxyError> {
    let scheme = if target.ssl { "https" } else { "http" };
    let authority = match &target.kind {
        TargetKind::Origin { .. } => target.label(),
        TargetKind::Test => unreachable!("test targets are served locally"),
    };
    format!("{scheme}://{authority}{path}")
        .parse()
        .map_err(|e| ProxyError::BadRequest(format!("cannot build origin URI for {path:?}: {e}")))
}

/// An error and its sources, joined: hyper's top-level messages alone say little.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
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
