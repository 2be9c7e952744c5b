//! GRIP WebSocket: an origin that answers the upgrade with `Sec-WebSocket-Extensions: grip`
//! controls the connection with `c:` messages (subscribe, detach, keep-alive, send-delayed,
//! set-meta) and publishes reach the client.

mod support;

use futures_util::SinkExt;
use serde_json::json;
use support::ws::*;
use support::*;
use tokio_tungstenite::tungstenite::Message;

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

#[tokio::test]
async fn a_subscribe_over_the_channel_limit_closes_the_connection_naming_the_limit() {
    let mut origin = WsOrigin::start(Some("grip")).await;
    let proxy = Proxy::start(&format!("* {}\n", origin.target()), |c| {
        c.limits.max_channels_per_connection = 2
    })
    .await;
    let (mut good, mut good_ws) = grip_pair(&proxy, &mut origin).await;
    let (mut bad, mut bad_ws) = grip_pair(&proxy, &mut origin).await;
    for channel in ["a", "b", "a", "c"] {
        let subscribe = format!(r#"c:{{"type":"subscribe","channel":"{channel}"}}"#);
        bad_ws.send(Message::text(subscribe)).await.unwrap();
    }
    // The third distinct channel is refused: the client is closed and the origin told why,
    // instead of a subscription that silently never delivers.
    assert_eq!(
        recv_close(&mut bad).await,
        (1011, "bad control message from origin".to_string())
    );
    let (code, reason) = recv_close(&mut bad_ws).await;
    assert_eq!(code, 1011);
    assert!(
        reason.contains("'c'") && reason.contains("limits.max_channels_per_connection (2)"),
        "{reason}"
    );
    proxy.wait_subscribers("a", 0).await;

    good_ws
        .send(Message::text(r#"c:{"type":"subscribe","channel":"a"}"#))
        .await
        .unwrap();
    proxy.wait_subscribers("a", 1).await;
    publish_ws(&proxy, "a", json!({"content": "still here"})).await;
    assert_eq!(recv_text(&mut good).await, "still here");
}

/// Sends each control message on a connection of its own and checks that it closes that
/// connection with 1011, telling the origin `why`, while a subscribed connection keeps getting
/// publishes.
async fn assert_each_closes_only_its_connection(cases: &[(String, &str)]) {
    let mut origin = WsOrigin::start(Some("grip")).await;
    let proxy = Proxy::start(&format!("* {}\n", origin.target()), |_| {}).await;
    let (mut good, mut good_ws) = grip_pair(&proxy, &mut origin).await;
    good_ws
        .send(Message::text(r#"c:{"type":"subscribe","channel":"g"}"#))
        .await
        .unwrap();
    for (control, why) in cases {
        let (mut bad, mut bad_ws) = grip_pair(&proxy, &mut origin).await;
        bad_ws.send(Message::text(control.as_str())).await.unwrap();
        assert_eq!(recv_close(&mut bad).await.0, 1011, "{control}");
        let (code, reason) = recv_close(&mut bad_ws).await;
        assert_eq!(code, 1011, "{control}");
        assert!(reason.contains(why), "{control}: {reason}");
    }
    proxy.wait_subscribers("g", 1).await;
    publish_ws(&proxy, "g", json!({"content": "fine"})).await;
    assert_eq!(recv_text(&mut good).await, "fine");
}

#[tokio::test]
async fn control_message_timeouts_too_large_for_the_clock_close_only_their_connection() {
    let huge = i64::MAX;
    assert_each_closes_only_its_connection(&[
        (
            format!(r#"c:{{"type":"keep-alive","content":"ka","timeout":{huge}}}"#),
            "'timeout'",
        ),
        (
            format!(r#"c:{{"type":"send-delayed","content":"later","timeout":{huge}}}"#),
            "'timeout'",
        ),
    ])
    .await;
}

#[tokio::test]
async fn bad_channel_names_in_control_messages_close_only_their_connection() {
    let long = "n".repeat(600);
    assert_each_closes_only_its_connection(&[
        (
            format!(r#"c:{{"type":"subscribe","channel":"{long}"}}"#),
            "600 bytes",
        ),
        (
            r#"c:{"type":"subscribe","channel":"bell\u0007"}"#.to_string(),
            "U+0007",
        ),
    ])
    .await;
}
