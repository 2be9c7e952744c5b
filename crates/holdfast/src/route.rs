//! The entrance: every client request on a client listener comes here from [`crate::server`].
//!
//! It picks the route ([`crate::config::routes::RouteTable::find`]) and dispatches the request:
//! to the built-in test handler, to [`crate::ws`] for a WebSocket upgrade, or to the route's
//! origins through [`crate::proxy::ask`], whose answer is relayed or handed to
//! [`crate::hold`]. Errors become responses here, in one place
//! ([`crate::proxy::error::ProxyError::to_response`]); cross-origin support
//! ([`crate::crossorigin`]) reads the request before it is proxied and finishes the response;
//! and every response is wrapped in [`Logged`], which writes the access-log line when it ends.
//!
//! With `server.accept_pushpin_route`, a `Pushpin-Route: <id>` header picks the route whose
//! `id=` it names (ignored when several routes share that id; `502` when none has it) and is
//! never passed on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::app::App;
use crate::config::routes::{JsonpConfig, Proto, PushpinRoute, Route, TargetKind};
use crate::crossorigin::cors::CorsRequest;
use crate::crossorigin::{jsonp, CrossOrigin};
use crate::hold::HeldRequest;
use crate::http::{boxed, full, text_response, Body};
use crate::proxy::body::{AccessRecord, CaptureHandle, Captured, Logged};
use crate::proxy::error::ProxyError;
use crate::proxy::{Answer, OriginRequest, RequestInfo};

/// The header a client picks its route with, under `server.accept_pushpin_route`.
const PUSHPIN_ROUTE: HeaderName = HeaderName::from_static("pushpin-route");

/// What the entrance learns about a request while it dispatches it, for the response.
struct Entrance {
    /// Error details in responses (`server.debug`, route `debug`).
    debug: bool,
    /// The route's `log_level`.
    log_level: Option<tracing::Level>,
    /// Cross-origin support is on for the request.
    cross: Option<CrossOrigin>,
}

/// Handles one client request end to end; never fails (errors become responses). `tls`: the
/// request arrived on a TLS listener. `can_defer`: the server can take the socket and write the
/// response itself (HTTP/1.1 over plain TCP, not `HEAD`), so a long-poll held on this request
/// answers at once with a [`crate::http::Deferred`] placeholder.
pub async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
    peer: SocketAddr,
    tls: bool,
    can_defer: bool,
) -> Response<Body> {
    app.traffic.request();
    let mut record = AccessRecord {
        method: req.method().clone(),
        uri: req.uri().to_string(),
        peer: peer.ip(),
        route: None,
        target: None,
        status: 0,
        hold: None,
        started: Instant::now(),
        log_level: None,
        sample: app.config.log.access_sample_ppm(),
        user_agent: (app.config.log.user_agent)
            .then(|| req.headers().get(http::header::USER_AGENT))
            .flatten()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
    };
    let mut entrance = Entrance {
        debug: app.config.server.debug,
        log_level: None,
        cross: None,
    };
    let mut info = RequestInfo::of(&req, tls, &app);
    info.can_defer = can_defer;
    let mut resp = match dispatch(&app, req, peer, info, &mut record, &mut entrance).await {
        Ok(resp) => resp,
        Err(e) => e.to_response(entrance.debug, entrance.log_level),
    };
    if let Some(later) = crate::http::Deferred::of(&resp) {
        // A held long-poll: the same finishing steps, once its response comes.
        // Kept for as long as the long-poll is held: only a cross-origin request pays for a
        // second future.
        let log_level = entrance.log_level;
        match entrance.cross {
            Some(co) => {
                // Its answer is wrapped: the hub cannot write it as published.
                resp.extensions_mut().remove::<crate::sink::HeldAnswer>();
                let max_body = app.config.limits.max_accept_body;
                later.then(move |resp| async move {
                    let resp = crate::crossorigin::finish(&co, resp, max_body).await;
                    logged(resp, record, log_level)
                });
            }
            None => later.map(move |resp| logged(resp, record, log_level)),
        }
        return resp;
    }
    let resp = match &entrance.cross {
        // Boxed, as only cross-origin requests need it (it doubled every request's future).
        Some(co) => {
            Box::pin(crate::crossorigin::finish(
                co,
                resp,
                app.config.limits.max_accept_body,
            ))
            .await
        }
        None => resp,
    };
    logged(resp, record, entrance.log_level)
}

/// The response with its access-log line: written when its body ends, with its status and the
/// route's `log_level`.
fn logged(
    resp: Response<Body>,
    mut record: AccessRecord,
    log_level: Option<tracing::Level>,
) -> Response<Body> {
    record.status = resp.status().as_u16();
    record.log_level = log_level;
    resp.map(|b| boxed(Logged::new(b, record)))
}

/// The route for a request: the one a `Pushpin-Route` header names, when that is allowed, else
/// the best match ([`crate::config::routes::RouteTable::find`]).
fn pick_route(
    app: &App,
    req: &mut Request<Incoming>,
    info: &RequestInfo,
) -> Result<Arc<Route>, ProxyError> {
    let routes = app.routes.current();
    let proto = if info.websocket {
        Proto::Ws
    } else {
        Proto::Http
    };
    let no_route = || ProxyError::NoRoute(info.host.clone());
    if app.config.server.accept_pushpin_route {
        let named = req.headers_mut().remove(PUSHPIN_ROUTE);
        if let Some(id) = named.as_ref().and_then(|v| v.to_str().ok()) {
            match routes.by_pushpin_route(id.trim()) {
                PushpinRoute::Found(route) => return Ok(route.clone()),
                PushpinRoute::Missing if !id.trim().is_empty() => return Err(no_route()),
                PushpinRoute::Shared | PushpinRoute::Missing => {}
            }
        }
    }
    routes
        .find(&info.host, proto, info.tls, req.uri().path())
        .cloned()
        .ok_or_else(no_route)
}

/// Reads a request's cross-origin facts when its route (or `server.auto_cross_origin`) wants
/// them, and turns a JSON-P request into the request it stands for. Returns the JSON-P body,
/// or why a JSON-P request cannot be served.
fn read_cross_origin(
    req: &mut Request<Incoming>,
    jsonp_config: &JsonpConfig,
    entrance: &mut Entrance,
) -> Result<Option<Bytes>, jsonp::JsonpError> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let parsed = jsonp::parse(jsonp_config, req.method(), path);
    let cors = CorsRequest::of(req.headers());
    let jsonp = match parsed {
        Ok(jsonp) => jsonp,
        Err(e) => {
            entrance.cross = Some(CrossOrigin {
                cors,
                callback: None,
            });
            return Err(e);
        }
    };
    let Some(jsonp) = jsonp else {
        entrance.cross = Some(CrossOrigin {
            cors,
            callback: None,
        });
        return Ok(None);
    };
    let mut uri = req.uri().clone().into_parts();
    uri.path_and_query = jsonp.path_and_query.parse().ok();
    if let Ok(rewritten) = http::Uri::from_parts(uri) {
        *req.uri_mut() = rewritten;
    }
    *req.method_mut() = jsonp.method.clone();
    jsonp.apply_headers(req.headers_mut());
    entrance.cross = Some(CrossOrigin {
        cors,
        callback: Some(jsonp.callback),
    });
    Ok(Some(jsonp.body))
}

/// A request body on its way to the origins, and the copy kept for a held session's retries.
enum Kept {
    /// A JSON-P request's body, from its query: known whole.
    Whole(Bytes),
    /// The client's body, copied as it passes.
    Captured(CaptureHandle),
}

impl Kept {
    fn take(self) -> Option<Bytes> {
        match self {
            Kept::Whole(b) => Some(b),
            Kept::Captured(c) => c.take(),
        }
    }
}

/// Routes a request and hands it to whoever serves its route.
async fn dispatch(
    app: &Arc<App>,
    req: Request<Incoming>,
    peer: SocketAddr,
    info: RequestInfo,
    record: &mut AccessRecord,
    entrance: &mut Entrance,
) -> Result<Response<Body>, ProxyError> {
    let mut req = req;
    if !info.trusted && is_websocket_events(req.headers()) {
        return Ok(text_response(
            http::StatusCode::FORBIDDEN,
            "Client not allowed to send WebSocket events directly.\n",
        ));
    }
    let cross_origin = |route: Option<&Route>| {
        !info.websocket
            && (app.config.server.auto_cross_origin
                || route.is_some_and(|r| r.options.auto_cross_origin))
    };
    let route = match pick_route(app, &mut req, &info) {
        Ok(route) => route,
        Err(e) => {
            // With cross-origin support on everywhere, even this error is wrapped.
            if cross_origin(None) {
                let _ = read_cross_origin(&mut req, &JsonpConfig::default(), entrance);
            }
            return Err(e);
        }
    };
    record.route = Some(route.id.clone());
    entrance.debug |= route.options.debug;
    entrance.log_level = route.options.log_level;
    if let Some(sample) = route.options.access_log {
        record.sample = sample;
    }
    // As in Pushpin, a SockJS endpoint comes before anything else on its route, cross-origin
    // support included: SockJS answers carry CORS headers of their own.
    // The endpoints other than the origins' are boxed: an `async fn` is sized for its largest
    // branch, and every proxied request allocates this one's future (they took it from 4.4 to
    // 9.6 KB).
    if crate::sockjs::prefix_of(&route, req.uri().path()).is_some() {
        return Box::pin(crate::sockjs::serve(app, &route, req, peer, &info, record)).await;
    }
    // A Bayeux endpoint, likewise, answers with CORS headers of its own.
    if crate::bayeux::is_endpoint(&route, req.uri().path()) {
        return Box::pin(crate::bayeux::serve(app, &route, req, peer, &info, record)).await;
    }
    let mut jsonp_body = None;
    if cross_origin(Some(&route)) {
        match read_cross_origin(&mut req, &route.options.jsonp, entrance) {
            Ok(body) => jsonp_body = body,
            Err(e) => {
                let text = format!("{e}\n");
                return Ok(crate::crossorigin::plain(StatusCode::BAD_REQUEST, text));
            }
        }
    }
    let route = &route;
    if route.targets[0].kind == TargetKind::Test {
        record.target = Some("test".to_string());
        let client = crate::conns::Client {
            peer: Some(peer.ip()),
            tls: info.tls,
        };
        return Box::pin(crate::testhandler::serve(app, route, req, record, client)).await;
    }
    if info.websocket {
        return Box::pin(crate::ws::serve(app, route, req, peer, &info, record, None)).await;
    }
    to_origins(app, route, req, jsonp_body, peer, info, record).await
}

/// Sends a request to its route's origins, and relays or holds the answer. `jsonp_body`: the
/// body of a JSON-P request, which replaces the client's.
async fn to_origins(
    app: &Arc<App>,
    route: &Arc<Route>,
    req: Request<Incoming>,
    jsonp_body: Option<Bytes>,
    peer: SocketAddr,
    info: RequestInfo,
    record: &mut AccessRecord,
) -> Result<Response<Body>, ProxyError> {
    let path = route.rewrite_path(req.uri().path_and_query().map_or("/", |p| p.as_str()));
    let (parts, body) = req.into_parts();
    let defer = info.can_defer;
    let request = OriginRequest {
        method: parts.method,
        path,
        headers: crate::proxy::origin_headers(app, route, peer, &info, false, parts.headers),
    };
    // An upstream GRIP proxy acts on the origin's GRIP answer itself.
    if route.options.no_grip || info.trusted {
        let body = match jsonp_body {
            Some(b) => full(b),
            None => boxed(crate::proxy::client_body(app, body)),
        };
        let (resp, target) = crate::proxy::pass(app, route, &request, body).await?;
        record.target = Some(target.label());
        return Ok(crate::proxy::relay(app, resp));
    }
    let (body, kept) = match jsonp_body {
        Some(b) => (full(b.clone()), Kept::Whole(b)),
        None => {
            let client = crate::proxy::client_body(app, body);
            let (captured, capture) = Captured::new(client, app.config.limits.max_accept_body);
            (boxed(captured), Kept::Captured(capture))
        }
    };
    let (answer, target) = crate::proxy::ask(app, route, &request, body).await?;
    record.target = Some(target.label());
    let resp = match answer {
        Answer::Relay(resp) => return Ok(crate::proxy::relay(app, resp)),
        Answer::Grip(resp) => resp,
    };
    let held = HeldRequest {
        app: app.clone(),
        route: route.clone(),
        request: Some(request.detached()),
        body: kept.take(),
        host: info.host,
        client: crate::conns::Client {
            peer: Some(peer.ip()),
            tls: info.tls,
        },
        conn: std::sync::OnceLock::new(),
        held: std::sync::OnceLock::new(),
        defer: std::sync::atomic::AtomicBool::new(defer),
    };
    crate::hold::accept(held, target, resp, record).await
}

/// Whether a request says its body is WebSocket-over-HTTP events, which only Holdfast (or an
/// upstream GRIP proxy) may send.
fn is_websocket_events(h: &http::HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(grip::wsevents::CONTENT_TYPE))
}
