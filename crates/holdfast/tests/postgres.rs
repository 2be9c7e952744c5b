//! PostgreSQL as a publish source: a real PostgreSQL server (Debian's packages, started by
//! `scripts/postgres` as an unprivileged cluster in a temporary folder, one per test), Holdfast
//! consuming its `LISTEN` channels and outbox tables, and SSE clients held through real HTTP.
//!
//! The tests skip, saying so, when `scripts/postgres check` says PostgreSQL cannot be used,
//! unless `HOLDFAST_REQUIRE_POSTGRES` is set (as `scripts/test` does) or they run under CI, in
//! which case they fail. The cluster test needs `redis-server` the same way
//! (`HOLDFAST_REQUIRE_REDIS`).

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use holdfast::config::postgres::PostgresSource;
use hyper::body::Incoming;
use hyper::Request;
use serde_json::json;
use support::*;
use tokio_postgres::GenericClient;

/// Bound of every wait in these tests.
const DEADLINE: Duration = Duration::from_secs(20);

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/postgres")
}

fn required(var: &str) -> bool {
    std::env::var_os(var).is_some() || std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A PostgreSQL cluster of the test's own, in a temporary folder, on a port of its own.
struct Pg {
    dir: tempfile::TempDir,
    port: u16,
    running: bool,
}

impl Pg {
    /// Whether PostgreSQL can be used here; `false` after saying why the test is skipped.
    fn available() -> bool {
        let out = Command::new(script()).arg("check").output().unwrap();
        if out.status.success() {
            return true;
        }
        let why = String::from_utf8_lossy(&out.stderr);
        assert!(
            !required("HOLDFAST_REQUIRE_POSTGRES"),
            "PostgreSQL is required (HOLDFAST_REQUIRE_POSTGRES or CI) but: {why}"
        );
        eprintln!("skipping: {why}");
        false
    }

    /// A cluster not started yet, on a free port.
    fn new() -> Pg {
        Pg {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            running: false,
        }
    }

    /// A running cluster; `None` when PostgreSQL cannot be used here.
    async fn start() -> Option<Pg> {
        if !Pg::available() {
            return None;
        }
        let mut pg = Pg::new();
        pg.up().await;
        Some(pg)
    }

    /// Starts the server (again), waiting until it accepts connections.
    async fn up(&mut self) {
        let (dir, port) = (self.dir.path().to_path_buf(), self.port);
        let out = tokio::task::spawn_blocking(move || {
            Command::new(script())
                .arg("start")
                .arg(dir)
                .arg(port.to_string())
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "scripts/postgres start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.running = true;
    }

    /// Stops the server (fast shutdown: connections are closed).
    async fn down(&mut self) {
        let dir = self.dir.path().to_path_buf();
        let out = tokio::task::spawn_blocking(move || {
            Command::new(script())
                .arg("stop")
                .arg(dir)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(out.status.success(), "scripts/postgres stop");
        self.running = false;
    }

    fn url(&self) -> String {
        format!("postgres://holdfast@127.0.0.1:{}/postgres", self.port)
    }

    /// A client of the test's own.
    async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .expect("connect to the test's PostgreSQL");
        tokio::spawn(connection);
        client
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if self.running {
            let _ = Command::new(script())
                .arg("stop")
                .arg(self.dir.path())
                .output();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The outbox table as docs/postgres.md describes it, with a trigger that wakes the source.
async fn create_outbox(db: &tokio_postgres::Client) {
    db.batch_execute(
        "CREATE TABLE outbox (
           id bigserial PRIMARY KEY,
           tx xid8 NOT NULL DEFAULT pg_current_xact_id(),
           item jsonb NOT NULL
         );
         CREATE INDEX ON outbox ((item->>'channel'), tx, id);
         CREATE INDEX ON outbox (tx, id);
         CREATE FUNCTION outbox_wake() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN PERFORM pg_notify('outbox_wake', ''); RETURN NULL; END $$;
         CREATE TRIGGER outbox_wake AFTER INSERT ON outbox
           FOR EACH STATEMENT EXECUTE FUNCTION outbox_wake();",
    )
    .await
    .unwrap();
}

/// Inserts an outbox row whose item writes `data: <text>` to streams on `channel`.
async fn insert(db: &impl GenericClient, channel: &str, text: &str) {
    let item = stream_item(channel, None, None, &format!("data: {text}\n\n"));
    db.execute(
        "INSERT INTO outbox (item) VALUES ($1::text::jsonb)",
        &[&item.to_string()],
    )
    .await
    .unwrap();
}

fn listen_source(url: &str, channels: &[&str]) -> PostgresSource {
    PostgresSource {
        name: "events".into(),
        url: url.into(),
        listen: channels.iter().map(|c| c.to_string()).collect(),
        reconnect_max_ms: 500,
        ..PostgresSource::default()
    }
}

fn outbox_source(url: &str) -> PostgresSource {
    PostgresSource {
        name: "outbox".into(),
        url: url.into(),
        outbox: Some("outbox".into()),
        notify: Some("outbox_wake".into()),
        reconnect_max_ms: 500,
        ..PostgresSource::default()
    }
}

/// An SSE origin: `/<channel>` holds a stream on that channel, resuming from `Last-Event-ID`
/// with `prev-id`.
async fn sse_origin() -> Origin {
    Origin::start(move |req| async move {
        let channel = req.uri().path().trim_start_matches('/').to_string();
        let grip_channel = match req.headers().get("last-event-id") {
            Some(id) => format!("{channel}; prev-id={}", id.to_str().unwrap()),
            None => channel,
        };
        hyper::Response::builder()
            .header("grip-hold", "stream")
            .header("grip-channel", grip_channel)
            .header("content-type", "text/event-stream")
            .body(full(": open\n\n"))
            .unwrap()
    })
    .await
}

async fn proxy(origin: &Origin, sources: Vec<PostgresSource>) -> Proxy {
    Proxy::routed_to(origin, move |c| {
        quiet(c);
        c.postgres.sources = sources;
    })
    .await
}

/// A held SSE stream as its client reads it.
struct Stream {
    body: Incoming,
    pending: String,
}

impl Stream {
    /// Opens `/<channel>` (optionally resuming) and waits for the hold to be subscribed.
    async fn open(proxy: &Proxy, channel: &str, last_event_id: Option<&str>) -> Stream {
        let mut req = Request::get(proxy.url(&format!("/{channel}")));
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

    /// Everything up to and including the first `marker` not read yet.
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

fn data(texts: &[&str]) -> String {
    texts.iter().map(|t| format!("data: {t}\n\n")).collect()
}

/// The value of the sample `name{source="<source>"}` on the proxy's `/metrics` (0 if absent).
async fn metric(proxy: &Proxy, name: &str, source: &str) -> i64 {
    let page = text(get(&proxy.publish_url("/metrics")).await).await;
    let series = format!("{name}{{source=\"{source}\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

/// Waits until the metric reaches `want` (at least `want` when `at_least`).
async fn wait_metric(proxy: &Proxy, name: &str, source: &str, want: i64, at_least: bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let got = metric(proxy, name, source).await;
        if got == want || (at_least && got > want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}{{source={source:?}}} is {got}, want {}{want}",
            if at_least { ">= " } else { "" }
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notify_payload_reaches_sse_clients_and_a_bad_one_is_counted_and_skipped() {
    let Some(pg) = Pg::start().await else { return };
    let origin = sse_origin().await;
    let proxy = proxy(&origin, vec![listen_source(&pg.url(), &["events"])]).await;
    wait_metric(&proxy, "holdfast_postgres_connected", "events", 1, false).await;
    let mut stream = Stream::open(&proxy, "news", None).await;
    proxy.wait_subscribers("news", 1).await;

    let db = pg.client().await;
    let notify = |payload: String| {
        let db = &db;
        async move {
            db.execute("SELECT pg_notify('events', $1)", &[&payload])
                .await
                .unwrap();
        }
    };
    notify("not json".into()).await;
    notify(json!({"channel": "news"}).to_string()).await;
    notify(stream_item("news", None, None, "data: hello\n\n").to_string()).await;
    assert_eq!(stream.until("\n\n").await, data(&["hello"]));
    wait_metric(
        &proxy,
        "holdfast_postgres_rejected_total",
        "events",
        2,
        false,
    )
    .await;
    assert_eq!(
        metric(&proxy, "holdfast_postgres_notifications_total", "events").await,
        3
    );
    let page = text(get(&proxy.publish_url("/metrics")).await).await;
    assert!(
        page.contains("holdfast_items_received_total{input=\"postgres\"} 1\n"),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_rows_arrive_in_order_with_their_ids_and_a_restart_resumes_from_the_position() {
    let Some(pg) = Pg::start().await else { return };
    let db = pg.client().await;
    create_outbox(&db).await;
    let origin = sse_origin().await;
    let first = proxy(&origin, vec![outbox_source(&pg.url())]).await;
    wait_metric(&first, "holdfast_postgres_connected", "outbox", 1, false).await;
    let mut stream = Stream::open(&first, "scores", None).await;
    first.wait_subscribers("scores", 1).await;
    for t in ["r1", "r2", "r3"] {
        insert(&db, "scores", t).await;
    }
    assert_eq!(stream.until("r3\n\n").await, data(&["r1", "r2", "r3"]));
    // The items' ids are the row ids: a client resuming after row 1 gets rows 2 and 3.
    let mut resumed = Stream::open(&first, "scores", Some("1")).await;
    assert_eq!(resumed.until("r3\n\n").await, data(&["r2", "r3"]));
    wait_metric(
        &first,
        "holdfast_postgres_outbox_position",
        "outbox",
        3,
        false,
    )
    .await;
    drop((stream, resumed));
    first.shutdown().await;

    // Rows written while no Holdfast runs are published by the next one, and only they.
    insert(&db, "scores", "r4").await;
    insert(&db, "scores", "r5").await;
    let second = proxy(&origin, vec![outbox_source(&pg.url())]).await;
    let mut back = Stream::open(&second, "scores", Some("3")).await;
    assert_eq!(back.until("r5\n\n").await, data(&["r4", "r5"]));
    insert(&db, "scores", "r6").await;
    assert_eq!(back.until("\n\n").await, data(&["r6"]));
    wait_metric(
        &second,
        "holdfast_postgres_outbox_position",
        "outbox",
        6,
        false,
    )
    .await;
    assert_eq!(
        metric(&second, "holdfast_postgres_rows_total", "outbox").await,
        3
    );
    let stored: i64 = db
        .query_one(
            "SELECT last_id FROM holdfast_outbox_position WHERE source = 'outbox'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_row_is_logged_counted_and_skipped_and_the_next_row_arrives() {
    let Some(pg) = Pg::start().await else { return };
    let db = pg.client().await;
    create_outbox(&db).await;
    let origin = sse_origin().await;
    let proxy = proxy(&origin, vec![outbox_source(&pg.url())]).await;
    wait_metric(&proxy, "holdfast_postgres_connected", "outbox", 1, false).await;
    let mut stream = Stream::open(&proxy, "scores", None).await;
    proxy.wait_subscribers("scores", 1).await;
    for bad in [r#"{"channel": "scores"}"#, r#""just a string""#] {
        db.execute(
            "INSERT INTO outbox (item) VALUES ($1::text::jsonb)",
            &[&bad],
        )
        .await
        .unwrap();
    }
    insert(&db, "scores", "good").await;
    assert_eq!(stream.until("\n\n").await, data(&["good"]));
    wait_metric(
        &proxy,
        "holdfast_postgres_outbox_position",
        "outbox",
        3,
        false,
    )
    .await;
    assert_eq!(
        metric(&proxy, "holdfast_postgres_rejected_total", "outbox").await,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_at_start_is_connected_to_once_it_is_up() {
    if !Pg::available() {
        return;
    }
    let mut pg = Pg::new();
    let origin = sse_origin().await;
    let proxy = proxy(&origin, vec![listen_source(&pg.url(), &["events"])]).await;
    // Holdfast runs, and keeps trying.
    wait_metric(
        &proxy,
        "holdfast_postgres_reconnects_total",
        "events",
        1,
        true,
    )
    .await;
    let (status, _) = proxy.readyz().await;
    assert_eq!(
        status, 200,
        "a source that is down does not make Holdfast unready"
    );
    pg.up().await;
    wait_metric(&proxy, "holdfast_postgres_connected", "events", 1, false).await;
    let mut stream = Stream::open(&proxy, "news", None).await;
    proxy.wait_subscribers("news", 1).await;
    let db = pg.client().await;
    let item = stream_item("news", None, None, "data: up\n\n").to_string();
    db.execute("SELECT pg_notify('events', $1)", &[&item])
        .await
        .unwrap();
    assert_eq!(stream.until("\n\n").await, data(&["up"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_is_survived_and_rows_written_after_it_arrive() {
    let Some(mut pg) = Pg::start().await else {
        return;
    };
    create_outbox(&pg.client().await).await;
    let origin = sse_origin().await;
    let proxy = proxy(&origin, vec![outbox_source(&pg.url())]).await;
    wait_metric(&proxy, "holdfast_postgres_connected", "outbox", 1, false).await;
    let mut stream = Stream::open(&proxy, "scores", None).await;
    proxy.wait_subscribers("scores", 1).await;
    insert(&pg.client().await, "scores", "before").await;
    assert_eq!(stream.until("\n\n").await, data(&["before"]));

    pg.down().await;
    wait_metric(&proxy, "holdfast_postgres_connected", "outbox", 0, false).await;
    pg.up().await;
    // Written before Holdfast is back, or after: it arrives either way, once.
    let db = pg.client().await;
    insert(&db, "scores", "after").await;
    assert_eq!(stream.until("\n\n").await, data(&["after"]));
    insert(&db, "scores", "end").await;
    assert_eq!(stream.until("\n\n").await, data(&["end"]));
    assert!(metric(&proxy, "holdfast_postgres_reconnects_total", "outbox").await >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_commits_late_is_not_overtaken_by_a_later_one() {
    let Some(pg) = Pg::start().await else { return };
    let mut early = pg.client().await;
    let late = pg.client().await;
    create_outbox(&late).await;
    let origin = sse_origin().await;
    let proxy = proxy(&origin, vec![outbox_source(&pg.url())]).await;
    wait_metric(&proxy, "holdfast_postgres_connected", "outbox", 1, false).await;
    let mut stream = Stream::open(&proxy, "scores", None).await;
    proxy.wait_subscribers("scores", 1).await;

    // The first transaction writes row 1 and stays open while a second writes row 2 and
    // commits, and the source reads the outbox twice more.
    let tx = early.transaction().await.unwrap();
    insert(&tx, "scores", "first").await;
    insert(&late, "scores", "second").await;
    let reads = metric(&proxy, "holdfast_postgres_outbox_reads_total", "outbox").await;
    wait_metric(
        &proxy,
        "holdfast_postgres_outbox_reads_total",
        "outbox",
        reads + 2,
        true,
    )
    .await;
    tx.commit().await.unwrap();
    // Row 1 is not lost behind row 2, and comes first: the rows are read in transaction order.
    insert(&late, "scores", "wake").await;
    assert_eq!(
        stream.until("wake\n\n").await,
        data(&["first", "second", "wake"])
    );
}

/// `holdfast_postgres_consuming` of each instance.
async fn consuming(proxies: &[Proxy]) -> Vec<i64> {
    let mut n = Vec::new();
    for p in proxies {
        n.push(metric(p, "holdfast_postgres_consuming", "outbox").await);
    }
    n
}

/// A `redis-server` on a port of its own; `None` when it is not installed.
struct Redis {
    port: u16,
    child: Child,
}

impl Redis {
    async fn start() -> Option<Redis> {
        let on_path = std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths).any(|p| p.join("redis-server").is_file())
        });
        if !on_path {
            assert!(
                !required("HOLDFAST_REQUIRE_REDIS"),
                "redis-server is not on PATH but HOLDFAST_REQUIRE_REDIS or CI is set"
            );
            eprintln!("skipping: redis-server is not on PATH (scripts/test installs it)");
            return None;
        }
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let redis = Redis { port, child };
        let client = redis::Client::open(redis.url()).unwrap();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                let pong: redis::RedisResult<String> =
                    redis::cmd("PING").query_async(&mut conn).await;
                if pong.is_ok() {
                    return Some(redis);
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not answer"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_one_instance_consumes_and_every_instance_delivers() {
    let Some(pg) = Pg::start().await else { return };
    let Some(redis) = Redis::start().await else {
        return;
    };
    let db = pg.client().await;
    create_outbox(&db).await;
    let origin = sse_origin().await;
    let instance = || {
        let (url, redis) = (pg.url(), redis.url());
        Proxy::routed_to(&origin, move |c| {
            quiet(c);
            c.cluster.redis = vec![redis];
            c.postgres.sources = vec![PostgresSource {
                lease_ms: 900,
                ..outbox_source(&url)
            }];
        })
    };
    let mut proxies = vec![instance().await, instance().await];
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while consuming(&proxies).await.iter().sum::<i64>() != 1 {
        assert!(tokio::time::Instant::now() < deadline, "no single consumer");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut streams = Vec::new();
    for p in &proxies {
        streams.push(Stream::open(p, "scores", None).await);
    }
    // Each instance hears the channel from Redis before anything is written.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !proxies.iter().all(|p| p.app.bus.is_subscribed("scores")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not subscribed in Redis"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for t in ["r1", "r2", "r3"] {
        insert(&db, "scores", t).await;
    }
    for s in &mut streams {
        assert_eq!(s.until("r3\n\n").await, data(&["r1", "r2", "r3"]));
    }
    // Still one consumer, and only one instance read the rows.
    let now = consuming(&proxies).await;
    assert_eq!(now.iter().sum::<i64>(), 1, "{now:?}");
    let mut rows = Vec::new();
    for p in &proxies {
        rows.push(metric(p, "holdfast_postgres_rows_total", "outbox").await);
    }
    rows.sort();
    assert_eq!(rows, vec![0, 3]);

    // The consumer goes away: the other instance takes the lease once it expires, and goes on
    // from the stored position.
    let gone = now.iter().position(|&n| n == 1).unwrap();
    let stays = proxies.remove(1 - gone);
    let mut stream = streams.remove(1 - gone);
    drop(streams);
    let lease_key = "holdfast:postgres-lease:outbox";
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let holder: Option<String> = redis::cmd("GET")
        .arg(lease_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(holder.is_some(), "the consumer holds no lease");
    proxies.pop().unwrap().shutdown().await;
    // It gave the lease up as it shut down, rather than leaving it to expire.
    let after: Option<String> = redis::cmd("GET")
        .arg(lease_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_ne!(after, holder, "the lease outlived its holder's shutdown");
    wait_metric(&stays, "holdfast_postgres_consuming", "outbox", 1, false).await;
    insert(&db, "scores", "r4").await;
    assert_eq!(stream.until("\n\n").await, data(&["r4"]));
    assert_eq!(
        metric(&stays, "holdfast_postgres_rows_total", "outbox").await,
        1
    );
}
