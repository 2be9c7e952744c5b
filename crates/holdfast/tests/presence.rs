//! Presence: real SSE clients (and WebSocket-over-HTTP clients with a `user` meta) arriving
//! and leaving, the events POSTed to the origin written in the test — their `Grip-Sig`
//! checked — and streamed on `GET /presence/events`, and the counts of
//! `GET /presence/channels`; on one instance, and on three sharing a real `redis-server`.
//!
//! The cluster tests skip, saying so, when `redis-server` is not on PATH, unless
//! `HOLDFAST_REQUIRE_REDIS` or CI is set, as in tests/cluster.rs.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use grip::wsevents::{encode_events, parse_events, Event, EventKind};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::Value;
use support::binary::Binary;
use support::*;
use tokio::sync::mpsc;

/// Bound of every wait in these tests.
const DEADLINE: Duration = Duration::from_secs(15);
/// The key presence signs its POSTs with in these tests.
const KEY: &str = "presence-test-key";

/// An event as the origin received it: type, channel, user.
type Got = (String, String, Option<String>);

/// The origin: `/sse/<channel>` holds an SSE stream on the channel; WebSocket-over-HTTP on
/// `/ws/<user>/<channel>` subscribes to the channel and sets meta `user`; `POST
/// /_holdfast/presence` takes events, checks their `Grip-Sig` and hands them to the test.
struct App {
    origin: Origin,
    events: mpsc::Receiver<Got>,
}

impl App {
    async fn start() -> App {
        let (tx, events) = mpsc::channel(1000);
        let origin = Origin::start(move |req| {
            let tx = tx.clone();
            async move { serve(req, tx).await }
        })
        .await;
        App { origin, events }
    }

    /// The next event POSTed (bounded).
    async fn next(&mut self) -> Got {
        tokio::time::timeout(DEADLINE, self.events.recv())
            .await
            .expect("a presence event POSTed in time")
            .expect("origin running")
    }
}

async fn serve(req: Request<Incoming>, tx: mpsc::Sender<Got>) -> Response<TestBody> {
    let path = req.uri().path().to_string();
    if path == "/_holdfast/presence" {
        assert_eq!(req.method(), "POST");
        let token = req.headers()["grip-sig"].to_str().unwrap().to_string();
        let key = grip::sig::SigKey::parse(KEY).unwrap();
        let claims = grip::sig::verify(&token, &key, unix_now()).expect("Grip-Sig verifies");
        assert_eq!(claims.iss.as_deref(), Some("holdfast-presence"));
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&body).unwrap();
        for e in body["events"].as_array().expect("an events array") {
            assert!(e["time"].as_u64().is_some(), "{e}");
            let got = (
                e["type"].as_str().unwrap().to_string(),
                e["channel"].as_str().unwrap().to_string(),
                e["user"].as_str().map(str::to_string),
            );
            tx.send(got).await.unwrap();
        }
        return Response::new(full(""));
    }
    if let Some(channel) = path.strip_prefix("/sse/") {
        return Response::builder()
            .header("grip-hold", "stream")
            .header("grip-channel", channel)
            .header("content-type", "text/event-stream")
            .body(full(": open\n\n"))
            .unwrap();
    }
    let (user, channel) = path
        .strip_prefix("/ws/")
        .and_then(|p| p.split_once('/'))
        .expect("a known path");
    let (user, channel) = (user.to_string(), channel.to_string());
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let events = parse_events(&body).unwrap();
    let mut out = Vec::new();
    let mut resp = Response::builder()
        .header("content-type", "application/websocket-events")
        .header("sec-websocket-extensions", "grip");
    for e in events {
        match e.kind {
            EventKind::Open => {
                out.push(Event::new(EventKind::Open));
                out.push(Event::with_content(
                    EventKind::Text,
                    format!(r#"c:{{"type":"subscribe","channel":"{channel}"}}"#),
                ));
                resp = resp.header("set-meta-user", user.as_str());
            }
            EventKind::Close => out.push(Event::new(EventKind::Close)),
            _ => {}
        }
    }
    let mut bytes = Vec::new();
    encode_events(&out, &mut bytes);
    resp.body(full(bytes)).unwrap()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn got(kind: &str, channel: &str) -> Got {
    (kind.to_string(), channel.to_string(), None)
}

fn member(kind: &str, channel: &str, user: &str) -> Got {
    (
        kind.to_string(),
        channel.to_string(),
        Some(user.to_string()),
    )
}

fn presence_on(linger_ms: u64) -> impl FnOnce(&mut holdfast::Config) + Clone {
    move |c| {
        quiet(c);
        c.presence.enabled = true;
        c.presence.linger_ms = linger_ms;
        c.presence.sign_key = Some(KEY.to_string());
        c.presence.sign_iss = Some("holdfast-presence".to_string());
        c.presence.member_channels = vec!["room-".to_string()];
    }
}

/// An SSE client holding `/sse/<channel>`, past the origin's opening comment.
async fn watch(proxy: &Proxy, channel: &str) -> Incoming {
    let resp = get(&proxy.url(&format!("/sse/{channel}"))).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    read_until(&mut body, ": open\n\n").await;
    body
}

/// `GET /presence/events` on `proxy`, past its opening comment.
struct Listener {
    body: Incoming,
    pending: String,
}

impl Listener {
    async fn open(proxy: &Proxy) -> Listener {
        let resp = get(&proxy.publish_url("/presence/events")).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let mut l = Listener {
            body: resp.into_body(),
            pending: String::new(),
        };
        l.pending = read_until(&mut l.body, ": presence events\n\n").await;
        l.pending.clear();
        l
    }

    /// The next event: its `event:` name and its data's type, channel and user.
    async fn next(&mut self) -> (String, Got) {
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                if block.starts_with(':') {
                    continue;
                }
                let name = block
                    .lines()
                    .find_map(|l| l.strip_prefix("event: "))
                    .expect("an event line")
                    .to_string();
                let data: Value = serde_json::from_str(
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix("data: "))
                        .expect("a data line"),
                )
                .unwrap();
                let got = (
                    data["type"].as_str().unwrap_or_default().to_string(),
                    data["channel"].as_str().unwrap_or_default().to_string(),
                    data["user"].as_str().map(str::to_string),
                );
                return (name, got);
            }
            match next_chunk(&mut self.body).await {
                Some(c) => self.pending.push_str(&String::from_utf8_lossy(&c)),
                None => panic!("presence stream ended; had {:?}", self.pending),
            }
        }
    }
}

async fn channels(proxy: &Proxy) -> Value {
    let resp = get(&proxy.publish_url("/presence/channels")).await;
    assert_eq!(resp.status(), 200);
    serde_json::from_str(&text(resp).await).unwrap()
}

async fn channel(proxy: &Proxy, name: &str) -> Value {
    let resp = get(&proxy.publish_url(&format!("/presence/channels/{name}"))).await;
    assert_eq!(resp.status(), 200);
    serde_json::from_str(&text(resp).await).unwrap()
}

/// Polls `check` until true; fails after [`DEADLINE`] naming what never happened.
async fn until<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually(DEADLINE, || format!("never: {what}"), check).await;
}

#[tokio::test]
async fn sse_clients_arriving_and_leaving_occupy_and_vacate_a_channel_once() {
    let mut app = App::start().await;
    let proxy = Proxy::routed_to(&app.origin, presence_on(100)).await;
    let mut listener = Listener::open(&proxy).await;

    let a = watch(&proxy, "news").await;
    assert_eq!(app.next().await, got("channel-occupied", "news"));
    assert_eq!(
        listener.next().await,
        (
            "channel-occupied".to_string(),
            got("channel-occupied", "news")
        )
    );
    let b = watch(&proxy, "news").await;
    proxy.wait_subscribers("news", 2).await;
    let list = channels(&proxy).await;
    assert_eq!(
        list["channels"],
        serde_json::json!([{ "channel": "news", "subscribers": 2 }])
    );
    let one = channel(&proxy, "news").await;
    assert_eq!(one["occupied"], true);
    assert_eq!(one["subscribers"], 2);
    assert!(one.get("members").is_none(), "{one}");

    drop(a);
    proxy.wait_subscribers("news", 1).await;
    drop(b);
    // The second client's arrival and the first one's leaving made no event: the next one is
    // the vacancy, after the linger.
    assert_eq!(app.next().await, got("channel-vacated", "news"));
    assert_eq!(listener.next().await.1, got("channel-vacated", "news"));
    assert_eq!(channels(&proxy).await["channels"], serde_json::json!([]));
    let one = channel(&proxy, "news").await;
    assert_eq!(one["occupied"], false);
    assert_eq!(one["subscribers"], 0);

    let metrics = text(get(&proxy.publish_url("/metrics")).await).await;
    for line in [
        "holdfast_presence_events_total{type=\"channel-occupied\"} 1",
        "holdfast_presence_events_total{type=\"channel-vacated\"} 1",
        "holdfast_presence_posts_total{result=\"ok\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
}

#[tokio::test]
async fn leaving_and_coming_back_within_the_linger_makes_no_event() {
    let mut app = App::start().await;
    let proxy = Proxy::routed_to(&app.origin, presence_on(60_000)).await;
    let first = watch(&proxy, "feed").await;
    assert_eq!(app.next().await, got("channel-occupied", "feed"));
    drop(first);
    proxy.wait_subscribers("feed", 0).await;
    let _again = watch(&proxy, "feed").await;
    proxy.wait_subscribers("feed", 1).await;
    // Events leave in order: had the return made one, it would come before this marker's.
    let _marker = watch(&proxy, "marker").await;
    assert_eq!(app.next().await, got("channel-occupied", "marker"));
    assert_eq!(channel(&proxy, "feed").await["occupied"], true);
    // A clean shutdown vacates what is occupied, linger or not.
    proxy.shutdown().await;
    let mut last = vec![app.next().await, app.next().await];
    last.sort();
    assert_eq!(
        last,
        [
            got("channel-vacated", "feed"),
            got("channel-vacated", "marker")
        ]
    );
}

#[tokio::test]
async fn websocket_users_on_member_channels_connect_and_disconnect() {
    let mut app = App::start().await;
    let proxy = Proxy::start(
        &format!("* {},over_http\n", app.origin.target()),
        presence_on(100),
    )
    .await;
    let ann = support::ws::connect(&proxy, "/ws/ann/room-1").await;
    // The channel's occupancy comes first: the session subscribes, then sees its meta.
    assert_eq!(app.next().await, got("channel-occupied", "room-1"));
    assert_eq!(app.next().await, member("member-connect", "room-1", "ann"));
    let ann2 = support::ws::connect(&proxy, "/ws/ann/room-1").await;
    let bob = support::ws::connect(&proxy, "/ws/bob/room-1").await;
    assert_eq!(app.next().await, member("member-connect", "room-1", "bob"));
    proxy.wait_subscribers("room-1", 3).await;
    let one = channel(&proxy, "room-1").await;
    assert_eq!(one["subscribers"], 3);
    assert_eq!(one["members"], serde_json::json!(["ann", "bob"]));

    drop(ann);
    drop(bob);
    assert_eq!(
        app.next().await,
        member("member-disconnect", "room-1", "bob")
    );
    drop(ann2);
    let mut rest = vec![app.next().await, app.next().await];
    rest.sort();
    assert_eq!(
        rest,
        [
            got("channel-vacated", "room-1"),
            member("member-disconnect", "room-1", "ann"),
        ]
    );
    // A channel not opted in has no members.
    let _carol = support::ws::connect(&proxy, "/ws/carol/lobby").await;
    assert_eq!(app.next().await, got("channel-occupied", "lobby"));
    let lobby = channel(&proxy, "lobby").await;
    assert!(lobby.get("members").is_none(), "{lobby}");
}

#[tokio::test]
async fn presence_off_answers_404_and_a_full_listener_cap_503() {
    let app = App::start().await;
    let off = Proxy::routed_to(&app.origin, quiet).await;
    for path in [
        "/presence/channels",
        "/presence/channels/x",
        "/presence/events",
    ] {
        let resp = get(&off.publish_url(path)).await;
        assert_eq!(resp.status(), 404, "{path}");
        assert!(text(resp).await.contains("presence.enabled"), "{path}");
    }
    let on = Proxy::routed_to(&app.origin, |c| {
        presence_on(100)(c);
        c.presence.max_listeners = 1;
    })
    .await;
    let _one = Listener::open(&on).await;
    let resp = get(&on.publish_url("/presence/events")).await;
    assert_eq!(resp.status(), 503);
    assert!(text(resp).await.contains("presence.max_listeners"));
}

// --- Three instances over Redis.

struct Redis {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Redis {
    async fn start() -> Option<Redis> {
        let on_path = std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths).any(|p| p.join("redis-server").is_file())
        });
        if !on_path {
            let required = std::env::var_os("HOLDFAST_REQUIRE_REDIS").is_some()
                || std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(
                !required,
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
        let child = Redis::spawn(port, dir.path());
        let redis = Redis {
            port,
            child,
            _dir: dir,
        };
        redis.wait_up().await;
        Some(redis)
    }

    fn spawn(port: u16, dir: &std::path::Path) -> Child {
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts")
    }

    async fn wait_up(&self) {
        until("redis-server answers", || async {
            match self.connection().await {
                Ok(mut conn) => redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok(),
                Err(_) => false,
            }
        })
        .await;
    }

    /// Kills the server (its data is lost: no persistence) and starts it again on its port.
    async fn restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.child = Redis::spawn(self.port, self._dir.path());
        self.wait_up().await;
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        redis::Client::open(self.url())?
            .get_multiplexed_async_connection()
            .await
    }

    /// Instances subscribed to presence events.
    async fn listening(&self) -> usize {
        let mut conn = self.connection().await.unwrap();
        let (_, n): (String, usize) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("holdfast:presence:events")
            .query_async(&mut conn)
            .await
            .unwrap();
        n
    }

    /// Instances registered for presence.
    async fn instances(&self) -> usize {
        let mut conn = self.connection().await.unwrap();
        redis::cmd("ZCARD")
            .arg("holdfast:presence:instances")
            .query_async(&mut conn)
            .await
            .unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn clustered(url: String, linger_ms: u64) -> impl FnOnce(&mut holdfast::Config) + Clone {
    move |c| {
        presence_on(linger_ms)(c);
        c.cluster.redis = vec![url];
        c.presence.instance_ttl_secs = 3;
    }
}

async fn three(redis: &Redis, app: &App, linger_ms: u64) -> Vec<Proxy> {
    let mut out = Vec::new();
    for _ in 0..3 {
        out.push(Proxy::routed_to(&app.origin, clustered(redis.url(), linger_ms)).await);
    }
    until("three instances listen for presence events", || async {
        redis.listening().await == 3 && redis.instances().await == 3
    })
    .await;
    out
}

#[tokio::test]
async fn across_three_instances_each_transition_is_one_event_and_counts_add_up() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let mut app = App::start().await;
    let proxies = three(&redis, &app, 100).await;
    let mut listener = Listener::open(&proxies[2]).await;

    let a = watch(&proxies[0], "scores").await;
    assert_eq!(app.next().await, got("channel-occupied", "scores"));
    assert_eq!(listener.next().await.1, got("channel-occupied", "scores"));
    let b = watch(&proxies[1], "scores").await;
    let c = watch(&proxies[1], "scores").await;
    until(
        "instance 2 counts the three subscribers on two others",
        || async {
            channels(&proxies[2]).await["channels"]
                == serde_json::json!([{ "channel": "scores", "subscribers": 3 }])
        },
    )
    .await;
    assert_eq!(channel(&proxies[2], "scores").await["occupied"], true);

    drop(a);
    proxies[0].wait_subscribers("scores", 0).await;
    drop(b);
    drop(c);
    // Had instance 1's clients arriving, or instance 0's leaving, made an event, it would come
    // before this one.
    assert_eq!(app.next().await, got("channel-vacated", "scores"));
    assert_eq!(listener.next().await.1, got("channel-vacated", "scores"));
    assert_eq!(
        channels(&proxies[0]).await["channels"],
        serde_json::json!([])
    );

    // Instances that shut down leave Redis.
    drop(listener);
    for p in proxies {
        p.shutdown().await;
    }
    until("the instances left", || async {
        redis.instances().await == 0
    })
    .await;

    // A leave and a return on another instance within the linger: no event.
    let proxies_linger = three(&redis, &app, 60_000).await;
    let d = watch(&proxies_linger[0], "chat").await;
    assert_eq!(app.next().await, got("channel-occupied", "chat"));
    drop(d);
    proxies_linger[0].wait_subscribers("chat", 0).await;
    let _e = watch(&proxies_linger[1], "chat").await;
    let _marker = watch(&proxies_linger[2], "marker").await;
    assert_eq!(app.next().await, got("channel-occupied", "marker"));
}

#[tokio::test]
async fn a_killed_instances_channels_are_vacated_by_another_after_its_ttl() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let mut app = App::start().await;
    let survivor = Proxy::routed_to(&app.origin, clustered(redis.url(), 100)).await;
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes");
    std::fs::write(&routes, format!("* {}\n", app.origin.target())).unwrap();
    let config = dir.path().join("holdfast.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\npublish_listen = \"127.0.0.1:0\"\nroutes = \"{}\"\n\
             [reliability]\nupdate_on_first_subscription = false\n\
             [cluster]\nredis = [\"{}\"]\n\
             [presence]\nenabled = true\nlinger_ms = 100\nsign_key = \"{KEY}\"\n\
             sign_iss = \"holdfast-presence\"\ninstance_ttl_secs = 3\n",
            routes.display(),
            redis.url()
        ),
    )
    .unwrap();
    let mut doomed = Binary::start(["--config", config.to_str().unwrap()]);
    let addr = doomed.client;
    until("both instances registered", || async {
        redis.instances().await == 2
    })
    .await;
    let resp = get(&format!("http://{addr}/sse/orphan")).await;
    assert_eq!(resp.status(), 200);
    let mut held = resp.into_body();
    read_until(&mut held, ": open\n\n").await;
    assert_eq!(app.next().await, got("channel-occupied", "orphan"));
    doomed.child.kill().unwrap();
    doomed.child.wait().unwrap();
    // No goodbye from the killed instance: the survivor's heartbeat finds it expired.
    assert_eq!(app.next().await, got("channel-vacated", "orphan"));
    until("the dead instance is forgotten", || async {
        redis.instances().await == 1
    })
    .await;
    assert_eq!(channels(&survivor).await["channels"], serde_json::json!([]));
}

#[tokio::test]
async fn after_redis_comes_back_empty_the_instances_write_their_channels_again() {
    let Some(mut redis) = Redis::start().await else {
        return;
    };
    let mut app = App::start().await;
    let proxy = Proxy::routed_to(&app.origin, clustered(redis.url(), 100)).await;
    until("the instance registered", || async {
        redis.instances().await == 1
    })
    .await;
    let _held = watch(&proxy, "kept").await;
    assert_eq!(app.next().await, got("channel-occupied", "kept"));

    redis.restart().await;
    let _new = watch(&proxy, "arrived").await;
    // The restarted Redis knows nothing: both channels are new to it, and are told again.
    let mut back = vec![app.next().await, app.next().await];
    back.sort();
    assert_eq!(
        back,
        [
            got("channel-occupied", "arrived"),
            got("channel-occupied", "kept")
        ]
    );
    until("the counts are back", || async {
        channels(&proxy).await["channels"]
            == serde_json::json!([
                { "channel": "arrived", "subscribers": 1 },
                { "channel": "kept", "subscribers": 1 }
            ])
    })
    .await;
}
