//! The `websocket` transport: SockJS frames over a client WebSocket
//! (`<prefix>/<server>/<session>/websocket`), bridged to one origin WebSocket.
//!
//! The client gets `o`, then each origin message as `a["…"]`, `h` after
//! `sockjs.heartbeat_secs` without a frame, and `c[code,"reason"]` followed by a WebSocket
//! close when the origin closes. Each client frame is a JSON array of strings (or one string),
//! each string a message for the origin; anything else closes the client with 1002. Both
//! directions run at once, each with its own backpressure: a client that does not read slows
//! the origin's messages (and the hub's bounded queue drops the newest publishes), an origin
//! that does not read slows the client.

use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::frame::{self, CloseValue};
use crate::app::App;
use crate::deadline;
use crate::ws::{BridgeSocket, ClientWebSocket};

/// How the client side ended.
enum Up {
    /// The client closed with this frame; the origin is told.
    Closed,
    /// The client went away or broke the protocol: both sides are dropped.
    Gone,
}

/// Runs a framed session between the upgraded `client` and `bridge` until both are closed.
pub async fn run(app: &App, client: ClientWebSocket, bridge: BridgeSocket) {
    let heartbeat = Duration::from_secs(app.config.sockjs.heartbeat_secs);
    let within = app.config.websocket.close_timeout();
    let (mut client_tx, client_rx) = client.split();
    let (bridge_tx, bridge_rx) = bridge.split();
    if client_tx.send(Message::text(frame::OPEN)).await.is_err() {
        return;
    }
    {
        let mut up = std::pin::pin!(upstream(client_rx, bridge_tx));
        let mut down = std::pin::pin!(downstream(bridge_rx, &mut client_tx, heartbeat));
        tokio::select! {
            end = &mut up => {
                if let Up::Closed = end {
                    // The origin answers the close; its reply comes down as the close frame.
                    let _ = tokio::time::timeout(within, &mut down).await;
                }
            }
            () = &mut down => {}
        }
    }
    let _ = tokio::time::timeout(within, client_tx.close()).await;
}

/// Client → origin: each message of each frame, until the client closes or goes away.
async fn upstream(
    mut client: SplitStream<ClientWebSocket>,
    mut bridge: SplitSink<BridgeSocket, Message>,
) -> Up {
    while let Some(m) = client.next().await {
        let payload = match m {
            Ok(Message::Text(t)) => bytes::Bytes::from(t),
            Ok(Message::Binary(b)) => b,
            Ok(Message::Close(frame)) => {
                let _ = bridge.send(Message::Close(frame)).await;
                return Up::Closed;
            }
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "SockJS WebSocket client went away");
                return Up::Gone;
            }
        };
        let messages = match frame::parse_messages(&payload) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "closing SockJS WebSocket: client sent a frame that is not a JSON array of strings");
                return Up::Gone;
            }
        };
        for m in messages {
            if bridge.feed(Message::text(m)).await.is_err() {
                return Up::Gone;
            }
        }
        if bridge.flush().await.is_err() {
            return Up::Gone;
        }
    }
    Up::Gone
}

/// Origin → client: messages as `a[…]` frames, heartbeats, and the close frame at the end.
async fn downstream(
    mut bridge: SplitStream<BridgeSocket>,
    client: &mut SplitSink<ClientWebSocket, Message>,
    heartbeat: Duration,
) {
    let mut last = Instant::now();
    loop {
        let next = tokio::select! {
            m = bridge.next() => m,
            () = tokio::time::sleep_until(deadline::later(last, heartbeat)) => {
                if client.send(Message::text(frame::HEARTBEAT)).await.is_err() {
                    return;
                }
                last = Instant::now();
                continue;
            }
        };
        let close = match next {
            Some(Ok(Message::Text(t))) => {
                let f = frame::messages_frame([t.as_str()]);
                if client.send(Message::text(f)).await.is_err() {
                    return;
                }
                last = Instant::now();
                continue;
            }
            Some(Ok(Message::Binary(b))) => {
                let f = frame::messages_frame([String::from_utf8_lossy(&b).as_ref()]);
                if client.send(Message::text(f)).await.is_err() {
                    return;
                }
                last = Instant::now();
                continue;
            }
            Some(Ok(Message::Close(f))) => CloseValue::of_close(f.as_ref()),
            Some(Ok(_)) => continue,
            Some(Err(_)) => CloseValue::new(1011, "origin error"),
            None => CloseValue::new(1011, "origin went away"),
        };
        let _ = client.feed(Message::text(close.to_frame())).await;
        // The WebSocket close carries the code when a close frame may carry it.
        let code = if close.code == 1000 || (3000..5000).contains(&close.code) {
            close.code
        } else {
            1000
        };
        let _ = client
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: Utf8Bytes::from(truncated(&close.reason)),
            })))
            .await;
        return;
    }
}

/// `reason` cut to the 123 bytes a close frame carries.
fn truncated(reason: &str) -> &str {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}
