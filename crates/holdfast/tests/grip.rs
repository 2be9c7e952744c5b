//! GRIP over HTTP through the real server: response holds, stream holds, keep-alives, the hub's
//! bookkeeping, the publish API and its errors.

mod support;

use std::time::Duration;

use hyper::{Request, Response};
use serde_json::json;
use support::*;

/// The response of a held request: bounded well above the longest hold these tests set.
async fn answered(
    client: tokio::task::JoinHandle<Response<hyper::body::Incoming>>,
) -> Response<hyper::body::Incoming> {
    tokio::time::timeout(Duration::from_secs(30), client)
        .await
        .expect("answered within 30 s")
        .unwrap()
}

#[tokio::test]
async fn long_poll_gets_the_published_response_over_the_original_headers() {
    let origin = grip_origin(
        200,
        &[
            ("grip-hold", "response"),
            ("grip-channel", "lp"),
            ("x-orig", "kept"),
            ("x-over", "old"),
        ],
        "original",
    )
    .await;
    let proxy = Proxy::routed_to(&origin, |_| {}).await;
    let url = proxy.url("/poll");
    let client = tokio::spawn(async move { get(&url).await });
    proxy.wait_subscribers("lp", 1).await;
    let (status, body) = proxy
        .publish_json(json!({"items": [{"channel": "lp", "formats": {"http-response": {
            "code": 201, "reason": "Made", "headers": {"X-Over": "new", "X-Pub": "1"}, "body": "published\n"}}}]}))
        .await;
    assert_eq!((status, body.as_str()), (200, "Published\n"));
    let resp = client.await.unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["x-orig"], "kept");
    assert_eq!(resp.headers()["x-over"], "new");
    assert_eq!(resp.headers()["x-pub"], "1");
    assert!(resp.headers().get("grip-hold").is_none());
    assert_eq!(text(resp).await, "published\n");
    proxy.wait_subscribers("lp", 0).await;
}

#[tokio::test]
async fn long_poll_timeout_returns_the_origin_response() {
    let origin = grip_origin(
        200,
        &[
            ("grip-hold", "response"),
            ("grip-channel", "t"),
            ("grip-timeout", "1"),
            ("x-foo", "bar"),
        ],
        "timeout-body",
    )
    .await;
    let proxy = Proxy::routed_to(&origin, |_| {}).await;
    let url = proxy.url("/");
    let client = tokio::spawn(async move { get(&url).await });
    // The request is held: it waits on channel t, where nothing is published.
    proxy.wait_subscribers("t", 1).await;
    // Grip-Timeout 1 is below the minimum and is held for 5 s, as in Pushpin (the clamp itself is
    // unit-tested in crates/grip).
    let resp = answered(client).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-foo"], "bar");
    assert!(resp
        .headers()
        .keys()
        .all(|k| !k.as_str().starts_with("grip-")));
    assert_eq!(text(resp).await, "timeout-body");
    // The hold ended by its timeout and left the channel, with nothing delivered to it.
    proxy.wait_subscribers("t", 0).await;
    assert_eq!(proxy.app.hub.stats().delivered, 0);
}

#[tokio::test]
async fn a_thousand_long_polls_each_get_one_delivery() {
    let origin = grip_origin(
        200,
        &[("grip-hold", "response"), ("grip-channel", "many")],
        "",
    )
    .await;
    let proxy = Proxy::routed_to(&origin, |_| {}).await;
    let mut clients = Vec::new();
    for _ in 0..1000 {
        let url = proxy.url("/many");
        clients.push(tokio::spawn(async move { text(get(&url).await).await }));
    }
    proxy.wait_subscribers("many", 1000).await;
    proxy
        .publish_json(
            json!({"items": [{"channel": "many", "formats": {"http-response": {"body": "one"}}}]}),
        )
        .await;
    for c in clients {
        assert_eq!(c.await.unwrap(), "one");
    }
    assert_eq!(proxy.app.hub.stats().delivered, 1000);
    proxy.wait_subscribers("many", 0).await;
}

#[tokio::test]
async fn stream_hold_sends_initial_body_then_ordered_chunks_then_closes() {
    let origin = grip_origin(
        200,
        &[
            ("grip-hold", "stream"),
            ("grip-channel", "s"),
            ("content-type", "text/plain"),
            ("content-length", "8"),
        ],
        "initial\n",
    )
    .await;
    let proxy = Proxy::routed_to(&origin, |_| {}).await;
    let resp = get(&proxy.url("/s")).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("content-length").is_none());
    assert_eq!(resp.headers()["transfer-encoding"], "chunked");
    let mut body = resp.into_body();
    assert_eq!(read_until(&mut body, "initial\n").await, "initial\n");
    // The subscription is live before the first byte reached the client.
    assert_eq!(proxy.app.hub.subscribers("s"), 1);
    let items: Vec<_> = (0..20)
        .map(|i| json!({"channel": "s", "formats": {"http-stream": {"content": format!("m{i};")}}}))
        .collect();
    proxy.publish_json(json!({ "items": items })).await;
    let want: String = (0..20).map(|i| format!("m{i};")).collect();
    assert_eq!(read_until(&mut body, &want).await, want);
    proxy
        .publish_json(
            json!({"items": [{"channel": "s", "formats": {"http-stream": {"action": "close"}}}]}),
        )
        .await;
    assert_eq!(next_chunk(&mut body).await, None);
    proxy.wait_subscribers("s", 0).await;
}

#[tokio::test]
async fn keep_alives_arrive_on_idle_streams() {
    let origin = grip_origin(
        200,
        &[
            ("grip-hold", "stream"),
            ("grip-channel", "ka"),
            ("grip-keep-alive", "ka\\n; format=cstring; timeout=1"),
        ],
        "open\n",
    )
    .await;
    let proxy = Proxy::routed_to(&origin, |_| {}).await;
    let mut body = get(&proxy.url("/")).await.into_body();
    read_until(&mut body, "open\n").await;
    let got = read_until(&mut body, "ka\nka\n").await;
    assert_eq!(got, "ka\nka\n");
}

#[tokio::test]
async fn one_hold_on_two_channels_gets_both() {
    let origin = grip_origin(
        200,
        &[("grip-hold", "stream"), ("grip-channel", "a, b")],
        "",
    )
    .await;
    let proxy = Proxy::routed_to(&origin, |_| {}).await;
    let mut body = get(&proxy.url("/")).await.into_body();
    proxy.wait_subscribers("a", 1).await;
    proxy.wait_subscribers("b", 1).await;
    proxy
        .publish_json(json!({"items": [
            {"channel": "a", "formats": {"http-stream": {"content": "from-a;"}}},
            {"channel": "b", "formats": {"http-stream": {"content": "from-b;"}}},
            {"channel": "c", "formats": {"http-stream": {"content": "from-c;"}}}]}))
        .await;
    assert_eq!(read_until(&mut body, "from-b;").await, "from-a;from-b;");
}

#[tokio::test]
async fn a_client_that_leaves_is_removed_from_the_hub() {
    let origin = grip_origin(
        200,
        &[("grip-hold", "stream"), ("grip-channel", "gone")],
        "hi",
    )
    .await;
    let proxy = Proxy::routed_to(&origin, |_| {}).await;
    let resp = get(&proxy.url("/")).await;
    proxy.wait_subscribers("gone", 1).await;
    drop(resp);
    proxy.wait_subscribers("gone", 0).await;
    assert_eq!(proxy.app.hub.stats().channels, 0);

    let lp = grip_origin(
        200,
        &[("grip-hold", "response"), ("grip-channel", "lp-gone")],
        "",
    )
    .await;
    let proxy = Proxy::routed_to(&lp, |_| {}).await;
    let stream = send_raw(proxy.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    proxy.wait_subscribers("lp-gone", 1).await;
    drop(stream);
    proxy.wait_subscribers("lp-gone", 0).await;
}

#[tokio::test]
async fn malformed_grip_instructions_are_502_and_the_server_keeps_serving() {
    let bad = grip_origin(200, &[("grip-hold", "bogus"), ("grip-channel", "x")], "").await;
    let good = grip_origin(
        200,
        &[("grip-hold", "stream"), ("grip-channel", "fine")],
        "ok",
    )
    .await;
    let routes = format!(
        "*,path_beg=/bad {}\n*,path_beg=/dbg,debug {}\n* {}\n",
        bad.target(),
        bad.target(),
        good.target()
    );
    let proxy = Proxy::start(&routes, |_| {}).await;
    let stream = get(&proxy.url("/")).await;
    proxy.wait_subscribers("fine", 1).await;
    let resp = get(&proxy.url("/bad")).await;
    assert_eq!(resp.status(), 502);
    assert!(!text(resp).await.contains("Grip-Hold"));
    let resp = get(&proxy.url("/dbg")).await;
    assert_eq!(resp.status(), 502);
    assert!(text(resp)
        .await
        .contains("Grip-Hold must be set to either 'response' or 'stream'"));
    proxy
        .publish_json(json!({"items": [{"channel": "fine", "formats": {"http-stream": {"content": "still"}}}]}))
        .await;
    let mut body = stream.into_body();
    assert_eq!(read_until(&mut body, "okstill").await, "okstill");
}

#[tokio::test]
async fn publish_api_errors_match_pushpin() {
    let proxy = Proxy::start("* test\n", |c| c.limits.max_publish_body = 1000).await;
    let post = |body: &'static str, accept: Option<&'static str>| {
        let mut r = Request::post(proxy.publish_url("/publish/"));
        if let Some(a) = accept {
            r = r.header("accept", a);
        }
        send(r.body(full(body)).unwrap())
    };
    let resp = post("{nope", None).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(text(resp).await, "Body is not valid JSON.\n");
    let resp = post(
        r#"{"items":[{"channel":"c","formats":{"http-stream":{}}}]}"#,
        None,
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        text(resp).await,
        "Invalid format: 'http-stream' does not contain 'content' or 'content-bin'\n"
    );
    let resp = post(r#"{"items":[]}"#, Some("image/png")).await;
    assert_eq!(resp.status(), 406);
    let resp = post(r#"{"items":[]}"#, Some("application/json")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(text(resp).await, "{\"message\":\"Published\"}\n");
    let big: &'static str =
        Box::leak(format!(r#"{{"items":[],"pad":"{}"}}"#, "x".repeat(2000)).into_boxed_str());
    assert_eq!(post(big, None).await.status(), 413);
    let resp = get(&proxy.publish_url("/publish/")).await;
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(text(resp).await, "Method not allowed: GET.\n");
    assert_eq!(get(&proxy.publish_url("/nope")).await.status(), 404);
    assert_eq!(
        text(get(&proxy.publish_url("/")).await).await,
        "Holdfast API\n"
    );

    // Without Content-Length (chunked), 411 as Pushpin.
    let chunks =
        futures_util::stream::iter(vec![Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
            hyper::body::Frame::data(bytes::Bytes::from_static(b"{\"items\":[]}")),
        )]);
    use http_body_util::BodyExt;
    let resp = send(
        Request::post(proxy.publish_url("/publish"))
            .body(http_body_util::StreamBody::new(chunks).boxed())
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), 411);
}

#[tokio::test]
async fn grip_instruct_json_body_streams_its_response_then_publishes() {
    let origin = grip_origin(
        200,
        &[("content-type", "application/grip-instruct")],
        r#"{"hold":{"mode":"stream","channels":[{"name":"j"}]},"response":{"code":202,"headers":{"X-A":"1"},"body":"json-initial\n"}}"#,
    )
    .await;
    let proxy = Proxy::routed_to(&origin, |_| {}).await;
    let resp = get(&proxy.url("/")).await;
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.headers()["x-a"], "1");
    let mut body = resp.into_body();
    read_until(&mut body, "json-initial\n").await;
    proxy
        .publish_json(
            json!({"items": [{"channel": "j", "formats": {"http-stream": {"content": "more"}}}]}),
        )
        .await;
    read_until(&mut body, "more").await;
}

#[tokio::test]
async fn grip_instruct_json_body_holds_and_times_out_with_its_response() {
    let origin = grip_origin(
        200,
        &[("content-type", "application/grip-instruct")],
        r#"{"hold":{"mode":"response","channels":[{"name":"jt"}],"timeout":5},"response":{"code":202,"headers":{"X-A":"1"},"body":"json-timeout\n"}}"#,
    )
    .await;
    let proxy = Proxy::routed_to(&origin, |_| {}).await;
    let url = proxy.url("/");
    let client = tokio::spawn(async move { get(&url).await });
    // Held on jt, where nothing is published, until the 5 s timeout.
    proxy.wait_subscribers("jt", 1).await;
    let resp = answered(client).await;
    // The timeout answers with the instruction's response, not the instruction itself.
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.headers()["x-a"], "1");
    assert_ne!(
        resp.headers().get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/grip-instruct"[..])
    );
    assert_eq!(text(resp).await, "json-timeout\n");
    proxy.wait_subscribers("jt", 0).await;
    assert_eq!(proxy.app.hub.stats().delivered, 0);
}

#[tokio::test]
async fn grip_status_and_expose_headers_shape_the_response() {
    let origin = grip_origin(
        200,
        &[
            ("grip-hold", "stream"),
            ("grip-channel", "st"),
            ("grip-status", "404 Nope"),
            ("grip-expose-headers", "X-Shown"),
            ("x-shown", "1"),
            ("x-hidden", "1"),
        ],
        "",
    )
    .await;
    let proxy = Proxy::routed_to(&origin, |_| {}).await;
    let mut stream = send_raw(proxy.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut head = Vec::new();
    read_raw_until(&mut stream, &mut head, b"\r\n\r\n").await;
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 404 nope\r\n"), "{head}");
    assert!(head.contains("x-shown: 1"));
    assert!(!head.contains("x-hidden"));
}

#[tokio::test]
async fn duplicate_item_ids_are_dropped() {
    let origin = grip_origin(200, &[("grip-hold", "stream"), ("grip-channel", "d")], "").await;
    let proxy = Proxy::routed_to(&origin, |_| {}).await;
    let mut body = get(&proxy.url("/")).await.into_body();
    proxy.wait_subscribers("d", 1).await;
    for content in ["first;", "again;"] {
        proxy
            .publish_json(json!({"items": [{"channel": "d", "id": "1", "formats": {"http-stream": {"content": content}}}]}))
            .await;
    }
    proxy
        .publish_json(json!({"items": [{"channel": "d", "id": "2", "formats": {"http-stream": {"content": "second;"}}}]}))
        .await;
    assert_eq!(read_until(&mut body, "second;").await, "first;second;");
}

#[tokio::test]
async fn body_patch_applies_to_the_original_json_body() {
    let origin = grip_origin(
        200,
        &[
            ("grip-hold", "response"),
            ("grip-channel", "p"),
            ("content-type", "application/json"),
        ],
        r#"{"count":1,"name":"x"}"#,
    )
    .await;
    let proxy = Proxy::routed_to(&origin, |_| {}).await;
    let url = proxy.url("/");
    let client = tokio::spawn(async move { text(get(&url).await).await });
    proxy.wait_subscribers("p", 1).await;
    proxy
        .publish_json(
            json!({"items": [{"channel": "p", "formats": {"http-response": {
            "body-patch": [{"op": "replace", "path": "/count", "value": 2}]}}}]}),
        )
        .await;
    let got: serde_json::Value = serde_json::from_str(&client.await.unwrap()).unwrap();
    assert_eq!(got, json!({"count": 2, "name": "x"}));
}

#[tokio::test]
async fn large_initial_stream_body_streams_through() {
    static BIG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let big = BIG.get_or_init(|| "y".repeat(300_000));
    let origin = Origin::start(move |_req| async move {
        Response::builder()
            .header("grip-hold", "stream")
            .header("grip-channel", "big")
            .body(full(big.as_str()))
            .unwrap()
    })
    .await;
    let proxy = Proxy::routed_to(&origin, |_| {}).await;
    let mut body = get(&proxy.url("/")).await.into_body();
    let mut got = 0usize;
    while got < 300_000 {
        got += next_chunk(&mut body).await.unwrap().len();
    }
    assert_eq!(got, 300_000);
    proxy
        .publish_json(
            json!({"items": [{"channel": "big", "formats": {"http-stream": {"content": "tail"}}}]}),
        )
        .await;
    assert_eq!(read_until(&mut body, "tail").await, "tail");

    // A response hold may not exceed the buffer: 502.
    let origin = Origin::start(move |_req| async move {
        Response::builder()
            .header("grip-hold", "response")
            .header("grip-channel", "big")
            .body(full(big.as_str()))
            .unwrap()
    })
    .await;
    let proxy = Proxy::routed_to(&origin, |_| {}).await;
    assert_eq!(get(&proxy.url("/")).await.status(), 502);
}

#[tokio::test]
async fn test_target_response_and_stream_hold_on_channel_test() {
    let proxy = Proxy::start("* test\n", |_| {}).await;
    let url = proxy.url("/response");
    let lp = tokio::spawn(async move { text(get(&url).await).await });
    let mut stream = get(&proxy.url("/stream?channel=other")).await.into_body();
    read_until(&mut stream, "[stream opened]\n").await;
    proxy.wait_subscribers("test", 1).await;
    proxy
        .publish_json(json!({"items": [
            {"channel": "test", "formats": {"http-response": {"body": "lp-got\n"}}},
            {"channel": "other", "formats": {"http-stream": {"content": "stream-got\n"}}}]}))
        .await;
    assert_eq!(lp.await.unwrap(), "lp-got\n");
    read_until(&mut stream, "stream-got\n").await;
}

#[tokio::test]
async fn shutdown_answers_long_polls_and_closes_streams() {
    let origin = Origin::start(|req: Request<hyper::body::Incoming>| async move {
        let mode = if req.uri().path() == "/s" {
            "stream"
        } else {
            "response"
        };
        Response::builder()
            .header("grip-hold", mode)
            .header("grip-channel", "sd")
            .body(full(format!("{mode}-original")))
            .unwrap()
    })
    .await;
    let proxy = Proxy::routed_to(&origin, |_| {}).await;
    let url = proxy.url("/r");
    let lp = tokio::spawn(async move { text(get(&url).await).await });
    let mut stream = get(&proxy.url("/s")).await.into_body();
    read_until(&mut stream, "stream-original").await;
    proxy.wait_subscribers("sd", 2).await;
    proxy.shutdown().await;
    assert_eq!(lp.await.unwrap(), "response-original");
    assert_eq!(next_chunk(&mut stream).await, None);
}

#[tokio::test]
async fn a_held_http11_stream_is_chunked_on_the_wire_and_ends_with_the_last_chunk() {
    use tokio::io::AsyncReadExt;
    let origin = grip_origin(
        200,
        &[
            ("grip-hold", "stream"),
            ("grip-channel", "wire"),
            ("content-type", "text/event-stream"),
            ("x-app", "kept"),
        ],
        "initial\n",
    )
    .await;
    let proxy = Proxy::routed_to(&origin, |_| {}).await;
    let mut stream = send_raw(proxy.addr, b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut got = Vec::new();
    read_raw_until(&mut stream, &mut got, b"8\r\ninitial\n\r\n").await;
    let text = String::from_utf8_lossy(&got).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete head");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let lines: Vec<&str> = head.lines().collect();
    assert!(lines.contains(&"content-type: text/event-stream"), "{head}");
    assert!(lines.contains(&"x-app: kept"), "{head}");
    assert!(lines.contains(&"transfer-encoding: chunked"), "{head}");
    assert!(lines.iter().any(|l| l.starts_with("date: ")), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("content-length"),
        "{head}"
    );
    assert!(!head.to_ascii_lowercase().contains("grip-"), "{head}");
    assert_eq!(body, "8\r\ninitial\n\r\n");
    proxy.wait_subscribers("wire", 1).await;
    // Written by the held-stream writer, not by hyper.
    assert_eq!(proxy.direct_streams(), 1);
    proxy
        .publish_json(json!({"items": [{"channel": "wire", "formats": {"http-stream": {"content": "data: 26 bytes of content\n\n"}}}]}))
        .await;
    got.clear();
    read_raw_until(
        &mut stream,
        &mut got,
        b"1b\r\ndata: 26 bytes of content\n\n\r\n",
    )
    .await;
    proxy
        .publish_json(
            json!({"items": [{"channel": "wire", "formats": {"http-stream": {"action": "close"}}}]}),
        )
        .await;
    got.clear();
    read_raw_until(&mut stream, &mut got, b"0\r\n\r\n").await;
    // Then the connection closes.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
        .await
        .expect("closed within 10 s")
        .unwrap();
    assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&rest));
    proxy.wait_subscribers("wire", 0).await;
    proxy.wait_direct_streams(0).await;
}

/// A long-poll held on an HTTP/1.1 connection waits outside hyper: the response comes whole,
/// with its length, and the same connection then carries the next request, held and answered
/// the same way; `Connection: close` closes it after the answer.
#[tokio::test]
async fn a_held_long_poll_leaves_hyper_and_its_connection_carries_the_next_request() {
    let origin = grip_origin(
        200,
        &[
            ("grip-hold", "response"),
            ("grip-channel", "lpw"),
            ("x-app", "kept"),
        ],
        "timeout\n",
    )
    .await;
    let proxy = Proxy::routed_to(&origin, |_| {}).await;
    let mut stream = send_raw(proxy.addr, b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n").await;
    proxy.wait_subscribers("lpw", 1).await;
    proxy.wait_direct_long_polls(1).await;
    proxy.publish_items([response_item("lpw", "first\n")]).await;
    let mut got = Vec::new();
    read_raw_until(&mut stream, &mut got, b"\r\n\r\nfirst\n").await;
    let text = String::from_utf8_lossy(&got).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete head");
    let lines: Vec<&str> = head.lines().collect();
    assert_eq!(lines[0], "HTTP/1.1 200 OK", "{head}");
    assert!(lines.contains(&"x-app: kept"), "{head}");
    assert!(lines.contains(&"content-length: 6"), "{head}");
    assert!(lines.iter().any(|l| l.starts_with("date: ")), "{head}");
    assert!(!head.to_ascii_lowercase().contains("connection:"), "{head}");
    assert_eq!(body, "first\n");
    proxy.wait_direct_long_polls(0).await;

    // The same connection, served by hyper again: the next request is held and answered too.
    let (head, body) = last_poll_answered(&proxy, &mut stream, "lpw", "second\n").await;
    assert!(head.lines().any(|l| l == "connection: close"), "{head}");
    assert_eq!(body, "second\n");
    proxy.wait_subscribers("lpw", 0).await;
}

/// A plain published answer to a long-poll held outside hyper is written by the hub's fan-out;
/// one the hold must shape (here, with a reason) by the hold. The client sees the same bytes
/// either way (the `date` aside), and its connection carries the next request after both.
#[tokio::test]
async fn a_long_poll_answer_the_hub_writes_is_the_one_the_hold_would_write() {
    use tokio::io::AsyncWriteExt;
    let origin = grip_origin(
        200,
        &[
            ("grip-hold", "response"),
            ("grip-channel", "lph"),
            ("content-type", "text/plain"),
            ("x-app", "kept"),
        ],
        "timeout\n",
    )
    .await;
    let proxy = Proxy::routed_to(&origin, |_| {}).await;
    let mut stream = send_raw(proxy.addr, b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut heads = Vec::new();
    let items = [
        response_item("lph", "first\n"),
        json!({"channel": "lph", "formats": {"http-response": {"body": "again\n", "reason": "OK"}}}),
    ];
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            stream
                .write_all(b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
        }
        proxy.wait_direct_long_polls(1).await;
        let written = proxy.app.hub.stats().written;
        let body = item["formats"]["http-response"]["body"]
            .as_str()
            .unwrap()
            .to_string();
        proxy.publish_items([item]).await;
        let mut got = Vec::new();
        read_raw_until(&mut stream, &mut got, format!("\r\n\r\n{body}").as_bytes()).await;
        let text = String::from_utf8(got).unwrap();
        let (head, rest) = text.split_once("\r\n\r\n").unwrap();
        assert_eq!(rest, body);
        assert_eq!(
            proxy.app.hub.stats().written - written,
            u64::from(i == 0),
            "only the plain answer is written by the hub"
        );
        let lines: Vec<&str> = head.lines().collect();
        assert_eq!(
            lines.iter().filter(|l| l.starts_with("date: ")).count(),
            1,
            "{head}"
        );
        heads.push(
            (lines.into_iter())
                .filter(|l| !l.starts_with("date: "))
                .collect::<Vec<_>>()
                .join("\r\n"),
        );
        proxy.wait_direct_long_polls(0).await;
    }
    assert_eq!(heads[0], heads[1]);
    assert_eq!(
        heads[0],
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-app: kept\r\ncontent-length: 6"
    );
    // The connection is still served: a last poll, answered and closed.
    let (head, body) = last_poll_answered(&proxy, &mut stream, "lph", "last\n").await;
    assert!(head.lines().any(|l| l == "connection: close"), "{head}");
    assert_eq!(body, "last\n");
}

/// A long-poll that names its position on a channel judges each item itself, so the hub never
/// writes its answer, however plain the item: the item it already has is skipped, and the next
/// one answers it.
#[tokio::test]
async fn a_long_poll_with_a_position_skips_what_it_has_even_when_plain() {
    let origin = grip_origin(
        200,
        &[
            ("grip-hold", "response"),
            ("grip-channel", "lpq; prev-id=a1"),
        ],
        "timeout\n",
    )
    .await;
    let proxy = Proxy::routed_to(&origin, |_| {}).await;
    let mut stream = send_raw(proxy.addr, b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n").await;
    proxy.wait_direct_long_polls(1).await;
    let written = proxy.app.hub.stats().written;
    proxy
        .publish_items([
            json!({"channel": "lpq", "id": "a1", "formats": {"http-response": {"body": "old\n"}}}),
            json!({"channel": "lpq", "id": "a2", "prev-id": "a1",
                "formats": {"http-response": {"body": "next\n"}}}),
        ])
        .await;
    let mut got = Vec::new();
    read_raw_until(&mut stream, &mut got, b"\r\n\r\nnext\n").await;
    let text = String::from_utf8(got).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(!text.contains("old"), "{text}");
    assert_eq!(proxy.app.hub.stats().written, written);
}

/// The header timeout after a held long-poll's answer runs from the answer, not from when the
/// hold began: a poll held longer than `client_header_secs` leaves its connection open for the
/// client's next request.
#[tokio::test]
async fn a_long_poll_held_past_the_header_timeout_keeps_its_connection_for_the_next_request() {
    let origin = grip_origin(
        200,
        &[("grip-hold", "response"), ("grip-channel", "lpt")],
        "timeout\n",
    )
    .await;
    let proxy = Proxy::routed_to(&origin, |c| c.timeouts.client_header_secs = 1).await;
    let mut stream = send_raw(proxy.addr, b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n").await;
    proxy.wait_subscribers("lpt", 1).await;
    proxy.wait_direct_long_polls(1).await;
    // The condition under test, not a synchronisation: the hold outlasts the header timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.publish_items([response_item("lpt", "first\n")]).await;
    let mut got = Vec::new();
    read_raw_until(&mut stream, &mut got, b"\r\n\r\nfirst\n").await;

    let (head, body) = last_poll_answered(&proxy, &mut stream, "lpt", "second\n").await;
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert_eq!(body, "second\n");
}

/// Sends a last poll (`Connection: close`) on `stream`, publishes `content` to `channel` once
/// it is held outside hyper, and returns the answer's head and body, read until the close.
async fn last_poll_answered(
    proxy: &Proxy,
    stream: &mut tokio::net::TcpStream,
    channel: &str,
    content: &str,
) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /poll HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    proxy.wait_direct_long_polls(1).await;
    proxy.publish_items([response_item(channel, content)]).await;
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
        .await
        .expect("answered and closed within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&rest).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete head");
    (head.to_string(), body.to_string())
}

/// A client that leaves a long-poll held outside hyper ends its hold and its subscription.
#[tokio::test]
async fn a_client_leaving_a_held_long_poll_ends_its_subscription() {
    let origin = grip_origin(
        200,
        &[("grip-hold", "response"), ("grip-channel", "gone")],
        "",
    )
    .await;
    let proxy = Proxy::routed_to(&origin, |_| {}).await;
    let stream = send_raw(proxy.addr, b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n").await;
    proxy.wait_subscribers("gone", 1).await;
    proxy.wait_direct_long_polls(1).await;
    drop(stream);
    proxy.wait_subscribers("gone", 0).await;
    proxy.wait_direct_long_polls(0).await;
}

/// Plain chunks to an idle HTTP/1.1 stream are written by the hub's fan-out; items with an id
/// go through the connection's queue. Either way the client gets them in publish order.
#[tokio::test]
async fn chunks_the_hub_writes_itself_keep_their_order_among_queued_ones() {
    let origin = grip_origin(200, &[("grip-hold", "stream"), ("grip-channel", "mix")], "").await;
    let proxy = Proxy::routed_to(&origin, |_| {}).await;
    let mut body = get(&proxy.url("/")).await.into_body();
    proxy.wait_subscribers("mix", 1).await;
    let before = proxy.app.hub.stats().written;
    let mut got = String::new();
    let mut want = String::new();
    let mut plain = 0;
    for i in 0..30 {
        let item = if i % 3 == 1 {
            json!({"channel": "mix", "id": format!("i{i}"), "formats": {"http-stream": {"content": format!("q{i};")}}})
        } else {
            plain += 1;
            json!({"channel": "mix", "formats": {"http-stream": {"content": format!("p{i};")}}})
        };
        let content = item["formats"]["http-stream"]["content"]
            .as_str()
            .unwrap()
            .to_string();
        want.push_str(&content);
        proxy.publish_json(json!({ "items": [item] })).await;
        // Received before the next publish, so the stream is idle again by then.
        got.push_str(&read_until(&mut body, &content).await);
    }
    assert_eq!(got, want);
    // Then a burst in one request: the first may be written by the hub, the rest wait behind it.
    let items: Vec<_> = (0..40)
        .map(|i| match i % 4 {
            0 => json!({"channel": "mix", "id": format!("b{i}"), "formats": {"http-stream": {"content": format!("b{i};")}}}),
            _ => json!({"channel": "mix", "formats": {"http-stream": {"content": format!("b{i};")}}}),
        })
        .collect();
    proxy.publish_json(json!({ "items": items })).await;
    let burst: String = (0..40).map(|i| format!("b{i};")).collect();
    assert_eq!(read_until(&mut body, &burst).await, burst);
    let written = proxy.app.hub.stats().written - before;
    assert!(written >= 1, "no chunk was written by the hub");
    assert!(written <= plain + 30, "{written} written by the hub");
}

/// Publishers posting at the same time to a channel with many streams: each stream gets every
/// item, and each publisher's items in the order it posted them, whether the hub wrote them
/// itself or they waited in the stream's queue.
#[tokio::test]
async fn concurrent_publishers_keep_their_order_on_every_stream() {
    let origin = grip_origin(
        200,
        &[("grip-hold", "stream"), ("grip-channel", "many")],
        "",
    )
    .await;
    let proxy = Proxy::routed_to(&origin, |_| {}).await;
    let (streams, publishers, items) = (40, 4, 50);
    let mut bodies = Vec::new();
    for _ in 0..streams {
        bodies.push(get(&proxy.url("/")).await.into_body());
    }
    proxy.wait_subscribers("many", streams).await;
    let posting: Vec<_> = (0..publishers)
        .map(|p| {
            let url = proxy.publish_url("/publish/");
            tokio::spawn(async move {
                for i in 0..items {
                    // Every third item has an id, so it takes the queue.
                    let mut item = json!({"channel": "many", "formats": {"http-stream": {"content": format!("{p}.{i};")}}});
                    if i % 3 == 0 {
                        item["id"] = json!(format!("{p}-{i}"));
                    }
                    let (status, body) = publish_json_to(&url, json!({ "items": [item] })).await;
                    assert_eq!(status, 200, "{body}");
                }
            })
        })
        .collect();
    for p in posting {
        p.await.unwrap();
    }
    for body in &mut bodies {
        let mut got = String::new();
        while got.matches(';').count() < publishers * items {
            let chunk = next_chunk(body).await.expect("stream still open");
            got.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert_publisher_order(got.split_terminator(';'), publishers, items);
    }
    let stats = proxy.app.hub.stats();
    assert_eq!(stats.dropped, 0);
    assert_eq!(stats.delivered, (streams * publishers * items) as u64);
    assert!(stats.written > 0, "the hub wrote no chunk itself");
}

/// A client that stops reading: the hub's chunk that the socket takes only in part is finished
/// by the connection's writer, ahead of what was queued after it, and nothing is lost or torn.
#[tokio::test]
async fn a_slow_reader_gets_every_chunk_whole_and_in_order() {
    use tokio::io::AsyncReadExt;
    let origin = grip_origin(
        200,
        &[("grip-hold", "stream"), ("grip-channel", "slow")],
        "",
    )
    .await;
    let proxy = Proxy::routed_to(&origin, |_| {}).await;
    let mut stream = send_raw(proxy.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    proxy.wait_subscribers("slow", 1).await;
    // 40 chunks of 200 KB: more than loopback's socket buffers hold while nobody reads.
    let count = 40;
    let size = 200_000;
    let mut want = Vec::new();
    for i in 0..count {
        let content = format!("{i:03}").repeat(size / 3);
        want.extend_from_slice(format!("{:x}\r\n{content}\r\n", content.len()).as_bytes());
        proxy
            .publish_json(json!({"items": [{"channel": "slow", "formats": {"http-stream": {"content": content}}}]}))
            .await;
    }
    let mut got = Vec::new();
    read_raw_until(&mut stream, &mut got, b"\r\n\r\n").await;
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    got.drain(..head_end);
    while got.len() < want.len() {
        let mut buf = vec![0u8; 64 * 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("bytes within 10 s")
            .unwrap();
        assert!(n > 0, "closed after {} of {} bytes", got.len(), want.len());
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the chunks arrived torn or out of order");
    assert_eq!(proxy.app.hub.stats().dropped, 0);
}

#[tokio::test]
async fn a_held_http10_stream_is_close_delimited() {
    let origin = grip_origin(
        200,
        &[("grip-hold", "stream"), ("grip-channel", "old")],
        "initial\n",
    )
    .await;
    let proxy = Proxy::routed_to(&origin, |_| {}).await;
    let mut stream = send_raw(proxy.addr, b"GET /events HTTP/1.0\r\nHost: x\r\n\r\n").await;
    let mut got = Vec::new();
    read_raw_until(&mut stream, &mut got, b"\r\n\r\ninitial\n").await;
    let text = String::from_utf8_lossy(&got).to_string();
    assert!(text.starts_with("HTTP/1.0 200 OK\r\n"), "{text}");
    assert!(!text.contains("chunked"), "{text}");
    proxy.wait_subscribers("old", 1).await;
    // HTTP/1.0 streams stay with hyper.
    assert_eq!(proxy.direct_streams(), 0);
    proxy
        .publish_json(json!({"items": [{"channel": "old", "formats": {"http-stream": {"content": "next\n"}}}]}))
        .await;
    read_raw_until(&mut stream, &mut got, b"initial\nnext\n").await;
    drop(stream);
    proxy.wait_subscribers("old", 0).await;
}
