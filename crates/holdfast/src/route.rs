//! The entrance: every client request on a client listener comes here from [`crate::server`].
//!
//! It picks the route ([`crate::config::routes::RouteTable::find`]) and dispatches the request:
//! to the built-in test handler, to [`crate::ws`] for a WebSocket upgrade, or to the route's
//! origins through [`crate::proxy::ask`], whose answer is relayed or handed to
//! [`crate::hold`]. Errors become responses here, in one place
//! ([`crate::proxy::error::ProxyError::to_response`]), and every response is wrapped in
//! [`Logged`], which writes the access-log line when it ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header;
use http::{Request, Response};
use hyper::body::Incoming;

use crate::app::App;
use crate::config::routes::{Proto, TargetKind};
use crate::hold::HeldRequest;
use crate::http::{boxed, text_response, Body};
use crate::proxy::body::{AccessRecord, Captured, Logged};
use crate::proxy::error::ProxyError;
use crate::proxy::{Answer, OriginRequest, RequestInfo};

/// Handles one client request end to end; never fails (errors become responses). `tls`: the
/// request arrived on a TLS listener.
pub async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
    peer: SocketAddr,
    tls: bool,
) -> Response<Body> {
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
    let resp = match dispatch(&app, req, peer, tls, &mut record, &mut debug).await {
        Ok(resp) => resp,
        Err(e) => e.to_response(debug),
    };
    record.status = resp.status().as_u16();
    resp.map(|b| boxed(Logged::new(b, record)))
}

/// Routes a request and hands it to whoever serves its route.
async fn dispatch(
    app: &Arc<App>,
    req: Request<Incoming>,
    peer: SocketAddr,
    tls: bool,
    record: &mut AccessRecord,
    debug: &mut bool,
) -> Result<Response<Body>, ProxyError> {
    let info = RequestInfo::of(&req, tls, app);
    if !info.trusted && is_websocket_events(req.headers()) {
        return Ok(text_response(
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
        let client = crate::conns::Client {
            peer: Some(peer.ip()),
            tls: info.tls,
        };
        return crate::testhandler::serve(app, route, req, record, client).await;
    }
    if info.websocket {
        return crate::ws::serve(app, route, req, peer, &info, record).await;
    }

    let path = route.rewrite_path(req.uri().path_and_query().map_or("/", |p| p.as_str()));
    let (parts, body) = req.into_parts();
    let request = OriginRequest {
        method: parts.method,
        path,
        headers: crate::proxy::origin_headers(app, route, peer, &info, false, parts.headers),
    };
    let body = crate::proxy::client_body(app, body);
    // An upstream GRIP proxy acts on the origin's GRIP answer itself.
    if route.options.no_grip || info.trusted {
        let (resp, target) = crate::proxy::pass(app, route, &request, boxed(body)).await?;
        record.target = Some(target.label());
        return Ok(crate::proxy::relay(app, resp));
    }
    let (captured, capture) = Captured::new(body, app.config.limits.max_accept_body);
    let (answer, target) = crate::proxy::ask(app, route, &request, boxed(captured)).await?;
    record.target = Some(target.label());
    let resp = match answer {
        Answer::Relay(resp) => return Ok(crate::proxy::relay(app, resp)),
        Answer::Grip(resp) => resp,
    };
    let held = HeldRequest {
        app: app.clone(),
        route: route.clone(),
        request: Some(request.detached()),
        body: capture.take(),
        host: info.host,
        client: crate::conns::Client {
            peer: Some(peer.ip()),
            tls: info.tls,
        },
        conn: std::sync::OnceLock::new(),
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
