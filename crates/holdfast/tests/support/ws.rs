//! WebSocket clients and origins for the WebSocket tests: a real tungstenite client through
//! the proxy, an origin that hands each accepted WebSocket to the test, and bounded reads.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, Stream, StreamExt};
use http::HeaderMap;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{
    Request as HsRequest, Response as HsResponse,
};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::Proxy;

pub const WAIT: Duration = Duration::from_secs(10);

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;
pub type OriginSocket = WebSocketStream<TcpStream>;

/// A WebSocket origin: every accepted connection, with the request headers it came with.
pub struct WsOrigin {
    pub addr: SocketAddr,
    conns: mpsc::Receiver<(HeaderMap, OriginSocket)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WsOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WsOrigin {
    /// Accepts WebSockets, answering with `Sec-WebSocket-Extensions: <extension>` when given.
    pub async fn start(extension: Option<&'static str>) -> WsOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, conns) = mpsc::channel(16);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut seen = HeaderMap::new();
                    // The callback's signature is tungstenite's.
                    #[allow(clippy::result_large_err)]
                    let callback = |req: &HsRequest, mut resp: HsResponse| {
                        seen = req.headers().clone();
                        if let Some(e) = extension {
                            resp.headers_mut()
                                .insert("sec-websocket-extensions", e.parse().unwrap());
                        }
                        resp.headers_mut()
                            .insert("x-origin", "yes".parse().unwrap());
                        Ok(resp)
                    };
                    let accepted = tokio_tungstenite::accept_hdr_async(stream, callback).await;
                    if let Ok(ws) = accepted {
                        let _ = tx.send((seen, ws)).await;
                    }
                });
            }
        });
        WsOrigin { addr, conns, task }
    }

    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }

    pub async fn next(&mut self) -> (HeaderMap, OriginSocket) {
        tokio::time::timeout(WAIT, self.conns.recv())
            .await
            .expect("origin connection within 10 s")
            .unwrap()
    }
}

/// Echoes text and binary messages until the connection ends.
pub fn echo(mut ws: OriginSocket) {
    tokio::spawn(async move {
        while let Some(Ok(m)) = ws.next().await {
            if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                return;
            }
        }
    });
}

pub async fn connect(proxy: &Proxy, path: &str) -> Client {
    let (ws, resp) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async(format!("ws://{}{path}", proxy.addr)),
    )
    .await
    .expect("handshake within 10 s")
    .expect("handshake accepted");
    assert_eq!(resp.status(), 101);
    ws
}

/// The next message of any kind (bounded).
pub async fn recv<S>(ws: &mut S) -> Message
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("message within 10 s")
        .expect("stream open")
        .expect("no error")
}

/// The next text, binary or close message (bounded).
pub async fn recv_data<S>(ws: &mut S) -> Message
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    loop {
        match recv(ws).await {
            Message::Ping(_) | Message::Pong(_) => continue,
            m => return m,
        }
    }
}

pub async fn recv_text<S>(ws: &mut S) -> String
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    match recv_data(ws).await {
        Message::Text(t) => t.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

pub async fn recv_close<S>(ws: &mut S) -> (u16, String)
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    match recv_data(ws).await {
        Message::Close(Some(f)) => (f.code.into(), f.reason.to_string()),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

pub fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }))
}

pub async fn publish_ws(proxy: &Proxy, channel: &str, format: Value) {
    let (status, body) = proxy
        .publish_json(json!({"items": [{"channel": channel, "formats": {"ws-message": format}}]}))
        .await;
    assert_eq!(status, 200, "{body}");
}

/// A `ws-message` item: text, or with `ping` a ping, which the hub never writes itself, so it
/// takes the connection's queue.
pub fn ws_item(channel: &str, content: &str, ping: bool) -> Value {
    let mut format = json!({ "content": content });
    if ping {
        format["type"] = json!("ping");
    }
    json!({"channel": channel, "formats": {"ws-message": format}})
}

/// The next text or ping, as its content.
pub async fn recv_text_or_ping<S>(ws: &mut S) -> String
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    match recv(ws).await {
        Message::Text(t) => t.to_string(),
        Message::Ping(p) => String::from_utf8(p.to_vec()).unwrap(),
        other => panic!("expected text or a ping, got {other:?}"),
    }
}
