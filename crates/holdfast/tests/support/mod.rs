//! Test harness: a real Holdfast server on 127.0.0.1:0, origins written in the test, a plain
//! HTTP/1.1 client and publish items; [`binary`] runs the `holdfast` binary as a child process,
//! [`ws`] has WebSocket clients and origins, [`tls`] certificates made at test time.
#![allow(dead_code, missing_docs)]

pub mod binary;
pub mod tls;
pub mod ws;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use holdfast::config::routes::RouteTable;
use holdfast::{Config, Server};

pub type TestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).map_err(|n| match n {}).boxed()
}

/// A running Holdfast.
pub struct Proxy {
    pub addr: SocketAddr,
    /// The first TLS client listener, when `[tls]` configures one.
    pub tls: Option<SocketAddr>,
    pub publish: SocketAddr,
    /// The ZeroMQ sockets `[zmq]` configures.
    pub zmq: holdfast::zmq::Uris,
    /// Pushpin's Prometheus page, where `server.prometheus_listen` puts it.
    pub prometheus: Vec<SocketAddr>,
    pub app: Arc<holdfast::app::App>,
    pub routes_file: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// Starts Holdfast with `routes` (file contents) and a config tweak.
    pub async fn start(routes: &str, tweak: impl FnOnce(&mut Config)) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let routes_file = dir.path().join("routes");
        std::fs::write(&routes_file, routes).unwrap();
        let mut config = Config::default();
        config.server.listen = vec!["127.0.0.1:0".parse().unwrap()];
        config.server.publish_listen = "127.0.0.1:0".parse().unwrap();
        config.server.routes = Some(routes_file.clone());
        config.server.shutdown_grace_secs = 5;
        tweak(&mut config);
        config.validate(std::path::Path::new("test")).unwrap();
        let table = RouteTable::load(&routes_file).unwrap();
        let server = Server::bind(config, table).await.unwrap();
        let addr = server.client_addrs()[0];
        let tls = server.tls_addrs().first().copied();
        let publish = server.publish_addr();
        let zmq = server.zmq_uris();
        let prometheus = server.prometheus_addrs();
        let app = server.app();
        let (tx, rx) = oneshot::channel::<()>();
        let done = tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        Proxy {
            addr,
            tls,
            publish,
            zmq,
            prometheus,
            app,
            routes_file,
            stop: Some(tx),
            done: Some(done),
            _dir: dir,
        }
    }

    /// Starts Holdfast with every request routed to `origin`.
    pub async fn routed_to(origin: &Origin, tweak: impl FnOnce(&mut Config)) -> Proxy {
        Proxy::start(&format!("* {}\n", origin.target()), tweak).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn publish_url(&self, path: &str) -> String {
        format!("http://{}{}", self.publish, path)
    }

    /// Signals shutdown without waiting for it.
    pub fn signal_shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// `GET /readyz` on the publish listener: status and body.
    pub async fn readyz(&self) -> (u16, String) {
        let resp = get(&self.publish_url("/readyz")).await;
        let status = resp.status().as_u16();
        (status, text(resp).await)
    }

    /// Signals shutdown and waits for the server to finish draining.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(done) = self.done.take() {
            done.await.unwrap();
        }
    }

    /// Publishes a JSON body; returns status and body text.
    pub async fn publish_json(&self, body: Value) -> (u16, String) {
        publish_json_to(&self.publish_url("/publish/"), body).await
    }

    /// Publishes `items` in one request and checks the publish API accepted them.
    pub async fn publish_items(&self, items: impl IntoIterator<Item = Value>) {
        let items: Vec<Value> = items.into_iter().collect();
        let (status, body) = self.publish_json(json!({ "items": items })).await;
        assert_eq!(status, 200, "{body}");
    }

    /// Publishes one [`stream_item`] and checks the publish API accepted it.
    pub async fn publish_stream(
        &self,
        channel: &str,
        id: Option<&str>,
        prev_id: Option<&str>,
        content: &str,
    ) {
        self.publish_items([stream_item(channel, id, prev_id, content)])
            .await;
    }

    /// Waits until `channel` has `n` subscribers (bounded: fails after 10 s).
    pub async fn wait_subscribers(&self, channel: &str, n: usize) {
        wait_until(
            || self.app.hub.subscribers(channel),
            n,
            &format!("subscribers of {channel}"),
        )
        .await;
    }

    /// Waits until `n` held streams are written by the held-stream writer (bounded: 10 s).
    pub async fn wait_direct_streams(&self, n: usize) {
        wait_until(|| self.direct_streams(), n, "direct streams").await;
    }

    /// Waits until `n` held long-polls wait outside hyper (bounded: 10 s).
    pub async fn wait_direct_long_polls(&self, n: usize) {
        wait_until(
            || {
                self.app
                    .direct_long_polls
                    .load(std::sync::atomic::Ordering::Relaxed)
            },
            n,
            "direct long-polls",
        )
        .await;
    }

    /// Held streams the held-stream writer is writing now.
    pub fn direct_streams(&self) -> usize {
        self.app
            .direct_streams
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Polls `read` until it gives `want`; fails after 10 s naming `what`.
async fn wait_until(read: impl Fn() -> usize, want: usize, what: &str) {
    eventually(
        Duration::from_secs(10),
        || format!("{what}: {}, want {want}", read()),
        || async { read() == want },
    )
    .await;
}

/// Polls `check` until it is true; fails after `within`, with `state()` saying where things
/// stood.
pub async fn eventually<F, Fut>(within: Duration, state: impl Fn() -> String, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{}", state());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Leaves out the first-subscription update, for tests that count origin requests or read a
/// stream exactly.
pub fn quiet(c: &mut Config) {
    c.reliability.update_on_first_subscription = false;
}

/// An origin server written in the test.
pub struct Origin {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Origin {
    pub async fn start<F, Fut>(handler: F) -> Origin
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler = Arc::new(handler);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let handler = handler.clone();
                        async move { Ok::<_, Infallible>(handler(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Origin { addr, task }
    }

    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }

    /// Like [`Origin::start`], on a given address (to bring an origin back after a stop).
    pub async fn start_on<F, Fut>(addr: SocketAddr, handler: F) -> Origin
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(addr).unwrap();
        let listener = socket.listen(128).unwrap();
        let handler = Arc::new(handler);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let handler = handler.clone();
                        async move { Ok::<_, Infallible>(handler(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Origin { addr, task }
    }

    /// Stops accepting and waits until the listening socket is closed, so a connection
    /// attempt fails from then on (connections already open stay open).
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

/// An origin that answers every request with `status`, `headers` (most often GRIP
/// instructions) and `body`.
pub async fn grip_origin(
    status: u16,
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
) -> Origin {
    Origin::start(move |_req| async move {
        let mut resp = Response::builder().status(status);
        for (k, v) in headers {
            resp = resp.header(*k, *v);
        }
        resp.body(full(body)).unwrap()
    })
    .await
}

/// A port nothing listens on.
pub async fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// Sends one request on a fresh connection.
pub async fn send(req: Request<TestBody>) -> Response<Incoming> {
    let client =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http::<TestBody>();
    client.request(req).await.expect("request to proxy")
}

pub async fn get(url: &str) -> Response<Incoming> {
    send(Request::get(url).body(full("")).unwrap()).await
}

pub async fn bytes(resp: Response<Incoming>) -> Bytes {
    resp.into_body().collect().await.unwrap().to_bytes()
}

pub async fn text(resp: Response<Incoming>) -> String {
    String::from_utf8(bytes(resp).await.to_vec()).unwrap()
}

/// Reads the next data chunk of a streaming response (bounded by 10 s).
pub async fn next_chunk(body: &mut Incoming) -> Option<Bytes> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("chunk within 10 s")?
            .expect("body error");
        if let Ok(data) = frame.into_data() {
            return Some(data);
        }
    }
}

/// Reads a streaming body until `want` has been seen in full (bounded by 10 s).
pub async fn read_until(body: &mut Incoming, want: &str) -> String {
    let mut got = String::new();
    while !got.contains(want) {
        match next_chunk(body).await {
            Some(c) => got.push_str(&String::from_utf8_lossy(&c)),
            None => panic!("stream ended before {want:?}; got {got:?}"),
        }
    }
    got
}

/// Opens a raw TCP connection to `addr` and writes `request` on it (a request head, or
/// anything a test needs the proxy to see byte for byte).
pub async fn send_raw(addr: SocketAddr, request: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    stream
}

/// Reads from `stream` into `got` until `want` has arrived (bounded by 10 s).
pub async fn read_raw_until(stream: &mut tokio::net::TcpStream, got: &mut Vec<u8>, want: &[u8]) {
    use tokio::io::AsyncReadExt;
    while !got.windows(want.len()).any(|w| w == want) {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("bytes within 10 s")
            .unwrap();
        assert!(
            n > 0,
            "closed before {:?}; got {:?}",
            String::from_utf8_lossy(want),
            String::from_utf8_lossy(got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

/// An `http-stream` publish item on `channel`; `id` and `prev-id` only when given.
pub fn stream_item(channel: &str, id: Option<&str>, prev_id: Option<&str>, content: &str) -> Value {
    let mut item = json!({"channel": channel, "formats": {"http-stream": {"content": content}}});
    if let Some(id) = id {
        item["id"] = json!(id);
    }
    if let Some(prev_id) = prev_id {
        item["prev-id"] = json!(prev_id);
    }
    item
}

/// An `http-response` publish item on `channel` with `body`.
pub fn response_item(channel: &str, body: &str) -> Value {
    json!({"channel": channel, "formats": {"http-response": {"body": body}}})
}

/// POSTs a JSON publish body to `url` (a proxy's `/publish/`); returns status and body text.
pub async fn publish_json_to(url: &str, body: Value) -> (u16, String) {
    let resp = send(
        Request::post(url)
            .header("content-type", "application/json")
            .body(full(body.to_string()))
            .unwrap(),
    )
    .await;
    let status = resp.status().as_u16();
    (status, text(resp).await)
}

/// Asserts that `entries` (`publisher.item`, as concurrent publishers posted them) hold every
/// item of each of `publishers` once, each publisher's in the order it posted them.
pub fn assert_publisher_order<'a>(
    entries: impl IntoIterator<Item = &'a str>,
    publishers: usize,
    items: usize,
) {
    let mut next = vec![0; publishers];
    for entry in entries {
        let (p, i) = entry.split_once('.').expect("publisher.item");
        let (p, i): (usize, usize) = (p.parse().unwrap(), i.parse().unwrap());
        assert_eq!(i, next[p], "publisher {p} out of order at {entry:?}");
        next[p] += 1;
    }
    assert_eq!(next, vec![items; publishers]);
}
