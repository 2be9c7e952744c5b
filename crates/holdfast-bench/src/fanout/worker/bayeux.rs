//! Bayeux subscribers (`--mode bayeux-lp`, `--mode bayeux-ws`) of a `bayeux=` endpoint at
//! `--path`, speaking the protocol as Faye does.
//!
//! Each one POSTs `/meta/handshake` on a keep-alive connection (opened like every other
//! subscriber's), then subscribes to `/<--channel>`: over long-polling with a POST on the same
//! connection, over WebSocket with a frame on a WebSocket opened to `--path`. Once the
//! subscribe is answered it counts as ready and keeps one `/meta/connect` in flight, sending the
//! next as soon as one is answered; the `data` of each event is the stamp. Setting up (the
//! handshake and the subscribe) holds a connect permit and is retried with a [`Backoff`]; after
//! that a failure ends the subscriber, counted as closed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{body_excerpt, open, Backoff, Shared, MAX_CONNECT_ATTEMPTS};

type Sender = SendRequest<Full<Bytes>>;

/// Read buffer of each client WebSocket (as in [`super::ws`]).
const READ_BUFFER: usize = 4096;
/// Setting up that has not completed by then is abandoned and retried.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A long-polling subscriber.
pub(super) async fn long_polling(shared: Arc<Shared>, index: usize) {
    let proxy = shared.proxy_of(index);
    let mut seen = vec![false; shared.messages];
    let mut backoff = Backoff::new();
    let mut connected = false;
    for _ in 0..MAX_CONNECT_ATTEMPTS {
        let setup = {
            let Ok(_permit) = shared.permits.acquire().await else {
                return;
            };
            let attempt = async {
                let mut sender = connect(&shared, index, &mut connected).await?;
                let id = handshake(&shared, proxy, &mut sender).await?;
                let subscribe = json!([{"channel": "/meta/subscribe", "clientId": id,
                                        "subscription": shared.bayeux_channel}]);
                let replies = post(&shared, proxy, &mut sender, &subscribe).await?;
                successful(&replies, "/meta/subscribe")?;
                Ok::<_, String>((sender, id))
            };
            flatten(tokio::time::timeout(SETUP_TIMEOUT, attempt).await)
        };
        let (mut sender, id) = match setup {
            Ok(s) => s,
            Err(e) => {
                shared.error(proxy, e);
                backoff.wait().await;
                continue;
            }
        };
        shared.headers.fetch_add(1, Ordering::Relaxed);
        shared.mark_ready(proxy);
        let connect = json!([{"channel": "/meta/connect", "clientId": id,
                              "connectionType": "long-polling"}]);
        loop {
            match post(&shared, proxy, &mut sender, &connect).await {
                Ok(replies) => {
                    shared.polls.fetch_add(1, Ordering::Relaxed);
                    record(&shared, proxy, &replies, &mut seen);
                    if let Err(e) = successful(&replies, "/meta/connect") {
                        shared.error(proxy, e);
                        break;
                    }
                }
                Err(e) => {
                    shared.error(proxy, e);
                    break;
                }
            }
        }
        shared.closed.fetch_add(1, Ordering::Relaxed);
        return;
    }
    shared.error(proxy, "gave up subscribing");
    shared.failed.fetch_add(1, Ordering::Relaxed);
}

/// A WebSocket subscriber.
pub(super) async fn websocket(shared: Arc<Shared>, index: usize) {
    let proxy = shared.proxy_of(index);
    let mut seen = vec![false; shared.messages];
    let mut backoff = Backoff::new();
    let mut connected = false;
    for _ in 0..MAX_CONNECT_ATTEMPTS {
        let setup = {
            let Ok(_permit) = shared.permits.acquire().await else {
                return;
            };
            let attempt = async {
                let mut sender = connect(&shared, index, &mut connected).await?;
                let id = handshake(&shared, proxy, &mut sender).await?;
                drop(sender);
                let stream = open(&shared, index)
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                let url = format!("ws://{}{}", shared.hosts[proxy], shared.path);
                let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
                let (mut socket, _) =
                    tokio_tungstenite::client_async_with_config(url, stream, Some(config))
                        .await
                        .map_err(|e| format!("websocket handshake: {e}"))?;
                let subscribe = json!([{"channel": "/meta/subscribe", "clientId": id,
                                        "subscription": shared.bayeux_channel}]);
                send(&mut socket, &subscribe).await?;
                let replies = receive(&mut socket).await?;
                successful(&replies, "/meta/subscribe")?;
                Ok::<_, String>((socket, id))
            };
            flatten(tokio::time::timeout(SETUP_TIMEOUT, attempt).await)
        };
        let (mut socket, id) = match setup {
            Ok(s) => s,
            Err(e) => {
                shared.error(proxy, e);
                backoff.wait().await;
                continue;
            }
        };
        shared.headers.fetch_add(1, Ordering::Relaxed);
        shared.mark_ready(proxy);
        let connect = json!([{"channel": "/meta/connect", "clientId": id,
                              "connectionType": "websocket"}]);
        let mut outcome = send(&mut socket, &connect).await;
        while outcome.is_ok() {
            outcome = match receive(&mut socket).await {
                Ok(replies) => {
                    let answered = record(&shared, proxy, &replies, &mut seen);
                    shared
                        .polls
                        .fetch_add(u64::from(answered), Ordering::Relaxed);
                    match answered {
                        true => send(&mut socket, &connect).await,
                        false => Ok(()),
                    }
                }
                Err(e) => Err(e),
            };
        }
        if let Err(e) = outcome {
            shared.error(proxy, e);
        }
        shared.closed.fetch_add(1, Ordering::Relaxed);
        return;
    }
    shared.error(proxy, "gave up subscribing");
    shared.failed.fetch_add(1, Ordering::Relaxed);
}

fn flatten<T>(r: Result<Result<T, String>, tokio::time::error::Elapsed>) -> Result<T, String> {
    r.unwrap_or_else(|_| Err(format!("setup: no answer within {SETUP_TIMEOUT:?}")))
}

/// A keep-alive connection for POSTs; `connected` is set on the subscriber's first.
async fn connect(shared: &Shared, index: usize, connected: &mut bool) -> Result<Sender, String> {
    let stream = open(shared, index)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    if !std::mem::replace(connected, true) {
        shared.connected.fetch_add(1, Ordering::Relaxed);
    }
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// `/meta/handshake`: the client id.
async fn handshake(shared: &Shared, proxy: usize, sender: &mut Sender) -> Result<String, String> {
    let m = json!([{"channel": "/meta/handshake", "version": "1.0",
                    "supportedConnectionTypes": ["long-polling", "websocket"]}]);
    let replies = post(shared, proxy, sender, &m).await?;
    successful(&replies, "/meta/handshake")?;
    replies
        .iter()
        .find_map(|r| r["clientId"].as_str())
        .map(str::to_string)
        .ok_or_else(|| "handshake: no clientId".to_string())
}

/// POSTs `messages`; the replies.
async fn post(
    shared: &Shared,
    proxy: usize,
    sender: &mut Sender,
    messages: &Value,
) -> Result<Vec<Value>, String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("connection: {e}"))?;
    let mut req = Request::new(Full::new(Bytes::from(messages.to_string())));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = shared.path.parse().map_err(|_| "bad --path".to_string())?;
    let h = req.headers_mut();
    h.insert(
        header::HOST,
        shared.hosts[proxy].parse().expect("socket address"),
    );
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("post: {e}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("post body: {e}"))?
        .to_bytes();
    if status != StatusCode::OK {
        return Err(format!("status {status}: {}", body_excerpt(&body)));
    }
    serde_json::from_slice(&body).map_err(|e| format!("replies: {e}: {}", body_excerpt(&body)))
}

async fn send(socket: &mut WebSocketStream<TcpStream>, messages: &Value) -> Result<(), String> {
    socket
        .send(Message::text(messages.to_string()))
        .await
        .map_err(|e| format!("websocket send: {e}"))
}

/// The next frame of replies.
async fn receive(socket: &mut WebSocketStream<TcpStream>) -> Result<Vec<Value>, String> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str(t.as_str()).map_err(|e| format!("replies: {e}"))
            }
            Some(Ok(Message::Close(_))) | None => return Err("closed by the proxy".into()),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("websocket: {e}")),
        }
    }
}

/// Whether the reply on `channel` among `replies` is successful; the error says why not.
fn successful(replies: &[Value], channel: &str) -> Result<(), String> {
    match replies.iter().find(|r| r["channel"] == channel) {
        Some(r) if r["successful"] == true => Ok(()),
        Some(r) => Err(format!(
            "{channel}: {}",
            r["error"].as_str().unwrap_or("unsuccessful")
        )),
        None => Err(format!("no {channel} reply")),
    }
}

/// Records the stamps of the events among `replies`; whether a connect was answered.
fn record(shared: &Shared, proxy: usize, replies: &[Value], seen: &mut [bool]) -> bool {
    let mut answered = false;
    for r in replies {
        if r["channel"] == "/meta/connect" {
            answered = true;
        } else if let Some(data) = r["data"].as_str() {
            shared.record(data, seen, proxy);
        }
    }
    answered
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_checked_by_channel() {
        let replies = vec![
            json!({"channel": "/meta/connect", "successful": true}),
            json!({"channel": "/meta/subscribe", "successful": false,
                   "error": "403:/bench:Forbidden channel"}),
        ];
        assert_eq!(successful(&replies, "/meta/connect"), Ok(()));
        assert_eq!(
            successful(&replies, "/meta/subscribe"),
            Err("/meta/subscribe: 403:/bench:Forbidden channel".to_string())
        );
        assert_eq!(
            successful(&replies, "/meta/handshake"),
            Err("no /meta/handshake reply".to_string())
        );
    }
}
