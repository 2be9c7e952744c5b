//! Pass-through and GRIP WebSocket: a WebSocket to the origin, frames relayed both ways, and —
//! when the origin speaks `grip` — control messages, the message prefix and published items.
//!
//! One task runs a connection ([`run`]): it selects over the client socket, the origin socket,
//! the hub queue, the session's timers and the shutdown signal, and handles one input at a time,
//! so a slow client slows the origin's reads (TCP backpressure) rather than filling a queue.
//! Messages are relayed whole: fragments are reassembled (at most `websocket.max_message_size`)
//! and sent as one frame. Pings and pongs are relayed with their payloads; each side's pings are
//! also answered by Holdfast itself, so a peer may see an extra pong.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::handshake::{self, ClientHandshake};
use super::session::{Published, Session, SessionSpec};
use super::{close_for, close_frame, finish, flush_left, send_all, Opened, Socket};
use crate::app::App;
use crate::config::routes::{Route, Target};
use crate::http::boxed;
use crate::hub::Delivery;
use crate::origin::Reclaimable;
use crate::proxy::error::ProxyError;
use crate::proxy::{headers, Failure};

/// The origin handshake succeeded; the connection runs once the client's upgrade completes.
pub struct Pending {
    origin: OnUpgrade,
    spec: SessionSpec,
}

/// Opens the WebSocket to `target`.
pub async fn open(
    app: &Arc<App>,
    route: &Route,
    target: &Target,
    path: &str,
    base: &HeaderMap,
    body: Reclaimable,
    client: &ClientHandshake,
) -> Result<Opened<Pending>, ProxyError> {
    let label = target.label();
    let mut h = base.clone();
    let key = handshake::to_origin_upgrade(&mut h);
    if let Some(host) = target.host_header.as_deref() {
        if let Ok(host) = HeaderValue::from_str(host) {
            h.insert(header::HOST, host);
        }
    }
    let mut req = Request::new(body);
    *req.uri_mut() = crate::proxy::origin_uri(target, path)?;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = h;
    let sent = app
        .origins
        .get(crate::origin::Access::of(target))
        .request(req);
    let mut resp = match crate::proxy::exchange(app, &label, sent).await {
        Ok(resp) => resp,
        Err(Failure::Unreachable(why)) => return Ok(Opened::Unreachable(why)),
        Err(Failure::Fatal(e)) => return Err(e),
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        tracing::debug!(target = %label, status = resp.status().as_u16(), "origin refused the WebSocket");
        let (mut parts, body) = resp.into_parts();
        headers::to_client(&mut parts.headers);
        return Ok(Opened::Refused(Response::from_parts(parts, boxed(body))));
    }
    if !handshake::is_accepted(resp.headers(), &key) {
        return Err(ProxyError::Origin {
            target: label,
            reason: "Sec-WebSocket-Accept does not answer the key sent".to_string(),
        });
    }
    // An upstream GRIP proxy gets the origin's messages as they are and does the GRIP work.
    let message_prefix = if route.options.no_grip || client.upstream {
        None
    } else {
        handshake::grip_prefix(resp.headers())
    };
    let origin = hyper::upgrade::on(&mut resp);
    let mut extra = handshake::client_headers(resp.headers().clone(), &[]);
    if client.upstream && !route.options.no_grip {
        handshake::pass_grip_up(resp.headers(), &mut extra);
    }
    let spec = SessionSpec {
        channel_prefix: route.options.channel_prefix.clone(),
        implicit: target.subs.clone(),
        message_prefix,
        label,
        client: client.client,
        conn_id: None,
        route_id: route.explicit_id().map(str::to_string),
        counted: (crate::metrics::Transport::WebSocket, route.id.clone()),
        presence_origin: app.presence.origin_of(route),
    };
    spec.check(app).map_err(|e| ProxyError::BadInstructions {
        target: spec.label.clone(),
        reason: e.to_string(),
    })?;
    Ok(Opened::Accepted(
        client.accept(extra),
        Pending { origin, spec },
    ))
}

impl Pending {
    /// Completes both upgrades and runs the connection; `_drain` (the server's drain guard) is
    /// held until it ends.
    pub async fn run(
        self,
        app: Arc<App>,
        client: super::ClientUpgrade,
        _drain: Option<crate::shutdown::DrainGuard>,
    ) {
        let session = Session::new(app.clone(), self.spec);
        let (client, origin) = tokio::join!(
            super::upgrade_client(&app, client, session.sink()),
            self.origin
        );
        let (Some(client), Ok(origin)) = (client, origin) else {
            tracing::debug!(target = %session.label(), "WebSocket upgrade did not complete");
            return;
        };
        let origin = super::socket_of(
            &app,
            super::Io::Upgraded(hyper_util::rt::TokioIo::new(origin)),
            Role::Client,
        )
        .await;
        run(app, session, client, Peer::Origin(Box::new(origin))).await;
    }
}

/// Who is on the other side of the client.
pub enum Peer {
    /// An origin WebSocket (boxed: the other variants are empty).
    Origin(Box<Socket>),
    /// The origin sent `detach`: client messages are discarded.
    Detached,
    /// The test handler: client messages come back.
    Echo,
}

enum Input {
    Shutdown,
    Client(Option<Result<Message, WsError>>),
    Origin(Option<Result<Message, WsError>>),
    Published(Delivery),
    Timer,
    /// The hub left bytes on the client socket.
    Left,
}

/// How both sides are to be closed.
struct End {
    /// The frame for the client; `None` drops it without a close (it is gone).
    client: Option<Option<CloseFrame>>,
    /// The frame for the origin, if there is one.
    origin: Option<CloseFrame>,
}

/// Runs a connection until either side closes, a publish closes it, or the server shuts down.
pub async fn run(app: Arc<App>, mut session: Session, mut client: Socket, mut peer: Peer) {
    let mut shutdown = std::pin::pin!(app.shutdown.signal().into_stopped());
    let sink = session.sink().clone();
    let end = loop {
        let deadline = session.deadline();
        session.park();
        let input = tokio::select! {
            () = &mut shutdown => Input::Shutdown,
            m = client.next() => Input::Client(m),
            m = next_from(&mut peer) => Input::Origin(m),
            item = session.next_delivery() => Input::Published(item),
            () = sleep_until(deadline) => Input::Timer,
            () = sink.notified() => Input::Left,
        };
        session.unpark();
        let step = match input {
            Input::Shutdown => Some(End {
                client: Some(close_frame(1001, "server shutting down")),
                origin: close_frame(1001, "server shutting down"),
            }),
            Input::Client(m) => on_client(&session, &mut client, &mut peer, m).await,
            Input::Origin(m) => on_origin(&mut session, &mut client, &mut peer, m).await,
            Input::Published(item) => published(&mut session, &mut client, item).await,
            Input::Timer => {
                let due = session.due(Instant::now());
                (!send_all(&mut client, due).await).then_some(End::client_gone())
            }
            Input::Left => (!flush_left(&mut client).await).then_some(End::client_gone()),
        };
        if let Some(end) = step {
            break end;
        }
    };
    close(&app, client, peer, end).await;
}

impl End {
    fn client_gone() -> End {
        End {
            client: None,
            origin: close_frame(1001, "client gone"),
        }
    }
}

async fn next_from(peer: &mut Peer) -> Option<Result<Message, WsError>> {
    match peer {
        Peer::Origin(origin) => origin.next().await,
        Peer::Detached | Peer::Echo => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn on_client(
    session: &Session,
    client: &mut Socket,
    peer: &mut Peer,
    m: Option<Result<Message, WsError>>,
) -> Option<End> {
    let msg = match m {
        None => return Some(End::client_gone()),
        Some(Err(e)) => {
            return Some(match close_for(&e) {
                Some((code, why)) => {
                    tracing::debug!(target = %session.label(), error = %e, code, "closing WebSocket: client sent {why}");
                    End {
                        client: Some(close_frame(code, why)),
                        origin: close_frame(1001, "client gone"),
                    }
                }
                None => {
                    tracing::debug!(error = %e, "WebSocket client went away");
                    End::client_gone()
                }
            })
        }
        Some(Ok(msg)) => msg,
    };
    match (msg, peer) {
        (Message::Close(frame), _) => Some(End {
            client: Some(None),
            origin: frame,
        }),
        (Message::Frame(_), _) | (_, Peer::Detached) => None,
        (m @ (Message::Text(_) | Message::Binary(_)), Peer::Echo) => {
            (!send_all(client, vec![m]).await).then_some(End::client_gone())
        }
        (_, Peer::Echo) => None,
        (m, Peer::Origin(origin)) => match origin.send(m).await {
            Ok(()) => None,
            Err(e) => {
                tracing::debug!(target = %session.label(), error = %e, "origin WebSocket failed");
                Some(End {
                    client: Some(close_frame(1011, "origin error")),
                    origin: None,
                })
            }
        },
    }
}

async fn on_origin(
    session: &mut Session,
    client: &mut Socket,
    peer: &mut Peer,
    m: Option<Result<Message, WsError>>,
) -> Option<End> {
    let label = session.label().to_string();
    let msg = match m {
        None => {
            tracing::debug!(target = %label, "origin closed the WebSocket without a close frame");
            return Some(End {
                client: Some(close_frame(1011, "origin went away")),
                origin: None,
            });
        }
        Some(Err(e)) => {
            let (code, why) = close_for(&e).unwrap_or((1011, "connection error"));
            tracing::warn!(target = %label, error = %e, "closing WebSocket: origin {why}");
            return Some(End {
                client: Some(close_frame(1011, "origin error")),
                origin: close_frame(code, why),
            });
        }
        Some(Ok(Message::Close(frame))) => {
            return Some(End {
                client: Some(frame),
                origin: None,
            })
        }
        Some(Ok(msg)) => msg,
    };
    let out = match session.on_origin_message(msg) {
        Ok(out) => out,
        Err(e) => {
            tracing::warn!(target = %label, error = %e, "closing WebSocket: bad control message from origin");
            // The origin is told what was wrong; the client only that it was the origin's fault.
            return Some(End {
                client: Some(close_frame(1011, "bad control message from origin")),
                origin: close_frame(1011, &e.to_string()),
            });
        }
    };
    if session.is_detached() {
        if let Peer::Origin(mut origin) = std::mem::replace(peer, Peer::Detached) {
            tracing::debug!(target = %label, "origin detached");
            let within = session.close_timeout();
            tokio::spawn(async move {
                finish(&mut origin, close_frame(1000, "detached"), within).await
            });
        }
    }
    let out: Vec<Message> = out.into_iter().collect();
    if out.is_empty() {
        return None;
    }
    session.sent();
    (!send_all(client, out).await).then_some(End::client_gone())
}

/// Writes every queued publish in one write; a `close` ends the connection.
async fn published(session: &mut Session, client: &mut Socket, first: Delivery) -> Option<End> {
    let mut out = Vec::new();
    let mut end = None;
    let mut next = Some(first);
    while let Some(item) = next.take().or_else(|| session.try_delivery()) {
        match session.published(&item) {
            Published::Send(m) => out.push(m),
            Published::Close(frame) => {
                end = Some(End {
                    client: Some(frame),
                    origin: close_frame(1000, "closed by publish"),
                });
                break;
            }
            Published::Refresh | Published::Ignore => {}
        }
        if out.len() >= 64 {
            break;
        }
    }
    if !out.is_empty() {
        session.sent();
        if !send_all(client, out).await {
            return Some(End::client_gone());
        }
    }
    end
}

async fn close(app: &App, mut client: Socket, peer: Peer, end: End) {
    let within = app.config.websocket.close_timeout();
    let mut origin = match peer {
        Peer::Origin(o) => Some(*o),
        Peer::Detached | Peer::Echo => None,
    };
    let client_side = async {
        if let Some(frame) = end.client {
            finish(&mut client, frame, within).await;
        }
    };
    let origin_side = async {
        if let Some(o) = origin.as_mut() {
            finish(o, end.origin, within).await;
        }
    };
    tokio::join!(client_side, origin_side);
}
