//! Connection limits and timeouts: what a client, an origin or a publisher that misbehaves at
//! the connection level gets, and that everyone else keeps being served meanwhile.
//!
//! Timeouts are configured short (1 s) and the tests wait, with a generous bound, for what a
//! user would see: the connection closed, `400`, `408`, `431`, `504`.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::Response;
use support::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

#[tokio::test]
async fn idle_pooled_origin_connections_are_closed() {
    let origin = grip_origin(200, &[], "pooled").await;
    let proxy = Proxy::routed_to(&origin, |c| c.timeouts.origin_idle_secs = 1).await;
    assert_eq!(text(get(&proxy.url("/")).await).await, "pooled");
    // The client's connection has closed; the pooled origin connection must go too.
    eventually(
        Duration::from_secs(10),
        || format!("descriptors in use: {}", proxy.app.descriptors.in_use()),
        || async { proxy.app.descriptors.in_use() == 0 },
    )
    .await;
}

/// Reads `stream` until the other side closes it (end of file or reset); returns what arrived.
/// Fails if it stays open for 10 s.
async fn closed_by_server(stream: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_all)
        .await
        .unwrap_or_else(|_| panic!("{what}: still open after 10 s"));
    got
}

#[tokio::test]
async fn connections_that_send_no_request_are_closed_and_others_are_served() {
    let origin = grip_origin(200, &[], "served").await;
    let proxy = Proxy::routed_to(&origin, |c| c.timeouts.client_header_secs = 1).await;
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let empty_settings = [0u8, 0, 0, 4, 0, 0, 0, 0, 0];
    let mut h2_no_request = preface.to_vec();
    h2_no_request.extend_from_slice(&empty_settings);
    let cases: [(&str, &[u8]); 4] = [
        ("a connection that sends nothing", b""),
        ("half a request head", b"GET / HTTP/1.1\r\nHost: x\r\n"),
        ("half the HTTP/2 preface", &preface[..10]),
        ("an HTTP/2 preface and no request", &h2_no_request),
    ];
    let mut silent = Vec::new();
    for (case, bytes) in cases {
        silent.push((case, send_raw(proxy.addr, bytes).await));
    }
    // Served while those wait.
    assert_eq!(text(get(&proxy.url("/")).await).await, "served");
    for (case, stream) in &mut silent {
        closed_by_server(stream, case).await;
    }
    assert_eq!(text(get(&proxy.url("/")).await).await, "served");
}

/// An origin that answers `/slow` only when the test says so.
async fn origin_answering_on_release() -> (Origin, oneshot::Sender<()>) {
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let release = Arc::new(Mutex::new(Some(release_rx)));
    let origin = Origin::start(move |_req| {
        let release = release.clone();
        async move {
            let rx = release.lock().unwrap().take();
            if let Some(rx) = rx {
                let _ = rx.await;
            }
            Response::new(full("late answer"))
        }
    })
    .await;
    (origin, release_tx)
}

#[tokio::test]
async fn a_request_whose_answer_takes_longer_than_the_header_timeout_is_answered() {
    for http2 in [false, true] {
        let (origin, release) = origin_answering_on_release().await;
        let proxy = Proxy::routed_to(&origin, |c| c.timeouts.client_header_secs = 1).await;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(http2)
                .build_http::<TestBody>();
        let url = proxy.url("/slow");
        let answer = tokio::spawn(async move {
            let resp = client.get(url.parse().unwrap()).await.unwrap();
            text(resp).await
        });
        // A connection opened after the request's, and closed for sending nothing: the
        // request's connection is past its header timeout too.
        let mut clock = TcpStream::connect(proxy.addr).await.unwrap();
        closed_by_server(&mut clock, "the silent connection").await;
        release.send(()).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), answer)
            .await
            .expect("answered within 10 s")
            .unwrap();
        assert_eq!(got, "late answer", "http2: {http2}");
    }
}
