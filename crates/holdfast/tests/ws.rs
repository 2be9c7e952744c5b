//! WebSockets through the real server: pass-through, GRIP WebSocket, the test handler's `/ws`,
//! and WebSocket-over-HTTP, with real WebSocket clients and origins written in the test.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, Stream, StreamExt};
use grip::wsevents::{encode_events, parse_events, Event, EventKind};
use http::HeaderMap;
use http_body_util::BodyExt;
use hyper::{Request, Response};
use serde_json::json;
use support::*;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{
    Request as HsRequest, Response as HsResponse,
};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const WAIT: Duration = Duration::from_secs(10);

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;
type OriginSocket = WebSocketStream<TcpStream>;

/// A WebSocket origin: every accepted connection, with the request headers it came with.
struct WsOrigin {
    addr: SocketAddr,
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
    async fn start(extension: Option<&'static str>) -> WsOrigin {
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

    fn target(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }

    async fn next(&mut self) -> (HeaderMap, OriginSocket) {
        tokio::time::timeout(WAIT, self.conns.recv())
            .await
            .expect("origin connection within 10 s")
            .unwrap()
    }
}

/// Echoes text and binary messages until the connection ends.
fn echo(mut ws: OriginSocket) {
    tokio::spawn(async move {
        while let Some(Ok(m)) = ws.next().await {
            if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                return;
            }
        }
    });
}

async fn connect(proxy: &Proxy, path: &str) -> Client {
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
async fn recv<S>(ws: &mut S) -> Message
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
async fn recv_data<S>(ws: &mut S) -> Message
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

async fn recv_text<S>(ws: &mut S) -> String
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    match recv_data(ws).await {
        Message::Text(t) => t.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

async fn recv_close<S>(ws: &mut S) -> (u16, String)
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    match recv_data(ws).await {
        Message::Close(Some(f)) => (f.code.into(), f.reason.to_string()),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }))
}

async fn publish_ws(proxy: &Proxy, channel: &str, format: serde_json::Value) {
    let (status, body) = proxy
        .publish_json(json!({"items": [{"channel": channel, "formats": {"ws-message": format}}]}))
        .await;
    assert_eq!(status, 200, "{body}");
}

// ---------------------------------------------------------------------------------------------
// Pass-through

#[tokio::test]
async fn passthrough_relays_text_binary_large_and_fragmented_messages() {
    let mut origin = WsOrigin::start(None).await;
    let proxy = Proxy::start(&format!("* {}\n", origin.target()), |_| {}).await;
    let mut req = format!("ws://{}/chat", proxy.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "sec-websocket-extensions",
        "permessage-deflate".parse().unwrap(),
    );
    let (mut client, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers()["x-origin"], "yes");
    let (seen, ws) = origin.next().await;
    assert_eq!(seen["sec-websocket-extensions"], "grip");
    assert!(seen.contains_key("grip-sig"));
    echo(ws);

    client.send(Message::text("hello")).await.unwrap();
    assert_eq!(recv_text(&mut client).await, "hello");
    client
        .send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        recv_data(&mut client).await,
        Message::binary(vec![0u8, 1, 2, 255])
    );
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    client.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(recv_data(&mut client).await, Message::binary(big));
    for (part, opcode, fin) in [
        ("frag", OpCode::Data(Data::Text), false),
        ("ment", OpCode::Data(Data::Continue), false),
        ("ed", OpCode::Data(Data::Continue), true),
    ] {
        client
            .feed(Message::Frame(Frame::message(part, opcode, fin)))
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    assert_eq!(recv_text(&mut client).await, "fragmented");
}

#[tokio::test]
async fn passthrough_relays_pings_and_pongs_with_payloads() {
    let mut origin = WsOrigin::start(None).await;
    let proxy = Proxy::start(&format!("* {}\n", origin.target()), |_| {}).await;
    let mut client = connect(&proxy, "/").await;
    let (_, mut ws) = origin.next().await;
    client
        .send(Message::Ping(Bytes::from_static(b"c-ping")))
        .await
        .unwrap();
    assert_eq!(
        recv(&mut ws).await,
        Message::Ping(Bytes::from_static(b"c-ping"))
    );
    ws.send(Message::Ping(Bytes::from_static(b"o-ping")))
        .await
        .unwrap();
    ws.send(Message::Pong(Bytes::from_static(b"o-pong")))
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        match recv(&mut client).await {
            m @ Message::Ping(_) => got.push(m),
            Message::Pong(p) if &p[..] == b"o-pong" => got.push(Message::Pong(p)),
            Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        got,
        [
            Message::Ping(Bytes::from_static(b"o-ping")),
            Message::Pong(Bytes::from_static(b"o-pong"))
        ]
    );
}

#[tokio::test]
async fn close_codes_and_reasons_cross_in_both_directions() {
    let mut origin = WsOrigin::start(None).await;
    let proxy = Proxy::start(&format!("* {}\n", origin.target()), |_| {}).await;

    let mut client = connect(&proxy, "/").await;
    let (_, mut ws) = origin.next().await;
    client.send(close(4000, "client-bye")).await.unwrap();
    assert_eq!(recv_close(&mut ws).await, (4000, "client-bye".to_string()));
    assert_eq!(
        recv_close(&mut client).await.0,
        4000,
        "the close is answered"
    );

    let mut client = connect(&proxy, "/").await;
    let (_, mut ws) = origin.next().await;
    ws.send(close(4002, "origin-bye")).await.unwrap();
    assert_eq!(
        recv_close(&mut client).await,
        (4002, "origin-bye".to_string())
    );
}

#[tokio::test]
async fn an_origin_refusal_reaches_the_client_with_status_headers_and_body() {
    let origin = Origin::start(|_req| async {
        Response::builder()
            .status(403)
            .header("x-why", "nope")
            .body(full("go away"))
            .unwrap()
    })
    .await;
    let proxy = Proxy::start(&format!("* {}\n", origin.target()), |_| {}).await;
    let err = tokio_tungstenite::connect_async(format!("ws://{}/", proxy.addr))
        .await
        .unwrap_err();
    let WsError::Http(resp) = err else {
        panic!("expected an HTTP answer, got {err:?}");
    };
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["x-why"], "nope");
    assert_eq!(resp.body().as_deref(), Some(&b"go away"[..]));
}

#[tokio::test]
async fn an_oversized_message_closes_only_its_connection_with_1009() {
    let mut origin = WsOrigin::start(None).await;
    let proxy = Proxy::start(&format!("* {}\n", origin.target()), |c| {
        c.websocket.max_message_size = 1000;
    })
    .await;
    let mut big = connect(&proxy, "/").await;
    let (_, ws) = origin.next().await;
    echo(ws);
    let mut small = connect(&proxy, "/").await;
    let (_, ws) = origin.next().await;
    echo(ws);
    big.send(Message::binary(vec![7u8; 2000])).await.unwrap();
    assert_eq!(recv_close(&mut big).await.0, 1009);
    small.send(Message::text("still here")).await.unwrap();
    assert_eq!(recv_text(&mut small).await, "still here");
}

#[tokio::test]
async fn invalid_utf8_from_the_client_closes_with_1007_and_the_origin_hears_1001() {
    let mut origin = WsOrigin::start(None).await;
    let proxy = Proxy::start(&format!("* {}\n", origin.target()), |_| {}).await;
    let mut client = connect(&proxy, "/").await;
    let (_, mut ws) = origin.next().await;
    let bad = Frame::message(vec![0xffu8, 0xfe], OpCode::Data(Data::Text), true);
    client.send(Message::Frame(bad)).await.unwrap();
    assert_eq!(recv_close(&mut client).await.0, 1007);
    assert_eq!(recv_close(&mut ws).await.0, 1001);
}

#[tokio::test]
async fn clients_may_not_send_websocket_events_themselves() {
    let proxy = Proxy::start("* test\n", |_| {}).await;
    let resp = send(
        Request::post(proxy.url("/"))
            .header("content-type", "application/websocket-events")
            .body(full("OPEN\r\n"))
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), 403);
    assert_eq!(
        text(resp).await,
        "Client not allowed to send WebSocket events directly.\n"
    );
}

// ---------------------------------------------------------------------------------------------
// GRIP WebSocket

async fn grip_pair(proxy: &Proxy, origin: &mut WsOrigin) -> (Client, OriginSocket) {
    let client = connect(proxy, "/").await;
    let (_, ws) = origin.next().await;
    (client, ws)
}

#[tokio::test]
async fn grip_websocket_subscribes_publishes_strips_prefix_and_unsubscribes() {
    let mut origin = WsOrigin::start(Some("grip")).await;
    let proxy = Proxy::start(
        &format!("*,prefix=p- {},sub=news\n", origin.target()),
        |_| {},
    )
    .await;
    let (mut client, mut ws) = grip_pair(&proxy, &mut origin).await;
    proxy.wait_subscribers("p-news", 1).await;

    ws.send(Message::text(r#"c:{"type":"subscribe","channel":"room"}"#))
        .await
        .unwrap();
    proxy.wait_subscribers("p-room", 1).await;
    publish_ws(&proxy, "p-room", json!({"content": "to the room"})).await;
    assert_eq!(recv_text(&mut client).await, "to the room");
    publish_ws(&proxy, "p-news", json!({"content-bin": "AAEC"})).await;
    assert_eq!(
        recv_data(&mut client).await,
        Message::binary(vec![0u8, 1, 2])
    );

    ws.send(Message::text("unprefixed")).await.unwrap();
    ws.send(Message::text("m:direct")).await.unwrap();
    assert_eq!(recv_text(&mut client).await, "direct");
    ws.send(Message::binary(b"m:\x00bin".to_vec()))
        .await
        .unwrap();
    assert_eq!(
        recv_data(&mut client).await,
        Message::binary(b"\x00bin".to_vec())
    );

    client
        .send(Message::text("c:not a control message"))
        .await
        .unwrap();
    assert_eq!(
        recv_data(&mut ws).await,
        Message::text("c:not a control message")
    );

    ws.send(Message::text(
        r#"c:{"type":"unsubscribe","channel":"room"}"#,
    ))
    .await
    .unwrap();
    ws.send(Message::text(
        r#"c:{"type":"unsubscribe","channel":"news"}"#,
    ))
    .await
    .unwrap();
    proxy.wait_subscribers("p-room", 0).await;
    assert_eq!(
        proxy.app.hub.subscribers("p-news"),
        1,
        "implicit channels stay"
    );
    ws.send(Message::text(r#"c:{"type":"subscribe","channel":"again"}"#))
        .await
        .unwrap();
    proxy.wait_subscribers("p-again", 1).await;
    publish_ws(&proxy, "p-again", json!({"content": "re-subscribed"})).await;
    assert_eq!(recv_text(&mut client).await, "re-subscribed");
}

#[tokio::test]
async fn grip_message_prefix_comes_from_the_extension() {
    let mut origin = WsOrigin::start(Some("grip; message-prefix=\"msg:\"")).await;
    let proxy = Proxy::start(&format!("* {}\n", origin.target()), |_| {}).await;
    let (mut client, mut ws) = grip_pair(&proxy, &mut origin).await;
    ws.send(Message::text("m:dropped")).await.unwrap();
    ws.send(Message::text("msg:kept")).await.unwrap();
    assert_eq!(recv_text(&mut client).await, "kept");
}

#[tokio::test]
async fn a_resubscribe_after_leaving_every_channel_still_delivers() {
    let mut origin = WsOrigin::start(Some("grip")).await;
    let proxy = Proxy::start(&format!("* {}\n", origin.target()), |_| {}).await;
    let (mut client, mut ws) = grip_pair(&proxy, &mut origin).await;
    for step in [
        r#"c:{"type":"subscribe","channel":"a"}"#,
        r#"c:{"type":"unsubscribe","channel":"a"}"#,
        r#"c:{"type":"subscribe","channel":"a"}"#,
    ] {
        ws.send(Message::text(step)).await.unwrap();
    }
    ws.send(Message::text("m:sync")).await.unwrap();
    assert_eq!(recv_text(&mut client).await, "sync");
    proxy.wait_subscribers("a", 1).await;
    publish_ws(&proxy, "a", json!({"content": "back"})).await;
    assert_eq!(recv_text(&mut client).await, "back");
}

#[tokio::test]
async fn detach_drops_the_origin_and_keeps_the_client_subscribed() {
    let mut origin = WsOrigin::start(Some("grip")).await;
    let proxy = Proxy::start(&format!("* {}\n", origin.target()), |_| {}).await;
    let (mut client, mut ws) = grip_pair(&proxy, &mut origin).await;
    ws.send(Message::text(r#"c:{"type":"subscribe","channel":"d"}"#))
        .await
        .unwrap();
    ws.send(Message::text(r#"c:{"type":"detach"}"#))
        .await
        .unwrap();
    assert_eq!(recv_close(&mut ws).await.0, 1000);
    client.send(Message::text("into the void")).await.unwrap();
    proxy.wait_subscribers("d", 1).await;
    publish_ws(&proxy, "d", json!({"content": "one-way"})).await;
    assert_eq!(recv_text(&mut client).await, "one-way");
}

#[tokio::test]
async fn keep_alive_sends_its_message_when_idle() {
    let mut origin = WsOrigin::start(Some("grip")).await;
    let proxy = Proxy::start(&format!("* {}\n", origin.target()), |_| {}).await;
    let (mut client, mut ws) = grip_pair(&proxy, &mut origin).await;
    ws.send(Message::text(
        r#"c:{"type":"keep-alive","content":"ka","timeout":1}"#,
    ))
    .await
    .unwrap();
    assert_eq!(recv_text(&mut client).await, "ka");
    assert_eq!(recv_text(&mut client).await, "ka");
    ws.send(Message::text(r#"c:{"type":"keep-alive"}"#))
        .await
        .unwrap();
    ws.send(Message::text(
        r#"c:{"type":"keep-alive","message-type":"ping","content":"kp","timeout":1}"#,
    ))
    .await
    .unwrap();
    loop {
        match recv(&mut client).await {
            Message::Ping(p) => {
                assert_eq!(&p[..], b"kp");
                break;
            }
            Message::Text(t) if t == "ka" => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn send_delayed_is_replaced_by_the_next_and_flushed_on_request() {
    let mut origin = WsOrigin::start(Some("grip")).await;
    let proxy = Proxy::start(&format!("* {}\n", origin.target()), |_| {}).await;
    let (mut client, mut ws) = grip_pair(&proxy, &mut origin).await;
    ws.send(Message::text(
        r#"c:{"type":"send-delayed","content":"first","timeout":1}"#,
    ))
    .await
    .unwrap();
    ws.send(Message::text(
        r#"c:{"type":"send-delayed","content":"second","timeout":1}"#,
    ))
    .await
    .unwrap();
    assert_eq!(recv_text(&mut client).await, "second");
    ws.send(Message::text(
        r#"c:{"type":"send-delayed","content":"flushed","timeout":3600}"#,
    ))
    .await
    .unwrap();
    ws.send(Message::text(r#"c:{"type":"flush-delayed"}"#))
        .await
        .unwrap();
    assert_eq!(recv_text(&mut client).await, "flushed");
}

#[tokio::test]
async fn publish_close_closes_the_client_with_its_code_and_reason() {
    let mut origin = WsOrigin::start(Some("grip")).await;
    let proxy = Proxy::start(&format!("* {}\n", origin.target()), |_| {}).await;
    let (mut client, mut ws) = grip_pair(&proxy, &mut origin).await;
    ws.send(Message::text(r#"c:{"type":"subscribe","channel":"c"}"#))
        .await
        .unwrap();
    proxy.wait_subscribers("c", 1).await;
    publish_ws(
        &proxy,
        "c",
        json!({"action": "close", "code": 4001, "reason": "bye"}),
    )
    .await;
    assert_eq!(recv_close(&mut client).await, (4001, "bye".to_string()));
}

#[tokio::test]
async fn a_bad_control_message_closes_only_its_connection() {
    let mut origin = WsOrigin::start(Some("grip")).await;
    let proxy = Proxy::start(&format!("* {}\n", origin.target()), |_| {}).await;
    let (mut bad, mut bad_ws) = grip_pair(&proxy, &mut origin).await;
    let (mut good, mut good_ws) = grip_pair(&proxy, &mut origin).await;
    good_ws
        .send(Message::text(r#"c:{"type":"subscribe","channel":"g"}"#))
        .await
        .unwrap();
    bad_ws.send(Message::text("c:{not json")).await.unwrap();
    assert_eq!(recv_close(&mut bad).await.0, 1011);
    let filters = r#"c:{"type":"subscribe","channel":"x","filters":["a","b","c","d","e","f"]}"#;
    let (mut bad2, mut bad2_ws) = grip_pair(&proxy, &mut origin).await;
    bad2_ws.send(Message::text(filters)).await.unwrap();
    assert_eq!(recv_close(&mut bad2).await.0, 1011);
    proxy.wait_subscribers("g", 1).await;
    publish_ws(&proxy, "g", json!({"content": "fine"})).await;
    assert_eq!(recv_text(&mut good).await, "fine");
}

#[tokio::test]
async fn shutdown_closes_websockets_with_1001() {
    let mut origin = WsOrigin::start(None).await;
    let proxy = Proxy::start(&format!("* {}\n", origin.target()), |_| {}).await;
    let mut client = connect(&proxy, "/").await;
    let (_, mut ws) = origin.next().await;
    let down = tokio::spawn(proxy.shutdown());
    assert_eq!(recv_close(&mut client).await.0, 1001);
    assert_eq!(recv_close(&mut ws).await.0, 1001);
    tokio::time::timeout(WAIT, down).await.unwrap().unwrap();
}

#[tokio::test]
async fn the_test_handler_ws_echoes_and_receives_publishes() {
    let proxy = Proxy::start("* test\n", |_| {}).await;
    let mut client = connect(&proxy, "/ws?channel=t1").await;
    client.send(Message::text("echo me")).await.unwrap();
    assert_eq!(recv_text(&mut client).await, "echo me");
    proxy.wait_subscribers("t1", 1).await;
    publish_ws(&proxy, "t1", json!({"content": "from the hub"})).await;
    assert_eq!(recv_text(&mut client).await, "from the hub");
}

#[tokio::test]
async fn a_frame_sent_right_behind_the_upgrade_request_is_not_lost() {
    // A client that does not wait for the 101: the request and a masked text frame in one
    // write, so hyper has read the frame before the WebSocket takes the socket from it.
    let proxy = Proxy::start("* test\n", |_| {}).await;
    let mut bytes = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        proxy.addr
    )
    .into_bytes();
    let mut frame = Frame::message(b"early".to_vec(), OpCode::Data(Data::Text), true);
    frame.header_mut().mask = Some([1, 2, 3, 4]);
    frame.format(&mut bytes).unwrap();
    let mut stream = send_raw(proxy.addr, &bytes).await;
    let mut got = Vec::new();
    read_raw_until(&mut stream, &mut got, b"\r\n\r\n").await;
    assert!(
        got.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    // The echo: an unmasked final text frame of 5 bytes.
    read_raw_until(&mut stream, &mut got, b"\x81\x05early").await;
}

// ---------------------------------------------------------------------------------------------
// WebSocket-over-HTTP

/// One request the origin received.
struct Seen {
    headers: HeaderMap,
    events: Vec<Event>,
}

type Script = Arc<dyn Fn(&HeaderMap, &[Event]) -> Response<TestBody> + Send + Sync>;

fn events_response(events: &[Event], headers: &[(&str, &str)]) -> Response<TestBody> {
    let mut body = Vec::new();
    encode_events(events, &mut body);
    let mut resp = Response::builder()
        .header("content-type", "application/websocket-events")
        .header("connection", "close");
    for (k, v) in headers {
        resp = resp.header(*k, *v);
    }
    resp.body(full(body)).unwrap()
}

fn text_event(s: &str) -> Event {
    Event::with_content(EventKind::Text, s.to_string())
}

/// The default origin: accepts with `grip`, subscribes to `w1`, sets meta `user`, answers
/// each TEXT, closes on `close-me`, answers a CLOSE with a CLOSE.
fn chat_script() -> Script {
    Arc::new(|_h, events| {
        let mut out = Vec::new();
        let mut headers: Vec<(&str, &str)> = Vec::new();
        for e in events {
            match e.kind {
                EventKind::Open => {
                    out.push(Event::new(EventKind::Open));
                    out.push(text_event(r#"c:{"type":"subscribe","channel":"w1"}"#));
                    headers.push(("sec-websocket-extensions", "grip"));
                    headers.push(("set-meta-user", "alice"));
                }
                EventKind::Text if &e.content[..] == b"close-me" => {
                    out.push(Event::close(4003, "origin-close"))
                }
                EventKind::Text if &e.content[..] == b"partial" => {
                    headers.push(("content-bytes-accepted", "3"));
                }
                EventKind::Text => out.push(text_event(&format!(
                    "m:you said {}",
                    String::from_utf8_lossy(&e.content)
                ))),
                EventKind::Close => out.push(Event::new(EventKind::Close)),
                _ => {}
            }
        }
        events_response(&out, &headers)
    })
}

fn woh_handler(
    tx: mpsc::Sender<Seen>,
    script: Script,
) -> impl Fn(
    Request<hyper::body::Incoming>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<TestBody>> + Send>>
       + Send
       + Sync
       + 'static {
    move |req| {
        let tx = tx.clone();
        let script = script.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let events = parse_events(&body).expect("Holdfast sends valid events");
            let resp = script(&parts.headers, &events);
            let _ = tx
                .send(Seen {
                    headers: parts.headers,
                    events,
                })
                .await;
            resp
        })
    }
}

struct WohOrigin {
    origin: Option<Origin>,
    seen: mpsc::Receiver<Seen>,
    tx: mpsc::Sender<Seen>,
    script: Script,
}

impl WohOrigin {
    async fn start(script: Script) -> WohOrigin {
        let (tx, seen) = mpsc::channel(64);
        let origin = Origin::start(woh_handler(tx.clone(), script.clone())).await;
        WohOrigin {
            origin: Some(origin),
            seen,
            tx,
            script,
        }
    }

    fn target(&self) -> String {
        self.origin.as_ref().unwrap().target()
    }

    async fn next(&mut self) -> Seen {
        tokio::time::timeout(Duration::from_secs(30), self.seen.recv())
            .await
            .expect("origin request in time")
            .unwrap()
    }

    /// The next request carrying an event of `kind`.
    async fn next_with(&mut self, kind: EventKind) -> Seen {
        loop {
            let seen = self.next().await;
            if seen.events.iter().any(|e| e.kind == kind) {
                return seen;
            }
        }
    }
}

async fn woh_proxy(origin: &WohOrigin) -> Proxy {
    Proxy::start(&format!("* {},over_http\n", origin.target()), |_| {}).await
}

#[tokio::test]
async fn woh_open_subscribe_publish_text_and_meta_round_trip() {
    let mut origin = WohOrigin::start(chat_script()).await;
    let proxy = woh_proxy(&origin).await;
    let mut client = connect(&proxy, "/chat").await;
    let open = origin.next().await;
    assert_eq!(open.events, [Event::new(EventKind::Open)]);
    assert_eq!(open.headers["content-type"], "application/websocket-events");
    assert_eq!(open.headers["accept"], "application/websocket-events");
    assert_eq!(open.headers["sec-websocket-extensions"], "grip");
    assert!(open.headers.contains_key("grip-sig"));
    let cid = open.headers["connection-id"].clone();

    proxy.wait_subscribers("w1", 1).await;
    publish_ws(&proxy, "w1", json!({"content": "pushed!"})).await;
    assert_eq!(recv_text(&mut client).await, "pushed!");

    client.send(Message::text("hello")).await.unwrap();
    let seen = origin.next().await;
    assert_eq!(seen.events, [text_event("hello")]);
    assert_eq!(seen.headers["connection-id"], cid);
    assert_eq!(seen.headers["meta-user"], "alice");
    assert!(seen.headers.contains_key("grip-sig"));
    assert_eq!(recv_text(&mut client).await, "you said hello");
}

#[tokio::test]
async fn woh_content_bytes_accepted_replays_the_rest() {
    let mut origin = WohOrigin::start(chat_script()).await;
    let proxy = woh_proxy(&origin).await;
    let mut client = connect(&proxy, "/").await;
    origin.next().await;
    client.send(Message::text("partial")).await.unwrap();
    assert_eq!(origin.next().await.events, [text_event("partial")]);
    let again = origin.next().await;
    assert_eq!(again.events, [text_event("tial")]);
    assert_eq!(again.headers["content-bytes-replayed"], "4");
    assert_eq!(recv_text(&mut client).await, "you said tial");
}

#[tokio::test]
async fn woh_close_from_the_client_and_from_the_origin() {
    let mut origin = WohOrigin::start(chat_script()).await;
    let proxy = woh_proxy(&origin).await;

    let mut client = connect(&proxy, "/").await;
    origin.next().await;
    client.send(close(4000, "done")).await.unwrap();
    let seen = origin.next_with(EventKind::Close).await;
    assert_eq!(
        seen.events[0].close_code_and_reason(),
        Some((4000, "done".to_string()))
    );
    assert!(matches!(recv_data(&mut client).await, Message::Close(_)));

    let mut client = connect(&proxy, "/").await;
    origin.next().await;
    client.send(Message::text("close-me")).await.unwrap();
    assert_eq!(
        recv_close(&mut client).await,
        (4003, "origin-close".to_string())
    );
}

#[tokio::test]
async fn woh_a_vanished_client_is_reported_with_disconnect() {
    let mut origin = WohOrigin::start(chat_script()).await;
    let proxy = woh_proxy(&origin).await;
    let client = connect(&proxy, "/").await;
    let open = origin.next().await;
    drop(client);
    let seen = origin.next_with(EventKind::Disconnect).await;
    assert_eq!(seen.headers["connection-id"], open.headers["connection-id"]);
}

#[tokio::test]
async fn woh_an_origin_refusing_open_answers_the_client() {
    let script: Script = Arc::new(|_h, _e| {
        Response::builder()
            .status(401)
            .header("x-why", "who are you")
            .body(full("no"))
            .unwrap()
    });
    let origin = WohOrigin::start(script).await;
    let proxy = woh_proxy(&origin).await;
    let err = tokio_tungstenite::connect_async(format!("ws://{}/", proxy.addr))
        .await
        .unwrap_err();
    let WsError::Http(resp) = err else {
        panic!("expected an HTTP answer, got {err:?}");
    };
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["x-why"], "who are you");
    assert_eq!(resp.body().as_deref(), Some(&b"no"[..]));
}

#[tokio::test]
async fn woh_publish_refresh_asks_the_origin_and_publish_close_closes() {
    let mut origin = WohOrigin::start(chat_script()).await;
    let proxy = woh_proxy(&origin).await;
    let mut client = connect(&proxy, "/").await;
    let open = origin.next().await;
    proxy.wait_subscribers("w1", 1).await;
    publish_ws(&proxy, "w1", json!({"action": "refresh"})).await;
    let refresh = origin.next().await;
    assert!(refresh.events.is_empty());
    assert_eq!(
        refresh.headers["connection-id"],
        open.headers["connection-id"]
    );
    publish_ws(
        &proxy,
        "w1",
        json!({"action": "close", "code": 4001, "reason": "bye"}),
    )
    .await;
    assert_eq!(recv_close(&mut client).await, (4001, "bye".to_string()));
}

#[tokio::test]
async fn woh_malformed_events_close_only_that_connection() {
    let script: Script = Arc::new(|_h, events| {
        if events.first().map(|e| e.kind) == Some(EventKind::Open) {
            return events_response(&[Event::new(EventKind::Open)], &[]);
        }
        if events.iter().any(|e| &e.content[..] == b"break") {
            return Response::builder()
                .header("content-type", "application/websocket-events")
                .body(full("TEXT 99\r\nshort\r\n"))
                .unwrap();
        }
        events_response(&[text_event("ok")], &[])
    });
    let mut origin = WohOrigin::start(script).await;
    let proxy = woh_proxy(&origin).await;
    let mut bad = connect(&proxy, "/").await;
    origin.next().await;
    let mut good = connect(&proxy, "/").await;
    origin.next().await;
    bad.send(Message::text("break")).await.unwrap();
    assert_eq!(recv_close(&mut bad).await.0, 1011);
    good.send(Message::text("fine?")).await.unwrap();
    assert_eq!(recv_text(&mut good).await, "ok");
}

/// Warnings logged by this test binary, to see what the server did without waiting blindly.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf: Arc<Mutex<Vec<u8>>> = Arc::default();
        let sink = buf.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || LogWriter(sink.clone()))
            .init();
        buf
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn wait_log(logs: &Mutex<Vec<u8>>, needles: &[&str]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
        if text.lines().any(|l| needles.iter().all(|n| l.contains(n))) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no log line with {needles:?} in:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn woh_an_origin_outage_is_retried_until_it_recovers() {
    let logs = logs();
    let mut origin = WohOrigin::start(chat_script()).await;
    let target = origin.target();
    let addr = origin.origin.as_ref().unwrap().addr;
    let proxy = woh_proxy(&origin).await;
    let mut client = connect(&proxy, "/").await;
    origin.next().await;

    origin.origin.take().unwrap().stop().await;
    client.send(Message::text("during outage")).await.unwrap();
    wait_log(&logs, &["retrying", &target]).await;
    origin.origin =
        Some(Origin::start_on(addr, woh_handler(origin.tx.clone(), origin.script.clone())).await);
    assert_eq!(origin.next().await.events, [text_event("during outage")]);
    assert_eq!(recv_text(&mut client).await, "you said during outage");
}

#[tokio::test]
async fn grip_websocket_filters_use_set_meta() {
    let mut origin = WsOrigin::start(Some("grip")).await;
    let proxy = Proxy::start(&format!("* {}\n", origin.target()), |_| {}).await;
    let (mut client, mut ws) = grip_pair(&proxy, &mut origin).await;
    for control in [
        r#"c:{"type":"set-meta","name":"user","value":"alice"}"#,
        r#"c:{"type":"subscribe","channel":"chat","filters":["skip-self","var-subst"]}"#,
    ] {
        ws.send(Message::text(control)).await.unwrap();
    }
    proxy.wait_subscribers("chat", 1).await;
    let publish = |content: &'static str, sender: &'static str| {
        proxy.publish_json(
            json!({"items": [{"channel": "chat", "meta": {"sender": sender},
            "formats": {"ws-message": {"content": content}}}]}),
        )
    };
    assert_eq!(publish("own message", "alice").await.0, 200);
    assert_eq!(publish("hi %(user)s", "bob").await.0, 200);
    assert_eq!(
        recv_text(&mut client).await,
        "hi alice",
        "own message skipped, meta substituted"
    );
}

// ---------------------------------------------------------------------------------------------
// Messages the hub writes to idle connections itself

/// A `ws-message` item: text, or with `ping` a ping, which the hub never writes itself, so it
/// takes the connection's queue.
fn ws_item(channel: &str, content: &str, ping: bool) -> serde_json::Value {
    let mut format = json!({ "content": content });
    if ping {
        format["type"] = json!("ping");
    }
    json!({"channel": channel, "formats": {"ws-message": format}})
}

/// The next text or ping, as its content.
async fn recv_text_or_ping<S>(ws: &mut S) -> String
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    match recv(ws).await {
        Message::Text(t) => t.to_string(),
        Message::Ping(p) => String::from_utf8(p.to_vec()).unwrap(),
        other => panic!("expected text or a ping, got {other:?}"),
    }
}

#[tokio::test]
async fn woh_messages_the_hub_writes_itself_keep_their_order_among_queued_ones() {
    let mut origin = WohOrigin::start(chat_script()).await;
    let proxy = woh_proxy(&origin).await;
    let mut client = connect(&proxy, "/").await;
    origin.next().await;
    proxy.wait_subscribers("w1", 1).await;
    let before = proxy.app.hub.stats().written;
    let mut plain = 0;
    for i in 0..30 {
        let ping = i % 3 == 1;
        plain += u64::from(!ping);
        let content = format!("m{i}");
        proxy
            .publish_json(json!({ "items": [ws_item("w1", &content, ping)] }))
            .await;
        // Received before the next publish, so the connection is idle again by then.
        assert_eq!(recv_text_or_ping(&mut client).await, content);
    }
    // A burst in one request: the first may be written by the hub, the rest wait behind it.
    let items: Vec<_> = (0..40)
        .map(|i| ws_item("w1", &format!("b{i}"), i % 4 == 0))
        .collect();
    proxy.publish_json(json!({ "items": items })).await;
    for i in 0..40 {
        assert_eq!(recv_text_or_ping(&mut client).await, format!("b{i}"));
    }
    let written = proxy.app.hub.stats().written - before;
    assert!(written >= 1, "no message was written by the hub");
    assert!(written <= plain + 30, "{written} written by the hub");
    // The connection still works both ways.
    client.send(Message::text("hello")).await.unwrap();
    assert_eq!(recv_text(&mut client).await, "you said hello");
}

/// Publishers posting at the same time to a channel with many WebSockets: each gets every
/// message, and each publisher's in the order it posted them, however each was written.
#[tokio::test]
async fn concurrent_publishers_keep_their_order_on_every_websocket() {
    let proxy = Proxy::start("* test\n", |_| {}).await;
    let (sockets, publishers, items) = (30, 4, 40);
    let mut clients = Vec::new();
    for _ in 0..sockets {
        clients.push(connect(&proxy, "/ws?channel=many").await);
    }
    proxy.wait_subscribers("many", sockets).await;
    let posting: Vec<_> = (0..publishers)
        .map(|p| {
            let url = proxy.publish_url("/publish/");
            tokio::spawn(async move {
                for i in 0..items {
                    let item = ws_item("many", &format!("{p}.{i}"), i % 3 == 0);
                    let (status, body) = publish_json_to(&url, json!({ "items": [item] })).await;
                    assert_eq!(status, 200, "{body}");
                }
            })
        })
        .collect();
    for p in posting {
        p.await.unwrap();
    }
    for client in &mut clients {
        let mut got = Vec::new();
        for _ in 0..publishers * items {
            got.push(recv_text_or_ping(client).await);
        }
        assert_publisher_order(got.iter().map(String::as_str), publishers, items);
    }
    let stats = proxy.app.hub.stats();
    assert_eq!(stats.dropped, 0);
    assert_eq!(stats.delivered, (sockets * publishers * items) as u64);
    assert!(stats.written > 0, "the hub wrote no message itself");
}

/// A client that stops reading while large messages are published and then pings: frames the
/// socket takes only in part are finished before anything else is written, the ping is
/// answered, and every message arrives whole and in order.
#[tokio::test]
async fn a_slow_websocket_reader_gets_every_message_whole_and_in_order() {
    let proxy = Proxy::start("* test\n", |_| {}).await;
    let mut client = connect(&proxy, "/ws?channel=slow").await;
    proxy.wait_subscribers("slow", 1).await;
    // 30 messages of 200 KB: more than loopback's socket buffers hold while nobody reads.
    let count = 30;
    let content = |i: usize| format!("{i:03}").repeat(200_000 / 3);
    for i in 0..count {
        proxy
            .publish_json(json!({ "items": [ws_item("slow", &content(i), false)] }))
            .await;
        if i == count / 2 {
            client
                .send(Message::Ping(Bytes::from("are you there")))
                .await
                .unwrap();
        }
    }
    let mut pong = false;
    let mut i = 0;
    while i < count {
        match recv(&mut client).await {
            Message::Text(t) => {
                assert!(t.as_str() == content(i), "message {i} torn or out of order");
                i += 1;
            }
            Message::Pong(p) => {
                assert_eq!(&p[..], b"are you there");
                pong = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    if !pong {
        assert_eq!(
            recv(&mut client).await,
            Message::Pong(Bytes::from("are you there"))
        );
    }
    assert!(
        proxy.app.hub.stats().written > 0,
        "the hub wrote no message itself"
    );
    client.send(Message::text("still here")).await.unwrap();
    assert_eq!(recv_text(&mut client).await, "still here");
}
