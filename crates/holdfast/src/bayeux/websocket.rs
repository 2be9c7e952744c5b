//! The `websocket` connection type: each text frame from the client is a batch of Bayeux
//! messages, and each answer a frame holding a JSON array. Replies go out as soon as they are
//! ready; a `/meta/connect` is answered (with its events) when its session has some, or at its
//! timeout, while the client's next frames keep being read. A frame that is not a batch gets
//! a `400::Bad request` reply; a frame over `bayeux.max_request_bytes` closes the socket with
//! 1009. At shutdown the socket closes with 1001 after the held connect is answered.

use std::future::Future;
use std::pin::Pin;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as Frame;

use super::message;
use super::Endpoint;
use crate::ws::ClientWebSocket;

type Held = Pin<Box<dyn Future<Output = Vec<bytes::Bytes>> + Send>>;

/// Serves the upgraded `client` until it closes or goes away.
pub async fn run(endpoint: Endpoint, mut client: ClientWebSocket) {
    let app = endpoint.app.clone();
    let max = app.config.bayeux.max_request_bytes;
    let mut shutdown = std::pin::pin!(app.shutdown.signal().into_stopped());
    let mut held: Option<Held> = None;
    let close = loop {
        let frame = tokio::select! {
            () = &mut shutdown => break Some((CloseCode::Away, "server shutting down")),
            out = wait(&mut held) => {
                held = None;
                if client.send(Frame::text(text(&out))).await.is_err() {
                    return;
                }
                continue;
            }
            f = client.next() => f,
        };
        let payload = match frame {
            Some(Ok(Frame::Text(t))) => bytes::Bytes::from(t),
            Some(Ok(Frame::Binary(b))) => b,
            Some(Ok(Frame::Close(_))) | None => break None,
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "Bayeux WebSocket client went away");
                return;
            }
        };
        if payload.len() > max {
            break Some((
                CloseCode::Size,
                "batch larger than bayeux.max_request_bytes",
            ));
        }
        let replies = match message::parse_batch(&payload) {
            Ok(batch) => {
                let processed = endpoint.process(batch).await;
                if let Some(c) = processed.connect {
                    // A later connect replaces the earlier, which its session has answered.
                    if let Some(earlier) = held.take() {
                        let out = earlier.await;
                        if client.send(Frame::text(text(&out))).await.is_err() {
                            return;
                        }
                    }
                    held = Some(Box::pin(c.finish()));
                }
                processed.replies
            }
            Err(e) => {
                let mut m = message::Message::new();
                m.insert("successful".into(), false.into());
                m.insert("error".into(), format!("400::Bad request: {e}").into());
                vec![message::to_bytes(&m)]
            }
        };
        if !replies.is_empty() && client.send(Frame::text(text(&replies))).await.is_err() {
            return;
        }
    };
    // The client closed: a held connect is dropped, and its session keeps the events.
    let Some((code, reason)) = close else { return };
    let within = app.config.websocket.close_timeout();
    if let Some(held) = held.take() {
        // At shutdown the session answers at once.
        if let Ok(out) = tokio::time::timeout(within, held).await {
            let _ = client.send(Frame::text(text(&out))).await;
        }
    }
    {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(within, client.close(Some(frame))).await;
    }
}

fn text(items: &[bytes::Bytes]) -> String {
    // Every item is JSON text made here.
    String::from_utf8_lossy(&message::batch(items)).into_owned()
}

async fn wait(held: &mut Option<Held>) -> Vec<bytes::Bytes> {
    match held {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}
