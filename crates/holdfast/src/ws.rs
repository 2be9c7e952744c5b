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
//!
//! [`bridge`] opens the same origin side for a client that is not a WebSocket (a SockJS
//! session, [`crate::sockjs`]): its client side is an in-memory WebSocket whose other end the
//! caller gets, so the session runs through exactly the code above — GRIP, control messages,
//! publishes, WebSocket-over-HTTP — and the caller only translates frames.

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
use tokio::io::DuplexStream;
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

/// A client's WebSocket after an upgrade that Holdfast answered itself ([`Upgrade`]).
pub type ClientWebSocket = WebSocketStream<Io>;

/// The byte stream under a WebSocket: a client socket taken back from hyper after its
/// HTTP/1.1 upgrade, hyper's upgraded connection (the origin side of a relay, and any
/// client upgrade that is not HTTP/1.1), or one end of a [`bridge`].
pub enum Io {
    /// A client socket taken back from hyper.
    Client(UpgradedSocket),
    /// hyper's upgraded connection.
    Upgraded(TokioIo<Upgraded>),
    /// One end of a bridge.
    Bridge(DuplexStream),
}

/// A client's WebSocket upgrade that a transport answers itself (SockJS's `websocket`
/// transport): the `101` it sends, then the client's socket.
pub struct Upgrade {
    client: ClientHandshake,
    upgrade: ClientUpgrade,
}

impl Upgrade {
    /// Checks the upgrade request; the error names what is wrong.
    pub fn of(req: &mut Request<Incoming>) -> Result<Upgrade, ProxyError> {
        let client = ClientHandshake::parse(req).map_err(ProxyError::BadRequest)?;
        Ok(Upgrade {
            client,
            upgrade: ClientUpgrade::of(req),
        })
    }

    /// The `101` for the client, with `headers` besides the handshake's.
    pub fn accept(&self, headers: HeaderMap) -> Response<Body> {
        self.client.accept(headers)
    }

    /// The client's WebSocket once the `101` has gone out; `None` (logged) when the client left.
    pub async fn socket(self, app: &App) -> Option<ClientWebSocket> {
        upgrade_client(app, self.upgrade, &Sink::new()).await
    }
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
            Io::Bridge(s) => Pin::new(s).poll_read(cx, buf),
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
            Io::Bridge(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Client(s) => Pin::new(s).poll_flush(cx),
            Io::Upgraded(s) => Pin::new(s).poll_flush(cx),
            Io::Bridge(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Client(s) => Pin::new(s).poll_shutdown(cx),
            Io::Upgraded(s) => Pin::new(s).poll_shutdown(cx),
            Io::Bridge(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The client side of a connection before it runs.
pub enum ClientUpgrade {
    /// A client's pending upgrade, and its socket when the handler may take it from hyper
    /// afterwards (an HTTP/1.1 upgrade on a plain socket).
    Hyper {
        /// hyper's upgrade.
        on: OnUpgrade,
        /// The socket to take back, if it may be.
        socket: Option<ClientSocket>,
    },
    /// The Holdfast end of a [`bridge`].
    Bridge(DuplexStream),
}

impl ClientUpgrade {
    fn of(req: &mut Request<Incoming>) -> ClientUpgrade {
        let socket = if req.version() == http::Version::HTTP_11 {
            req.extensions_mut().remove::<ClientSocket>()
        } else {
            None
        };
        ClientUpgrade::Hyper {
            on: hyper::upgrade::on(req),
            socket,
        }
    }
}

/// The bytes an in-memory [`bridge`] holds in each direction before a writer waits.
const BRIDGE_BUFFER: usize = 64 * 1024;

/// The caller's end of a [`bridge`]: a WebSocket whose peer is the connection's client side.
pub type BridgeSocket = WebSocketStream<DuplexStream>;

/// An origin's WebSocket, opened for a client that is not a WebSocket.
pub struct Bridge {
    /// The origin's handshake headers that a client's `101` would carry.
    pub headers: HeaderMap,
    /// Text and binary messages from here reach the origin as the client's; the origin's (and
    /// publishes) arrive here; a close goes either way.
    pub socket: BridgeSocket,
}

/// How opening a [`bridge`] went.
pub enum Bridged {
    /// The origin refused the WebSocket: its answer, for the client.
    Refused(Response<Body>),
    /// The origin accepted; the connection runs. (Boxed: a socket is large.)
    Accepted(Box<Bridge>),
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

/// Serves a client WebSocket upgrade on `route`; `path`, when given, is the path (and query)
/// the origin sees instead of the request's after the route's rewrite.
pub async fn serve(
    app: &Arc<App>,
    route: &Arc<Route>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    info: &RequestInfo,
    record: &mut AccessRecord,
    path: Option<String>,
) -> Result<Response<Body>, ProxyError> {
    let mut client = ClientHandshake::parse(&req).map_err(ProxyError::BadRequest)?;
    client.upstream = info.trusted;
    client.client = crate::conns::Client {
        peer: Some(peer.ip()),
        tls: info.tls,
    };
    let upgrade = ClientUpgrade::of(&mut req);
    let path = path.unwrap_or_else(|| {
        route.rewrite_path(req.uri().path_and_query().map_or("/", |p| p.as_str()))
    });
    let (parts, body) = req.into_parts();
    let headers = origin_headers(app, route, peer, info, parts.headers);
    open(
        app,
        route,
        &path,
        &headers,
        boxed(body),
        &client,
        upgrade,
        record,
    )
    .await
}

/// Opens an origin WebSocket on `route` for a client that is not a WebSocket (a SockJS
/// session): `headers` are the client request's, `path` the path (and query) the origin sees.
/// The origin is asked as for a client's upgrade, targets in order; once it accepts, the
/// connection runs as any other, with the returned [`Bridge`] as its client.
pub async fn bridge(
    app: &Arc<App>,
    route: &Arc<Route>,
    path: &str,
    headers: HeaderMap,
    peer: SocketAddr,
    info: &RequestInfo,
    record: &mut AccessRecord,
) -> Result<Bridged, ProxyError> {
    // The client is a browser library, never an upstream GRIP proxy: Holdfast does the GRIP
    // work, and the origin's messages reach the client without their prefix.
    let info = RequestInfo {
        trusted: false,
        ..info.clone()
    };
    let mut headers = origin_headers(app, route, peer, &info, headers);
    headers.remove(http::header::CONTENT_LENGTH);
    headers.remove(http::header::CONTENT_TYPE);
    // Any key will do: the `101` it answers goes nowhere.
    let client = ClientHandshake {
        key: HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        client: crate::conns::Client {
            peer: Some(peer.ip()),
            tls: info.tls,
        },
        upstream: false,
    };
    let (here, there) = tokio::io::duplex(BRIDGE_BUFFER);
    let upgrade = ClientUpgrade::Bridge(here);
    let resp = open(
        app,
        route,
        path,
        &headers,
        boxed(http_body_util::Empty::new()),
        &client,
        upgrade,
        record,
    )
    .await?;
    if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        return Ok(Bridged::Refused(resp));
    }
    let (parts, _) = resp.into_parts();
    let mut headers = parts.headers;
    for name in [
        http::header::UPGRADE,
        http::header::CONNECTION,
        http::header::SEC_WEBSOCKET_ACCEPT,
    ] {
        headers.remove(name);
    }
    let socket = socket_of(app, there, Role::Client).await;
    Ok(Bridged::Accepted(Box::new(Bridge { headers, socket })))
}

/// Opens the origin side on each target in order and, once one accepts, spawns the connection
/// with `upgrade` as its client; returns the client's `101`, or the origin's refusal.
#[allow(clippy::too_many_arguments)]
async fn open(
    app: &Arc<App>,
    route: &Arc<Route>,
    path: &str,
    headers: &HeaderMap,
    body: Body,
    client: &ClientHandshake,
    upgrade: ClientUpgrade,
    record: &mut AccessRecord,
) -> Result<Response<Body>, ProxyError> {
    let mut body = Some(body);
    let mut tried = Vec::new();
    for target in route.targets.iter().filter(|t| t.kind != TargetKind::Test) {
        let label = target.label();
        let why = if target.over_http {
            match over_http::open(app, route, target, path, headers, client).await? {
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
            let opened = relay::open(app, route, target, path, headers, lent, client).await?;
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
        counted: (crate::metrics::Transport::WebSocket, route.id.clone()),
        presence_origin: app.presence.origin_of(route),
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
    let (on, socket) = match upgrade {
        ClientUpgrade::Hyper { on, socket } => (on, socket),
        ClientUpgrade::Bridge(io) => {
            return Some(socket_of(app, Io::Bridge(io), Role::Server).await)
        }
    };
    let up = match on.await {
        Ok(up) => up,
        Err(e) => {
            tracing::debug!(error = %e, "client left before the WebSocket upgrade completed");
            return None;
        }
    };
    let io = match socket {
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
    Some(socket_of(app, io, Role::Server).await)
}

async fn socket_of<S>(app: &App, io: S, role: Role) -> WebSocketStream<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
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
