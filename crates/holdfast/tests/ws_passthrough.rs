//! WebSocket pass-through with real WebSocket clients and origins: messages, pings, close
//! codes, refusals, limits, shutdown, and the test handler's `/ws`.

mod support;

use bytes::Bytes;
use futures_util::SinkExt;
use hyper::{Request, Response};
use serde_json::json;
use support::ws::*;
use support::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

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
