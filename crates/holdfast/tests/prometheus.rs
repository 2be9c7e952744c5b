//! Pushpin's Prometheus page (`server.prometheus_listen`, pushpin.conf's `prometheus_port`): its
//! five metrics as a Prometheus scraper reads them, moving with the traffic.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use support::*;

/// Scrapes the page at `addr`: each sample by name, and the whole text.
async fn scrape(addr: SocketAddr, path: &str) -> (HashMap<String, u64>, String) {
    let resp = get(&format!("http://{addr}{path}")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/plain; version=0.0.4",
        "{resp:?}"
    );
    let page = text(resp).await;
    let samples = (page.lines())
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_string(), value.parse::<f64>().unwrap() as u64)
        })
        .collect();
    (samples, page)
}

#[tokio::test]
async fn the_page_counts_requests_connections_and_messages_without_credentials() {
    let origin = grip_origin(
        200,
        &[("Grip-Hold", "stream"), ("Grip-Channel", "scores")],
        "start\n",
    )
    .await;
    let proxy = Proxy::routed_to(&origin, |c| {
        c.server.prometheus_listen = vec![
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        ];
        c.server.prometheus_prefix = "pp_".into();
        c.publish.token = vec!["secret-token".into()];
        quiet(c);
    })
    .await;
    assert_eq!(proxy.prometheus.len(), 2);
    let (before, page) = scrape(proxy.prometheus[0], "/metrics").await;
    for (name, kind, help) in [
        (
            "pp_request_received",
            "counter",
            "Number of requests received",
        ),
        (
            "pp_connection_connected",
            "gauge",
            "Number of concurrent connections",
        ),
        (
            "pp_connection_minute",
            "counter",
            "Number of minutes clients have been connected",
        ),
        (
            "pp_message_received",
            "counter",
            "Number of messages received by the publish API",
        ),
        (
            "pp_message_sent",
            "counter",
            "Number of messages sent to clients",
        ),
    ] {
        assert!(
            page.contains(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n")),
            "{page}"
        );
        assert_eq!(before[name], 0, "{page}");
    }
    // Holdfast's own metrics follow Pushpin's five.
    assert_eq!(before["holdfast_channels"], 0, "{page}");

    // A client holds a stream, and one item is published to it.
    let resp = get(&proxy.url("/scores")).await;
    let mut body = resp.into_body();
    read_until(&mut body, "start\n").await;
    let token = "Bearer secret-token";
    let publish = hyper::Request::post(proxy.publish_url("/publish/"))
        .header("authorization", token)
        .header("content-type", "application/json")
        .body(full(
            serde_json::json!({"items": [stream_item("scores", None, None, "goal\n")]}).to_string(),
        ))
        .unwrap();
    assert_eq!(send(publish).await.status(), 200);
    read_until(&mut body, "goal\n").await;

    // Both addresses serve the same page, at any path.
    for (addr, path) in [
        (proxy.prometheus[0], "/"),
        (proxy.prometheus[1], "/anything"),
    ] {
        let (now, page) = scrape(addr, path).await;
        assert_eq!(now["pp_request_received"], 1, "{page}");
        assert_eq!(now["pp_connection_connected"], 1, "{page}");
        assert_eq!(now["pp_message_received"], 1, "{page}");
        assert_eq!(now["pp_message_sent"], 1, "{page}");
        assert_eq!(now["holdfast_channels"], 1, "{page}");
    }

    // The client leaves: the gauge falls back.
    drop(body);
    let addr = proxy.prometheus[0];
    let connected = || async move { scrape(addr, "/").await.0["pp_connection_connected"] };
    eventually(
        Duration::from_secs(10),
        || "the client's connection still counted".into(),
        || async { connected().await == 0 },
    )
    .await;

    // Only GET and HEAD.
    let post = hyper::Request::post(format!("http://{addr}/"))
        .body(full(""))
        .unwrap();
    let resp = send(post).await;
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET, HEAD");
}
