//! Cluster mode: three Holdfast instances sharing publishes through a real `redis-server` that
//! each test starts on a free port, with SSE clients held through real HTTP; and `rediss://`, to
//! a `redis-server` that speaks only TLS with a certificate from a CA the test makes.
//!
//! The tests skip, saying so, when `redis-server` is not on PATH, unless `HOLDFAST_REQUIRE_REDIS`
//! is set (as `scripts/test` does after installing it) or they run under CI (`CI=true`), in
//! which case they fail: a cluster test that did not run must not count as passed there.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::json;
use support::binary::Binary;
use support::tls::{ServerCert, TestCa};
use support::*;

/// Bound of every wait in these tests.
const DEADLINE: Duration = Duration::from_secs(15);

/// A `redis-server` child process on a port of its own.
struct Redis {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    tls: Option<RedisTls>,
}

/// A Redis that only speaks TLS, with a certificate from a CA made for the test.
struct RedisTls {
    ca: TestCa,
    ca_file: PathBuf,
    cert: ServerCert,
}

impl Redis {
    /// Starts one on a free port; `None` (after saying why) when `redis-server` is missing.
    async fn start() -> Option<Redis> {
        Redis::start_with(false).await
    }

    /// Starts one that accepts only TLS (`--port 0 --tls-port …`), with a server certificate
    /// for 127.0.0.1 from a CA of its own.
    async fn start_tls() -> Option<Redis> {
        Redis::start_with(true).await
    }

    async fn start_with(tls: bool) -> Option<Redis> {
        if !on_path("redis-server") {
            assert!(
                !redis_required(),
                "redis-server is not on PATH but HOLDFAST_REQUIRE_REDIS or CI is set"
            );
            eprintln!("skipping: redis-server is not on PATH (scripts/test installs it)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let tls = tls.then(|| {
            let ca = TestCa::new("Holdfast test Redis CA");
            RedisTls {
                ca_file: ca.write_cert(dir.path(), "ca"),
                cert: ca.server_cert(&["127.0.0.1", "localhost"], dir.path(), "redis"),
                ca,
            }
        });
        let mut redis = Redis {
            port,
            child: None,
            dir,
            tls,
        };
        redis.restart().await;
        Some(redis)
    }

    /// Starts the server (again) on its port and waits until it answers.
    async fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut command = Command::new("redis-server");
        match &self.tls {
            None => command.args(["--port", &self.port.to_string()]),
            Some(tls) => command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(&tls.cert.cert_file)
                .arg("--tls-key-file")
                .arg(&tls.cert.key_file)
                .arg("--tls-ca-cert-file")
                .arg(&tls.ca_file)
                .args(["--tls-auth-clients", "no"]),
        };
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Ok(mut conn) = self.connection().await {
                let pong: Result<String, _> = redis::cmd("PING").query_async(&mut conn).await;
                if pong.is_ok() {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not answer on port {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the server at once (SIGKILL) and waits for it to be gone.
    fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn url(&self) -> String {
        match self.tls {
            None => format!("redis://127.0.0.1:{}", self.port),
            Some(_) => format!("rediss://127.0.0.1:{}", self.port),
        }
    }

    async fn connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let client = match &self.tls {
            None => redis::Client::open(self.url())?,
            Some(tls) => redis::Client::build_with_tls(
                self.url(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(tls.ca.cert_pem.clone().into_bytes()),
                },
            )?,
        };
        client.get_multiplexed_async_connection().await
    }

    /// Waits until `n` instances are subscribed to `channel` in Redis.
    async fn wait_subscribed(&self, channel: &str, n: usize) {
        let key = format!("holdfast:ch:{channel}");
        let mut conn = self.connection().await.unwrap();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let (_, count): (String, usize) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            if count == n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{count} instances subscribed to {channel}, want {n}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether a missing `redis-server` fails the tests instead of skipping them.
fn redis_required() -> bool {
    std::env::var_os("HOLDFAST_REQUIRE_REDIS").is_some()
        || std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
}

/// An SSE origin: `/<channel>` holds a stream on that channel, resuming from `Last-Event-ID`
/// with `prev-id`. Counts its requests.
async fn sse_origin(requests: Arc<AtomicUsize>) -> Origin {
    Origin::start(move |req| {
        let requests = requests.clone();
        async move {
            requests.fetch_add(1, Ordering::SeqCst);
            let channel = req.uri().path().trim_start_matches('/').to_string();
            let grip_channel = match req.headers().get("last-event-id") {
                Some(id) => format!("{channel}; prev-id={}", id.to_str().unwrap()),
                None => channel,
            };
            Response::builder()
                .header("grip-hold", "stream")
                .header("grip-channel", grip_channel)
                .header("content-type", "text/event-stream")
                .body(full(": open\n\n"))
                .unwrap()
        }
    })
    .await
}

/// Config of a test instance in cluster mode.
fn clustered(url: &str, unsubscribe_delay_secs: u64) -> impl FnOnce(&mut holdfast::Config) {
    let url = url.to_string();
    move |c| {
        c.cluster.redis = vec![url];
        c.cluster.unsubscribe_delay_secs = unsubscribe_delay_secs;
        quiet(c);
    }
}

async fn three(redis: &Redis, origin: &Origin, delay: u64) -> Vec<Proxy> {
    let mut out = Vec::new();
    for _ in 0..3 {
        out.push(Proxy::routed_to(origin, clustered(&redis.url(), delay)).await);
    }
    out
}

/// A held stream as its client reads it: what arrived is taken up to a marker, the rest kept.
struct Stream {
    body: Incoming,
    pending: String,
}

impl Stream {
    /// Everything up to and including the first `marker` not read yet (bounded by 10 s a chunk).
    async fn until(&mut self, marker: &str) -> String {
        while !self.pending.contains(marker) {
            match next_chunk(&mut self.body).await {
                Some(c) => self.pending.push_str(&String::from_utf8_lossy(&c)),
                None => panic!("stream ended before {marker:?}; got {:?}", self.pending),
            }
        }
        let end = self.pending.find(marker).expect("present") + marker.len();
        let rest = self.pending.split_off(end);
        std::mem::replace(&mut self.pending, rest)
    }
}

/// Opens an SSE stream at `url` (optionally resuming) and reads the origin's opening comment.
async fn listen(url: &str, last_event_id: Option<&str>) -> Stream {
    let mut req = Request::get(url);
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id);
    }
    let resp = send(req.body(full("")).unwrap()).await;
    assert_eq!(resp.status(), 200);
    let mut stream = Stream {
        body: resp.into_body(),
        pending: String::new(),
    };
    assert_eq!(stream.until(": open\n\n").await, ": open\n\n");
    stream
}

/// Publishes one `http-stream` item, whatever the answer: status and body.
async fn publish(
    proxy: &Proxy,
    channel: &str,
    id: Option<&str>,
    prev_id: Option<&str>,
    content: &str,
) -> (u16, String) {
    let item = stream_item(channel, id, prev_id, content);
    proxy.publish_json(json!({ "items": [item] })).await
}

async fn publish_ok(proxy: &Proxy, channel: &str, content: &str) {
    proxy
        .publish_items([stream_item(channel, None, None, content)])
        .await;
}

/// `id: <n>\ndata: m<n>\n\n`, published with id `n` after `n - 1`.
async fn publish_event(proxy: &Proxy, channel: &str, n: u32) {
    let id = n.to_string();
    let prev = (n > 1).then(|| (n - 1).to_string());
    proxy
        .publish_items([stream_item(channel, Some(&id), prev.as_deref(), &event(n))])
        .await;
}

fn event(n: u32) -> String {
    format!("id: {n}\ndata: m{n}\n\n")
}

fn events(ns: impl IntoIterator<Item = u32>) -> String {
    ns.into_iter().map(event).collect()
}

/// Publishes a last marker and checks it is the next thing every stream reads: nothing was
/// delivered twice before it.
async fn nothing_more<'a>(
    proxy: &Proxy,
    channel: &str,
    streams: impl IntoIterator<Item = &'a mut Stream>,
) {
    publish_ok(proxy, channel, "end;").await;
    for s in streams {
        assert_eq!(s.until("end;").await, "end;");
    }
}

async fn metrics(proxy: &Proxy) -> String {
    text(get(&proxy.publish_url("/metrics")).await).await
}

/// Polls `check` until it is true, failing after [`DEADLINE`] saying what never happened.
async fn until<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually(DEADLINE, || format!("never: {what}"), check).await;
}

#[tokio::test]
async fn a_publish_to_one_instance_reaches_subscribers_on_all_three_once() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let origin = sse_origin(Arc::default()).await;
    let instances = three(&redis, &origin, 0).await;
    let mut bodies = Vec::new();
    for p in &instances {
        bodies.push(listen(&p.url("/news"), None).await);
    }
    // Interest decides subscriptions: only the third instance has a client on "solo".
    let mut solo = listen(&instances[2].url("/solo"), None).await;
    redis.wait_subscribed("news", 3).await;
    redis.wait_subscribed("solo", 1).await;

    publish_ok(&instances[0], "news", "one;").await;
    publish_ok(&instances[1], "news", "two;").await;
    publish_ok(&instances[0], "solo", "alone;").await;
    for body in &mut bodies {
        assert_eq!(body.until("one;").await, "one;");
        assert_eq!(body.until("two;").await, "two;");
    }
    assert_eq!(solo.until("alone;").await, "alone;");

    let m = metrics(&instances[2]).await;
    assert!(m.contains("holdfast_cluster_connected 1\n"), "{m}");
    assert!(m.contains("holdfast_cluster_subscriptions 2\n"), "{m}");
    assert!(
        m.contains("holdfast_cluster_items_received_total 3\n"),
        "{m}"
    );

    // With no delay configured, the last client leaving unsubscribes its instance.
    drop(solo);
    redis.wait_subscribed("solo", 0).await;
    drop(bodies.remove(0));
    redis.wait_subscribed("news", 2).await;
    publish_ok(&instances[0], "news", "three;").await;
    for body in &mut bodies {
        assert_eq!(body.until("three;").await, "three;");
    }
    nothing_more(&instances[1], "news", &mut bodies).await;
}

#[tokio::test]
async fn per_channel_order_holds_across_instances() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let origin = sse_origin(Arc::default()).await;
    let instances = three(&redis, &origin, 60).await;
    let mut bodies = Vec::new();
    for p in &instances {
        bodies.push(listen(&p.url("/ord"), None).await);
    }
    redis.wait_subscribed("ord", 3).await;
    // No ids: nothing but the shared stream puts these in order.
    for i in 0..30 {
        publish_ok(&instances[i % 3], "ord", &format!("{i};")).await;
    }
    let want: String = (0..30).map(|i| format!("{i};")).collect();
    for body in &mut bodies {
        assert_eq!(body.until("29;").await, want);
    }
    nothing_more(&instances[0], "ord", &mut bodies).await;
}

#[tokio::test]
async fn a_duplicate_id_sent_to_different_instances_is_delivered_once() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let origin = sse_origin(Arc::default()).await;
    let instances = three(&redis, &origin, 60).await;
    let mut bodies = Vec::new();
    for p in &instances {
        bodies.push(listen(&p.url("/dup"), None).await);
    }
    redis.wait_subscribed("dup", 3).await;
    for p in &instances {
        let (status, body) = publish(p, "dup", Some("x"), None, "X;").await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = publish(&instances[2], "dup", Some("y"), Some("x"), "Y;").await;
    assert_eq!(status, 200);
    for body in &mut bodies {
        assert_eq!(body.until("Y;").await, "X;Y;");
    }
    nothing_more(&instances[0], "dup", &mut bodies).await;
}

#[tokio::test]
async fn redis_restart_keeps_held_streams_and_refuses_publishes_meanwhile() {
    let Some(mut redis) = Redis::start().await else {
        return;
    };
    let origin = sse_origin(Arc::default()).await;
    let instances = three(&redis, &origin, 60).await;
    let mut bodies = Vec::new();
    for p in &instances {
        bodies.push(listen(&p.url("/live"), None).await);
    }
    redis.wait_subscribed("live", 3).await;
    publish_ok(&instances[0], "live", "before;").await;
    for body in &mut bodies {
        assert_eq!(body.until("before;").await, "before;");
    }

    redis.kill();
    for p in &instances {
        let (status, body) = publish(p, "live", Some("lost"), None, "lost;").await;
        assert_eq!(status, 503, "{body}");
        assert!(body.starts_with("cluster bus unavailable: "), "{body}");
    }
    for p in &instances {
        until("the gauge shows the lost connection", || async {
            metrics(p).await.contains("holdfast_cluster_connected 0\n")
        })
        .await;
        assert!(!p.app.bus.is_connected());
        let (status, body) = p.readyz().await;
        assert_eq!(status, 503, "{body}");
        assert!(
            body.contains("cluster bus: not every Redis server is connected"),
            "{body}"
        );
    }

    redis.restart().await;
    redis.wait_subscribed("live", 3).await;
    for p in &instances {
        until("the instance is connected again", || async {
            p.app.bus.is_connected()
        })
        .await;
        assert_eq!(p.readyz().await, (200, "ready\n".to_string()));
    }
    publish_ok(&instances[1], "live", "after;").await;
    // The same connections, still open: nothing from the outage, the new item once.
    for body in &mut bodies {
        assert_eq!(body.until("after;").await, "after;");
    }
    nothing_more(&instances[2], "live", &mut bodies).await;
    let m = metrics(&instances[0]).await;
    assert!(m.contains("holdfast_cluster_connected 1\n"), "{m}");
    assert!(m.contains("holdfast_cluster_reconnects_total 1\n"), "{m}");
}

/// A TCP relay in front of Redis that the test can cut — every connection closed, new ones
/// closed at once — and restore: an instance that loses Redis while the others keep it.
struct Relay {
    addr: SocketAddr,
    open: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(redis: &Redis) -> Relay {
        let target: SocketAddr = format!("127.0.0.1:{}", redis.port).parse().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (open, watch) = tokio::sync::watch::channel(true);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !*watch.borrow() {
                    continue;
                }
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watch.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        Relay { addr, open, task }
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    fn cut(&self) {
        self.open.send_replace(false);
    }

    fn restore(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn an_instance_cut_off_from_redis_catches_up_on_what_it_missed() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let relay = Relay::start(&redis).await;
    let origin = sse_origin(Arc::default()).await;
    let a = Proxy::routed_to(&origin, clustered(&redis.url(), 60)).await;
    let b = Proxy::routed_to(&origin, clustered(&redis.url(), 60)).await;
    let cut_off = Proxy::routed_to(&origin, clustered(&relay.url(), 60)).await;
    let mut streams = Vec::new();
    for p in [&a, &b, &cut_off] {
        streams.push(listen(&p.url("/gap"), None).await);
    }
    redis.wait_subscribed("gap", 3).await;
    publish_event(&a, "gap", 1).await;
    for s in &mut streams {
        assert_eq!(s.until("data: m1\n\n").await, events([1]));
    }

    relay.cut();
    redis.wait_subscribed("gap", 2).await;
    until("the cut-off instance notices", || async {
        !cut_off.app.bus.is_connected()
    })
    .await;
    let (status, body) = publish(&cut_off, "gap", Some("x"), None, "x;").await;
    assert_eq!(status, 503, "{body}");
    for n in 2..=4 {
        publish_event(&a, "gap", n).await;
    }
    for s in &mut streams[..2] {
        assert_eq!(s.until("data: m4\n\n").await, events(2..=4));
    }

    relay.restore();
    redis.wait_subscribed("gap", 3).await;
    // Its client, connected all along, gets what was published meanwhile, in order, once.
    assert_eq!(streams[2].until("data: m4\n\n").await, events(2..=4));
    until("the instance takes publishes again", || async {
        cut_off.app.bus.is_connected()
    })
    .await;
    publish_event(&cut_off, "gap", 5).await;
    for s in &mut streams {
        assert_eq!(s.until("data: m5\n\n").await, events([5]));
    }
    nothing_more(&b, "gap", &mut streams).await;
}

/// One of an instance's two connections to a Redis server, told apart by what the instance
/// sends: only the pubsub connection sends `SUBSCRIBE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Command,
    Pubsub,
}

/// A TCP relay in front of Redis that can hold one command (`PING`, `PUBLISH`) an instance sends
/// on one kind of connection — Redis answering late there only — and tells when it is holding
/// one. Counts the connections it accepted.
struct Staller {
    addr: SocketAddr,
    hold: tokio::sync::watch::Sender<Option<(Link, &'static str)>>,
    held: tokio::sync::watch::Sender<Option<Link>>,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Staller {
    async fn start(redis: &Redis) -> Staller {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let target: SocketAddr = format!("127.0.0.1:{}", redis.port).parse().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (hold, _) = tokio::sync::watch::channel(None);
        let (held, _) = tokio::sync::watch::channel(None);
        let accepted = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (hold, held, accepted) = (hold.clone(), held.clone(), accepted.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                        continue;
                    };
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_server, mut to_server) = server.into_split();
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                    });
                    let (mut hold, held) = (hold.subscribe(), held.clone());
                    tokio::spawn(async move {
                        let mut link = Link::Command;
                        let mut buf = vec![0; 16 * 1024];
                        loop {
                            let n = match from_client.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            let sent = String::from_utf8_lossy(&buf[..n]).to_ascii_uppercase();
                            if sent.contains("SUBSCRIBE") {
                                link = Link::Pubsub;
                            }
                            let holding = *hold.borrow_and_update();
                            if let Some((on, command)) = holding {
                                if on == link && sent.contains(command) {
                                    held.send_replace(Some(link));
                                    if hold.wait_for(|h| *h != holding).await.is_err() {
                                        return;
                                    }
                                }
                            }
                            if to_server.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        Staller {
            addr,
            hold,
            held,
            accepted,
            task,
        }
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Holds from now on the writes carrying `command` (upper case) sent on `link`
    /// connections, until told otherwise; `None` lets everything through.
    fn hold(&self, what: Option<(Link, &'static str)>) {
        self.hold.send_replace(what);
    }

    /// Waits until a command on a `link` connection is being held.
    async fn holding(&self, link: Link) {
        let mut held = self.held.subscribe();
        tokio::time::timeout(DEADLINE, held.wait_for(|h| *h == Some(link)))
            .await
            .unwrap_or_else(|_| panic!("the instance sent nothing on its {link:?} connection"))
            .unwrap();
    }
}

impl Drop for Staller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The value of the one sample of `name` on a metrics page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// A Redis, a [`Staller`] in front of it, an SSE origin and an instance that reaches Redis
/// through the staller, clustered with `tweak` applied; `None` without a Redis to run.
async fn behind_a_staller(
    tweak: impl FnOnce(&mut holdfast::Config),
) -> Option<(Redis, Staller, Origin, Proxy)> {
    let redis = Redis::start().await?;
    let staller = Staller::start(&redis).await;
    let origin = sse_origin(Arc::default()).await;
    let slow_url = staller.url();
    let slow = Proxy::routed_to(&origin, move |c| {
        clustered(&slow_url, 60)(c);
        tweak(c);
    })
    .await;
    Some((redis, staller, origin, slow))
}

/// `slow` never lost its link: connected, no reconnect, and the staller accepted no connection
/// after the first `connections`.
async fn kept_the_link(slow: &Proxy, staller: &Staller, connections: usize) {
    let m = metrics(slow).await;
    assert!(m.contains("holdfast_cluster_connected 1\n"), "{m}");
    assert!(m.contains("holdfast_cluster_reconnects_total 0\n"), "{m}");
    assert!(slow.app.bus.is_connected());
    assert_eq!(staller.accepted.load(Ordering::SeqCst), connections);
}

#[tokio::test]
async fn pings_answered_late_but_within_ping_timeout_keep_the_link() {
    let Some((redis, staller, origin, slow)) =
        behind_a_staller(|c| c.cluster.ping_timeout_secs = 10).await
    else {
        return;
    };
    let publisher = Proxy::routed_to(&origin, clustered(&redis.url(), 60)).await;
    let mut stream = listen(&slow.url("/slow"), None).await;
    redis.wait_subscribed("slow", 1).await;
    let connections = staller.accepted.load(Ordering::SeqCst);

    // Redis answers the next PING on the pubsub connection 2.5 s late, then the PING on the
    // command connection (sent once the first is answered) 2.5 s late too: both longer than
    // the 2 s other Redis calls get by default, both within `ping_timeout_secs`.
    let late = Duration::from_millis(2500);
    staller.hold(Some((Link::Pubsub, "PING")));
    staller.holding(Link::Pubsub).await;
    tokio::time::sleep(late).await;
    staller.hold(Some((Link::Command, "PING")));
    staller.holding(Link::Command).await;
    let since = tokio::time::Instant::now();
    // Read now: the next round of PINGs, due as soon as this one ends, replaces it.
    until("the gauge shows the late PING", || async {
        sample(&metrics(&slow).await, "holdfast_cluster_redis_ping_seconds")
            .is_some_and(|s| s > 2.0)
    })
    .await;
    tokio::time::sleep_until(since + late).await;
    staller.hold(None);

    publish_ok(&publisher, "slow", "after;").await;
    assert_eq!(stream.until("after;").await, "after;");
    kept_the_link(&slow, &staller, connections).await;
}

#[tokio::test]
async fn a_publish_answered_late_but_within_command_timeout_is_delivered_and_keeps_the_link() {
    let Some((redis, staller, _origin, slow)) =
        behind_a_staller(|c| c.cluster.command_timeout_secs = 10).await
    else {
        return;
    };
    let mut stream = listen(&slow.url("/late"), None).await;
    redis.wait_subscribed("late", 1).await;
    let connections = staller.accepted.load(Ordering::SeqCst);

    // Redis answers the publish's transaction 3 s late: past the default 2 s, within the 10 s
    // set. The publishing instance does not deliver locally, so its subscriber gets the item
    // only once Redis has it.
    let late = Duration::from_secs(3);
    staller.hold(Some((Link::Command, "PUBLISH")));
    let release = async {
        staller.holding(Link::Command).await;
        tokio::time::sleep(late).await;
        staller.hold(None);
    };
    let ((status, body), ()) = tokio::join!(publish(&slow, "late", None, None, "late;"), release);
    assert_eq!(status, 200, "{body}");
    assert_eq!(stream.until("late;").await, "late;");
    // Never lost, and the next publish goes straight through.
    publish_ok(&slow, "late", "next;").await;
    assert_eq!(stream.until("next;").await, "next;");
    kept_the_link(&slow, &staller, connections).await;
}

#[tokio::test]
async fn a_publish_redis_answers_too_late_gets_503_saying_it_may_still_be_delivered() {
    let Some((redis, staller, origin, slow)) =
        behind_a_staller(|c| c.cluster.command_timeout_secs = 1).await
    else {
        return;
    };
    let other = Proxy::routed_to(&origin, clustered(&redis.url(), 60)).await;
    let mut stream = listen(&other.url("/maybe"), None).await;
    redis.wait_subscribed("maybe", 1).await;
    until("the publishing instance is connected", || async {
        slow.app.bus.is_connected()
    })
    .await;

    // The transaction reaches Redis only after the publisher was answered: the 503 must not
    // claim that nothing was published.
    staller.hold(Some((Link::Command, "PUBLISH")));
    let (status, body) = publish(&slow, "maybe", None, None, "maybe;").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("did not answer within cluster.command_timeout_secs (1 s); the item may still be delivered"),
        "{body}"
    );
    staller.holding(Link::Command).await;
    staller.hold(None);
    assert_eq!(stream.until("maybe;").await, "maybe;");
}

#[test]
fn a_redis_timeout_of_zero_is_refused_at_start_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("holdfast.toml");
    for field in ["command_timeout_secs", "connect_timeout_secs"] {
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = [\"127.0.0.1:0\"]\npublish_listen = \"127.0.0.1:0\"\n\n\
                 [cluster]\nredis = [\"redis://127.0.0.1:1\"]\n{field} = 0\n"
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_holdfast"))
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Bounded: a server that accepted the value would run until killed. Its stderr ends
        // when it exits.
        let mut stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
            let _ = tx.send(text);
        });
        let Ok(err) = rx.recv_timeout(DEADLINE) else {
            let _ = child.kill();
            panic!("{field} = 0 was accepted: the server started");
        };
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(2), "{err}");
        let named = format!(
            "{}:7: cluster.{field}: must be at least 1",
            config.display()
        );
        assert!(err.contains(&named), "{err}");
    }
}

/// A Holdfast binary in cluster mode (a process of its own, to be killed with SIGKILL).
fn clustered_binary(dir: &Path, origin: &Origin, redis: &Redis) -> Binary {
    let routes = dir.join("routes");
    std::fs::write(&routes, format!("* {}\n", origin.target())).unwrap();
    let config: PathBuf = dir.join("holdfast.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = [\"127.0.0.1:0\"]\npublish_listen = \"127.0.0.1:0\"\n\
         routes = \"routes\"\n\n[reliability]\nupdate_on_first_subscription = false\n",
    )
    .unwrap();
    Binary::start([
        "--config",
        config.to_str().unwrap(),
        "--redis",
        &redis.url(),
    ])
}

#[tokio::test]
async fn clients_of_a_killed_instance_resume_elsewhere_with_every_message_once() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let requests = Arc::new(AtomicUsize::new(0));
    let origin = sse_origin(requests.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut doomed = clustered_binary(dir.path(), &origin, &redis);
    // This instance keeps no history of its own (every item is evicted at once), so clients
    // resuming there are caught up from the history in Redis.
    let forgetful = Proxy::routed_to(&origin, |c| {
        clustered(&redis.url(), 60)(c);
        c.reliability.history_max_bytes = 1;
    })
    .await;
    let other = Proxy::routed_to(&origin, clustered(&redis.url(), 60)).await;

    let mut doomed_clients = Vec::new();
    for _ in 0..3 {
        doomed_clients.push(listen(&doomed.url("/ev"), None).await);
    }
    let mut staying = vec![
        listen(&forgetful.url("/ev"), None).await,
        listen(&other.url("/ev"), None).await,
    ];
    redis.wait_subscribed("ev", 3).await;
    for n in 1..=3 {
        publish_event(&forgetful, "ev", n).await;
    }
    for body in doomed_clients.iter_mut().chain(staying.iter_mut()) {
        assert_eq!(body.until("data: m3\n\n").await, events(1..=3));
    }

    doomed.child.kill().unwrap();
    doomed.child.wait().unwrap();
    redis.wait_subscribed("ev", 2).await;
    drop(doomed_clients);
    for n in 4..=6 {
        publish_event(&other, "ev", n).await;
    }
    for body in &mut staying {
        assert_eq!(body.until("data: m6\n\n").await, events(4..=6));
    }

    // The killed instance's clients come back with the last id they saw.
    let mut resumed = Vec::new();
    for target in [&forgetful, &forgetful, &other] {
        let mut body = listen(&target.url("/ev"), Some("3")).await;
        assert_eq!(body.until("data: m6\n\n").await, events(4..=6));
        resumed.push(body);
    }
    publish_event(&forgetful, "ev", 7).await;
    for body in resumed.iter_mut().chain(staying.iter_mut()) {
        assert_eq!(body.until("data: m7\n\n").await, events([7]));
    }
    nothing_more(&other, "ev", resumed.iter_mut().chain(staying.iter_mut())).await;
    assert_eq!(
        requests.load(Ordering::SeqCst),
        8,
        "one origin request per connection: none to catch up"
    );
}

#[tokio::test]
async fn publishes_reach_every_instance_through_a_redis_that_speaks_only_tls() {
    let Some(redis) = Redis::start_tls().await else {
        return;
    };
    let ca_file = redis.tls.as_ref().unwrap().ca_file.clone();
    let origin = sse_origin(Arc::default()).await;
    let mut instances = Vec::new();
    for _ in 0..2 {
        let (url, ca_file) = (redis.url(), ca_file.clone());
        instances.push(
            Proxy::routed_to(&origin, move |c| {
                clustered(&url, 0)(c);
                c.cluster.redis_ca_file = Some(ca_file);
            })
            .await,
        );
    }
    let mut a = listen(&instances[0].url("/tls"), None).await;
    let mut b = listen(&instances[1].url("/tls"), None).await;
    redis.wait_subscribed("tls", 2).await;

    publish_ok(&instances[0], "tls", "one;").await;
    publish_event(&instances[1], "tls", 1).await;
    for s in [&mut a, &mut b] {
        assert_eq!(s.until("one;").await, "one;");
        assert_eq!(s.until(&event(1)).await, event(1));
    }
    let m = metrics(&instances[1]).await;
    assert!(m.contains("holdfast_cluster_connected 1\n"), "{m}");
    nothing_more(&instances[0], "tls", [&mut a, &mut b]).await;
}

/// PINGs a Redis through the client Holdfast's cluster bus would make for `url` and `ca`.
async fn ping(url: &str, ca: Option<&str>) -> Result<String, String> {
    let client = holdfast::config::redis_url::client(url, ca.map(str::as_bytes))?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_tls_redis_is_trusted_only_through_its_ca_unless_insecure() {
    let Some(redis) = Redis::start_tls().await else {
        return;
    };
    let url = redis.url();
    let ca = redis.tls.as_ref().unwrap().ca.cert_pem.clone();
    assert_eq!(ping(&url, Some(&ca)).await.unwrap(), "PONG");

    let stranger = TestCa::new("Someone else's CA");
    let err = ping(&url, Some(&stranger.cert_pem)).await.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    // Without a CA file the system's roots apply, and they do not know the test's CA.
    let err = ping(&url, None).await.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert_eq!(
        ping(&format!("{url}#insecure"), None).await.unwrap(),
        "PONG"
    );
}

#[tokio::test]
async fn an_item_pushed_to_one_instances_zmq_input_reaches_every_instance_once() {
    use zeromq::{Socket as _, SocketSend as _};
    let Some(redis) = Redis::start().await else {
        return;
    };
    let origin = sse_origin(Arc::default()).await;
    let mut instances = Vec::new();
    for _ in 0..2 {
        let cluster = clustered(&redis.url(), 0);
        instances.push(
            Proxy::routed_to(&origin, move |c| {
                cluster(c);
                c.zmq.push_in_spec = "tcp://127.0.0.1:0".into();
            })
            .await,
        );
    }
    let mut bodies = Vec::new();
    for p in &instances {
        bodies.push(listen(&p.url("/news"), None).await);
    }
    redis.wait_subscribed("news", 2).await;

    let mut push = zeromq::PushSocket::new();
    let pull = instances[0].zmq.publish_pull.clone().unwrap();
    push.connect(&pull).await.unwrap();
    let item = json!({"channel": "news", "formats": {"http-stream": {"content": "via zmq;"}}});
    let mut msg = b"J".to_vec();
    msg.extend(item.to_string().as_bytes());
    push.send(bytes::Bytes::from(msg).into()).await.unwrap();
    for body in &mut bodies {
        assert_eq!(body.until("via zmq;").await, "via zmq;");
    }
    nothing_more(&instances[1], "news", &mut bodies).await;
}

/// A held SSE client that reconnects whenever its stream ends or its connection is refused,
/// resuming with `Last-Event-ID`, until it has event `last`; returns the ids it read, in order.
async fn reconnecting_client(addr: SocketAddr, channel: &'static str, last: u32) -> Vec<u32> {
    let mut ids: Vec<u32> = Vec::new();
    let mut attempts = 0;
    while ids.last() != Some(&last) {
        attempts += 1;
        assert!(
            attempts <= 50,
            "{attempts} connections without event {last}: {ids:?}"
        );
        let mut req = Request::get(format!("http://{addr}/{channel}"));
        if let Some(id) = ids.last() {
            req = req.header("last-event-id", id.to_string());
        }
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<TestBody>();
        let Ok(resp) = client.request(req.body(full("")).unwrap()).await else {
            // Refused while a listener closed: try again, as a browser's EventSource does.
            tokio::task::yield_now().await;
            continue;
        };
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut pending = String::new();
        while let Ok(Some(chunk)) = tokio::time::timeout(DEADLINE, next_chunk(&mut body)).await {
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = pending.find("\n\n") {
                let event: String = pending.drain(..end + 2).collect();
                if let Some(id) = event.strip_prefix("id: ") {
                    ids.push(id.split('\n').next().unwrap().parse().unwrap());
                }
            }
            if ids.last() == Some(&last) {
                break;
            }
        }
    }
    ids
}

/// The listening address of `kind` (`Client` or `Publish`) in a binary's log.
fn listening(running: &Binary, kind: &str) -> SocketAddr {
    let line =
        running.wait_for(|v| v["fields"]["message"] == "listening" && v["fields"]["kind"] == kind);
    line["fields"]["addr"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_new_process_takes_over_the_port_and_held_clients_resume_with_nothing_lost() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let requests = Arc::new(AtomicUsize::new(0));
    let origin = sse_origin(requests.clone()).await;
    // Both processes listen on the same port, which must be fixed: one the system has free.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("routes"),
        format!("* {}\n", origin.target()),
    )
    .unwrap();
    let config = dir.path().join("holdfast.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\npublish_listen = \"127.0.0.1:0\"\n\
             routes = \"routes\"\nreuse_port = true\nshutdown_grace_secs = 5\n\
             [cluster]\nredis = [\"{}\"]\n\
             [reliability]\nupdate_on_first_subscription = false\n",
            redis.url()
        ),
    )
    .unwrap();
    let args = ["--config", config.to_str().unwrap(), "--log-level", "info"];

    let mut old = Binary::start(args);
    let old_publish = listening(&old, "Publish");
    const CLIENTS: usize = 20;
    const LAST: u32 = 12;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(reconnecting_client(old.client, "soak", LAST)))
        .collect();
    redis.wait_subscribed("soak", 1).await;
    until("every client held by the old process", || {
        let url = format!("http://{old_publish}/metrics");
        async move {
            text(get(&url).await)
                .await
                .contains(&format!("holdfast_subscriptions {CLIENTS}\n"))
        }
    })
    .await;
    let publish = |addr: SocketAddr, n: u32| async move {
        let id = n.to_string();
        let prev = (n > 1).then(|| (n - 1).to_string());
        let item = stream_item("soak", Some(&id), prev.as_deref(), &event(n));
        let (status, body) = publish_json_to(
            &format!("http://{addr}/publish/"),
            json!({ "items": [item] }),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    };
    for n in 1..=4 {
        publish(old_publish, n).await;
    }

    // The new process binds the same port beside the old one; then the old one is stopped and
    // drains, its clients reconnect to the port, and publishing goes on through the new one.
    let new = Binary::start(args);
    assert_eq!(new.client, old.client);
    let new_publish = listening(&new, "Publish");
    // As a rolling restart does: the old one stops once the new one is ready (its bus connected).
    until("the new process ready", || {
        let url = format!("http://{new_publish}/readyz");
        async move { get(&url).await.status() == 200 }
    })
    .await;
    old.signal("TERM");
    for n in 5..=LAST {
        publish(new_publish, n).await;
    }
    for client in clients {
        let ids = tokio::time::timeout(Duration::from_secs(60), client)
            .await
            .expect("every client reads the last event")
            .unwrap();
        assert_eq!(ids, (1..=LAST).collect::<Vec<_>>());
    }
    assert_eq!(old.child.wait().unwrap().code(), Some(0));
    // Every client was held twice at least: by the old process, then again after it drained.
    assert!(
        requests.load(Ordering::SeqCst) >= 2 * CLIENTS,
        "{requests:?}"
    );
}

/// POSTs Bayeux messages to `proxy`'s `/bayeux` endpoint; the replies.
async fn bayeux(proxy: &Proxy, messages: serde_json::Value) -> Vec<serde_json::Value> {
    let req = Request::post(proxy.url("/bayeux"))
        .header("content-type", "application/json")
        .body(full(messages.to_string()))
        .unwrap();
    let body = tokio::time::timeout(DEADLINE, text(send(req).await))
        .await
        .expect("answer in time");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn bayeux_sessions_get_publishes_and_patterns_from_other_instances() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    // The application allows every subscription.
    let origin = Origin::start(|req: Request<Incoming>| async move {
        use http_body_util::BodyExt;
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let mut r = Response::builder().status(200);
        if let Some(s) = m["subscription"].as_str() {
            r = r.header("Grip-Channel", s);
        }
        r.body(full("")).unwrap()
    })
    .await;
    let routes = format!("*,bayeux=/bayeux {}\n", origin.target());
    let a = Proxy::start(&routes, clustered(&redis.url(), 0)).await;
    let b = Proxy::start(&routes, clustered(&redis.url(), 0)).await;

    let r = bayeux(
        &b,
        json!([{"channel": "/meta/handshake", "version": "1.0",
                "supportedConnectionTypes": ["long-polling"]}]),
    )
    .await;
    let client = r[0]["clientId"].as_str().unwrap().to_string();
    for channel in ["/room", "/chat/*"] {
        let r = bayeux(
            &b,
            json!([{"channel": "/meta/subscribe", "clientId": client, "subscription": channel}]),
        )
        .await;
        assert_eq!(r[0]["successful"], true, "{r:?}");
    }
    redis.wait_subscribed("/room", 1).await;
    redis.wait_subscribed("/chat/*", 1).await;

    // Published on the other instance: the item, and its copy for the pattern, come through
    // Redis.
    for (channel, data) in [("/room", 1), ("/chat/x", 2)] {
        let item = json!({"channel": channel, "formats": {"json-object": {"data": data}}});
        let (status, body) = a.publish_json(json!({ "items": [item] })).await;
        assert_eq!(status, 200, "{body}");
    }
    let mut events = Vec::new();
    while events.len() < 2 {
        let r = bayeux(
            &b,
            json!([{"channel": "/meta/connect", "clientId": client,
                    "connectionType": "long-polling"}]),
        )
        .await;
        events.extend(r.into_iter().skip(1));
    }
    assert_eq!(
        events,
        [
            json!({"channel": "/room", "data": 1}),
            json!({"channel": "/chat/x", "data": 2}),
        ]
    );
}

/// `GET`/`POST`/`DELETE` on an instance's `/webhooks` routes: status and JSON (or text).
async fn webhooks_api(
    proxy: &Proxy,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let req = Request::builder()
        .method(method)
        .uri(proxy.publish_url(path))
        .body(full(body.map(|b| b.to_string()).unwrap_or_default()))
        .unwrap();
    let resp = send(req).await;
    let status = resp.status().as_u16();
    let text = text(resp).await;
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, json)
}

async fn listed(proxy: &Proxy) -> Vec<String> {
    let (_, list) = webhooks_api(proxy, "GET", "/webhooks", None).await;
    list["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn webhook_registrations_are_shared_and_each_item_is_delivered_once_cluster_wide() {
    let Some(mut redis) = Redis::start().await else {
        return;
    };
    let (tx, mut got) = tokio::sync::mpsc::channel::<String>(100);
    let receiver = Origin::start(move |req: Request<Incoming>| {
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
    let origin = sse_origin(Arc::default()).await;
    let hooked = |c: &mut holdfast::Config| {
        clustered(&redis.url(), 0)(c);
        c.outbound.allow = vec!["127.0.0.0/8".to_string()];
        c.webhooks.cluster_refresh_ms = 20;
    };
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Proxy::routed_to(&origin, hooked).await);
    }
    let url = format!("http://127.0.0.1:{}/hook", receiver.addr.port());
    let (status, hook) = webhooks_api(
        &nodes[0],
        "POST",
        "/webhooks",
        Some(json!({"channel": "shared", "url": url})),
    )
    .await;
    assert_eq!(status, 201, "{hook}");
    let id = hook["id"].as_str().unwrap().to_string();
    for node in &nodes {
        eventually(
            DEADLINE,
            || "every instance lists it".into(),
            || async { listed(node).await == [id.clone()] },
        )
        .await;
    }

    // One item accepted by each instance: the receiver gets each once.
    for (n, node) in nodes.iter().enumerate() {
        node.publish_items([stream_item("shared", Some(&format!("i{n}")), None, "x")])
            .await;
    }
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            tokio::time::timeout(DEADLINE, got.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    ids.sort();
    assert_eq!(ids, ["i0", "i1", "i2"]);
    // Each instance delivered only what it accepted: one each, three in all.
    for node in &nodes {
        eventually(
            DEADLINE,
            || "one delivery per instance".into(),
            || async {
                let (_, view) = webhooks_api(node, "GET", &format!("/webhooks/{id}"), None).await;
                view["delivered"] == 1 && view["queued"] == 0
            },
        )
        .await;
    }
    assert!(got.try_recv().is_err(), "no item was delivered twice");

    // Deleted through another instance, it is gone everywhere; the registration outlives the
    // instances, which Redis keeps.
    let (status, _) = webhooks_api(&nodes[2], "DELETE", &format!("/webhooks/{id}"), None).await;
    assert_eq!(status, 204);
    for node in &nodes {
        eventually(
            DEADLINE,
            || "gone everywhere".into(),
            || async { listed(node).await.is_empty() },
        )
        .await;
    }
    let (status, kept) = webhooks_api(
        &nodes[1],
        "POST",
        "/webhooks",
        Some(json!({"channel": "kept", "url": url})),
    )
    .await;
    assert_eq!(status, 201);
    for node in nodes {
        node.shutdown().await;
    }
    let fresh = Proxy::routed_to(&origin, hooked).await;
    eventually(
        DEADLINE,
        || "read back from Redis".into(),
        || async { listed(&fresh).await == [kept["id"].as_str().unwrap().to_string()] },
    )
    .await;

    // Without Redis a registration cannot be kept: 503, naming Redis; the ones read stay.
    redis.kill();
    let (status, body) = webhooks_api(
        &fresh,
        "POST",
        "/webhooks",
        Some(json!({"channel": "later", "url": url})),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.as_str()
            .unwrap()
            .starts_with("webhook registrations in Redis redis://127.0.0.1:"),
        "{body}"
    );
    assert_eq!(listed(&fresh).await.len(), 1);
    fresh.shutdown().await;
}
