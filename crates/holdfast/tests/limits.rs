//! Connection limits and timeouts: what a client, an origin or a publisher that misbehaves at
//! the connection level gets, and that everyone else keeps being served meanwhile.
//!
//! Timeouts are configured short (1 s) and the tests wait, with a generous bound, for what a
//! user would see: the connection closed, `400`, `408`, `431`, `504`.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    let proxy = Proxy::routed_to(&origin, |c| {
        c.timeouts.client_header_secs = 1;
        c.timeouts.publish_idle_secs = 1;
    })
    .await;
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
    let mut publish_silent = TcpStream::connect(proxy.publish).await.unwrap();
    // Served while those wait.
    assert_eq!(text(get(&proxy.url("/")).await).await, "served");
    for (case, stream) in &mut silent {
        closed_by_server(stream, case).await;
    }
    closed_by_server(&mut publish_silent, "a silent publish connection").await;
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

/// The status line of a raw HTTP/1.1 response.
fn status_line(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    text.lines().next().unwrap_or_default().to_string()
}

/// An origin that reports each request body's fate: `arrived` once its first bytes are in,
/// `outcome` with the whole body or the error that ended it.
struct BodyWatch {
    arrived: mpsc::UnboundedReceiver<()>,
    outcome: mpsc::UnboundedReceiver<Result<Bytes, String>>,
}

impl BodyWatch {
    async fn arrived(&mut self) {
        tokio::time::timeout(Duration::from_secs(10), self.arrived.recv())
            .await
            .expect("the origin got the start of the body within 10 s");
    }

    async fn outcome(&mut self) -> Result<Bytes, String> {
        tokio::time::timeout(Duration::from_secs(10), self.outcome.recv())
            .await
            .expect("the origin's body ended within 10 s")
            .unwrap()
    }
}

async fn body_watching_origin() -> (Origin, BodyWatch) {
    let (arrived_tx, arrived) = mpsc::unbounded_channel();
    let (outcome_tx, outcome) = mpsc::unbounded_channel();
    let origin = Origin::start(move |req: Request<Incoming>| {
        let (arrived_tx, outcome_tx) = (arrived_tx.clone(), outcome_tx.clone());
        async move {
            if req.uri().path() == "/quick" {
                return Response::new(full("quick"));
            }
            let mut body = req.into_body();
            let mut got = Vec::new();
            let result = loop {
                match body.frame().await {
                    None => break Ok(Bytes::from(got)),
                    Some(Err(e)) => break Err(e.to_string()),
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            if got.is_empty() {
                                let _ = arrived_tx.send(());
                            }
                            got.extend_from_slice(&data);
                        }
                    }
                }
            };
            let read = result.as_ref().map(|b| b.len()).map_err(Clone::clone);
            let _ = outcome_tx.send(result);
            Response::new(full(format!("origin read {read:?}")))
        }
    })
    .await;
    (origin, BodyWatch { arrived, outcome })
}

#[tokio::test]
async fn a_malformed_request_body_is_the_clients_400_and_the_origin_request_is_aborted() {
    let (origin, mut watch) = body_watching_origin().await;
    let proxy = Proxy::routed_to(&origin, |_| {}).await;
    let chunked =
        "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
    let cases: [(&str, &str, &[u8]); 4] = [
        ("chunk size not hex", chunked, b"zz\r\n"),
        (
            "chunk size overflows",
            chunked,
            b"fffffffffffffffffffff\r\n",
        ),
        ("chunk data without its CRLF", chunked, b"3\r\nabcXY\r\n"),
        (
            "body shorter than its Content-Length",
            "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhello",
            b"",
        ),
    ];
    for (case, head, bad) in cases {
        // The origin has the request and its first bytes before the client goes wrong.
        let mut client = send_raw(proxy.addr, head.as_bytes()).await;
        watch.arrived().await;
        if bad.is_empty() {
            client.shutdown().await.unwrap();
        } else {
            client.write_all(bad).await.unwrap();
        }
        let raw = closed_by_server(&mut client, case).await;
        assert_eq!(
            status_line(&raw),
            "HTTP/1.1 400 Bad Request",
            "{case}: {}",
            String::from_utf8_lossy(&raw)
        );
        let text = String::from_utf8_lossy(&raw).to_string();
        assert!(text.contains("request body"), "{case}: {text}");
        let outcome = watch.outcome().await;
        assert!(
            outcome.is_err(),
            "{case}: the origin got a whole body: {outcome:?}"
        );
    }
    // A good body still goes through.
    let resp = send(Request::post(proxy.url("/up")).body(full("fine")).unwrap()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(watch.outcome().await.unwrap(), "fine");
}

#[tokio::test]
async fn a_stalled_upload_is_408_and_frees_its_origin_slot() {
    let (origin, mut watch) = body_watching_origin().await;
    let proxy = Proxy::routed_to(&origin, |c| {
        c.timeouts.origin_concurrency_per_target = 1;
        c.timeouts.client_body_idle_secs = 1;
    })
    .await;
    let mut stalled = send_raw(
        proxy.addr,
        b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello",
    )
    .await;
    watch.arrived().await;
    // The stalled upload holds the origin's only slot until the body timeout frees it.
    let quick = tokio::time::timeout(Duration::from_secs(10), async {
        text(get(&proxy.url("/quick")).await).await
    });
    assert_eq!(quick.await.expect("the slot was never freed"), "quick");
    let raw = closed_by_server(&mut stalled, "stalled upload").await;
    assert_eq!(
        status_line(&raw),
        "HTTP/1.1 408 Request Timeout",
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert!(watch.outcome().await.is_err());
}

/// Waits until a data frame arrives on `body` (bounded: 10 s).
async fn first_data(body: &mut Incoming) -> Bytes {
    next_chunk(body).await.expect("a first chunk")
}

/// An origin whose response body sends `first` and then nothing, forever; `closed` fires when
/// Holdfast closes the origin connection.
async fn stalling_origin(
    headers: &'static [(&'static str, &'static str)],
    first: &'static str,
) -> (Origin, mpsc::UnboundedReceiver<()>) {
    let (closed_tx, closed) = mpsc::unbounded_channel();
    let origin = Origin::start(move |_req| {
        let closed_tx = closed_tx.clone();
        async move {
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
            tx.send(Ok(Frame::data(Bytes::from_static(first.as_bytes()))))
                .await
                .unwrap();
            tokio::spawn(async move {
                tx.closed().await;
                let _ = closed_tx.send(());
            });
            let mut resp = Response::builder();
            for (k, v) in headers {
                resp = resp.header(*k, *v);
            }
            let body = StreamBody::new(tokio_stream_of(rx));
            resp.body(body.boxed()).unwrap()
        }
    })
    .await;
    (origin, closed)
}

fn tokio_stream_of<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn a_relayed_body_that_stalls_is_cut_and_its_origin_connection_closed() {
    let (origin, mut closed) = stalling_origin(&[], "partial").await;
    let proxy = Proxy::routed_to(&origin, |c| c.timeouts.origin_body_idle_secs = 1).await;
    let resp = get(&proxy.url("/stall")).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    assert_eq!(first_data(&mut body).await, "partial");
    let end = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("the stalled body was cut within 10 s");
    assert!(
        matches!(end, Some(Err(_))),
        "a cut body must not look complete: {end:?}"
    );
    tokio::time::timeout(Duration::from_secs(10), closed.recv())
        .await
        .expect("the origin connection was closed");
}

#[tokio::test]
async fn a_grip_answer_whose_body_stalls_is_504() {
    let (origin, mut closed) = stalling_origin(
        &[
            ("grip-hold", "response"),
            ("grip-channel", "stalls"),
            ("content-length", "100"),
        ],
        "partial",
    )
    .await;
    let proxy = Proxy::routed_to(&origin, |c| {
        quiet(c);
        c.timeouts.origin_body_idle_secs = 1;
    })
    .await;
    let resp = tokio::time::timeout(Duration::from_secs(10), get(&proxy.url("/hold")))
        .await
        .expect("an answer within 10 s");
    assert_eq!(resp.status(), 504);
    let body = text(resp).await;
    assert!(body.contains("origin"), "{body}");
    tokio::time::timeout(Duration::from_secs(10), closed.recv())
        .await
        .expect("the origin connection was closed");
}

#[tokio::test]
async fn a_held_stream_outlives_the_origin_body_timeout() {
    let origin = grip_origin(
        200,
        &[("grip-hold", "stream"), ("grip-channel", "quiet")],
        "start\n",
    )
    .await;
    let proxy = Proxy::routed_to(&origin, |c| {
        quiet(c);
        c.timeouts.origin_body_idle_secs = 1;
        c.timeouts.client_header_secs = 1;
    })
    .await;
    let mut body = get(&proxy.url("/s")).await.into_body();
    assert_eq!(read_until(&mut body, "start\n").await, "start\n");
    proxy.wait_subscribers("quiet", 1).await;
    // Opened after the stream's start and closed for sending nothing: more than the body
    // timeout has passed since.
    let mut clock = TcpStream::connect(proxy.addr).await.unwrap();
    closed_by_server(&mut clock, "the silent connection").await;
    proxy.publish_stream("quiet", None, None, "later\n").await;
    assert_eq!(read_until(&mut body, "later\n").await, "later\n");
}

#[tokio::test]
async fn publish_connections_are_capped_and_idle_ones_closed() {
    let proxy = Proxy::start("* test\n", |c| {
        c.limits.max_publish_connections = 1;
        c.timeouts.publish_idle_secs = 1;
    })
    .await;
    // An idle keep-alive connection: one request, then nothing.
    let mut idle = send_raw(proxy.publish, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut got = Vec::new();
    read_raw_until(&mut idle, &mut got, b"Holdfast API\n").await;
    // The cap is one connection: this one waits until the idle one is closed.
    let mut waiting = send_raw(proxy.publish, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut answer = Vec::new();
    read_raw_until(&mut waiting, &mut answer, b"Holdfast API\n").await;
    let mut byte = [0u8; 1];
    match idle.try_read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => {}
        other => panic!("the second connection was served while the first was open: {other:?}"),
    }
    assert!(status_line(&answer).starts_with("HTTP/1.1 200"));
}

/// A request head with `n` extra headers of `size` bytes each.
fn head_with(n: usize, size: usize) -> Vec<u8> {
    let mut head = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..n {
        head.extend_from_slice(format!("x-h{i}: {}\r\n", "v".repeat(size)).as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Sends each head on its own connection and checks the status it gets.
async fn assert_statuses(proxy: &Proxy, cases: &[(&str, Vec<u8>, &str)]) {
    assert_statuses_at(proxy.addr, cases).await;
}

/// The same, at the listener `addr`.
async fn assert_statuses_at(addr: std::net::SocketAddr, cases: &[(&str, Vec<u8>, &str)]) {
    for (case, head, want) in cases {
        let mut stream = send_raw(addr, head).await;
        let mut got = Vec::new();
        read_raw_until(&mut stream, &mut got, b"\r\n").await;
        let line = status_line(&got);
        assert!(
            line.starts_with(&format!("HTTP/1.1 {want}")),
            "{case}: {line}"
        );
    }
}

#[tokio::test]
async fn request_heads_over_the_header_limits_are_431() {
    // The defaults: 100 header fields (with Host), 8192 bytes.
    let proxy = Proxy::start("* test\n", |_| {}).await;
    let cases = [
        ("too many headers", head_with(100, 1), "431"),
        ("too many bytes of headers", head_with(2, 5000), "431"),
        ("within both limits", head_with(99, 10), "200"),
    ];
    assert_statuses(&proxy, &cases).await;
    let proxy = Proxy::start("* test\n", |c| {
        c.limits.max_headers = 20;
        c.limits.max_header_size = 16384;
    })
    .await;
    let cases = [
        ("over the configured count", head_with(20, 1), "431"),
        ("within the configured count", head_with(19, 1), "200"),
        ("within the configured size", head_with(2, 5000), "200"),
        ("over the configured size", head_with(4, 5000), "431"),
    ];
    assert_statuses(&proxy, &cases).await;
}

#[tokio::test]
async fn the_publish_api_has_its_own_header_size_limit_when_one_is_set() {
    let proxy = Proxy::start("* test\n", |c| {
        c.limits.max_header_size = 16384;
        c.publish.max_header_size = Some(8192);
    })
    .await;
    // 10 KB of headers: within the clients' limit, over the publish API's.
    let head = |path: &str| {
        let mut head = head_with(2, 5000);
        head.splice(4..5, path.bytes());
        head
    };
    assert_statuses_at(proxy.addr, &[("client", head("/"), "200")]).await;
    assert_statuses_at(proxy.publish, &[("publish API", head("/healthz"), "431")]).await;
    let small = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    assert_statuses_at(proxy.publish, &[("publish API, small head", small, "200")]).await;
}

/// Connects to `addr` from the loopback address `from` and asks for `/`: `Some(response head)`
/// when the proxy serves it, `None` when it closes the connection without a byte.
async fn request_from(from: &str, addr: std::net::SocketAddr) -> (TcpStream, Option<String>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    // The write may fail if the proxy has already closed the connection.
    let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("an answer or a close within 10 s")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let head = (!got.is_empty()).then(|| String::from_utf8_lossy(&got).into_owned());
    (stream, head)
}

async fn metrics(proxy: &Proxy) -> String {
    text(get(&proxy.publish_url("/metrics")).await).await
}

#[tokio::test]
async fn one_address_over_its_connection_cap_is_refused_and_others_are_served() {
    let origin = grip_origin(200, &[], "served").await;
    let proxy = Proxy::routed_to(&origin, |c| c.limits.max_connections_per_ip = 2).await;
    // Two keep-alive connections from 127.0.0.1 stay open after their answers.
    let (_a, head) = request_from("127.0.0.1", proxy.addr).await;
    assert!(head.unwrap().starts_with("HTTP/1.1 200"));
    let (_b, head) = request_from("127.0.0.1", proxy.addr).await;
    assert!(head.unwrap().starts_with("HTTP/1.1 200"));
    // A third from the same address is closed without an answer.
    let (_c, head) = request_from("127.0.0.1", proxy.addr).await;
    assert_eq!(head, None, "the third connection from one address");
    // Another address is served.
    let (_d, head) = request_from("127.0.0.2", proxy.addr).await;
    assert!(head.unwrap().starts_with("HTTP/1.1 200"));
    let page = metrics(&proxy).await;
    assert!(
        page.contains("holdfast_connections_refused_total{reason=\"max_connections_per_ip\"} 1\n"),
        "{page}"
    );
    // Once one of the first two closes, the address may connect again.
    drop(_a);
    eventually(
        Duration::from_secs(10),
        || "a fourth connection from 127.0.0.1 refused".to_string(),
        || async { request_from("127.0.0.1", proxy.addr).await.1.is_some() },
    )
    .await;
}

#[tokio::test]
async fn one_address_over_its_connection_rate_is_refused() {
    let origin = grip_origin(200, &[], "served").await;
    let proxy = Proxy::routed_to(&origin, |c| c.limits.connection_rate_per_ip = 1).await;
    // A bucket of one: of ten connections in a row, the first is served, and at least one of
    // the rest comes within the second it takes to refill and is closed unanswered.
    let mut refused = 0;
    for i in 0..10 {
        let (_conn, head) = request_from("127.0.0.3", proxy.addr).await;
        match head {
            Some(head) => assert!(head.starts_with("HTTP/1.1 200"), "{head}"),
            None => {
                assert!(i > 0, "the first connection is within the burst");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "no connection refused");
    let page = metrics(&proxy).await;
    assert!(
        page.contains(&format!(
            "holdfast_connections_refused_total{{reason=\"connection_rate_per_ip\"}} {refused}\n"
        )),
        "{page}"
    );
    // The publish listener has no per-address cap.
    for _ in 0..3 {
        assert!(metrics(&proxy).await.contains("holdfast_per_ip_addresses"));
    }
}
