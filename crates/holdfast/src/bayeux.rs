//! Bayeux 1.0 endpoints (route option `bayeux=<path>`), the protocol of Faye and CometD
//! clients. See docs/bayeux.md.
//!
//! Sessions are Holdfast's: a handshake makes a client id and a [`session`] task that
//! subscribes to hub channels and queues events for the client's `/meta/connect`s. The origin
//! decides, through [`origin`]: the handshake, each subscribe and each publish is POSTed to it,
//! and a subscription is allowed when it answers `2xx` naming the channel in GRIP instructions.
//! Bayeux channel `/foo/bar` is hub channel `<route prefix>/foo/bar`; a pattern (`/foo/*`,
//! `/foo/**`) is a hub channel of its own, which [`crate::bus`] publishes `json-object` items
//! to as well.
//!
//! Transports at the endpoint's path:
//!
//! - `POST` a batch (a JSON array of messages; or form field `message`, with or without the
//!   form's content type): `long-polling` and `cross-origin-long-polling`, the answer a JSON
//!   array (`application/json`);
//! - `GET ?message=<batch>&jsonp=<callback>`: `callback-polling`, the answer
//!   `/**/callback([…]);` (`text/javascript`);
//! - a WebSocket upgrade ([`websocket`]): `websocket`, each frame a batch, each answer a frame;
//! - `OPTIONS`: a CORS preflight.
//!
//! HTTP answers carry CORS headers (`Access-Control-Allow-Origin` echoing the `Origin`, with
//! credentials), so pages on other origins may use the endpoint (Faye's
//! `cross-origin-long-polling`).

mod message;
mod origin;
mod process;
mod session;
mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::app::App;
use crate::config::routes::Route;
use crate::http::{full, Body};
use crate::proxy::body::AccessRecord;
use crate::proxy::error::ProxyError;
use crate::proxy::RequestInfo;
use crate::ws::Upgrade;

/// Whether `path` is the Bayeux endpoint of `route`.
pub fn is_endpoint(route: &Route, path: &str) -> bool {
    route.options.bayeux.as_deref() == Some(path)
}

/// What processing a message needs to know about the endpoint and the client: the origin's
/// request is made from it.
pub struct Endpoint {
    app: Arc<App>,
    route: Arc<Route>,
    /// The path (and query) the origin is asked at.
    origin_path: String,
    /// The client's headers, rewritten for the origin, with `Content-Type: application/json`.
    origin_headers: HeaderMap,
}

impl Endpoint {
    fn of<B>(
        app: &Arc<App>,
        route: &Arc<Route>,
        req: &Request<B>,
        peer: SocketAddr,
        info: &RequestInfo,
    ) -> Endpoint {
        let mut h = req.headers().clone();
        let websocket_headers: Vec<HeaderName> = h
            .keys()
            .filter(|k| k.as_str().starts_with("sec-websocket-"))
            .cloned()
            .collect();
        for k in websocket_headers {
            h.remove(k);
        }
        h.remove(header::CONTENT_LENGTH);
        h.remove(header::CONTENT_TYPE);
        let mut h = crate::proxy::origin_headers(app, route, peer, info, false, h);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Endpoint {
            app: app.clone(),
            route: route.clone(),
            origin_path: route.rewrite_path(req.uri().path()),
            origin_headers: h,
        }
    }
}

/// Serves a request at the Bayeux endpoint of `route`.
pub async fn serve(
    app: &Arc<App>,
    route: &Arc<Route>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    info: &RequestInfo,
    record: &mut AccessRecord,
) -> Result<Response<Body>, ProxyError> {
    record.target = Some("bayeux".to_string());
    let request_headers = req.headers().clone();
    let endpoint = Endpoint::of(app, route, &req, peer, info);
    if info.websocket {
        let upgrade = Upgrade::of(&mut req)?;
        let resp = upgrade.accept(HeaderMap::new());
        let app = app.clone();
        let guard = app.shutdown.guard();
        tokio::spawn(async move {
            let _guard = guard;
            if let Some(client) = upgrade.socket(&app).await {
                websocket::run(endpoint, client).await;
            }
        });
        return Ok(resp);
    }
    let resp = match *req.method() {
        Method::OPTIONS => preflight(),
        Method::POST => {
            let form = req.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
                v.as_bytes()
                    .starts_with(b"application/x-www-form-urlencoded")
            });
            match read_body(app, req).await {
                // Faye's cross-origin transport sends the form without a type (text/plain).
                Ok(body) if form || body.starts_with(b"message=") => {
                    match form_field(&body, "message") {
                        Some(batch) => answer(&endpoint, &batch, None).await,
                        None => bad_request("form field 'message' is missing", None),
                    }
                }
                Ok(body) => answer(&endpoint, &body, None).await,
                Err(resp) => resp,
            }
        }
        Method::GET => {
            let query = req.uri().query().unwrap_or_default().as_bytes();
            let callback =
                form_field(query, "jsonp").map(|c| String::from_utf8_lossy(&c).into_owned());
            match (form_field(query, "message"), callback) {
                (_, Some(cb)) if !is_callback(&cb) => {
                    bad_request("parameter 'jsonp' is not a callback name", None)
                }
                (Some(batch), cb) => answer(&endpoint, &batch, cb.as_deref()).await,
                (None, cb) => bad_request("parameter 'message' is missing", cb.as_deref()),
            }
        }
        _ => {
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "A Bayeux endpoint takes POST, GET (callback-polling) or a WebSocket.\n",
            );
            r.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, POST, OPTIONS"),
            );
            r
        }
    };
    Ok(with_cors(resp, &request_headers))
}

/// Carries out a batch and answers with the replies, as JSON or (with `callback`) JSON-P.
async fn answer(endpoint: &Endpoint, body: &[u8], callback: Option<&str>) -> Response<Body> {
    let batch = match message::parse_batch(body) {
        Ok(b) => b,
        Err(e) => return bad_request(&e, callback),
    };
    let processed = endpoint.process(batch).await;
    let mut replies = processed.replies;
    if let Some(c) = processed.connect {
        replies.extend(c.finish().await);
    }
    json(StatusCode::OK, message::batch(&replies), callback)
}

async fn read_body(app: &App, req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    let max = app.config.bayeux.max_request_bytes;
    match Limited::new(req.into_body(), max).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            let mut r = bad_request(
                &format!("the request is larger than bayeux.max_request_bytes ({max})"),
                None,
            );
            *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
            Err(r)
        }
        Err(e) => {
            tracing::debug!(error = %e, "Bayeux request body broke off");
            Err(bad_request("the request body could not be read", None))
        }
    }
}

fn form_field(data: &[u8], name: &str) -> Option<Vec<u8>> {
    url::form_urlencoded::parse(data)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned().into_bytes())
}

/// A JSON-P callback: letters, digits, `_`, `$` and `.`, at most 128 bytes.
fn is_callback(cb: &str) -> bool {
    !cb.is_empty()
        && cb.len() <= 128
        && cb
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_$.".contains(&b))
}

/// The reply to a batch that could not be read: a `400` whose body is a Bayeux error reply
/// naming what was wrong.
fn bad_request(why: &str, callback: Option<&str>) -> Response<Body> {
    let mut m = message::Message::new();
    m.insert("successful".into(), false.into());
    m.insert("error".into(), format!("400::Bad request: {why}").into());
    json(
        StatusCode::BAD_REQUEST,
        message::batch(&[message::to_bytes(&m)]),
        callback,
    )
}

fn json(status: StatusCode, body: Bytes, callback: Option<&str>) -> Response<Body> {
    let (body, kind) = match callback {
        Some(cb) => {
            let mut b = Vec::with_capacity(body.len() + cb.len() + 8);
            b.extend_from_slice(b"/**/");
            b.extend_from_slice(cb.as_bytes());
            b.push(b'(');
            b.extend_from_slice(&body);
            b.extend_from_slice(b");");
            (Bytes::from(b), "text/javascript; charset=utf-8")
        }
        None => (body, "application/json"),
    };
    let mut r = Response::new(full(body));
    // A JSON-P script has to run to be read: its status is always 200.
    if callback.is_none() {
        *r.status_mut() = status;
    }
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    );
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

fn preflight() -> Response<Body> {
    let mut r = text(StatusCode::NO_CONTENT, "");
    let h = r.headers_mut();
    h.remove(header::CONTENT_TYPE);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, GET, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    r
}

/// CORS for the request's `Origin` (else `*`), with credentials, and the headers a preflight
/// asked for.
fn with_cors(mut r: Response<Body>, request: &HeaderMap) -> Response<Body> {
    let h = r.headers_mut();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callbacks() {
        assert!(is_callback("__jsonp1__"));
        assert!(is_callback("a.b$c"));
        assert!(!is_callback(""));
        assert!(!is_callback("a(b)"));
        assert!(!is_callback(&"a".repeat(129)));
    }
}
