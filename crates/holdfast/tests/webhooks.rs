//! Webhook subscribers end to end: the `/webhooks` control API, deliveries to a real HTTP
//! receiver with the signature checked, retries, the bounded queue, the store across a restart,
//! redirects, and the outbound policy refusing loopback (by name and by address) unless
//! allow-listed.

mod support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::{Request, Response};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

use holdfast::Config;
use support::*;

const WAIT: Duration = Duration::from_secs(10);

/// One request the receiver got.
#[derive(Debug)]
struct Got {
    method: String,
    path: String,
    headers: hyper::HeaderMap,
    body: bytes::Bytes,
}

/// A webhook receiver on 127.0.0.1: records every request and answers with the next status of
/// its script (200 once the script is used up).
struct Receiver {
    origin: Origin,
    got: mpsc::Receiver<Got>,
    script: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let (tx, got) = mpsc::channel(1000);
        let script: Arc<Mutex<VecDeque<u16>>> = Arc::default();
        let answers = script.clone();
        let origin = Origin::start(move |req: Request<hyper::body::Incoming>| {
            let tx = tx.clone();
            let status = answers.lock().unwrap().pop_front().unwrap_or(200);
            async move {
                let (head, body) = req.into_parts();
                let body = body.collect().await.unwrap().to_bytes();
                let _ = tx
                    .send(Got {
                        method: head.method.to_string(),
                        path: head.uri.path().to_string(),
                        headers: head.headers,
                        body,
                    })
                    .await;
                let mut resp = Response::builder().status(status);
                if status == 302 {
                    resp = resp.header("location", "/elsewhere");
                }
                resp.body(full("ok")).unwrap()
            }
        })
        .await;
        Receiver {
            origin,
            got,
            script,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.origin.addr.port())
    }

    async fn next(&mut self) -> Got {
        tokio::time::timeout(WAIT, self.got.recv())
            .await
            .expect("no webhook delivery in time")
            .unwrap()
    }
}

fn allow_loopback(c: &mut Config) {
    c.outbound.allow = vec!["127.0.0.0/8".to_string()];
    c.grip.sig_key = "hook-secret".to_string();
    c.webhooks.retry_min_ms = 20;
    c.webhooks.retry_max_ms = 100;
}

async fn api(proxy: &Proxy, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
    let req = Request::builder()
        .method(method)
        .uri(proxy.publish_url(path))
        .header("content-type", "application/json")
        .body(full(body.map(|b| b.to_string()).unwrap_or_default()))
        .unwrap();
    let resp = send(req).await;
    let status = resp.status().as_u16();
    (status, text(resp).await)
}

async fn register(proxy: &Proxy, channel: &str, url: &str) -> Value {
    let (status, body) = api(
        proxy,
        "POST",
        "/webhooks",
        Some(json!({"channel": channel, "url": url})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn inspect(proxy: &Proxy, id: &str) -> Value {
    let (status, body) = api(proxy, "GET", &format!("/webhooks/{id}"), None).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn wait_for(proxy: &Proxy, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let view = inspect(proxy, id).await;
        if check(&view) {
            return view;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {view}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn metrics(proxy: &Proxy) -> String {
    text(get(&proxy.publish_url("/metrics")).await).await
}

fn verify(got: &Got, key: &[u8]) -> Value {
    let token = got.headers["holdfast-signature"].to_str().unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_issuer(&["holdfast"]);
    let claims = jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(key),
        &validation,
    )
    .expect("the signature verifies")
    .claims;
    let digest = ring::digest::digest(&ring::digest::SHA256, &got.body);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(claims["body_sha256"], hex.as_str(), "the body hash claim");
    claims
}

#[tokio::test]
async fn the_control_api_registers_lists_inspects_and_deletes() {
    let proxy = Proxy::start("* test\n", allow_loopback).await;
    let hook = register(&proxy, "news", "http://127.0.0.1:9/a").await;
    let id = hook["id"].as_str().unwrap();
    assert_eq!(hook["channel"], "news");
    assert_eq!(hook["delivered"], 0);
    register(&proxy, "other", "http://127.0.0.1:9/b").await;
    // The same pair again is the same subscriber.
    let (status, body) = api(
        &proxy,
        "POST",
        "/webhooks/",
        Some(json!({"channel": "news", "url": "http://127.0.0.1:9/a"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(id), "{body}");

    let (_, list) = api(&proxy, "GET", "/webhooks?channel=news", None).await;
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 1, "{list}");
    let (_, all) = api(&proxy, "GET", "/webhooks", None).await;
    assert_eq!(
        serde_json::from_str::<Value>(&all).unwrap()["webhooks"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(inspect(&proxy, id).await["url"], "http://127.0.0.1:9/a");

    let (status, _) = api(&proxy, "DELETE", &format!("/webhooks/{id}"), None).await;
    assert_eq!(status, 204);
    let (status, body) = api(&proxy, "GET", &format!("/webhooks/{id}"), None).await;
    assert_eq!(
        (status, body),
        (404, format!("No webhook subscriber with id \"{id}\".\n"))
    );
    let (status, _) = api(&proxy, "DELETE", &format!("/webhooks/{id}"), None).await;
    assert_eq!(status, 404);
    let (status, _) = api(&proxy, "PUT", "/webhooks", None).await;
    assert_eq!(status, 405);

    for (body, want) in [
        (json!({"url": "http://x.example/"}), "Body does not contain 'channel'.\n"),
        (json!({"channel": "c", "url": 5}), "'url' is not a string.\n"),
        (
            json!({"channel": "c", "url": "ftp://x.example/"}),
            "'url': \"ftp://x.example/\" is not an http or https URL\n",
        ),
        (
            json!({"channel": "c", "url": "http://x.example/", "secret": 1}),
            "Unknown field 'secret'; a registration has 'channel' and 'url'.\n",
        ),
        (
            json!({"channel": "c", "url": "http://169.254.169.254/latest"}),
            "'url': \"http://169.254.169.254/latest\" is a link_local address, which outbound.allow does not list\n",
        ),
    ] {
        let (status, text) = api(&proxy, "POST", "/webhooks", Some(body)).await;
        assert_eq!((status, text.as_str()), (400, want));
    }
    let (status, text) = api(
        &proxy,
        "POST",
        "/webhooks",
        Some(json!({"channel": "a\tb", "url": "http://x.example/"})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(text.starts_with("'channel': "), "{text}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_control_api_uses_the_publish_apis_credentials() {
    let proxy = Proxy::start("* test\n", |c| {
        c.publish.token = vec!["let-me-in".to_string()];
    })
    .await;
    let (status, _) = api(&proxy, "GET", "/webhooks", None).await;
    assert_eq!(status, 401);
    let req = Request::get(proxy.publish_url("/webhooks"))
        .header("authorization", "Bearer let-me-in")
        .body(full(""))
        .unwrap();
    assert_eq!(send(req).await.status(), 200);
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_item_is_delivered_as_signed_json_and_an_http_request_format_as_that_request() {
    let mut receiver = Receiver::start().await;
    let proxy = Proxy::start("* test\n", allow_loopback).await;
    let hook = register(&proxy, "news", &receiver.url("/hook")).await;
    let id = hook["id"].as_str().unwrap();

    proxy
        .publish_items([json!({"channel": "news", "id": "n1",
            "formats": {"http-stream": {"content": "hello\n"}}})])
        .await;
    let got = receiver.next().await;
    assert_eq!((got.method.as_str(), got.path.as_str()), ("POST", "/hook"));
    assert_eq!(got.headers["content-type"], "application/json");
    assert_eq!(got.headers["holdfast-webhook-id"], id);
    assert_eq!(got.headers["holdfast-channel"], "news");
    assert_eq!(got.headers["holdfast-item-id"], "n1");
    assert_eq!(got.headers["holdfast-attempt"], "1");
    let item: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(
        item,
        json!({"channel": "news", "id": "n1",
            "formats": {"http-stream": {"action": "send", "content": "hello\n"}}})
    );
    let claims = verify(&got, b"hook-secret");
    assert_eq!(
        (claims["sub"].as_str(), claims["channel"].as_str()),
        (Some(id), Some("news"))
    );
    assert_eq!(
        claims["delivery"],
        got.headers["holdfast-delivery"].to_str().unwrap()
    );

    proxy
        .publish_items([json!({"channel": "news", "formats": {"http-request": {
            "method": "PUT", "headers": {"Content-Type": "text/plain", "X-Kind": "note",
            "Host": "evil.example", "Holdfast-Signature": "forged"},
            "body": "just this"}}})])
        .await;
    let got = receiver.next().await;
    assert_eq!(got.method, "PUT");
    assert_eq!(&got.body[..], b"just this");
    assert_eq!(got.headers["content-type"], "text/plain");
    assert_eq!(got.headers["x-kind"], "note");
    assert_ne!(got.headers["host"], "evil.example");
    verify(&got, b"hook-secret");

    // Another channel's items do not go to this subscriber.
    proxy
        .publish_items([json!({"channel": "sport", "formats": {"http-stream": {"content": "x"}}})])
        .await;
    proxy
        .publish_items([
            json!({"channel": "news", "formats": {"http-stream": {"content": "last"}}}),
        ])
        .await;
    let got = receiver.next().await;
    assert!(String::from_utf8_lossy(&got.body).contains("last"));
    let view = wait_for(&proxy, id, "three delivered", |v| v["delivered"] == 3).await;
    assert_eq!(view["last_error"], Value::Null);
    let page = metrics(&proxy).await;
    assert!(
        page.contains("holdfast_webhook_deliveries_total{outcome=\"delivered\"} 3"),
        "{page}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn failed_deliveries_are_retried_and_the_last_error_is_shown() {
    let mut receiver = Receiver::start().await;
    receiver.script.lock().unwrap().extend([503, 500]);
    let proxy = Proxy::start("* test\n", allow_loopback).await;
    let hook = register(&proxy, "jobs", &receiver.url("/")).await;
    let id = hook["id"].as_str().unwrap();
    proxy
        .publish_items([json!({"channel": "jobs", "formats": {"http-stream": {"content": "x"}}})])
        .await;
    let attempts: Vec<Got> = vec![
        receiver.next().await,
        receiver.next().await,
        receiver.next().await,
    ];
    let numbers: Vec<&str> = attempts
        .iter()
        .map(|g| g.headers["holdfast-attempt"].to_str().unwrap())
        .collect();
    assert_eq!(numbers, ["1", "2", "3"]);
    let delivery = &attempts[0].headers["holdfast-delivery"];
    assert!(attempts
        .iter()
        .all(|g| g.headers["holdfast-delivery"] == delivery));
    let view = wait_for(&proxy, id, "delivered after retries", |v| {
        v["delivered"] == 1
    })
    .await;
    assert_eq!(view["failed_attempts"], 2);
    assert_eq!(view["last_error"]["message"], "500 Internal Server Error");
    let page = metrics(&proxy).await;
    assert!(
        page.contains("holdfast_webhook_deliveries_total{outcome=\"http_error\"} 2"),
        "{page}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_stopped_receiver_gets_every_item_once_it_is_back() {
    let receiver = Receiver::start().await;
    let addr = receiver.origin.addr;
    let proxy = Proxy::start("* test\n", allow_loopback).await;
    let hook = register(&proxy, "feed", &receiver.url("/")).await;
    let id = hook["id"].as_str().unwrap();
    let Receiver { origin, got, .. } = receiver;
    origin.stop().await;
    proxy
        .publish_items((1..=3).map(|n| {
            json!({"channel": "feed", "id": format!("{n}"),
                "formats": {"http-stream": {"content": "x"}}})
        }))
        .await;
    wait_for(
        &proxy,
        id,
        "a failed attempt while the receiver is down",
        |v| v["failed_attempts"].as_u64() >= Some(2),
    )
    .await;
    let (tx, mut rx) = mpsc::channel(10);
    drop(got);
    let _back = Origin::start_on(addr, move |req: Request<hyper::body::Incoming>| {
        let tx = tx.clone();
        async move {
            let id = req.headers()["holdfast-item-id"]
                .to_str()
                .unwrap()
                .to_string();
            let _ = tx.send(id).await;
            Response::new(full("ok"))
        }
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            tokio::time::timeout(WAIT, rx.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert_eq!(ids, ["1", "2", "3"], "every item, in order");
    let view = wait_for(&proxy, id, "all delivered", |v| v["delivered"] == 3).await;
    assert!(
        view["last_error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("client error (Connect)"),
        "{view}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_slow_receiver_fills_its_queue_and_further_items_are_dropped_and_counted() {
    let release = Arc::new(Notify::new());
    let (tx, mut arrived) = mpsc::channel(100);
    let gate = release.clone();
    let receiver = Origin::start(move |req: Request<hyper::body::Incoming>| {
        let tx = tx.clone();
        let gate = gate.clone();
        async move {
            let id = req.headers()["holdfast-item-id"]
                .to_str()
                .unwrap()
                .to_string();
            let _ = tx.send(id).await;
            gate.notified().await;
            Response::new(full("ok"))
        }
    })
    .await;
    let proxy = Proxy::start("* test\n", |c| {
        allow_loopback(c);
        c.webhooks.queue = 2;
    })
    .await;
    let url = format!("http://127.0.0.1:{}/", receiver.addr.port());
    let hook = register(&proxy, "busy", &url).await;
    let id = hook["id"].as_str().unwrap();
    let item = |n: u32| {
        json!({"channel": "busy", "id": format!("{n}"),
            "formats": {"http-stream": {"content": "x"}}})
    };
    proxy.publish_items([item(1)]).await;
    // Item 1 is at the receiver, which holds it: the queue is empty.
    let first = tokio::time::timeout(WAIT, arrived.recv()).await.unwrap();
    assert_eq!(first.as_deref(), Some("1"));
    proxy.publish_items((2..=6).map(item)).await;
    let view = inspect(&proxy, id).await;
    assert_eq!(view["dropped"], 3, "{view}");
    assert_eq!(view["queued"], 3, "{view}");
    let page = metrics(&proxy).await;
    assert!(page.contains("holdfast_webhook_dropped_total 3"), "{page}");
    for want in ["2", "3"] {
        release.notify_one();
        let next = tokio::time::timeout(WAIT, arrived.recv()).await.unwrap();
        assert_eq!(next.as_deref(), Some(want));
    }
    release.notify_one();
    wait_for(&proxy, id, "three delivered", |v| v["delivered"] == 3).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn registrations_survive_a_restart_through_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("webhooks.json");
    let mut receiver = Receiver::start().await;
    let url = receiver.url("/kept");
    let with_store = |c: &mut Config| {
        allow_loopback(c);
        c.webhooks.store = Some(store.clone());
    };
    let proxy = Proxy::start("* test\n", with_store).await;
    let hook = register(&proxy, "kept", &url).await;
    let gone = register(&proxy, "gone", &url).await;
    let (status, _) = api(
        &proxy,
        "DELETE",
        &format!("/webhooks/{}", gone["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(status, 204);
    proxy.shutdown().await;

    let proxy = Proxy::start("* test\n", with_store).await;
    let (_, list) = api(&proxy, "GET", "/webhooks", None).await;
    let list: Value = serde_json::from_str(&list).unwrap();
    let hooks = list["webhooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 1, "{list}");
    assert_eq!(hooks[0]["id"], hook["id"]);
    proxy
        .publish_items([json!({"channel": "kept", "formats": {"http-stream": {"content": "x"}}})])
        .await;
    assert_eq!(receiver.next().await.path, "/kept");
    proxy.shutdown().await;

    std::fs::write(&store, "not json").unwrap();
    let mut config = Config::default();
    config.server.listen = vec!["127.0.0.1:0".parse().unwrap()];
    config.server.publish_listen = "127.0.0.1:0".parse().unwrap();
    config.webhooks.store = Some(store.clone());
    let table =
        holdfast::config::routes::RouteTable::parse("* test\n", std::path::Path::new("routes"))
            .unwrap();
    let err = holdfast::Server::bind(config, table).await.err().unwrap();
    assert!(
        err.to_string().starts_with(&format!(
            "webhooks.store {}: not a webhook registrations file",
            store.display()
        )),
        "{err}"
    );
}

#[tokio::test]
async fn a_redirect_is_an_outcome_not_followed() {
    let mut receiver = Receiver::start().await;
    receiver.script.lock().unwrap().push_back(302);
    let proxy = Proxy::start("* test\n", allow_loopback).await;
    let hook = register(&proxy, "r", &receiver.url("/start")).await;
    let id = hook["id"].as_str().unwrap();
    proxy
        .publish_items([json!({"channel": "r", "formats": {"http-stream": {"content": "x"}}})])
        .await;
    assert_eq!(receiver.next().await.path, "/start");
    let view = wait_for(&proxy, id, "given up", |v| v["given_up"] == 1).await;
    assert_eq!(
        view["last_error"]["message"],
        "302 Found (redirects are not followed)"
    );
    // A later item reaches the receiver; nothing went to /elsewhere before it.
    proxy
        .publish_items([json!({"channel": "r", "formats": {"http-stream": {"content": "y"}}})])
        .await;
    assert_eq!(receiver.next().await.path, "/start");
    proxy.shutdown().await;
}

#[tokio::test]
async fn loopback_is_refused_by_name_and_by_address_unless_allow_listed() {
    let mut receiver = Receiver::start().await;
    let port = receiver.origin.addr.port();
    let proxy = Proxy::start("* test\n", |c| {
        c.webhooks.retry_min_ms = 20;
    })
    .await;
    // A name is registered (it is resolved at each delivery), and refused when it resolves to
    // loopback; an address literal is refused at registration.
    let hook = register(&proxy, "ssrf", &format!("http://localhost:{port}/")).await;
    let id = hook["id"].as_str().unwrap();
    let (status, body) = api(
        &proxy,
        "POST",
        "/webhooks",
        Some(json!({"channel": "ssrf", "url": format!("http://[::ffff:127.0.0.1]:{port}/")})),
    )
    .await;
    assert_eq!(
        (status, body.contains("is a loopback address")),
        (400, true),
        "{body}"
    );
    proxy
        .publish_items([json!({"channel": "ssrf", "formats": {"http-stream": {"content": "x"}}})])
        .await;
    let view = wait_for(&proxy, id, "refused and given up", |v| v["given_up"] == 1).await;
    let message = view["last_error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("refused by the outbound policy: localhost resolves to ")
            && message.contains("a loopback address, which outbound.allow does not list"),
        "{message}"
    );
    assert_eq!(view["delivered"], 0);
    let page = metrics(&proxy).await;
    assert!(
        page.contains("holdfast_outbound_refused_total{class=\"loopback\"} 1"),
        "{page}"
    );
    assert!(
        page.contains("holdfast_webhook_deliveries_total{outcome=\"refused\"} 1"),
        "{page}"
    );
    assert!(page.contains("holdfast_webhook_given_up_total 1"), "{page}");
    assert!(
        receiver.got.try_recv().is_err(),
        "the receiver on loopback got nothing"
    );
    proxy.shutdown().await;

    // The same name with loopback allow-listed is delivered.
    let proxy = Proxy::start("* test\n", allow_loopback).await;
    register(&proxy, "ssrf", &format!("http://localhost:{port}/ok")).await;
    proxy
        .publish_items([json!({"channel": "ssrf", "formats": {"http-stream": {"content": "x"}}})])
        .await;
    assert_eq!(receiver.next().await.path, "/ok");
    proxy.shutdown().await;
}

#[tokio::test]
async fn held_connections_ignore_an_item_that_has_only_an_http_request_format() {
    let mut receiver = Receiver::start().await;
    let proxy = Proxy::start("* test\n", allow_loopback).await;
    register(&proxy, "test", &receiver.url("/")).await;
    let resp = get(&proxy.url("/stream")).await;
    let mut body = resp.into_body();
    proxy.wait_subscribers("test", 1).await;
    proxy
        .publish_items([json!({"channel": "test", "id": "w1",
            "formats": {"http-request": {"body": "for the webhook"}}})])
        .await;
    assert_eq!(&receiver.next().await.body[..], b"for the webhook");
    proxy
        .publish_items([json!({"channel": "test", "id": "s1", "prev-id": "w1",
            "formats": {"http-stream": {"content": "for the stream\n"}}})])
        .await;
    let seen = read_until(&mut body, "for the stream\n").await;
    assert!(!seen.contains("webhook"), "{seen}");
    proxy.shutdown().await;
}
