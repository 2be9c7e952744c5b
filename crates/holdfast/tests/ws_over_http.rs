//! WebSocket-over-HTTP: a WebSocket client held by Holdfast, its events posted to an origin
//! written in the test as `application/websocket-events`, and the origin's answers and
//! publishes reaching the client.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::SinkExt;
use grip::wsevents::{encode_events, parse_events, Event, EventKind};
use http::HeaderMap;
use http_body_util::BodyExt;
use hyper::{Request, Response};
use serde_json::json;
use support::ws::*;
use support::*;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

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
    // The origin hears of it as Pushpin 1.36 tells it: a CLOSE with no code, not DISCONNECT.
    let last = origin.next_with(EventKind::Close).await;
    assert_eq!(last.events, [Event::new(EventKind::Close)]);
    assert_eq!(last.headers["connection-id"], open.headers["connection-id"]);
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
    let text = || String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    eventually(
        WAIT,
        || format!("no log line with {needles:?} in:\n{}", text()),
        || async {
            text()
                .lines()
                .any(|l| needles.iter().all(|n| l.contains(n)))
        },
    )
    .await;
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

#[tokio::test]
async fn woh_a_keep_alive_interval_too_large_for_the_clock_is_ignored_with_a_warning() {
    let logs = logs();
    const HUGE: &str = "18446744073709551615";
    let chat = chat_script();
    let script: Script = Arc::new(move |h, events| {
        let mut resp = chat(h, events);
        if events.first().map(|e| e.kind) == Some(EventKind::Open) {
            resp.headers_mut()
                .insert("keep-alive-interval", HUGE.parse().unwrap());
        }
        resp
    });
    let mut origin = WohOrigin::start(script).await;
    let proxy = woh_proxy(&origin).await;
    let mut client = connect(&proxy, "/").await;
    origin.next().await;
    wait_log(&logs, &["Keep-Alive-Interval", HUGE]).await;
    client.send(Message::text("hello")).await.unwrap();
    assert_eq!(origin.next().await.events, [text_event("hello")]);
    assert_eq!(recv_text(&mut client).await, "you said hello");
}

#[tokio::test]
async fn woh_a_subscribe_over_the_channel_limit_closes_the_connection() {
    let script: Script = Arc::new(|_h, events| {
        if events.first().map(|e| e.kind) == Some(EventKind::Open) {
            let mut out = vec![Event::new(EventKind::Open)];
            for c in ["x", "y", "z"] {
                out.push(text_event(&format!(
                    r#"c:{{"type":"subscribe","channel":"{c}"}}"#
                )));
            }
            return events_response(&out, &[("sec-websocket-extensions", "grip")]);
        }
        events_response(&[text_event("m:ok")], &[])
    });
    let mut origin = WohOrigin::start(script).await;
    let proxy = Proxy::start(&format!("* {},over_http\n", origin.target()), |c| {
        c.limits.max_channels_per_connection = 2
    })
    .await;
    let mut client = connect(&proxy, "/").await;
    origin.next().await;
    assert_eq!(
        recv_close(&mut client).await,
        (1011, "bad control message from origin".to_string())
    );
    proxy.wait_subscribers("x", 0).await;
}

async fn next_events(seen: &mut mpsc::Receiver<Vec<Event>>) -> Vec<Event> {
    tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .expect("origin request in time")
        .unwrap()
}

/// Sends `first`; while the origin holds its answer, queues `second`, `third` and a ping (the
/// pong says Holdfast has read them all), then lets the origin answer. Returns the events of
/// each request that followed, until the ping was delivered.
async fn events_queued_behind_a_slow_answer(one_event: bool) -> Vec<Vec<Event>> {
    let gate = Arc::new(tokio::sync::Notify::new());
    let (tx, mut seen) = mpsc::channel::<Vec<Event>>(16);
    let held = gate.clone();
    let origin = Origin::start(move |req: Request<hyper::body::Incoming>| {
        let (tx, held) = (tx.clone(), held.clone());
        async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let events = parse_events(&body).unwrap();
            let first = events.contains(&text_event("first"));
            let open = events.first().map(|e| e.kind) == Some(EventKind::Open);
            tx.send(events).await.unwrap();
            if first {
                held.notified().await;
            }
            let answer = if open {
                vec![Event::new(EventKind::Open)]
            } else {
                Vec::new()
            };
            events_response(&answer, &[])
        }
    })
    .await;
    let param = if one_event { ",one_event" } else { "" };
    let proxy = Proxy::start(&format!("* {},over_http{param}\n", origin.target()), |_| {}).await;
    let mut client = connect(&proxy, "/").await;
    assert_eq!(next_events(&mut seen).await, [Event::new(EventKind::Open)]);
    client.send(Message::text("first")).await.unwrap();
    assert_eq!(next_events(&mut seen).await, [text_event("first")]);
    client.send(Message::text("second")).await.unwrap();
    client.send(Message::text("third")).await.unwrap();
    client
        .send(Message::Ping(b"p".to_vec().into()))
        .await
        .unwrap();
    while !matches!(recv(&mut client).await, Message::Pong(_)) {}
    gate.notify_one();
    let ping = Event::with_content(EventKind::Ping, "p");
    let mut requests = Vec::new();
    while !requests.iter().flatten().any(|e: &Event| *e == ping) {
        requests.push(next_events(&mut seen).await);
    }
    requests
}

#[tokio::test]
async fn woh_one_event_sends_each_queued_event_in_its_own_request() {
    let ping = Event::with_content(EventKind::Ping, "p");
    // Without it, what queued up while a request was out goes in one request.
    assert_eq!(
        events_queued_behind_a_slow_answer(false).await,
        [vec![
            text_event("second"),
            text_event("third"),
            ping.clone()
        ]]
    );
    assert_eq!(
        events_queued_behind_a_slow_answer(true).await,
        [
            vec![text_event("second")],
            vec![text_event("third")],
            vec![ping]
        ]
    );
}
