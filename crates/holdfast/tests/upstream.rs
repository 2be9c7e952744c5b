//! `grip.upstream_key`: a request whose `Grip-Sig` verifies with it comes from an upstream GRIP
//! proxy (Fastly Fanout, a Pushpin in front). Its `Grip-*` headers reach the origin, Holdfast adds
//! no `Grip-Sig` of its own, and the origin's GRIP answer goes back to the upstream proxy as it
//! is. A missing, forged or expired `Grip-Sig` is stripped as any client's, and the answer held.

mod support;

use std::sync::{Arc, Mutex};

use futures_util::SinkExt;
use http::HeaderMap;
use hyper::{Request, Response};
use support::ws::*;
use support::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const UPSTREAM_SECRET: &str = "fanout-realm-secret";

fn data(name: &str) -> String {
    format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A `Grip-Sig` as an upstream proxy makes it: `key` in `sig_key`'s forms, valid `ttl` seconds
/// from now (negative: expired).
fn upstream_sig(key: &str, ttl: i64) -> String {
    let key = match grip::sig::SigKey::parse(key).unwrap() {
        grip::sig::SigKey::File(path) => {
            grip::sig::SigKey::from_file_contents(&std::fs::read(path).unwrap()).unwrap()
        }
        key => key,
    };
    // `exp` is the start time plus the lifetime: start at 0 to give `exp` itself.
    let exp = now().checked_add_signed(ttl).unwrap();
    grip::sig::sign("fanout", &key, 0, exp).unwrap()
}

/// An origin that records the headers of every request and answers with a GRIP response hold
/// on the channel named by the path.
async fn holding_origin(seen: Arc<Mutex<Vec<HeaderMap>>>) -> Origin {
    Origin::start(move |req: Request<hyper::body::Incoming>| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push(req.headers().clone());
            let channel = req.uri().path().trim_start_matches('/').to_string();
            Response::builder()
                .header("grip-hold", "response")
                .header("grip-channel", channel)
                .header("content-type", "text/plain")
                .body(full("held until a publish\n"))
                .unwrap()
        }
    })
    .await
}

async fn proxy_with_upstream_key(origin: &Origin, key: &str) -> Proxy {
    let key = key.to_string();
    Proxy::routed_to(origin, move |c| {
        c.grip.upstream_key = Some(key);
        // Different rules, so the origin's X-Forwarded-For shows which applied.
        c.forwarding.x_forwarded_for = vec!["truncate:0".into(), "append".into()];
        quiet(c);
    })
    .await
}

fn get_from_upstream(proxy: &Proxy, path: &str, sig: Option<&str>) -> Request<TestBody> {
    let mut req = Request::get(proxy.url(path))
        .header("grip-last", format!("{}; last-id=7", &path[1..]))
        .header("grip-feature", "from-upstream")
        .header("x-forwarded-for", "203.0.113.7");
    if let Some(sig) = sig {
        req = req.header("grip-sig", sig);
    }
    req.body(full("")).unwrap()
}

#[tokio::test]
async fn a_valid_upstream_sig_keeps_grip_headers_and_gets_the_grip_answer_back() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let origin = holding_origin(seen.clone()).await;
    let es_public = format!("file:{}", data("publish-es256-public.pem"));
    let es_private = format!("file:{}", data("publish-es256-private.pem"));
    // (upstream_key, the key the upstream signs with)
    let cases = [
        (UPSTREAM_SECRET.to_string(), UPSTREAM_SECRET.to_string()),
        (es_public, es_private),
    ];
    for (i, (configured, signing)) in cases.into_iter().enumerate() {
        let proxy = proxy_with_upstream_key(&origin, &configured).await;
        let sig = upstream_sig(&signing, 3600);
        let path = format!("/up{i}");
        let resp = send(get_from_upstream(&proxy, &path, Some(&sig))).await;

        // Not held: the upstream proxy gets the instructions to act on.
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["grip-hold"], "response");
        assert_eq!(resp.headers()["grip-channel"], &path[1..]);
        assert_eq!(text(resp).await, "held until a publish\n");
        assert_eq!(proxy.app.hub.subscribers(&path[1..]), 0);

        let h = seen.lock().unwrap().pop().unwrap();
        assert_eq!(h["grip-sig"], sig.as_str(), "the upstream's own Grip-Sig");
        assert_eq!(h.get_all("grip-sig").iter().count(), 1);
        assert_eq!(h["grip-last"], format!("up{i}; last-id=7").as_str());
        assert_eq!(h["grip-feature"], "from-upstream");
        // forwarding.x_forwarded_for_trusted (default ["append"]) applied.
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn a_missing_forged_or_expired_upstream_sig_is_stripped_and_the_answer_held() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let origin = holding_origin(seen.clone()).await;
    let proxy = proxy_with_upstream_key(&origin, UPSTREAM_SECRET).await;
    let holdfast_key = grip::sig::SigKey::parse("changeme").unwrap();
    let cases = [
        ("none", None),
        ("wrong-key", Some(upstream_sig("another-secret", 3600))),
        ("expired", Some(upstream_sig(UPSTREAM_SECRET, -5))),
        ("garbage", Some("not.a.token".to_string())),
        // Signed with a PEM key whose public half is not the upstream key.
        (
            "other-alg",
            Some(upstream_sig(
                &format!("file:{}", data("publish-es256-private.pem")),
                3600,
            )),
        ),
    ];
    for (name, sig) in cases {
        let path = format!("/{name}");
        let req = get_from_upstream(&proxy, &path, sig.as_deref());
        let held = tokio::spawn(async move { text(send(req).await).await });
        proxy.wait_subscribers(name, 1).await;
        proxy
            .publish_items([response_item(name, "published\n")])
            .await;
        assert_eq!(held.await.unwrap(), "published\n", "{name}");

        let h = seen.lock().unwrap().pop().unwrap();
        let origin_sig = h["grip-sig"].to_str().unwrap();
        assert_ne!(Some(origin_sig), sig.as_deref(), "{name}");
        assert_eq!(
            grip::sig::verify(origin_sig, &holdfast_key, now())
                .unwrap()
                .iss
                .as_deref(),
            Some("pushpin"),
            "{name}: Holdfast's own Grip-Sig"
        );
        assert!(h.get("grip-last").is_none(), "{name}");
        assert_ne!(h["grip-feature"], "from-upstream", "{name}");
        assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{name}");
    }
}

#[tokio::test]
async fn without_an_upstream_key_every_grip_sig_is_stripped() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let origin = holding_origin(seen.clone()).await;
    let proxy = Proxy::routed_to(&origin, quiet).await;
    let sig = upstream_sig(UPSTREAM_SECRET, 3600);
    let req = get_from_upstream(&proxy, "/plain", Some(&sig));
    let held = tokio::spawn(async move { text(send(req).await).await });
    proxy.wait_subscribers("plain", 1).await;
    proxy
        .publish_items([response_item("plain", "published\n")])
        .await;
    assert_eq!(held.await.unwrap(), "published\n");
    let h = seen.lock().unwrap().pop().unwrap();
    assert_ne!(h["grip-sig"], sig.as_str());
    assert!(h.get("grip-last").is_none());
}

#[tokio::test]
async fn an_upstream_proxy_may_send_websocket_events_directly() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let origin = Origin::start({
        let seen = seen.clone();
        move |req: Request<hyper::body::Incoming>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(req.headers().clone());
                Response::builder()
                    .header("content-type", "application/websocket-events")
                    .body(full("OPEN\r\n"))
                    .unwrap()
            }
        }
    })
    .await;
    let proxy = proxy_with_upstream_key(&origin, UPSTREAM_SECRET).await;
    let events = |sig: Option<String>| {
        let mut req = Request::post(proxy.url("/ws-events"))
            .header("content-type", "application/websocket-events");
        if let Some(sig) = sig {
            req = req.header("grip-sig", sig);
        }
        req.body(full("OPEN\r\n")).unwrap()
    };
    let resp = send(events(Some(upstream_sig(UPSTREAM_SECRET, 3600)))).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(text(resp).await, "OPEN\r\n");
    assert_eq!(seen.lock().unwrap().len(), 1);

    let resp = send(events(Some(upstream_sig("another-secret", 3600)))).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(
        text(resp).await,
        "Client not allowed to send WebSocket events directly.\n"
    );
    assert_eq!(seen.lock().unwrap().len(), 1, "refused before the origin");
}

/// Opens a WebSocket through `proxy` with `Grip-Sig: sig`; returns the client and the
/// `Sec-WebSocket-Extensions` of its `101`.
async fn connect_signed(proxy: &Proxy, sig: &str) -> (Client, Option<String>) {
    let mut req = format!("ws://{}/ws", proxy.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("grip-sig", sig.parse().unwrap());
    let (ws, resp) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("handshake within 10 s")
        .expect("handshake accepted");
    let ext = resp
        .headers()
        .get("sec-websocket-extensions")
        .map(|v| v.to_str().unwrap().to_string());
    (ws, ext)
}

#[tokio::test]
async fn an_upstream_proxy_gets_the_grip_websocket_as_the_origin_speaks_it() {
    let mut origin = WsOrigin::start(Some("grip; message-prefix=\"m:\"")).await;
    let proxy = Proxy::start(&format!("* {}\n", origin.target()), |c| {
        c.grip.upstream_key = Some(UPSTREAM_SECRET.into());
        quiet(c);
    })
    .await;
    let subscribe = r#"c:{"type":"subscribe","channel":"room"}"#;

    // From the upstream proxy: the extension is passed up, the messages relayed as they are.
    let sig = upstream_sig(UPSTREAM_SECRET, 3600);
    let (mut upstream, ext) = connect_signed(&proxy, &sig).await;
    assert_eq!(ext.as_deref(), Some("grip; message-prefix=\"m:\""));
    let (headers, mut ws) = origin.next().await;
    assert_eq!(headers["grip-sig"], sig.as_str());
    assert_eq!(headers["sec-websocket-extensions"], "grip");
    ws.send(Message::text(subscribe)).await.unwrap();
    ws.send(Message::text("m:hello")).await.unwrap();
    assert_eq!(recv_text(&mut upstream).await, subscribe);
    assert_eq!(recv_text(&mut upstream).await, "m:hello");
    assert_eq!(proxy.app.hub.subscribers("room"), 0);

    // From anyone else: Holdfast does the GRIP work, as always.
    let (mut client, ext) = connect_signed(&proxy, &upstream_sig("another-secret", 3600)).await;
    assert_eq!(ext, None);
    let (headers, mut ws) = origin.next().await;
    assert_ne!(headers["grip-sig"], sig.as_str());
    ws.send(Message::text(subscribe)).await.unwrap();
    ws.send(Message::text("m:hello")).await.unwrap();
    assert_eq!(recv_text(&mut client).await, "hello");
    proxy.wait_subscribers("room", 1).await;
}

#[tokio::test]
async fn an_upstream_proxy_gets_a_websocket_over_http_origins_messages_as_they_are() {
    use grip::wsevents::{encode_events, parse_events, Event, EventKind};

    let subscribe = r#"c:{"type":"subscribe","channel":"woh"}"#;
    let origin = Origin::start(move |req: Request<hyper::body::Incoming>| async move {
        use http_body_util::BodyExt;
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let mut out = Vec::new();
        if parse_events(&body).unwrap()[0].kind == EventKind::Open {
            out.push(Event::new(EventKind::Open));
            out.push(Event::with_content(EventKind::Text, subscribe.to_string()));
            out.push(Event::with_content(EventKind::Text, "m:hi".to_string()));
        }
        let mut encoded = Vec::new();
        encode_events(&out, &mut encoded);
        Response::builder()
            .header("content-type", "application/websocket-events")
            .header("sec-websocket-extensions", "grip")
            .body(full(encoded))
            .unwrap()
    })
    .await;
    let proxy = Proxy::start(&format!("* {},over_http\n", origin.target()), |c| {
        c.grip.upstream_key = Some(UPSTREAM_SECRET.into());
        quiet(c);
    })
    .await;

    let (mut upstream, ext) = connect_signed(&proxy, &upstream_sig(UPSTREAM_SECRET, 3600)).await;
    assert_eq!(ext.as_deref(), Some("grip"));
    assert_eq!(recv_text(&mut upstream).await, subscribe);
    assert_eq!(recv_text(&mut upstream).await, "m:hi");
    assert_eq!(proxy.app.hub.subscribers("woh"), 0);

    let (mut client, ext) = connect_signed(&proxy, "not.a.token").await;
    assert_eq!(ext, None);
    assert_eq!(recv_text(&mut client).await, "hi");
    proxy.wait_subscribers("woh", 1).await;
}
