//! SockJS endpoints (route option `sockjs=<prefix>`): each SockJS session becomes one
//! WebSocket session towards the route's origin — plain, GRIP or WebSocket-over-HTTP — through
//! [`crate::ws::bridge`], as Pushpin converts them. See docs/sockjs.md.
//!
//! Under the prefix:
//!
//! - `GET /info`: `{"cookie_needed":false,"entropy":N,"origins":["*:*"],"websocket":true}`, as
//!   `text/plain`, keys in Pushpin's order;
//! - `GET /iframe.html` (and `/iframe-….html`): the page that loads `sockjs.url`, with an ETag;
//! - `/websocket`: a raw WebSocket, passed to the origin at `<prefix>/websocket`;
//! - `/<server>/<session>/websocket`: SockJS frames over a WebSocket ([`websocket`]); the origin
//!   sees `<prefix>/websocket`;
//! - `/<server>/<session>/xhr`, `xhr_streaming`, `eventsource`, `jsonp`: the receiving requests
//!   of a session over HTTP ([`session`]), and `xhr_send`, `jsonp_send` its sending ones; the
//!   origin's WebSocket is opened at `<prefix>`;
//! - `OPTIONS` anything: `204` with the CORS headers.
//!
//! `sockjs_as_path=` replaces both origin paths; the route's rewrites (`path_rem`,
//! `replace_beg`) apply after. The first receiving request of a session opens the origin's
//! WebSocket with the request's headers: an origin that refuses has its answer passed to the
//! client. HTTP answers carry `Cache-Control: no-store…` and CORS headers
//! (`Access-Control-Allow-Origin` echoing the `Origin`, or `*`, and `…-Allow-Credentials:
//! true`). No cookie is set (`cookie_needed` is false).

mod frame;
mod session;
mod transport;
mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::app::App;
use crate::config::routes::Route;
use crate::http::{full, Body};
use crate::proxy::body::AccessRecord;
use crate::proxy::error::ProxyError;
use crate::proxy::RequestInfo;
use crate::ws::{Bridged, Upgrade};

/// The SockJS prefix of `route` that `path` is under, if any.
pub fn prefix_of<'r>(route: &'r Route, path: &str) -> Option<&'r str> {
    let prefix = route.options.sockjs.as_deref()?;
    path.starts_with(prefix).then_some(prefix)
}

/// Serves a request under the SockJS prefix of `route`.
pub async fn serve(
    app: &Arc<App>,
    route: &Arc<Route>,
    req: Request<Incoming>,
    peer: SocketAddr,
    info: &RequestInfo,
    record: &mut AccessRecord,
) -> Result<Response<Body>, ProxyError> {
    let prefix = prefix_of(route, req.uri().path()).unwrap_or_default();
    let rest = req.uri().path()[prefix.len()..].to_string();
    let origin_headers = req.headers().clone();
    if req.method() == Method::OPTIONS {
        return Ok(with_cors(preflight(), &origin_headers));
    }
    let upgrade = info.websocket;
    let get = req.method() == Method::GET;
    let resp = match rest.as_str() {
        "" | "/" if get => text(StatusCode::OK, "Welcome to SockJS!\n"),
        "/info" if get => info_response(),
        p if get && p.starts_with("/iframe") && p.ends_with(".html") => {
            iframe(&app.config.sockjs.url, req.headers())
        }
        "/websocket" if upgrade => {
            let path = origin_path(route, &req, prefix, true);
            return crate::ws::serve(app, route, req, peer, info, record, Some(path)).await;
        }
        _ => match parse_session_path(&rest) {
            Some((session, transport)) => {
                let session = session.to_string();
                let transport = transport.to_string();
                return session_request(
                    app, route, req, peer, info, record, prefix, &session, &transport,
                )
                .await
                .map(|r| with_cors(r, &origin_headers));
            }
            None => not_found(),
        },
    };
    Ok(with_cors(resp, &origin_headers))
}

/// Serves `/<server>/<session>/<transport>`.
#[allow(clippy::too_many_arguments)]
async fn session_request(
    app: &Arc<App>,
    route: &Arc<Route>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    info: &RequestInfo,
    record: &mut AccessRecord,
    prefix: &str,
    session: &str,
    transport: &str,
) -> Result<Response<Body>, ProxyError> {
    let method = req.method().clone();
    if transport == "websocket" {
        if !info.websocket {
            return Ok(match method {
                Method::GET => text(
                    StatusCode::BAD_REQUEST,
                    "Can \"Upgrade\" only to \"WebSocket\".\n",
                ),
                _ => {
                    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "");
                    r.headers_mut()
                        .insert(header::ALLOW, HeaderValue::from_static("GET"));
                    r
                }
            });
        }
        let path = origin_path(route, &req, prefix, true);
        let upgrade = Upgrade::of(&mut req)?;
        let bridged =
            crate::ws::bridge(app, route, &path, req.headers().clone(), peer, info, record).await?;
        let bridge = match bridged {
            Bridged::Refused(resp) => return Ok(resp),
            Bridged::Accepted(b) => b,
        };
        let resp = upgrade.accept(bridge.headers.clone());
        let app = app.clone();
        let guard = app.shutdown.guard();
        tokio::spawn(async move {
            let _guard = guard;
            if let Some(client) = upgrade.socket(&app).await {
                websocket::run(&app, client, bridge.socket).await;
            }
        });
        return Ok(resp);
    }
    let key = format!("{}\u{0}{session}", route.id);
    let path = origin_path(route, &req, prefix, false);
    let open = transport::Open {
        app,
        route,
        path: &path,
        peer,
        info,
        key,
    };
    match (&method, transport) {
        (&Method::POST, "xhr") => open.receive(req, record, frame::Framing::Xhr, false).await,
        (&Method::POST, "xhr_streaming") => {
            open.receive(req, record, frame::Framing::Xhr, true).await
        }
        (&Method::GET, "eventsource") => {
            open.receive(req, record, frame::Framing::EventSource, true)
                .await
        }
        (&Method::GET, "jsonp") => match transport::callback(req.uri().query()) {
            Ok(cb) => {
                open.receive(req, record, frame::Framing::Jsonp(cb), false)
                    .await
            }
            Err(resp) => Ok(resp),
        },
        (&Method::POST, "xhr_send") => Ok(transport::send(app, &open.key, req, false).await),
        (&Method::POST, "jsonp_send") => Ok(transport::send(app, &open.key, req, true).await),
        _ => Ok(not_found()),
    }
}

/// `/<server>/<session>/<transport>` split; `None` unless each part is non-empty and the
/// server and session have no `.` (as the SockJS protocol requires).
fn parse_session_path(rest: &str) -> Option<(&str, &str)> {
    let mut parts = rest.strip_prefix('/')?.split('/');
    let (server, session, transport) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let ok = |p: &str| !p.is_empty() && !p.contains('.');
    (ok(server) && ok(session) && !transport.is_empty()).then_some((session, transport))
}

/// The path (and query) the origin's WebSocket is opened on: `sockjs_as_path=`, else the prefix
/// (`/websocket` after it for the WebSocket transports), with the request's query, through the
/// route's rewrites.
fn origin_path<B>(route: &Route, req: &Request<B>, prefix: &str, websocket: bool) -> String {
    let base = match &route.options.sockjs_as_path {
        Some(p) => p.clone(),
        None if websocket => format!("{prefix}/websocket"),
        None => prefix.to_string(),
    };
    let path = match req.uri().query() {
        Some(q) => format!("{base}?{q}"),
        None => base,
    };
    route.rewrite_path(&path)
}

fn info_response() -> Response<Body> {
    let entropy: u32 = rand::random();
    let body = format!(
        "{{\"cookie_needed\":false,\"entropy\":{entropy},\"origins\":[\"*:*\"],\"websocket\":true}}\n"
    );
    let mut r = Response::new(full(body));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// The iframe page that loads sockjs-client from `url` (validated: no quote or angle bracket).
fn iframe(url: &str, request: &HeaderMap) -> Response<Body> {
    let html = format!(
        "<!DOCTYPE html>\n<html>\n<head>\n  <meta http-equiv=\"X-UA-Compatible\" content=\"IE=edge\" />\n  \
         <meta http-equiv=\"Content-Type\" content=\"text/html; charset=UTF-8\" />\n  \
         <script src=\"{url}\"></script>\n  <script>\n    document.domain = document.domain;\n    \
         SockJS.bootstrap_iframe();\n  </script>\n</head>\n<body>\n  <h2>Don't panic!</h2>\n  \
         <p>This is a SockJS hidden iframe. It's used for cross domain magic.</p>\n</body>\n</html>\n"
    );
    let digest = ring::digest::digest(&ring::digest::SHA256, html.as_bytes());
    let etag: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let etag = HeaderValue::from_str(&format!("\"{etag}\"")).expect("hex is a valid value");
    let mut r = if request.get(header::IF_NONE_MATCH) == Some(&etag) {
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(full(html));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=UTF-8"),
        );
        r
    };
    let h = r.headers_mut();
    h.insert(header::ETAG, etag);
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000"),
    );
    r
}

/// The answer to a CORS preflight.
fn preflight() -> Response<Body> {
    let mut r = text(StatusCode::NO_CONTENT, "");
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("OPTIONS, GET, POST"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("31536000"),
    );
    r
}

/// Adds the headers every SockJS answer carries: no caching (unless the answer says otherwise)
/// and CORS for the request's `Origin`.
fn with_cors(mut r: Response<Body>, request: &HeaderMap) -> Response<Body> {
    if r.status() == StatusCode::SWITCHING_PROTOCOLS {
        // A WebSocket's handshake: the origin's headers, as Pushpin passes them.
        return r;
    }
    let h = r.headers_mut();
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store, no-cache, must-revalidate, max-age=0"),
        );
    }
    let origin = request
        .get(header::ORIGIN)
        .filter(|o| o.as_bytes() != b"null")
        .cloned()
        .unwrap_or(HeaderValue::from_static("*"));
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    if let Some(asked) = request.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    // Pushpin's type, without a charset.
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

fn not_found() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "Not Found\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_paths() {
        assert_eq!(parse_session_path("/000/abc/xhr"), Some(("abc", "xhr")));
        assert_eq!(
            parse_session_path("/s/x-y_z/websocket"),
            Some(("x-y_z", "websocket"))
        );
        for bad in [
            "/a/b",
            "/a/b/c/d",
            "//b/xhr",
            "/a//xhr",
            "/a.b/c/xhr",
            "/a/b.c/xhr",
            "/a/b/",
            "a/b/c",
        ] {
            assert_eq!(parse_session_path(bad), None, "{bad}");
        }
    }
}
