//! Bayeux endpoints (route option `bayeux=`): the protocol as a Bayeux client sees it over
//! long-polling and WebSocket, subscriptions authorised by the origin, publishes from clients
//! forwarded to it, `json-object` items delivered, wildcards, history and the session queue.

mod support;

use std::sync::{Arc, Mutex};

use futures_util::SinkExt;
use http::Request;
use http_body_util::BodyExt;
use hyper::Response;
use serde_json::{json, Value};
use support::ws::*;
use support::*;
use tokio_tungstenite::tungstenite::Message;

/// What the origin was asked, in order.
type Asked = Arc<Mutex<Vec<Value>>>;

/// An origin that authorises Bayeux messages: a handshake whose `ext.token` is `bad` is refused
/// (`403`); a subscribe is allowed (`Grip-Channel` naming it, with `ext.prevId` as its
/// `prev-id`) unless a channel starts with `/private`; a publish to `/refused` gets `403`.
async fn auth_origin() -> (Origin, Asked) {
    let asked: Asked = Arc::default();
    let log = asked.clone();
    let origin = Origin::start(move |req: Request<hyper::body::Incoming>| {
        let log = log.clone();
        async move {
            assert_eq!(req.method(), "POST");
            assert_eq!(req.headers()["content-type"], "application/json");
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let m: Value = serde_json::from_slice(&body).unwrap();
            log.lock().unwrap().push(m.clone());
            let status = |s: u16| Response::builder().status(s).body(full("")).unwrap();
            match m["channel"].as_str().unwrap() {
                "/meta/handshake" if m["ext"]["token"] == "bad" => status(403),
                "/meta/handshake" => status(200),
                "/meta/subscribe" => {
                    let subs: Vec<String> = match &m["subscription"] {
                        Value::String(s) => vec![s.clone()],
                        Value::Array(a) => a.iter().map(|s| s.as_str().unwrap().into()).collect(),
                        _ => unreachable!(),
                    };
                    let allowed: Vec<String> = subs
                        .into_iter()
                        .filter(|s| !s.starts_with("/private"))
                        .map(|s| match m["ext"]["prevId"].as_str() {
                            Some(p) => format!("{s}; prev-id={p}"),
                            None => s,
                        })
                        .collect();
                    let mut r = Response::builder().status(200);
                    if !allowed.is_empty() {
                        r = r.header("Grip-Channel", allowed.join(", "));
                    }
                    r.body(full("")).unwrap()
                }
                "/refused" => status(403),
                _ => status(200),
            }
        }
    })
    .await;
    (origin, asked)
}

async fn bayeux_proxy(origin: &Origin, tweak: impl FnOnce(&mut holdfast::Config)) -> Proxy {
    Proxy::start(&format!("*,bayeux=/bayeux {}\n", origin.target()), tweak).await
}

/// POSTs a batch to the endpoint: the status and the replies.
async fn post(proxy: &Proxy, body: &str) -> (u16, Vec<Value>) {
    let req = Request::post(proxy.url("/bayeux"))
        .header("content-type", "application/json")
        .body(full(body.to_string()))
        .unwrap();
    let resp = send(req).await;
    let status = resp.status().as_u16();
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body = tokio::time::timeout(WAIT, text(resp))
        .await
        .expect("answer within 10 s");
    (status, serde_json::from_str(&body).unwrap())
}

async fn batch(proxy: &Proxy, messages: Value) -> Vec<Value> {
    let (status, replies) = post(proxy, &messages.to_string()).await;
    assert_eq!(status, 200, "{replies:?}");
    replies
}

async fn handshake(proxy: &Proxy) -> String {
    let r = batch(
        proxy,
        json!([{"channel": "/meta/handshake", "version": "1.0", "id": "1",
                "supportedConnectionTypes": ["long-polling", "websocket"]}]),
    )
    .await;
    assert_eq!(r[0]["successful"], true, "{r:?}");
    r[0]["clientId"].as_str().unwrap().to_string()
}

async fn subscribe(proxy: &Proxy, client: &str, channel: Value) -> Value {
    batch(
        proxy,
        json!([{"channel": "/meta/subscribe", "clientId": client, "subscription": channel, "id": "s"}]),
    )
    .await
    .remove(0)
}

async fn connect(proxy: &Proxy, client: &str) -> Vec<Value> {
    batch(
        proxy,
        json!([{"channel": "/meta/connect", "clientId": client,
                "connectionType": "long-polling", "id": "c"}]),
    )
    .await
}

fn item(channel: &str, id: Option<&str>, data: Value) -> Value {
    let mut item = json!({"channel": channel, "formats": {"json-object": {"data": data}}});
    if let Some(id) = id {
        item["id"] = id.into();
    }
    item
}

#[tokio::test]
async fn handshake_subscribe_connect_and_delivery() {
    let (origin, asked) = auth_origin().await;
    let proxy = bayeux_proxy(&origin, |_| {}).await;

    let r = batch(
        &proxy,
        json!([{"channel": "/meta/handshake", "version": "1.0", "id": "1",
                "supportedConnectionTypes": ["long-polling"], "ext": {"token": "t"}}]),
    )
    .await;
    let h = &r[0];
    assert_eq!(h["channel"], "/meta/handshake");
    assert_eq!(h["successful"], true);
    assert_eq!(h["id"], "1");
    assert_eq!(h["version"], "1.0");
    assert_eq!(
        h["supportedConnectionTypes"],
        json!([
            "long-polling",
            "cross-origin-long-polling",
            "callback-polling",
            "websocket"
        ])
    );
    assert_eq!(
        h["advice"],
        json!({"reconnect": "retry", "interval": 0, "timeout": 30000})
    );
    let client = h["clientId"].as_str().unwrap().to_string();
    assert_eq!(client.len(), 32);
    // The origin saw the handshake as the client sent it, ext included.
    assert_eq!(asked.lock().unwrap()[0]["ext"]["token"], "t");

    let s = subscribe(&proxy, &client, json!("/chat/room")).await;
    assert_eq!(s["successful"], true, "{s:?}");
    assert_eq!(s["subscription"], "/chat/room");
    assert_eq!(s["clientId"], client.as_str());
    assert_eq!(asked.lock().unwrap()[1]["subscription"], "/chat/room");
    proxy.wait_subscribers("/chat/room", 1).await;

    // A connect with nothing queued is held until a publish arrives.
    let held = {
        let url = proxy.url("/bayeux");
        let client = client.clone();
        tokio::spawn(async move {
            let body = json!([{"channel": "/meta/connect", "clientId": client,
                               "connectionType": "long-polling", "id": "c1"}]);
            let req = Request::post(url)
                .header("content-type", "application/json")
                .body(full(body.to_string()))
                .unwrap();
            let text = text(send(req).await).await;
            serde_json::from_str::<Vec<Value>>(&text).unwrap()
        })
    };
    proxy
        .publish_items([item("/chat/room", Some("7"), json!({"text": "hello"}))])
        .await;
    let r = tokio::time::timeout(WAIT, held).await.unwrap().unwrap();
    assert_eq!(r[0]["channel"], "/meta/connect");
    assert_eq!(r[0]["successful"], true);
    assert_eq!(r[0]["id"], "c1");
    assert_eq!(r[0]["advice"]["reconnect"], "retry");
    assert_eq!(
        r[1],
        json!({"channel": "/chat/room", "data": {"text": "hello"}, "id": "7"})
    );
    assert_eq!(r.len(), 2);

    // Published while no connect was waiting: queued, and the next connect takes it at once.
    proxy
        .publish_items([
            item("/chat/room", None, json!([1, 2])),
            item("/chat/other", None, json!("not subscribed")),
        ])
        .await;
    let r = connect(&proxy, &client).await;
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(r[1], json!({"channel": "/chat/room", "data": [1, 2]}));

    // Unsubscribed: nothing more comes; disconnect ends the session.
    let r = batch(
        &proxy,
        json!([{"channel": "/meta/unsubscribe", "clientId": client, "subscription": "/chat/room"}]),
    )
    .await;
    assert_eq!(r[0]["successful"], true);
    proxy.wait_subscribers("/chat/room", 0).await;
    let r = batch(
        &proxy,
        json!([{"channel": "/meta/disconnect", "clientId": client, "id": "d"}]),
    )
    .await;
    assert_eq!(r[0]["successful"], true);
    assert_eq!(r[0]["id"], "d");
    eventually(
        WAIT,
        || "session still open".into(),
        || async { proxy.app.bayeux_sessions.is_empty() },
    )
    .await;
    let r = connect(&proxy, &client).await;
    assert_eq!(r[0]["successful"], false);
    assert_eq!(r[0]["error"], format!("402:{client}:Unknown client"));
}

#[tokio::test]
async fn refusals_and_errors() {
    let (origin, _) = auth_origin().await;
    let proxy = bayeux_proxy(&origin, |_| {}).await;

    let r = batch(
        &proxy,
        json!([{"channel": "/meta/handshake", "version": "1.0",
                "supportedConnectionTypes": ["long-polling"], "ext": {"token": "bad"}}]),
    )
    .await;
    assert_eq!(r[0]["successful"], false);
    assert_eq!(
        r[0]["error"],
        "403:403:Handshake refused by the application"
    );
    assert_eq!(r[0]["advice"]["reconnect"], "handshake");
    assert!(proxy.app.bayeux_sessions.is_empty());

    let r = batch(
        &proxy,
        json!([{"channel": "/meta/handshake", "version": "1.0",
                "supportedConnectionTypes": ["flash"]}]),
    )
    .await;
    assert_eq!(r[0]["error"], "301:flash:Connection types not supported");
    let r = batch(
        &proxy,
        json!({"channel": "/meta/handshake", "version": "1.0"}),
    )
    .await;
    assert_eq!(
        r[0]["error"],
        "402:supportedConnectionTypes:Missing required parameter"
    );

    let client = handshake(&proxy).await;
    // Refused by the origin (no Grip-Channel naming it); a meta channel; not a channel.
    let s = subscribe(&proxy, &client, json!("/private/x")).await;
    assert_eq!(s["successful"], false);
    assert_eq!(s["error"], "403:/private/x:Forbidden channel");
    assert_eq!(s["subscription"], "/private/x");
    let s = subscribe(&proxy, &client, json!(["/ok", "/private/y"])).await;
    assert_eq!(s["error"], "403:/private/y:Forbidden channel");
    assert_eq!(proxy.app.hub.subscribers("/ok"), 0);
    let s = subscribe(&proxy, &client, json!("/meta/connect")).await;
    assert_eq!(s["error"], "403:/meta/connect:Forbidden channel");
    let s = subscribe(&proxy, &client, json!("no/slash")).await;
    assert_eq!(s["error"], "405:no/slash:Invalid channel");

    // An unknown client, wherever it is named, is sent back to the handshake.
    for channel in [
        "/meta/connect",
        "/meta/subscribe",
        "/meta/disconnect",
        "/chat",
    ] {
        let r = batch(
            &proxy,
            json!([{"channel": channel, "clientId": "nobody", "connectionType": "long-polling",
                    "subscription": "/a", "data": 1}]),
        )
        .await;
        assert_eq!(r[0]["error"], "402:nobody:Unknown client", "{channel}");
        assert_eq!(r[0]["advice"]["reconnect"], "handshake", "{channel}");
    }

    // Messages that are not Bayeux.
    let (status, r) = post(&proxy, "[{\"channel\":").await;
    assert_eq!(status, 400);
    assert_eq!(r[0]["successful"], false);
    assert!(
        r[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("400::Bad request: messages are not JSON"),
        "{r:?}"
    );
    let (status, r) = post(&proxy, "[1]").await;
    assert_eq!(status, 400);
    assert_eq!(
        r[0]["error"],
        "400::Bad request: message 1 is not an object: a number"
    );
    let r = batch(&proxy, json!([{"id": "x"}, {"channel": "/meta/nope"}])).await;
    assert_eq!(r[0]["error"], "402:channel:Missing required parameter");
    assert_eq!(r[0]["id"], "x");
    assert_eq!(r[1]["error"], "403:/meta/nope:Forbidden channel");
    let r = batch(
        &proxy,
        json!([{"channel": "/meta/connect", "clientId": client}]),
    )
    .await;
    assert_eq!(
        r[0]["error"],
        "402:connectionType:Missing required parameter"
    );

    // Too large.
    let big = format!("[{{\"channel\":\"/a\",\"data\":\"{}\"}}]", "x".repeat(2000));
    let proxy2 = bayeux_proxy(&origin, |c| c.bayeux.max_request_bytes = 1000).await;
    let (status, r) = post(&proxy2, &big).await;
    assert_eq!(status, 413);
    assert_eq!(
        r[0]["error"],
        "400::Bad request: the request is larger than bayeux.max_request_bytes (1000)"
    );
}

#[tokio::test]
async fn client_publishes_go_to_the_origin() {
    let (origin, asked) = auth_origin().await;
    let proxy = bayeux_proxy(&origin, |_| {}).await;
    let client = handshake(&proxy).await;
    let r = batch(
        &proxy,
        json!([{"channel": "/chat/room", "clientId": client, "data": {"text": "hi"}, "id": "p1"},
               {"channel": "/refused", "clientId": client, "data": 1, "id": "p2"},
               {"channel": "/chat/*", "data": 1},
               {"channel": "/chat/room"}]),
    )
    .await;
    assert_eq!(
        r[0],
        json!({"channel": "/chat/room", "clientId": client, "id": "p1", "successful": true})
    );
    assert_eq!(r[1]["error"], "403:/refused,403:Publish refused");
    assert_eq!(r[2]["error"], "405:/chat/*:Invalid channel");
    assert_eq!(r[3]["error"], "402:data:Missing required parameter");
    let asked = asked.lock().unwrap();
    let published: Vec<&Value> = asked
        .iter()
        .filter(|m| !m["channel"].as_str().unwrap().starts_with("/meta/"))
        .collect();
    assert_eq!(published.len(), 2);
    assert_eq!(published[0]["data"], json!({"text": "hi"}));
    assert_eq!(published[0]["clientId"], client.as_str());
}

#[tokio::test]
async fn wildcards_match_one_or_many_segments() {
    let (origin, _) = auth_origin().await;
    let proxy = bayeux_proxy(&origin, |_| {}).await;
    let client = handshake(&proxy).await;
    let s = subscribe(&proxy, &client, json!(["/chat/*", "/news/**"])).await;
    assert_eq!(s["successful"], true, "{s:?}");
    proxy.wait_subscribers("/chat/*", 1).await;
    proxy
        .publish_items([
            item("/chat/a", None, json!(1)),
            item("/chat/a/b", None, json!(2)),
            item("/news/x/y", Some("n1"), json!(3)),
            item("/news", None, json!(4)),
        ])
        .await;
    let r = connect(&proxy, &client).await;
    assert_eq!(
        &r[1..],
        &[
            json!({"channel": "/chat/a", "data": 1}),
            json!({"channel": "/news/x/y", "data": 3, "id": "n1"}),
        ]
    );
}

#[tokio::test]
async fn history_resumes_after_prev_id_and_the_queue_drops_oldest() {
    let (origin, _) = auth_origin().await;
    let proxy = bayeux_proxy(&origin, |c| c.bayeux.max_queued = 2).await;
    proxy
        .publish_items([
            item("/h", Some("1"), json!("one")),
            item("/h", Some("2"), json!("two")),
        ])
        .await;
    let client = handshake(&proxy).await;
    // The origin names the channel with prev-id=1: what came after it is replayed.
    let r = batch(
        &proxy,
        json!([{"channel": "/meta/subscribe", "clientId": client, "subscription": "/h",
                "ext": {"prevId": "1"}}]),
    )
    .await;
    assert_eq!(r[0]["successful"], true);
    proxy
        .publish_items([
            item("/h", Some("3"), json!("three")),
            item("/h", Some("4"), json!("four")),
        ])
        .await;
    // 2, 3, 4 for a queue of 2: the oldest went.
    let r = connect(&proxy, &client).await;
    let ids: Vec<&str> = r[1..].iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["3", "4"]);
    assert_eq!(
        proxy
            .app
            .bayeux_dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn a_held_connect_ends_at_the_advice_timeout() {
    let (origin, _) = auth_origin().await;
    let proxy = bayeux_proxy(&origin, |c| c.bayeux.timeout_secs = 1).await;
    let client = handshake(&proxy).await;
    let r = connect(&proxy, &client).await;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["successful"], true);
    assert_eq!(r[0]["advice"]["timeout"], 1000);
}

#[tokio::test]
async fn callback_polling_and_cross_origin_forms() {
    let (origin, _) = auth_origin().await;
    let proxy = bayeux_proxy(&origin, |_| {}).await;
    let message = json!([{"channel": "/meta/handshake", "version": "1.0",
                          "supportedConnectionTypes": ["callback-polling"]}]);
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("message", &message.to_string())
        .append_pair("jsonp", "__jsonp1__")
        .finish();
    let resp = get(&proxy.url(&format!("/bayeux?{q}"))).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let body = text(resp).await;
    let inner = body
        .strip_prefix("/**/__jsonp1__(")
        .and_then(|b| b.strip_suffix(");"))
        .unwrap_or_else(|| panic!("{body}"));
    let r: Vec<Value> = serde_json::from_str(inner).unwrap();
    assert_eq!(r[0]["successful"], true);

    // Faye's cross-origin transport: a form body sent as text/plain, answered with CORS.
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("message", &message.to_string())
        .finish();
    let req = Request::post(proxy.url("/bayeux"))
        .header("content-type", "text/plain;charset=UTF-8")
        .header("origin", "http://page.example")
        .body(full(body))
        .unwrap();
    let resp = send(req).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "http://page.example"
    );
    assert_eq!(resp.headers()["access-control-allow-credentials"], "true");
    let r: Vec<Value> = serde_json::from_str(&text(resp).await).unwrap();
    assert_eq!(r[0]["successful"], true);
}

#[tokio::test]
async fn websocket_connection_type() {
    let (origin, _) = auth_origin().await;
    let proxy = bayeux_proxy(&origin, |_| {}).await;
    let client = handshake(&proxy).await;
    let mut ws = connect_ws(&proxy).await;
    let send = |m: Value| Message::text(m.to_string());
    ws.send(send(
        json!([{"channel": "/meta/subscribe", "clientId": client,
                         "subscription": "/ws/a", "id": "s"}]),
    ))
    .await
    .unwrap();
    let r: Vec<Value> = serde_json::from_str(&recv_text(&mut ws).await).unwrap();
    assert_eq!(r[0]["successful"], true);
    assert_eq!(r[0]["id"], "s");
    ws.send(send(
        json!([{"channel": "/meta/connect", "clientId": client,
                         "connectionType": "websocket", "id": "c"}]),
    ))
    .await
    .unwrap();
    proxy.wait_subscribers("/ws/a", 1).await;
    proxy
        .publish_items([item("/ws/a", None, json!({"n": 1}))])
        .await;
    let r: Vec<Value> = serde_json::from_str(&recv_text(&mut ws).await).unwrap();
    assert_eq!(r[0]["channel"], "/meta/connect");
    assert_eq!(r[0]["id"], "c");
    assert_eq!(r[1], json!({"channel": "/ws/a", "data": {"n": 1}}));

    // A frame that is not a batch gets an error reply, and the socket stays usable.
    ws.send(Message::text("nope")).await.unwrap();
    let r: Vec<Value> = serde_json::from_str(&recv_text(&mut ws).await).unwrap();
    assert!(r[0]["error"]
        .as_str()
        .unwrap()
        .starts_with("400::Bad request: messages are not JSON"));
    ws.send(send(
        json!([{"channel": "/meta/connect", "clientId": "gone",
                         "connectionType": "websocket"}]),
    ))
    .await
    .unwrap();
    let r: Vec<Value> = serde_json::from_str(&recv_text(&mut ws).await).unwrap();
    assert_eq!(r[0]["error"], "402:gone:Unknown client");
}

async fn connect_ws(proxy: &Proxy) -> Client {
    support::ws::connect(proxy, "/bayeux").await
}

#[tokio::test]
async fn a_connect_batched_with_advice_timeout_zero_is_answered_at_once() {
    let (origin, _) = auth_origin().await;
    let proxy = bayeux_proxy(&origin, |_| {}).await;
    let client = handshake(&proxy).await;
    // As Faye sends a connect batched with a subscribe.
    let r = batch(
        &proxy,
        json!([{"channel": "/meta/connect", "clientId": client, "connectionType": "long-polling",
                "advice": {"timeout": 0}, "id": "c"},
               {"channel": "/meta/subscribe", "clientId": client, "subscription": "/x", "id": "s"}]),
    )
    .await;
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(r[0]["id"], "s");
    assert_eq!(r[0]["successful"], true);
    assert_eq!(r[1]["id"], "c");
    assert_eq!(r[1]["successful"], true);
}
