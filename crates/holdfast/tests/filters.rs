//! Subscription meta and filters through the real server.

mod support;

use hyper::{Request, Response};
use serde_json::{json, Value};
use support::*;

/// An origin holding a stream on channel `room` with the filters and meta in the query:
/// `?user=<u>&filters=a,b&extra=<channel>`.
async fn filtering_origin() -> Origin {
    Origin::start(|req: Request<hyper::body::Incoming>| async move {
        let q = req.uri().query().unwrap_or("").to_string();
        let param = |k: &str| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                .map(str::to_string)
        };
        let mut channel = "room; prev-id=0".to_string();
        for f in param("filters")
            .unwrap_or_default()
            .split(',')
            .filter(|f| !f.is_empty())
        {
            channel.push_str(&format!("; filter={f}"));
        }
        let mut resp = Response::builder()
            .header("grip-hold", "stream")
            .header("grip-channel", channel)
            .header(
                "grip-set-meta",
                format!(
                    "user=\"{}\", id_format=\"room:%(room)s\"",
                    param("user").unwrap_or_default()
                ),
            );
        if let Some(extra) = param("extra") {
            resp = resp.header("grip-channel", extra);
        }
        resp.body(full("open id=%I;")).unwrap()
    })
    .await
}

/// Holds a stream in front of [`filtering_origin`] for each query, publishes `items` one request
/// each, and returns what each stream read, from its initial body up to and including `end`.
async fn room_reads(queries: &[&str], items: Vec<Value>, end: &str) -> Vec<String> {
    let origin = filtering_origin().await;
    let proxy = Proxy::routed_to(&origin, quiet).await;
    let mut streams = Vec::new();
    for query in queries {
        streams.push(get(&proxy.url(&format!("/?{query}"))).await.into_body());
    }
    proxy.wait_subscribers("room", queries.len()).await;
    for item in items {
        proxy.publish_items([item]).await;
    }
    let mut reads = Vec::new();
    for stream in &mut streams {
        reads.push(read_until(stream, end).await);
    }
    reads
}

#[tokio::test]
async fn skip_self_and_skip_users() {
    let reads = room_reads(
        &[
            "user=alice&filters=skip-self,skip-users",
            "user=bob&filters=skip-self,skip-users",
        ],
        vec![
            json!({"channel": "room", "meta": {"sender": "alice"},
            "formats": {"http-stream": {"content": "from-alice;"}}}),
            json!({"channel": "room", "meta": {"skip_users": "bob,carol"},
            "formats": {"http-stream": {"content": "not-bob;"}}}),
            stream_item("room", None, None, "all;"),
        ],
        "all;",
    )
    .await;
    assert_eq!(
        reads,
        ["open id=%I;not-bob;all;", "open id=%I;from-alice;all;"]
    );
}

#[tokio::test]
async fn require_sub_needs_the_other_channel() {
    let reads = room_reads(
        &[
            "user=m&filters=require-sub&extra=vip",
            "user=g&filters=require-sub",
        ],
        vec![
            json!({"channel": "room", "meta": {"require_sub": "vip"},
            "formats": {"http-stream": {"content": "vip-only;"}}}),
            stream_item("room", None, None, "all;"),
        ],
        "all;",
    )
    .await;
    assert_eq!(reads, ["open id=%I;vip-only;all;", "open id=%I;all;"]);
}

#[tokio::test]
async fn build_id_in_initial_live_and_next_link_bodies() {
    let origin = Origin::start(|req: Request<hyper::body::Incoming>| async move {
        let next = req.uri().path() == "/next";
        let prev = if next { "5" } else { "3" };
        Response::builder()
            .header("grip-hold", "stream")
            .header(
                "grip-channel",
                format!("ids; prev-id={prev}; filter=build-id"),
            )
            .header("grip-set-meta", "id_format=\"ids:%(ids)s\"")
            .header("grip-link", "</next>; rel=next")
            .body(full(if next {
                "next id: %I, 100%%;"
            } else {
                "initial id: %I;"
            }))
            .unwrap()
    })
    .await;
    let proxy = Proxy::routed_to(&origin, |c| {
        quiet(c);
        c.reliability.history_items = 0;
        c.reliability.message_wait_ms = 100;
    })
    .await;
    let mut body = get(&proxy.url("/")).await.into_body();
    assert_eq!(read_until(&mut body, ";").await, "initial id: ids:3;");
    proxy.wait_subscribers("ids", 1).await;
    proxy
        .publish_stream("ids", Some("4"), Some("3"), "event id: %I;")
        .await;
    assert_eq!(read_until(&mut body, ";").await, "event id: ids:4;");
    // A gap (prev 9, session at 4) fetches the next link, whose body is rendered too.
    proxy
        .publish_stream("ids", Some("10"), Some("9"), "never;")
        .await;
    assert_eq!(
        read_until(&mut body, "100%;").await,
        "next id: ids:5, 100%;"
    );
}

#[tokio::test]
async fn content_filters_pick_the_variant_for_each_subscriber() {
    // The last item has no content-filters, so it goes to everyone: by the time it arrives,
    // each subscriber has had every variant meant for it, and must have had only its own.
    let reads = room_reads(
        &["user=p", "user=s&filters=var-subst"],
        vec![
            json!({"channel": "room", "formats": {"http-stream": {
            "content": "hello %(user)s;", "content-filters": ["var-subst"]}}}),
            json!({"channel": "room", "formats": {"http-stream": {
            "content": "hello everyone;", "content-filters": []}}}),
            stream_item("room", None, None, "end;"),
        ],
        "end;",
    )
    .await;
    assert_eq!(
        reads,
        ["open id=%I;hello everyone;end;", "open id=%I;hello s;end;"]
    );
}

#[tokio::test]
async fn non_string_meta_is_a_400_naming_the_key() {
    let proxy = Proxy::start("* test\n", quiet).await;
    let (status, body) = proxy
        .publish_json(json!({"items": [{"channel": "c", "meta": {"sender": 5},
            "formats": {"http-stream": {"content": "x"}}}]}))
        .await;
    assert_eq!(status, 400);
    assert!(body.contains("sender"), "{body}");
}
