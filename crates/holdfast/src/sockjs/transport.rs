//! The HTTP transports of a SockJS session: the receiving requests (`xhr`, `xhr_streaming`,
//! `eventsource`, `jsonp`), the first of which opens the session, and the sending ones
//! (`xhr_send`, `jsonp_send`).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::sync::mpsc;

use super::frame::{self, Framing};
use super::session::{self, Receiver, SendError, Session};
use super::{not_found, text};
use crate::app::{App, InsertError};
use crate::config::routes::Route;
use crate::http::{full, Body};
use crate::proxy::body::AccessRecord;
use crate::proxy::error::ProxyError;
use crate::proxy::RequestInfo;
use crate::ws::Bridged;

/// Frames a receiving request's body may hold before the session waits for the client.
const RECEIVER_FRAMES: usize = 16;

/// What a receiving request needs to find its session, or to open it.
pub struct Open<'a> {
    /// The app.
    pub app: &'a Arc<App>,
    /// The route.
    pub route: &'a Arc<Route>,
    /// The path (and query) the origin's WebSocket is opened on.
    pub path: &'a str,
    /// The client's address.
    pub peer: SocketAddr,
    /// The request's routing facts.
    pub info: &'a RequestInfo,
    /// The session's key in the app's session table.
    pub key: String,
}

impl Open<'_> {
    /// Serves a receiving request: hands a receiver to the session, opening the session (and
    /// the origin's WebSocket) first if there is none.
    pub async fn receive(
        self,
        req: Request<Incoming>,
        record: &mut AccessRecord,
        framing: Framing,
        streaming: bool,
    ) -> Result<Response<Body>, ProxyError> {
        let (tx, rx) = mpsc::channel(RECEIVER_FRAMES);
        let mut receiver = Receiver {
            tx,
            framing: framing.clone(),
            streaming,
        };
        let sessions = &self.app.sockjs_sessions;
        if let Some(s) = sessions.get::<Session>(&self.key) {
            match s.receive(receiver).await {
                Ok(()) => return Ok(frames(&framing, streaming, rx)),
                // It ended meanwhile: this request opens a new one.
                Err(r) => receiver = r,
            }
        }
        let max = self.app.config.sockjs.max_sessions;
        if sessions.len() >= max {
            return Ok(too_many(max));
        }
        let headers = req.headers().clone();
        let bridged = crate::ws::bridge(
            self.app, self.route, self.path, headers, self.peer, self.info, record,
        )
        .await?;
        let bridge = match bridged {
            // Pushpin passes the origin's refusal to the client as it is.
            Bridged::Refused(resp) => return Ok(resp),
            Bridged::Accepted(b) => b,
        };
        let (session, task) = session::start(self.app, self.key.clone(), bridge.socket);
        match sessions.insert(self.key.clone(), session.clone()) {
            Ok(()) => {}
            // Another request opened it meanwhile: this one's origin WebSocket is dropped.
            Err(InsertError::Taken) => {
                drop(task);
                return match sessions.get::<Session>(&self.key) {
                    Some(s) if s.receive(receiver).await.is_ok() => {
                        Ok(frames(&framing, streaming, rx))
                    }
                    _ => Ok(not_found()),
                };
            }
            Err(InsertError::Full(max)) => return Ok(too_many(max)),
        }
        task.spawn();
        if session.receive(receiver).await.is_err() {
            return Ok(not_found());
        }
        Ok(frames(&framing, streaming, rx))
    }
}

/// Serves `xhr_send` (a JSON array of strings) or `jsonp_send` (the same as form field `d`, or
/// as the body): `200 ok` once the messages are queued for the origin, as Pushpin answers.
pub async fn send(app: &App, key: &str, req: Request<Incoming>, form: bool) -> Response<Body> {
    let Some(s) = app.sockjs_sessions.get::<Session>(key) else {
        return not_found();
    };
    // JSON escapes can make a message's text up to six times its size; a body twice the
    // queue is plenty for what fits in the queue.
    let max = app
        .config
        .sockjs
        .max_queued
        .saturating_mul(2)
        .saturating_add(1024);
    let form = form
        && req.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
            v.as_bytes()
                .starts_with(b"application/x-www-form-urlencoded")
        });
    let body = match Limited::new(req.into_body(), max).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return text(StatusCode::PAYLOAD_TOO_LARGE, "Request too large.\n")
        }
        Err(e) => {
            tracing::debug!(error = %e, "SockJS send: client body broke off");
            return text(StatusCode::BAD_REQUEST, "Request body could not be read.\n");
        }
    };
    let payload = if form {
        url::form_urlencoded::parse(&body)
            .find(|(k, _)| k == "d")
            .map(|(_, v)| Bytes::from(v.into_owned()))
            .unwrap_or_default()
    } else {
        body
    };
    let messages = match frame::parse_messages(&payload) {
        Ok(m) => m,
        Err(e) => {
            let mut r = Response::new(full(format!("{e}\n")));
            *r.status_mut() = StatusCode::BAD_REQUEST;
            plain(&mut r);
            return r;
        }
    };
    match s.send(messages).await {
        Ok(()) => {
            let mut r = Response::new(full("ok"));
            plain(&mut r);
            r
        }
        Err(SendError::Closed(v)) => frames_now(&Framing::Xhr, &v.to_frame()),
        Err(SendError::Gone) => not_found(),
        Err(SendError::TooLarge(max)) => {
            let mut r = Response::new(full(format!(
                "Message too large: over sockjs.max_queued ({max} bytes).\n"
            )));
            *r.status_mut() = StatusCode::BAD_REQUEST;
            plain(&mut r);
            r
        }
    }
}

/// The JSON-P callback of a `jsonp` request (`c`, or `callback`), or the answer refusing it.
#[allow(clippy::result_large_err)]
pub fn callback(query: Option<&str>) -> Result<String, Response<Body>> {
    let cb = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "c" || k == "callback")
        .map(|(_, v)| v.into_owned());
    match cb {
        None => Err(text(
            StatusCode::BAD_REQUEST,
            "\"callback\" parameter required\n",
        )),
        Some(cb) if !frame::is_callback(&cb) => Err(text(
            StatusCode::BAD_REQUEST,
            "invalid \"callback\" parameter\n",
        )),
        Some(cb) => Ok(cb),
    }
}

fn plain(r: &mut Response<Body>) {
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
}

fn too_many(max: usize) -> Response<Body> {
    let mut r = Response::new(full(format!(
        "Too many SockJS sessions (sockjs.max_sessions is {max}).\n"
    )));
    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    plain(&mut r);
    r
}

/// A response of one frame, now.
fn frames_now(framing: &Framing, f: &str) -> Response<Body> {
    let mut r = Response::new(full(framing.wrap(f)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(framing.content_type(false)),
    );
    r
}

/// A response whose body is what the session writes to its receiver.
fn frames(framing: &Framing, streaming: bool, rx: mpsc::Receiver<Bytes>) -> Response<Body> {
    let mut r = Response::new(crate::http::boxed(FrameBody(rx)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(framing.content_type(streaming)),
    );
    r
}

/// The body of a receiving request: the session's frames, until it drops the sender.
struct FrameBody(mpsc::Receiver<Bytes>);

impl http_body::Body for FrameBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(http_body::Frame::data(b))))
    }
}
