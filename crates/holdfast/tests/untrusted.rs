//! `untrusted` route targets: the connection to one goes through the outbound policy, so a
//! target that is (or resolves to) an internal address is refused with `502` unless
//! `outbound.allow` lists it, and the route's next target is tried. Trusted targets are
//! unaffected.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use hyper::Response;
use support::*;

/// An origin answering `name` that counts the requests it saw.
async fn counting_origin(name: &'static str) -> (Origin, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    let origin = Origin::start(move |_req| {
        count.fetch_add(1, Ordering::SeqCst);
        async move { Response::new(full(name)) }
    })
    .await;
    (origin, seen)
}

async fn metrics(proxy: &Proxy) -> String {
    text(get(&proxy.publish_url("/metrics")).await).await
}

#[tokio::test]
async fn an_untrusted_loopback_target_is_refused_before_any_connection() {
    let (origin, seen) = counting_origin("origin").await;
    let target = origin.target();
    let proxy = Proxy::start(&format!("* {target},untrusted\n"), |_| {}).await;
    let resp = get(&proxy.url("/x")).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(
        text(resp).await,
        format!(
            "Unable to connect to any targets. Tried: {target} (refused by the outbound policy: \
             a loopback address, which outbound.allow does not list)\n"
        )
    );
    assert_eq!(seen.load(Ordering::SeqCst), 0, "the origin saw a request");
    let page = metrics(&proxy).await;
    assert!(
        page.contains("holdfast_outbound_refused_total{class=\"loopback\"} 1"),
        "{page}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_allow_listed_untrusted_target_is_proxied() {
    let (origin, seen) = counting_origin("allowed").await;
    let proxy = Proxy::start(&format!("* {},untrusted\n", origin.target()), |c| {
        c.outbound.allow = vec!["127.0.0.0/8".to_string()];
    })
    .await;
    let resp = get(&proxy.url("/x")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(text(resp).await, "allowed");
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_trusted_loopback_target_is_unaffected_and_shares_no_connection_with_an_untrusted_one() {
    let (origin, seen) = counting_origin("trusted").await;
    let target = origin.target();
    let proxy = Proxy::start(
        &format!("*,path_beg=/t {target}\n*,path_beg=/u {target},untrusted\n"),
        |_| {},
    )
    .await;
    // The trusted route's connection stays pooled; the untrusted route must not reuse it.
    let resp = get(&proxy.url("/t")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(text(resp).await, "trusted");
    let resp = get(&proxy.url("/u")).await;
    assert_eq!(resp.status(), 502);
    assert!(
        text(resp).await.contains("refused by the outbound policy"),
        "untrusted route"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 1, "only the trusted request");
    proxy.shutdown().await;
}

#[tokio::test]
async fn localhost_as_an_untrusted_target_is_refused() {
    let (origin, seen) = counting_origin("origin").await;
    let target = format!("localhost:{}", origin.addr.port());
    let proxy = Proxy::start(&format!("* {target},untrusted\n"), |_| {}).await;
    let resp = get(&proxy.url("/x")).await;
    assert_eq!(resp.status(), 502);
    let body = text(resp).await;
    assert!(
        body.contains(&format!(
            "{target} (refused by the outbound policy: a loopback address"
        )),
        "{body}"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 0, "the origin saw a request");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_refused_target_fails_over_to_the_next() {
    let (refused, refused_seen) = counting_origin("refused").await;
    let (next, next_seen) = counting_origin("next").await;
    let proxy = Proxy::start(
        &format!("* {},untrusted {}\n", refused.target(), next.target()),
        |_| {},
    )
    .await;
    let resp = send(
        hyper::Request::post(proxy.url("/x"))
            .body(full("a body the next target gets"))
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(text(resp).await, "next");
    assert_eq!(refused_seen.load(Ordering::SeqCst), 0);
    assert_eq!(next_seen.load(Ordering::SeqCst), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_untrusted_websocket_target_is_refused() {
    let origin = ws::WsOrigin::start(None).await;
    let proxy = Proxy::start(&format!("* {},untrusted\n", origin.target()), |_| {}).await;
    let err = tokio_tungstenite::connect_async(format!("ws://{}/ws", proxy.addr))
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status(), 502);
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default());
            assert!(body.contains("refused by the outbound policy"), "{body}");
        }
        other => panic!("{other}"),
    }
    proxy.shutdown().await;
}
