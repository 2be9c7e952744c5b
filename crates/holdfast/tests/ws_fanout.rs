//! Fan-out to many WebSockets: messages the hub writes to idle connections itself keep their
//! order among queued ones, with concurrent publishers and with a client that stops reading.

mod support;

use bytes::Bytes;
use futures_util::SinkExt;
use serde_json::json;
use support::ws::*;
use support::*;
use tokio_tungstenite::tungstenite::Message;

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
