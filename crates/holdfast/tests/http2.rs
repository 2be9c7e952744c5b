//! HTTP/2 clients (cleartext, prior knowledge) on held streams, and the `limits.http2_*`
//! settings as a client sees them.

mod support;

use std::future::{poll_fn, Future as _};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::http2;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;

const SSE_HOLD: &[(&str, &str)] = &[
    ("content-type", "text/event-stream"),
    ("grip-hold", "stream"),
    ("grip-channel", "h2"),
];

#[tokio::test]
async fn sse_streams_on_one_http2_connection_each_get_the_publish() {
    let origin = grip_origin(200, SSE_HOLD, ":open\n\n").await;
    let proxy = Proxy::routed_to(&origin, |_| {}).await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let mut sender = sender.clone();
        let req = Request::get(proxy.url("/events"))
            .header("accept", "text/event-stream")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let mut body = resp.into_body();
        read_until(&mut body, ":open\n\n").await;
        bodies.push(body);
    }
    proxy.wait_subscribers("h2", 3).await;
    proxy
        .publish_stream("h2", None, None, "data: over h2\n\n")
        .await;
    for body in &mut bodies {
        assert_eq!(
            read_until(body, "data: over h2\n\n").await,
            "data: over h2\n\n"
        );
    }
    // A stream the client resets leaves the channel; its neighbours stay.
    drop(bodies.pop());
    proxy.wait_subscribers("h2", 2).await;
}

#[tokio::test]
async fn http2_limits_reach_the_client() {
    let origin = grip_origin(200, SSE_HOLD, "").await;
    let proxy = Proxy::routed_to(&origin, |c| {
        c.limits.http2_max_concurrent_streams = 7;
        c.limits.http2_stream_window = 1000;
    })
    .await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut client, mut conn) = h2::client::handshake(tcp).await.unwrap();
    // The server's SETTINGS arrive while the connection is driven.
    tokio::time::timeout(
        Duration::from_secs(10),
        poll_fn(|cx| {
            if let std::task::Poll::Ready(r) = std::pin::Pin::new(&mut conn).poll(cx) {
                panic!("connection ended: {r:?}");
            }
            if conn.max_concurrent_send_streams() == 7 {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        }),
    )
    .await
    .expect("SETTINGS_MAX_CONCURRENT_STREAMS 7 within 10 s");
    tokio::spawn(conn);
    // A request body may use the stream window and no more.
    let req = Request::post(proxy.url("/upload")).body(()).unwrap();
    let (_resp, mut body) = client.send_request(req, false).unwrap();
    body.reserve_capacity(100_000);
    let capacity = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match poll_fn(|cx| body.poll_capacity(cx)).await {
                Some(Ok(n)) if n > 0 => return n,
                Some(Ok(_)) => {}
                other => panic!("no send capacity: {other:?}"),
            }
        }
    })
    .await
    .expect("send capacity within 10 s");
    assert_eq!(capacity, 1000);
}
