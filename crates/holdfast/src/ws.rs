//! WebSockets: pass-through, GRIP WebSocket and WebSocket-over-HTTP (reference §3).
//!
//! A client upgrade reaches [`serve`] after routing. For each target in order, Holdfast opens
//! the origin side first — a WebSocket handshake through the pooled origin clients
//! ([`relay`]), or the `OPEN` request of WebSocket-over-HTTP ([`over_http`]) — so an origin
//! that refuses can have its answer passed to the client, and a target that cannot be reached
//! hands over to the next. Only then does the client get its `101`; one task per connection then
//! runs the session, selecting over the client socket, the origin, the hub queue and the
//! connection's timers.
//!
//! Framing is `tokio-tungstenite`: reading is a cancel-safe `Stream`, so one task serves both
//! directions. A client socket taken back from hyper writes through the session's
//! [`crate::sink::Sink`], so while the connection waits with nothing queued the hub may write a
//! plain published frame to it itself; the sink keeps those frames and tungstenite's whole and
//! in order. Limits: a message (all fragments) is at most `websocket.max_message_size`
//! bytes; published items wait in the hub's bounded queue (newest dropped when full); writes to
//! a slow client apply backpressure to its origin instead of queueing. Bad input closes only
//! the connection it arrived on: 1002 for a protocol violation, 1007 for invalid UTF-8, 1009
//! for an oversized message, 1011 when the origin misbehaved — each with a log line that
//! names the reason.

mod handshake;
mod over_http;
mod relay;
mod session;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::header::{HeaderMap, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig as FrameConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use crate::app::App;
use crate::config::routes::{Route, TargetKind};
use crate::config::WebSocketConfig;
use crate::http::{boxed, Body};
use crate::origin::Reclaimable;
use crate::proxy::body::AccessRecord;
use crate::proxy::error::ProxyError;
use crate::proxy::RequestInfo;
use crate::sink::Sink;
use crate::socket::{ClientSocket, UpgradedSocket};
use handshake::ClientHandshake;
use session::{Session, SessionSpec};

/// One side of a WebSocket connection, after its HTTP upgrade.
type Socket = WebSocketStream<Io>;

/// The byte stream under a WebSocket: a client socket taken back from hyper after its
/// HTTP/1.1 upgrade, or hyper's upgraded connection (the origin side of a relay, and any
/// client upgrade that is not HTTP/1.1).
enum Io {
    Client(UpgradedSocket),
    Upgraded(TokioIo<Upgraded>),
}

impl tokio::io::AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Client(s) => Pin::new(s).poll_read(cx, buf),
            Io::Upgraded(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Client(s) => Pin::new(s).poll_write(cx, buf),
            Io::Upgraded(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Client(s) => Pin::new(s).poll_flush(cx),
            Io::Upgraded(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Client(s) => Pin::new(s).poll_shutdown(cx),
            Io::Upgraded(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A client's pending upgrade, and its socket when the handler may take it from hyper
/// afterwards (an HTTP/1.1 upgrade on a plain socket).
pub struct ClientUpgrade {
    on: OnUpgrade,
    socket: Option<ClientSocket>,
}

impl ClientUpgrade {
    fn of(req: &mut Request<Incoming>) -> ClientUpgrade {
        let socket = if req.version() == http::Version::HTTP_11 {
            req.extensions_mut().remove::<ClientSocket>()
        } else {
            None
        };
        ClientUpgrade {
            on: hyper::upgrade::on(req),
            socket,
        }
    }
}

/// How opening the origin side of a connection went.
enum Opened<T> {
    /// The target could not be connected to; try the next. Carries why.
    Unreachable(String),
    /// The origin refused the WebSocket: its answer goes to the client.
    Refused(Response<Body>),
    /// The origin accepted: the `101` for the client, and what runs the connection.
    Accepted(Response<Body>, T),
}

/// Serves a client WebSocket upgrade on `route`.
pub async fn serve(
    app: &Arc<App>,
    route: &Arc<Route>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    info: &RequestInfo,
    record: &mut AccessRecord,
) -> Result<Response<Body>, ProxyError> {
    let mut client = ClientHandshake::parse(&req).map_err(ProxyError::BadRequest)?;
    client.upstream = info.trusted;
    client.client = crate::conns::Client {
        peer: Some(peer.ip()),
        tls: info.tls,
    };
    let upgrade = ClientUpgrade::of(&mut req);
    let path = route.rewrite_path(req.uri().path_and_query().map_or("/", |p| p.as_str()));
    let (parts, body) = req.into_parts();
    let headers = origin_headers(app, route, peer, info, parts.headers);
    let mut body = Some(boxed(body));
    let mut tried = Vec::new();
    for target in route.targets.iter().filter(|t| t.kind != TargetKind::Test) {
        let label = target.label();
        let why = if target.over_http {
            match over_http::open(app, route, target, &path, &headers, &client).await? {
                Opened::Unreachable(why) => why,
                Opened::Refused(resp) => {
                    record.target = Some(label);
                    return Ok(resp);
                }
                Opened::Accepted(resp, conn) => {
                    record.target = Some(label);
                    // The connection's own future is the task: a wrapping `async` block would
                    // keep its own copy of the moved `Conn` for the connection's whole life.
                    tokio::spawn(conn.run(upgrade, app.shutdown.guard()));
                    return Ok(resp);
                }
            }
        } else {
            let Some(b) = body.take() else { break };
            let (lent, slot) = Reclaimable::new(b);
            let opened = relay::open(app, route, target, &path, &headers, lent, &client).await?;
            match opened {
                Opened::Unreachable(why) => {
                    body = Reclaimable::reclaim(&slot);
                    why
                }
                Opened::Refused(resp) => {
                    record.target = Some(label);
                    return Ok(resp);
                }
                Opened::Accepted(resp, conn) => {
                    record.target = Some(label);
                    tokio::spawn(conn.run(app.clone(), upgrade, app.shutdown.guard()));
                    return Ok(resp);
                }
            }
        };
        tracing::debug!(target = %label, error = %why, "origin connect failed");
        tried.push((label, why));
    }
    Err(ProxyError::Unreachable(tried))
}

/// The test handler's `/ws`: a WebSocket that echoes what the client sends and receives what is
/// published to `channels` (route prefix added).
pub fn serve_test(
    app: &Arc<App>,
    route: &Route,
    mut req: Request<Incoming>,
    channels: Vec<String>,
    from: crate::conns::Client,
) -> Result<Response<Body>, ProxyError> {
    let client = ClientHandshake::parse(&req).map_err(ProxyError::BadRequest)?;
    let upgrade = ClientUpgrade::of(&mut req);
    let spec = SessionSpec {
        channel_prefix: route.options.channel_prefix.clone(),
        implicit: channels,
        message_prefix: None,
        label: "test".to_string(),
        client: from,
        conn_id: None,
        route_id: route.explicit_id().map(str::to_string),
    };
    // The channels come from the client's query here.
    spec.check(app)
        .map_err(|e| ProxyError::BadRequest(e.to_string()))?;
    let app = app.clone();
    let guard = app.shutdown.guard();
    tokio::spawn(async move {
        let _guard = guard;
        let session = Session::new(app.clone(), spec);
        let Some(socket) = upgrade_client(&app, upgrade, session.sink()).await else {
            return;
        };
        relay::run(app, session, socket, relay::Peer::Echo).await;
    });
    Ok(client.accept(HeaderMap::new()))
}

/// The client's request headers as every origin request of this connection starts from: the
/// proxy's rewrite (hop-by-hop, `Grip-*`, `X-Forwarded-*`, `Host`, route `header=`), the
/// client's extensions replaced by `grip`, and `Grip-Sig` — but an upstream GRIP proxy's own
/// `Grip-Sig` stays instead, as in Pushpin.
fn origin_headers(
    app: &App,
    route: &Route,
    peer: SocketAddr,
    info: &RequestInfo,
    h: HeaderMap,
) -> HeaderMap {
    let mut h = crate::proxy::origin_headers(app, route, peer, info, true, h);
    h.remove(handshake::EXTENSIONS);
    if !route.options.no_grip {
        h.insert(handshake::EXTENSIONS, HeaderValue::from_static("grip"));
        if !info.trusted {
            app.grip_headers(route, &mut h);
        }
    }
    h
}

/// The framing limits of every WebSocket.
fn frame_config(c: &WebSocketConfig) -> FrameConfig {
    FrameConfig::default()
        .read_buffer_size(c.read_buffer_size)
        .write_buffer_size(16 * 1024)
        .max_message_size(Some(c.max_message_size))
        .max_frame_size(Some(c.max_message_size))
}

/// Waits for the client's side of the upgrade; `None` (logged) when the client left first.
///
/// The client socket is then taken back from hyper when it can be ([`ClientSocket`]), so its
/// reads and writes go straight to the socket, and its writes through `sink`, where the hub may
/// write too.
async fn upgrade_client(app: &App, upgrade: ClientUpgrade, sink: &Arc<Sink>) -> Option<Socket> {
    let up = match upgrade.on.await {
        Ok(up) => up,
        Err(e) => {
            tracing::debug!(error = %e, "client left before the WebSocket upgrade completed");
            return None;
        }
    };
    let io = match upgrade.socket {
        Some(socket) => match socket.take_upgraded(up, sink.clone()) {
            Ok(Some(s)) => Io::Client(s),
            Ok(None) => {
                tracing::debug!("client left right after the WebSocket upgrade");
                return None;
            }
            Err(e) => {
                tracing::debug!(error = %e, "dropping the WebSocket client");
                return None;
            }
        },
        None => Io::Upgraded(TokioIo::new(up)),
    };
    Some(socket(app, io, Role::Server).await)
}

async fn socket(app: &App, io: Io, role: Role) -> Socket {
    let config = frame_config(&app.config.websocket);
    WebSocketStream::from_raw_socket(io, role, Some(config)).await
}

/// A close frame with `code` and `reason`, cut to the 123 bytes a close frame can carry.
fn close_frame(code: u16, reason: &str) -> Option<CloseFrame> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Some(CloseFrame {
        code: CloseCode::from(code),
        reason: Utf8Bytes::from(&reason[..end]),
    })
}

/// The close code and reason for a read error that is the peer's fault; `None` when the peer
/// simply went away.
fn close_for(e: &WsError) -> Option<(u16, &'static str)> {
    match e {
        WsError::Capacity(_) => Some((1009, "message too big")),
        WsError::Protocol(_) | WsError::AttackAttempt => Some((1002, "protocol error")),
        WsError::Utf8(_) => Some((1007, "invalid UTF-8")),
        _ => None,
    }
}

/// Closes a socket with `frame` (or completes a close the peer began), then waits for the
/// peer's close, at most `within`.
async fn finish(socket: &mut Socket, frame: Option<CloseFrame>, within: Duration) {
    let _ = tokio::time::timeout(within, async {
        // After the peer's close, sending another fails; the flush still writes the reply
        // tungstenite queued for it.
        let _ = socket.close(frame).await;
        if socket.flush().await.is_ok() {
            while let Some(Ok(_)) = socket.next().await {}
        }
    })
    .await;
}

/// Writes what the hub left unwritten on the client socket (after [`Sink`] said so). Returns
/// false when the socket failed.
async fn flush_left(socket: &mut Socket) -> bool {
    use tokio::io::AsyncWrite;
    std::future::poll_fn(|cx| Pin::new(socket.get_mut()).poll_flush(cx))
        .await
        .is_ok()
}

/// Sends `messages` in one write. Returns false when the socket failed.
async fn send_all(
    socket: &mut Socket,
    messages: Vec<tokio_tungstenite::tungstenite::Message>,
) -> bool {
    for m in messages {
        if socket.feed(m).await.is_err() {
            return false;
        }
    }
    socket.flush().await.is_ok()
}
