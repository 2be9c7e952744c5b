//! SockJS endpoints (route option `sockjs=`): the framing of each transport as a SockJS client
//! reads it, what the origin's WebSocket sees, and the session's limits.

mod support;

use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request};
use http_body_util::BodyExt;
use serde_json::json;
use support::ws::*;
use support::*;
use tokio_tungstenite::tungstenite::Message;

/// A Holdfast with a SockJS endpoint at `/sockjs` in front of `origin` (a GRIP WebSocket).
async fn sockjs_proxy(origin: &WsOrigin, tweak: impl FnOnce(&mut holdfast::Config)) -> Proxy {
    Proxy::start(&format!("*,sockjs=/sockjs {}\n", origin.target()), tweak).await
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
}

async fn call(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send(req.body(full(body.to_string())).unwrap()).await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = tokio::time::timeout(WAIT, text(resp))
        .await
        .expect("answer within 10 s");
    Answer {
        status,
        headers,
        body,
    }
}

async fn post(url: &str, body: &str) -> Answer {
    call("POST", url, &[], body).await
}

/// Sends `m:<text>` from the origin (the grip prefix, stripped for the client).
async fn origin_says(ws: &mut OriginSocket, text: &str) {
    ws.send(Message::text(format!("m:{text}"))).await.unwrap();
}

#[tokio::test]
async fn info_iframe_preflight_and_unknown_paths() {
    let origin = WsOrigin::start(Some("grip")).await;
    let proxy = sockjs_proxy(&origin, |c| c.sockjs.url = "/static/sockjs.js".into()).await;

    let info = call(
        "GET",
        &proxy.url("/sockjs/info"),
        &[("origin", "http://a.example")],
        "",
    )
    .await;
    assert_eq!(info.status, 200);
    assert_eq!(info.headers["content-type"], "text/plain");
    assert_eq!(
        info.headers["access-control-allow-origin"],
        "http://a.example"
    );
    assert_eq!(info.headers["access-control-allow-credentials"], "true");
    assert!(info.headers["cache-control"]
        .to_str()
        .unwrap()
        .contains("no-store"));
    let v: serde_json::Value = serde_json::from_str(&info.body).unwrap();
    assert_eq!(v["websocket"], true);
    assert_eq!(v["cookie_needed"], false);
    assert_eq!(v["origins"], json!(["*:*"]));
    assert!(v["entropy"].is_u64());
    // Pushpin's text, keys sorted.
    assert!(info
        .body
        .starts_with(r#"{"cookie_needed":false,"entropy":"#));
    assert!(info
        .body
        .ends_with(",\"origins\":[\"*:*\"],\"websocket\":true}\n"));

    let page = call("GET", &proxy.url("/sockjs/iframe.html"), &[], "").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains(r#"<script src="/static/sockjs.js"></script>"#),
        "{}",
        page.body
    );
    assert!(page.body.contains("SockJS.bootstrap_iframe()"));
    let etag = page.headers["etag"].to_str().unwrap().to_string();
    let again = call(
        "GET",
        &proxy.url("/sockjs/iframe-1.2.3.html"),
        &[("if-none-match", &etag)],
        "",
    )
    .await;
    assert_eq!(again.status, 304);
    assert_eq!(again.body, "");

    let pre = call(
        "OPTIONS",
        &proxy.url("/sockjs/000/abc/xhr"),
        &[
            ("origin", "http://a.example"),
            ("access-control-request-headers", "x-a"),
        ],
        "",
    )
    .await;
    assert_eq!(pre.status, 204);
    assert_eq!(
        pre.headers["access-control-allow-origin"],
        "http://a.example"
    );
    assert_eq!(pre.headers["access-control-allow-headers"], "x-a");
    assert!(pre.headers["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));

    for path in [
        "/sockjs/nope",
        "/sockjs/a/b",
        "/sockjs/a.b/c/xhr",
        "/sockjs/000/abc/unknown",
    ] {
        assert_eq!(post(&proxy.url(path), "").await.status, 404, "{path}");
    }
    let unknown = post(&proxy.url("/sockjs/000/none/xhr_send"), r#"["x"]"#).await;
    assert_eq!(unknown.status, 404);
    // Pushpin's type, no charset.
    assert_eq!(unknown.headers["content-type"], "text/plain");
    let no_upgrade = call("GET", &proxy.url("/sockjs/000/abc/websocket"), &[], "").await;
    assert_eq!(no_upgrade.status, 400);
}

#[tokio::test]
async fn xhr_polling_opens_sends_receives_and_closes_as_pushpin() {
    let mut origin = WsOrigin::start(Some("grip")).await;
    let proxy = sockjs_proxy(&origin, |_| {}).await;
    let base = proxy.url("/sockjs/000/s1");

    let open = call("POST", &format!("{base}/xhr?t=1"), &[("cookie", "a=b")], "").await;
    assert_eq!(open.status, 200);
    assert_eq!(open.body, "o\n");
    assert_eq!(open.headers["content-type"], "text/plain");
    assert_eq!(open.headers["access-control-allow-origin"], "*");
    // One WebSocket at the origin, at the prefix, with the client's headers and the query.
    let (seen, mut ws) = origin.next().await;
    assert_eq!(seen["cookie"], "a=b");
    assert!(seen.contains_key("grip-sig"));
    assert!(!seen.contains_key("content-length"));

    let sent = post(&format!("{base}/xhr_send"), r#"["a","b \u2028"]"#).await;
    assert_eq!((sent.status, sent.body.as_str()), (200, "ok"));
    assert_eq!(sent.headers["content-type"], "text/plain");
    assert_eq!(recv_text(&mut ws).await, "a");
    assert_eq!(recv_text(&mut ws).await, "b \u{2028}");

    origin_says(&mut ws, "one").await;
    origin_says(&mut ws, "two \u{2028} \"q\"").await;
    let mut got = Vec::new();
    while got.len() < 2 {
        let poll = post(&format!("{base}/xhr"), "").await;
        let frame = poll
            .body
            .strip_prefix('a')
            .expect("a messages frame")
            .trim_end();
        got.extend(serde_json::from_str::<Vec<String>>(frame).unwrap());
        assert!(
            !poll.body.contains('\u{2028}'),
            "U+2028 is escaped: {:?}",
            poll.body
        );
    }
    assert_eq!(got, ["one", "two \u{2028} \"q\""]);

    // Two polls at once: the one that comes second is told another is open; the other waits.
    let (u1, u2) = (format!("{base}/xhr"), format!("{base}/xhr"));
    let mut p1 = tokio::spawn(async move { post(&u1, "").await });
    let mut p2 = tokio::spawn(async move { post(&u2, "").await });
    let (second, waiting) = tokio::select! {
        a = &mut p1 => (a.unwrap(), p2),
        a = &mut p2 => (a.unwrap(), p1),
    };
    assert_eq!(second.body, "c[2010,\"Another connection still open\"]\n");

    ws.send(close(4003, "bye now")).await.unwrap();
    let closed = waiting.await.unwrap();
    assert_eq!(closed.body, "c[4003,\"bye now\"]\n");
    // The closed session answers every request with its close frame for a while.
    assert_eq!(
        post(&format!("{base}/xhr"), "").await.body,
        "c[4003,\"bye now\"]\n"
    );
    assert_eq!(
        post(&format!("{base}/xhr_send"), r#"["x"]"#).await.body,
        "c[4003,\"bye now\"]\n"
    );
}

#[tokio::test]
async fn xhr_send_refuses_what_is_not_a_json_array_of_strings() {
    let mut origin = WsOrigin::start(Some("grip")).await;
    let proxy = sockjs_proxy(&origin, |c| c.sockjs.max_queued = 100).await;
    let base = proxy.url("/sockjs/000/s1");
    assert_eq!(post(&format!("{base}/xhr"), "").await.body, "o\n");
    let (_, mut ws) = origin.next().await;
    for (body, want) in [
        ("", "Payload expected.\n"),
        ("[\"x\"", "Broken JSON encoding.\n"),
        ("[1,2]", "Broken JSON encoding.\n"),
    ] {
        let a = post(&format!("{base}/xhr_send"), body).await;
        assert_eq!((a.status, a.body.as_str()), (400, want), "{body:?}");
    }
    let big = format!("[\"{}\"]", "x".repeat(101));
    let a = post(&format!("{base}/xhr_send"), &big).await;
    assert_eq!(a.status, 400);
    assert!(a.body.contains("sockjs.max_queued"), "{}", a.body);
    // The session is still there and in order.
    assert_eq!(
        post(&format!("{base}/xhr_send"), r#"["fine"]"#).await.body,
        "ok"
    );
    assert_eq!(recv_text(&mut ws).await, "fine");
}

#[tokio::test]
async fn xhr_streaming_sends_the_prelude_then_frames_and_ends_at_its_limit() {
    let mut origin = WsOrigin::start(Some("grip")).await;
    let proxy = sockjs_proxy(&origin, |c| c.sockjs.streaming_limit = 4096).await;
    let base = proxy.url("/sockjs/000/st");
    let resp = send(
        Request::post(format!("{base}/xhr_streaming"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(
        resp.headers()["content-type"],
        "application/javascript; charset=UTF-8"
    );
    let mut body = resp.into_body();
    let got = read_until(&mut body, "o\n").await;
    assert_eq!(got, format!("{}\no\n", "h".repeat(2048)));
    let (_, mut ws) = origin.next().await;
    origin_says(&mut ws, "first").await;
    assert_eq!(read_until(&mut body, "\n").await, "a[\"first\"]\n");
    // Past 4096 bytes the response ends; the session goes on in the next request.
    let long = "y".repeat(2100);
    origin_says(&mut ws, &long).await;
    read_until(&mut body, "\n").await;
    assert!(
        next_chunk(&mut body).await.is_none(),
        "the response ended at its limit"
    );
    origin_says(&mut ws, "after").await;
    let resp = send(
        Request::post(format!("{base}/xhr_streaming"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    let mut body = resp.into_body();
    let got = read_until(&mut body, "a[\"after\"]\n").await;
    assert_eq!(got, format!("{}\na[\"after\"]\n", "h".repeat(2048)));
}

#[tokio::test]
async fn eventsource_and_jsonp_framing() {
    let mut origin = WsOrigin::start(Some("grip")).await;
    let proxy = sockjs_proxy(&origin, |_| {}).await;

    let resp = get(&proxy.url("/sockjs/000/es/eventsource")).await;
    assert_eq!(
        resp.headers()["content-type"],
        "text/event-stream; charset=UTF-8"
    );
    let mut body = resp.into_body();
    assert_eq!(
        read_until(&mut body, "data: o\r\n\r\n").await,
        "\r\ndata: o\r\n\r\n"
    );
    let (_, mut ws) = origin.next().await;
    origin_says(&mut ws, "to es").await;
    assert_eq!(
        read_until(&mut body, "\r\n\r\n").await,
        "data: a[\"to es\"]\r\n\r\n"
    );

    let jp = proxy.url("/sockjs/000/jp");
    assert_eq!(
        call("GET", &format!("{jp}/jsonp"), &[], "").await.status,
        400
    );
    let bad = call("GET", &format!("{jp}/jsonp?c=alert(1)"), &[], "").await;
    assert_eq!(
        (bad.status, bad.body.as_str()),
        (400, "invalid \"callback\" parameter\n")
    );
    let open = call("GET", &format!("{jp}/jsonp?c=cb.x_1"), &[], "").await;
    assert_eq!(open.body, "/**/cb.x_1(\"o\");\n");
    assert_eq!(open.headers["content-type"], "application/javascript");
    let (_, mut ws) = origin.next().await;
    let sent = call(
        "POST",
        &format!("{jp}/jsonp_send"),
        &[("content-type", "application/x-www-form-urlencoded")],
        "d=%5B%22via%20form%22%5D",
    )
    .await;
    assert_eq!(sent.body, "ok");
    assert_eq!(recv_text(&mut ws).await, "via form");
    origin_says(&mut ws, "back").await;
    let poll = call("GET", &format!("{jp}/jsonp?c=cb"), &[], "").await;
    assert_eq!(poll.body, "/**/cb(\"a[\\\"back\\\"]\");\n");
}

#[tokio::test]
async fn websocket_transport_frames_messages_publishes_and_the_close() {
    let mut origin = WsOrigin::start(Some("grip")).await;
    let proxy = sockjs_proxy(&origin, |_| {}).await;
    let mut client = connect(&proxy, "/sockjs/000/w1/websocket").await;
    let (seen, mut ws) = origin.next().await;
    assert!(seen.contains_key("grip-sig"));
    assert_eq!(recv_text(&mut client).await, "o");

    client.send(Message::text(r#"["a","b"]"#)).await.unwrap();
    client.send(Message::text(r#""single""#)).await.unwrap();
    for want in ["a", "b", "single"] {
        assert_eq!(recv_text(&mut ws).await, want);
    }
    origin_says(&mut ws, "down").await;
    assert_eq!(recv_text(&mut client).await, r#"a["down"]"#);
    ws.send(Message::text(r#"c:{"type":"subscribe","channel":"room"}"#))
        .await
        .unwrap();
    proxy.wait_subscribers("room", 1).await;
    publish_ws(&proxy, "room", json!({"content": "published"})).await;
    assert_eq!(recv_text(&mut client).await, r#"a["published"]"#);

    ws.send(close(4003, "bye now")).await.unwrap();
    assert_eq!(recv_text(&mut client).await, r#"c[4003,"bye now"]"#);
    assert_eq!(recv_close(&mut client).await, (4003, "bye now".to_string()));
    proxy.wait_subscribers("room", 0).await;
}

#[tokio::test]
async fn websocket_transports_reach_the_origin_at_prefix_websocket() {
    let mut origin = WsOrigin::start(None).await;
    let proxy = Proxy::start(
        &format!(
            "*,sockjs=/sockjs,sockjs_as_path=/ws-here {}\n*,path_beg=/raw,sockjs=/raw/sj {}\n",
            origin.target(),
            origin.target()
        ),
        |_| {},
    )
    .await;
    // sockjs_as_path: every transport opens the origin's WebSocket there.
    let mut framed = connect(&proxy, "/sockjs/000/w1/websocket?x=1").await;
    let (_, ws) = origin.next().await;
    echo(ws);
    assert_eq!(recv_text(&mut framed).await, "o");
    framed.send(Message::text(r#"["echoed"]"#)).await.unwrap();
    assert_eq!(recv_text(&mut framed).await, r#"a["echoed"]"#);

    // The raw WebSocket passes frames as they are.
    let mut raw = connect(&proxy, "/raw/sj/websocket").await;
    let (_, ws) = origin.next().await;
    echo(ws);
    raw.send(Message::text("plain")).await.unwrap();
    assert_eq!(recv_text(&mut raw).await, "plain");

    // A frame that is not JSON ends the session.
    framed.send(Message::text("[\"broken")).await.unwrap();
    loop {
        match tokio::time::timeout(WAIT, framed.next())
            .await
            .expect("closed within 10 s")
        {
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn origin_paths_follow_the_prefix_and_the_routes_rewrites() {
    // What the origin's handshake asked for, per transport.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let (tx, mut paths) = tokio::sync::mpsc::channel::<String>(8);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                #[allow(clippy::result_large_err)]
                let cb = |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                          resp| {
                    let _ = tx.try_send(req.uri().to_string());
                    Ok(resp)
                };
                if let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, cb).await {
                    echo(ws);
                }
            });
        }
    });
    let proxy = Proxy::start(
        &format!("*,path_beg=/app/,replace_beg=/,sockjs=/app/sj {target}\n"),
        |_| {},
    )
    .await;
    assert_eq!(
        post(&proxy.url("/app/sj/1/a/xhr?t=5"), "").await.body,
        "o\n"
    );
    let mut ws = connect(&proxy, "/app/sj/1/b/websocket").await;
    assert_eq!(recv_text(&mut ws).await, "o");
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(
            tokio::time::timeout(WAIT, paths.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    got.sort();
    assert_eq!(got, ["/sj/websocket", "/sj?t=5"]);
}

#[tokio::test]
async fn an_origin_refusing_the_websocket_answers_the_first_request() {
    let origin = Origin::start(|_req| async {
        let mut r = hyper::Response::new(full("go away\n"));
        *r.status_mut() = http::StatusCode::FORBIDDEN;
        r.headers_mut().insert("x-why", "nope".parse().unwrap());
        r
    })
    .await;
    let proxy = Proxy::start(&format!("*,sockjs=/sockjs {}\n", origin.target()), |_| {}).await;
    let a = post(&proxy.url("/sockjs/000/r/xhr"), "").await;
    assert_eq!((a.status, a.body.as_str()), (403, "go away\n"));
    assert_eq!(a.headers["x-why"], "nope");
    // And nothing stays behind: the same session id is opened again from scratch.
    assert_eq!(post(&proxy.url("/sockjs/000/r/xhr"), "").await.status, 403);
    assert_eq!(proxy.app.sockjs_sessions.len(), 0);
}

#[tokio::test]
async fn heartbeats_and_the_session_timeout() {
    let mut origin = WsOrigin::start(Some("grip")).await;
    let proxy = sockjs_proxy(&origin, |c| {
        c.sockjs.heartbeat_secs = 1;
        c.sockjs.disconnect_secs = 1;
    })
    .await;
    let base = proxy.url("/sockjs/000/hb");
    assert_eq!(post(&format!("{base}/xhr"), "").await.body, "o\n");
    let (_, mut ws) = origin.next().await;
    // A poll with nothing to carry gets the heartbeat.
    assert_eq!(post(&format!("{base}/xhr"), "").await.body, "h\n");
    // Over a WebSocket too.
    let mut client = connect(&proxy, "/sockjs/000/hb2/websocket").await;
    let (_, _ws2) = origin.next().await;
    assert_eq!(recv_text(&mut client).await, "o");
    assert_eq!(recv_text(&mut client).await, "h");
    // No more polls: the session ends, and the origin sees its client go away.
    let (code, _) = recv_close(&mut ws).await;
    assert_eq!(code, 1001);
    assert_eq!(
        post(&format!("{base}/xhr_send"), r#"["late"]"#)
            .await
            .status,
        404
    );
    assert_eq!(proxy.app.sockjs_sessions.len(), 0);
}

#[tokio::test]
async fn a_full_queue_slows_the_origin_and_loses_nothing() {
    let mut origin = WsOrigin::start(Some("grip")).await;
    let proxy = sockjs_proxy(&origin, |c| c.sockjs.max_queued = 1000).await;
    let base = proxy.url("/sockjs/000/q");
    assert_eq!(post(&format!("{base}/xhr"), "").await.body, "o\n");
    let (_, ws) = origin.next().await;
    // 200 messages of 100 bytes: 20 times what the session holds. The origin is slowed
    // (the session stops reading) while the client does not poll.
    let (mut tx, _rx) = ws.split();
    let writer = tokio::spawn(async move {
        for i in 0..200 {
            tx.send(Message::text(format!("m:{i:03}{}", "z".repeat(97))))
                .await
                .unwrap();
        }
    });
    let mut got = Vec::new();
    while got.len() < 200 {
        let poll = post(&format!("{base}/xhr"), "").await;
        let frame = poll.body.strip_prefix('a').expect("messages").trim_end();
        let batch: Vec<String> = serde_json::from_str(frame).unwrap();
        assert!(
            batch.iter().map(String::len).sum::<usize>() <= 1000 + 100,
            "a batch is bounded by the queue"
        );
        got.extend(batch);
    }
    writer.await.unwrap();
    let want: Vec<String> = (0..200)
        .map(|i| format!("{i:03}{}", "z".repeat(97)))
        .collect();
    assert_eq!(got, want, "every message, in order");
}

#[tokio::test]
async fn sessions_are_capped() {
    let mut origin = WsOrigin::start(Some("grip")).await;
    let proxy = sockjs_proxy(&origin, |c| c.sockjs.max_sessions = 1).await;
    assert_eq!(
        post(&proxy.url("/sockjs/000/one/xhr"), "").await.body,
        "o\n"
    );
    let _first = origin.next().await;
    let second = post(&proxy.url("/sockjs/000/two/xhr"), "").await;
    assert_eq!(second.status, 503);
    assert!(
        second.body.contains("sockjs.max_sessions"),
        "{}",
        second.body
    );
}

#[tokio::test]
async fn a_websocket_over_http_origin_serves_sockjs_sessions() {
    use grip::wsevents::{encode_events, Event, EventKind};
    let origin = Origin::start(|req| async move {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let events = grip::wsevents::parse_events_shared(&body).unwrap();
        let mut out = Vec::new();
        for e in events {
            match e.kind {
                EventKind::Open => {
                    out.push(Event::new(EventKind::Open));
                    out.push(Event::with_content(
                        EventKind::Text,
                        bytes::Bytes::from_static(br#"c:{"type":"subscribe","channel":"woh"}"#),
                    ));
                }
                EventKind::Text => {
                    let mut c = b"m:echo ".to_vec();
                    c.extend_from_slice(&e.content);
                    out.push(Event::with_content(EventKind::Text, bytes::Bytes::from(c)));
                }
                _ => {}
            }
        }
        let mut body = Vec::new();
        encode_events(&out, &mut body);
        let mut r = hyper::Response::new(full(body));
        r.headers_mut().insert(
            "content-type",
            "application/websocket-events".parse().unwrap(),
        );
        r.headers_mut()
            .insert("sec-websocket-extensions", "grip".parse().unwrap());
        r
    })
    .await;
    let proxy = Proxy::start(
        &format!("*,sockjs=/sockjs {},over_http\n", origin.target()),
        |_| {},
    )
    .await;
    let base = proxy.url("/sockjs/000/w");
    assert_eq!(post(&format!("{base}/xhr"), "").await.body, "o\n");
    proxy.wait_subscribers("woh", 1).await;
    assert_eq!(
        post(&format!("{base}/xhr_send"), r#"["hi"]"#).await.body,
        "ok"
    );
    assert_eq!(
        post(&format!("{base}/xhr"), "").await.body,
        "a[\"echo hi\"]\n"
    );
    publish_ws(&proxy, "woh", json!({"content": "pub"})).await;
    assert_eq!(post(&format!("{base}/xhr"), "").await.body, "a[\"pub\"]\n");
}
