//! WebSocket subscribers (`--mode woh`): one client WebSocket per subscriber through the proxy.
//!
//! The handshake goes over a TCP connection opened like every other subscriber's: to the proxy
//! of its index under the round-robin over `--proxy`, bound to its source address first. The subscriber holds a connect permit until the handshake completes,
//! retries with a [`Backoff`] until then, and afterwards reads messages until the socket ends,
//! which counts it as closed. Text (and binary) messages go through the stamp parser, as SSE
//! bodies do; pings are answered by tungstenite itself while the stream is read.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::{body_excerpt, open, Backoff, Shared, MAX_CONNECT_ATTEMPTS};

/// Read buffer of each client WebSocket. Messages are a few dozen bytes, and tungstenite's
/// default (128 KiB) would be most of a worker's memory at thousands of sockets.
const READ_BUFFER: usize = 4096;
/// A handshake that has not completed by then is abandoned and retried.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// One WebSocket subscriber: subscribes (retrying until the handshake succeeds), then reads.
pub(super) async fn subscriber(shared: Arc<Shared>, index: usize) {
    let mut seen = vec![false; shared.messages];
    let mut connected = false;
    let mut backoff = Backoff::new();
    let proxy = shared.proxy_of(index);
    for _ in 0..MAX_CONNECT_ATTEMPTS {
        let socket = {
            let Ok(_permit) = shared.permits.acquire().await else {
                return;
            };
            handshake(&shared, index, &mut connected).await
        };
        match socket {
            Some(socket) => {
                read_all(&shared, proxy, socket, &mut seen).await;
                // Once open, a socket that ends is a result, not something to retry.
                shared.closed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            None => backoff.wait().await,
        }
    }
    shared.error(proxy, "gave up subscribing");
    shared.failed.fetch_add(1, Ordering::Relaxed);
}

/// One attempt: TCP connect and WebSocket handshake. `connected` is set on the subscriber's
/// first established TCP connection.
async fn handshake(
    shared: &Shared,
    index: usize,
    connected: &mut bool,
) -> Option<WebSocketStream<TcpStream>> {
    let proxy = shared.proxy_of(index);
    let stream = match open(shared, index).await {
        Ok(s) => s,
        Err(e) => {
            shared.error(proxy, format!("connect: {e}"));
            return None;
        }
    };
    if !std::mem::replace(connected, true) {
        shared.connected.fetch_add(1, Ordering::Relaxed);
    }
    let url = format!("ws://{}{}", shared.hosts[proxy], shared.path);
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let attempt = tokio_tungstenite::client_async_with_config(url, stream, Some(config));
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, attempt).await {
        Ok(Ok((socket, _))) => {
            shared.headers.fetch_add(1, Ordering::Relaxed);
            shared.mark_ready(proxy);
            Some(socket)
        }
        Ok(Err(WsError::Http(response))) => {
            let body = response.body().as_deref().unwrap_or_default();
            shared.error(
                proxy,
                format!("status {}: {}", response.status(), body_excerpt(body)),
            );
            None
        }
        Ok(Err(e)) => {
            shared.error(proxy, format!("handshake: {e}"));
            None
        }
        Err(_) => {
            shared.error(
                proxy,
                format!("handshake: no answer within {HANDSHAKE_TIMEOUT:?}"),
            );
            None
        }
    }
}

/// Reads messages until the socket ends, recording the stamps they carry (for proxy `proxy`).
async fn read_all(
    shared: &Shared,
    proxy: usize,
    mut socket: WebSocketStream<TcpStream>,
    seen: &mut [bool],
) {
    while let Some(message) = socket.next().await {
        match message {
            Ok(Message::Text(text)) => {
                shared.record(text.as_str(), seen, proxy);
            }
            Ok(Message::Binary(data)) => {
                shared.record(&String::from_utf8_lossy(&data), seen, proxy);
            }
            Ok(Message::Close(frame)) => {
                // tungstenite answers the close; the stream ends right after.
                let why = frame.map_or_else(
                    || "no code".to_string(),
                    |f| format!("{} {}", u16::from(f.code), f.reason),
                );
                shared.error(proxy, format!("closed by the proxy: {}", why.trim()));
            }
            Ok(_) => {}
            Err(e) => {
                shared.error(proxy, format!("websocket: {e}"));
                return;
            }
        }
    }
}
