//! The status page on the publish listener: `/status`, `/status.json` and the live
//! `/status/events` stream, as an operator's browser or script sees them — behind the publish
//! API's credentials, with numbers that follow real clients, publishes and origins, a bounded
//! number of streams, and streams that end at shutdown.

mod support;

use std::time::Duration;

use base64::Engine;
use hyper::body::Incoming;
use hyper::Request;
use serde_json::Value;

use support::ws::{connect, recv_text, ws_item};
use support::*;

const USER: &str = "admin";
const PASS: &str = "s3cret";

fn basic(user: &str, pass: &str) -> String {
    let creds = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    format!("Basic {creds}")
}

async fn get_as(url: &str, authorization: Option<&str>) -> hyper::Response<Incoming> {
    let mut req = Request::get(url);
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    send(req.body(full("")).unwrap()).await
}

async fn status_json(proxy: &Proxy) -> Value {
    let resp = get_as(&proxy.publish_url("/status.json"), Some(&basic(USER, PASS))).await;
    assert_eq!(resp.status(), 200);
    serde_json::from_str(&text(resp).await).unwrap()
}

/// A status stream being read: its events' JSON, one at a time.
struct Events {
    body: Incoming,
    buf: String,
}

impl Events {
    async fn open(proxy: &Proxy) -> Events {
        let resp = get_as(
            &proxy.publish_url("/status/events"),
            Some(&basic(USER, PASS)),
        )
        .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Events {
            body: resp.into_body(),
            buf: String::new(),
        }
    }

    /// The next event's snapshot; `None` when the stream ended.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let event: String = self.buf.drain(..end + 2).collect();
                let data = event
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .unwrap_or_else(|| panic!("an event without data: {event:?}"));
                return Some(serde_json::from_str(data).unwrap());
            }
            let chunk = next_chunk(&mut self.body).await?;
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// Reads events until one satisfies `want` (bounded: 20 events, one a second).
    async fn until(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let mut seen = Vec::new();
        for _ in 0..20 {
            let s = self.next().await.expect("the stream ended");
            if want(&s) {
                return s;
            }
            seen.push(s);
        }
        panic!(
            "no event with {what} in 20; the last: {:#}",
            seen.last().unwrap()
        );
    }
}

#[tokio::test]
async fn every_status_path_needs_the_publish_credentials() {
    let proxy = Proxy::start("* test\n", |c| {
        c.publish.basic = vec![format!("{USER}:{PASS}")];
        quiet(c);
    })
    .await;
    for path in [
        "/status",
        "/status/",
        "/status.json",
        "/status/events",
        "/status/status.js",
        "/status/status.css",
    ] {
        for auth in [None, Some(basic(USER, "wrong"))] {
            let resp = get_as(&proxy.publish_url(path), auth.as_deref()).await;
            assert_eq!(resp.status(), 401, "{path} with {auth:?}");
            assert!(resp.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Basic "));
        }
    }
    // A credential in the query is not one.
    let resp = get_as(&proxy.publish_url("/status.json?token=s3cret"), None).await;
    assert_eq!(resp.status(), 401);

    let ok = Some(basic(USER, PASS));
    let page = get_as(&proxy.publish_url("/status"), ok.as_deref()).await;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    let html = text(page).await;
    assert!(
        html.contains(r#"<script src="/status/status.js""#),
        "{html}"
    );
    let script = get_as(&proxy.publish_url("/status/status.js"), ok.as_deref()).await;
    assert_eq!(script.status(), 200);
    assert!(text(script)
        .await
        .contains("new EventSource(\"/status/events\")"));
    let snapshot = status_json(&proxy).await;
    assert_eq!(snapshot["instance"], proxy.app.instance.as_str());
    assert_eq!(snapshot["ready"], true);
    assert_eq!(snapshot["rates"], Value::Null, "one reading has no rates");
    assert_eq!(snapshot["cluster"], Value::Null);
    // The status paths answer GET only.
    let post = Request::post(proxy.publish_url("/status.json"))
        .header("authorization", basic(USER, PASS))
        .body(full(""))
        .unwrap();
    assert_eq!(send(post).await.status(), 404);
}

#[tokio::test]
async fn numbers_follow_clients_and_publishes() {
    let proxy = Proxy::start("* test\n", |c| {
        c.publish.basic = vec![format!("{USER}:{PASS}")];
        quiet(c);
    })
    .await;
    let mut events = Events::open(&proxy).await;
    let first = events.next().await.unwrap();
    assert_eq!(first["connections"]["held"]["stream"], 0);
    assert_eq!(first["totals"]["delivered"], 0);
    assert_eq!(first["busiest"], serde_json::json!([]));

    // A held stream, a long-poll and a WebSocket on channel `test`.
    let stream = get(&proxy.url("/stream")).await;
    assert_eq!(stream.status(), 200);
    let mut stream = stream.into_body();
    let url = proxy.url("/response");
    let long_poll = tokio::spawn(async move { text(get(&url).await).await });
    let mut ws = connect(&proxy, "/ws").await;
    proxy.wait_subscribers("test", 3).await;

    let held = events
        .until("all three clients held", |s| {
            s["subscriptions"]["total"] == 3
        })
        .await;
    let by = &held["connections"]["held"];
    assert_eq!(
        (
            &by["stream"],
            &by["long-poll"],
            &by["websocket"],
            &by["ws-over-http"]
        ),
        (&1.into(), &1.into(), &1.into(), &0.into()),
        "{held:#}"
    );
    assert_eq!(held["subscriptions"]["stream"], 1);
    assert_eq!(held["subscriptions"]["long-poll"], 1);
    assert_eq!(held["subscriptions"]["websocket"], 1);
    assert!(held["connections"]["clients"].as_u64().unwrap() >= 3);
    assert_eq!(
        held["busiest"],
        serde_json::json!([{ "channel": "test", "subscribers": 3 }])
    );

    // One item in every format: three deliveries.
    let mut item = stream_item("test", None, None, "hello\n");
    item["formats"]["http-response"] = serde_json::json!({ "body": "hello\n" });
    item["formats"]["ws-message"] =
        ws_item("test", "hello", false)["formats"]["ws-message"].clone();
    let publish = Request::post(proxy.publish_url("/publish/"))
        .header("authorization", basic(USER, PASS))
        .header("content-type", "application/json")
        .body(full(serde_json::json!({ "items": [item] }).to_string()))
        .unwrap();
    assert_eq!(send(publish).await.status(), 200);
    assert!(read_until(&mut stream, "hello\n")
        .await
        .ends_with("hello\n"));
    assert_eq!(long_poll.await.unwrap(), "hello\n");
    assert_eq!(recv_text(&mut ws).await, "hello");

    let after = events
        .until("the three deliveries", |s| s["totals"]["delivered"] == 3)
        .await;
    assert_eq!(after["totals"]["published"], 1);
    assert_eq!(after["totals"]["received"], 1);
    // The first event that shows them has them in its rates, since the one before did not.
    assert!(
        after["rates"]["delivered"].as_f64().unwrap() > 0.0,
        "{after:#}"
    );
    assert!(
        after["rates"]["published"].as_f64().unwrap() > 0.0,
        "{after:#}"
    );

    // The long-poll was answered; the stream and the WebSocket go.
    drop(stream);
    drop(ws);
    let gone = events
        .until("every client gone", |s| {
            s["connections"]["held"]
                .as_object()
                .unwrap()
                .values()
                .all(|n| n == 0)
        })
        .await;
    assert_eq!(gone["subscriptions"]["total"], 0);
}

#[tokio::test]
async fn origins_show_their_answers_and_failures() {
    let origin = grip_origin(503, &[], "busy").await;
    let dead = dead_port().await;
    let routes = format!("*,path_beg=/dead 127.0.0.1:{dead}\n* {}\n", origin.target());
    let proxy = Proxy::start(&routes, |c| {
        c.publish.basic = vec![format!("{USER}:{PASS}")];
        quiet(c);
    })
    .await;
    assert_eq!(get(&proxy.url("/a")).await.status(), 503);
    assert_eq!(get(&proxy.url("/a")).await.status(), 503);
    assert_eq!(get(&proxy.url("/dead/x")).await.status(), 502);
    let snapshot = status_json(&proxy).await;
    let origins = snapshot["origins"].as_array().unwrap();
    let find = |target: &str| {
        origins
            .iter()
            .find(|o| o["target"] == target)
            .unwrap_or_else(|| panic!("no {target} among {origins:#?}"))
            .clone()
    };
    let busy = find(&origin.target());
    assert_eq!(
        (
            &busy["recent_requests"],
            &busy["recent_errors"],
            &busy["last_status"]
        ),
        (&2.into(), &2.into(), &503.into())
    );
    assert_eq!(busy["last_error"], "answered 503");
    let down = find(&format!("127.0.0.1:{dead}"));
    assert_eq!((&down["requests"], &down["errors"]), (&1.into(), &1.into()));
    assert_eq!(down["last_status"], Value::Null);
    let why = down["last_error"].as_str().unwrap();
    assert!(why.starts_with("connect: "), "{why}");
}

#[tokio::test]
async fn streams_are_capped_and_a_closed_one_frees_its_place() {
    let proxy = Proxy::start("* test\n", |c| {
        c.publish.basic = vec![format!("{USER}:{PASS}")];
        c.publish.max_status_streams = 1;
        quiet(c);
    })
    .await;
    let mut first = Events::open(&proxy).await;
    first.next().await.unwrap();
    let refused = get_as(
        &proxy.publish_url("/status/events"),
        Some(&basic(USER, PASS)),
    )
    .await;
    assert_eq!(refused.status(), 503);
    assert_eq!(
        text(refused).await,
        "Too many status streams open (publish.max_status_streams = 1).\n"
    );
    // /status.json is not a stream and is still served.
    status_json(&proxy).await;
    drop(first);
    // The server notices the closed stream at its next write, a second later at most.
    let url = proxy.publish_url("/status/events");
    eventually(
        Duration::from_secs(10),
        || "a new stream still refused after the first was closed".to_string(),
        || async { get_as(&url, Some(&basic(USER, PASS))).await.status() == 200 },
    )
    .await;
}

#[tokio::test]
async fn a_stream_ends_when_shutdown_begins() {
    let mut proxy = Proxy::start("* test\n", |c| {
        c.publish.basic = vec![format!("{USER}:{PASS}")];
        quiet(c);
    })
    .await;
    let mut events = Events::open(&proxy).await;
    events.next().await.unwrap();
    proxy.signal_shutdown();
    // Bounded: `next_chunk` fails after 10 s without a chunk, and a snapshot comes every second.
    let mut more = 0;
    while events.next().await.is_some() {
        more += 1;
        assert!(more < 10, "the stream went on after shutdown began");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_open_publish_api_is_warned_about_on_the_page() {
    // Closed by default: loopback, or authenticated.
    let proxy = Proxy::start("* test\n", |c| {
        c.publish.basic = vec![format!("{USER}:{PASS}")]
    })
    .await;
    assert_eq!(status_json(&proxy).await["warnings"], serde_json::json!([]));
    // Open to every address with no authentication: the page says so.
    let proxy = Proxy::start("* test\n", |c| {
        c.server.publish_listen = "0.0.0.0:0".parse().unwrap();
        c.publish.allow_unauthenticated = true;
    })
    .await;
    let url = format!("http://127.0.0.1:{}/status.json", proxy.publish.port());
    let snapshot: Value = serde_json::from_str(&text(get(&url).await).await).unwrap();
    let warnings = snapshot["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{snapshot}");
    assert!(
        warnings[0].as_str().unwrap().contains("no authentication"),
        "{warnings:?}"
    );
}
