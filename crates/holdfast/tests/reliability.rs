//! Reliable delivery through the real server: sequencing, stale holds, gaps, next links, hints,
//! recover, gone links and history, with origins that count their requests.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::json;
use support::*;

/// One request an origin saw: method, URI and its `Grip-Last` headers.
type SeenRequest = (String, String, Vec<String>);

/// What an origin saw, in order.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<SeenRequest>>>);

impl Seen {
    fn record(&self, req: &Request<Incoming>) {
        let last = req
            .headers()
            .get_all("grip-last")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        self.0
            .lock()
            .unwrap()
            .push((req.method().to_string(), req.uri().to_string(), last));
    }
    fn all(&self) -> Vec<SeenRequest> {
        self.0.lock().unwrap().clone()
    }
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    /// Requests for `path`.
    fn asked(&self, path: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.1 == path)
            .count()
    }
    async fn wait_count(&self, n: usize) {
        self.wait_until(n, || self.count()).await;
    }
    /// Waits until `path` has been asked at least `n` times.
    async fn wait_asked(&self, path: &str, n: usize) {
        self.wait_until(n, || self.asked(path)).await;
    }
    async fn wait_until(&self, n: usize, count: impl Fn() -> usize) {
        eventually(
            Duration::from_secs(30),
            || format!("origin saw {:?}, want {n} requests", self.all()),
            || async { count() >= n },
        )
        .await;
    }
    /// An origin that records each request here, then answers it with `answer`.
    async fn origin(
        &self,
        answer: impl Fn(&Request<Incoming>) -> Response<TestBody> + Send + Sync + 'static,
    ) -> Origin {
        let seen = self.clone();
        Origin::start(move |req| {
            seen.record(&req);
            let resp = answer(&req);
            async move { resp }
        })
        .await
    }
}

#[tokio::test]
async fn reordered_publishes_are_delivered_in_order() {
    let origin = grip_origin(200, &[("grip-hold", "stream"), ("grip-channel", "ord")], "").await;
    let proxy = Proxy::routed_to(&origin, quiet).await;
    let mut body = get(&proxy.url("/")).await.into_body();
    proxy.wait_subscribers("ord", 1).await;
    proxy.publish_stream("ord", Some("1"), None, "one;").await;
    proxy
        .publish_stream("ord", Some("3"), Some("2"), "three;")
        .await;
    proxy
        .publish_stream("ord", Some("2"), Some("1"), "two;")
        .await;
    assert_eq!(read_until(&mut body, "three;").await, "one;two;three;");
}

#[tokio::test]
async fn a_missing_predecessor_is_delivered_after_the_wait() {
    let origin = grip_origin(
        200,
        &[("grip-hold", "stream"), ("grip-channel", "wait, probe")],
        "",
    )
    .await;
    // The wait only has to outlast one publish and its delivery over loopback.
    let proxy = Proxy::routed_to(&origin, |c| {
        quiet(c);
        c.reliability.message_wait_ms = 3000;
    })
    .await;
    let mut body = get(&proxy.url("/")).await.into_body();
    proxy.wait_subscribers("wait", 1).await;
    proxy.wait_subscribers("probe", 1).await;
    proxy.publish_stream("wait", Some("1"), None, "one;").await;
    assert_eq!(read_until(&mut body, "one;").await, "one;");
    proxy
        .publish_stream("wait", Some("3"), Some("2"), "three;")
        .await;
    // A publish is queued for its subscribers before the publish API answers, so an item
    // published after "three" on another channel of the same stream is read after "three"
    // would have been, had it not waited.
    proxy
        .publish_stream("probe", Some("p"), None, "probe;")
        .await;
    assert_eq!(
        read_until(&mut body, "probe;").await,
        "probe;",
        "three waits for its predecessor"
    );
    // Two never comes: three is delivered when the wait is over, and the channel goes on.
    assert_eq!(read_until(&mut body, "three;").await, "three;");
    proxy
        .publish_stream("wait", Some("4"), Some("3"), "four;")
        .await;
    assert_eq!(read_until(&mut body, "four;").await, "four;");
}

#[tokio::test]
async fn a_stale_long_poll_is_retried_with_grip_last() {
    let seen = Seen::default();
    let origin = seen
        .origin(|req| {
            let resp = Response::builder().header("grip-hold", "response");
            if req.headers().contains_key("grip-last") {
                // Rendered fresh: the origin now knows about item b.
                resp.header("grip-channel", "lp; prev-id=b")
                    .body(full("fresh"))
                    .unwrap()
            } else {
                resp.header("grip-channel", "lp; prev-id=a")
                    .body(full("stale"))
                    .unwrap()
            }
        })
        .await;
    let proxy = Proxy::routed_to(&origin, |c| {
        quiet(c);
        c.reliability.history_items = 0;
    })
    .await;
    // The channel is at b, but no history: a hold at a must be rendered again.
    let (_hold_sub, _hold_rx) = proxy
        .app
        .hub
        .subscribe(vec!["lp".into()], holdfast::hub::Want::HttpStream);
    proxy.publish_stream("lp", Some("a"), None, "").await;
    proxy.publish_stream("lp", Some("b"), Some("a"), "").await;
    let url = proxy.url("/poll");
    let client = tokio::spawn(async move { text(get(&url).await).await });
    seen.wait_count(2).await;
    let all = seen.all();
    assert_eq!(all[1].2, vec!["lp; last-id=a".to_string()]);
    proxy.wait_subscribers("lp", 2).await;
    proxy
        .publish_json(
            json!({"items": [{"channel": "lp", "id": "c", "prev-id": "b",
            "formats": {"http-response": {"body": "c-body"}}}]}),
        )
        .await;
    assert_eq!(client.await.unwrap(), "c-body");
}

#[tokio::test]
async fn history_fills_a_resuming_stream_with_no_origin_request() {
    let seen = Seen::default();
    let origin = seen
        .origin(|req| {
            let last = req
                .headers()
                .get("last-event-id")
                .map(|v| v.to_str().unwrap().to_string());
            let mut resp = Response::builder()
                .header("grip-hold", "stream")
                .header("content-type", "text/event-stream");
            resp = match last {
                Some(id) => resp.header("grip-channel", format!("ev; prev-id={id}")),
                None => resp.header("grip-channel", "ev"),
            };
            resp.body(full(": open\n\n")).unwrap()
        })
        .await;
    let proxy = Proxy::routed_to(&origin, quiet).await;
    let mut first = get(&proxy.url("/events")).await.into_body();
    proxy.wait_subscribers("ev", 1).await;
    let mut prev: Option<String> = None;
    for i in 1..=3 {
        let id = i.to_string();
        proxy
            .publish_stream(
                "ev",
                Some(&id),
                prev.as_deref(),
                &format!("id: {i}\ndata: e{i}\n\n"),
            )
            .await;
        prev = Some(id);
    }
    read_until(&mut first, "data: e3").await;
    drop(first);
    proxy.wait_subscribers("ev", 0).await;
    // Published while the client is away.
    for i in 4..=6 {
        let id = i.to_string();
        proxy
            .publish_stream(
                "ev",
                Some(&id),
                prev.as_deref(),
                &format!("id: {i}\ndata: e{i}\n\n"),
            )
            .await;
        prev = Some(id);
    }
    let resp = send(
        Request::get(proxy.url("/events"))
            .header("last-event-id", "3")
            .body(full(""))
            .unwrap(),
    )
    .await;
    let mut body = resp.into_body();
    let got = read_until(&mut body, "data: e6").await;
    assert!(got.starts_with(": open\n\n"), "{got}");
    assert!(
        got.contains("data: e4\n\nid: 5\ndata: e5\n\nid: 6\ndata: e6"),
        "{got}"
    );
    assert!(!got.contains("data: e3"), "{got}");
    proxy
        .publish_stream("ev", Some("7"), Some("6"), "id: 7\ndata: e7\n\n")
        .await;
    read_until(&mut body, "data: e7").await;
    assert_eq!(
        seen.count(),
        2,
        "one origin request per connection, none to fill the gap"
    );
}

/// An origin serving a reliable stream: `/stream` holds at `s; prev-id=<after>` with next link
/// `/next?after=<id>`; `/next` renders the items after `Grip-Last` from its own log.
async fn reliable_origin(
    seen: &Seen,
    log: Arc<Mutex<Vec<String>>>,
    fail_next: Arc<AtomicUsize>,
) -> Origin {
    seen.origin(move |req| {
        let path = req.uri().path().to_string();
        if path == "/next" && fail_next.load(Ordering::SeqCst) > 0 {
            fail_next.fetch_sub(1, Ordering::SeqCst);
            return Response::builder().status(500).body(full("down")).unwrap();
        }
        let after = req
            .headers()
            .get("grip-last")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split("last-id=").nth(1))
            .map(str::to_string);
        let items = log.lock().unwrap().clone();
        let start = after
            .as_ref()
            .and_then(|a| items.iter().position(|i| i == a).map(|p| p + 1))
            .unwrap_or(if path == "/next" { items.len() } else { 0 });
        let body: String = items[start..].iter().map(|i| format!("{i};")).collect();
        let last = items.last().cloned().unwrap_or_else(|| "none".into());
        Response::builder()
            .header("grip-hold", "stream")
            .header("grip-channel", format!("s; prev-id={last}"))
            .header("grip-link", "</next>; rel=next")
            .body(full(body))
            .unwrap()
    })
    .await
}

#[tokio::test]
async fn a_gap_at_publish_time_fetches_the_next_link() {
    let seen = Seen::default();
    let log = Arc::new(Mutex::new(vec!["a".to_string()]));
    let origin = reliable_origin(&seen, log.clone(), Arc::default()).await;
    let proxy = Proxy::routed_to(&origin, |c| {
        quiet(c);
        c.reliability.history_items = 0;
    })
    .await;
    let mut body = get(&proxy.url("/stream")).await.into_body();
    read_until(&mut body, "a;").await;
    proxy.wait_subscribers("s", 1).await;
    // The origin has b and c, but only c (prev b) is published: a gap for a session at a.
    log.lock()
        .unwrap()
        .extend(["b".to_string(), "c".to_string()]);
    proxy.publish_stream("s", Some("c"), Some("b"), "c;").await;
    // The channel has no last id yet, so the hub delivers c at once; the session, at a, sees
    // the gap and, with no history to fill it, asks its next link.
    seen.wait_count(2).await;
    assert_eq!(seen.all()[1].1, "/next");
    assert_eq!(seen.all()[1].2, vec!["s; last-id=a".to_string()]);
    let got = read_until(&mut body, "c;").await;
    assert_eq!(got, "b;c;");
}

#[tokio::test]
async fn hint_refetches_and_next_link_retries_after_500() {
    let seen = Seen::default();
    let log = Arc::new(Mutex::new(vec!["a".to_string()]));
    let fail = Arc::new(AtomicUsize::new(1));
    let origin = reliable_origin(&seen, log.clone(), fail.clone()).await;
    let proxy = Proxy::routed_to(&origin, quiet).await;
    let mut body = get(&proxy.url("/stream")).await.into_body();
    read_until(&mut body, "a;").await;
    proxy.wait_subscribers("s", 1).await;
    log.lock().unwrap().push("b".to_string());
    proxy
        .publish_json(
            json!({"items": [{"channel": "s", "formats": {"http-stream": {"action": "hint"}}}]}),
        )
        .await;
    // First /next answers 500, the retry (after ~1 s) succeeds.
    assert_eq!(read_until(&mut body, "b;").await, "b;");
    let nexts: Vec<_> = seen.all().into_iter().filter(|r| r.1 == "/next").collect();
    assert_eq!(nexts.len(), 2, "{nexts:?}");
    assert!(nexts
        .iter()
        .all(|r| r.2 == vec!["s; last-id=a".to_string()]));
}

#[tokio::test]
async fn recover_updates_every_session() {
    let seen = Seen::default();
    let log = Arc::new(Mutex::new(vec!["a".to_string()]));
    let origin = reliable_origin(&seen, log.clone(), Arc::default()).await;
    let proxy = Proxy::routed_to(&origin, quiet).await;
    let mut one = get(&proxy.url("/stream")).await.into_body();
    let mut two = get(&proxy.url("/stream")).await.into_body();
    read_until(&mut one, "a;").await;
    read_until(&mut two, "a;").await;
    proxy.wait_subscribers("s", 2).await;
    log.lock().unwrap().push("b".to_string());
    let resp = send(
        Request::post(proxy.publish_url("/recover"))
            .header("accept", "application/json")
            .header("content-length", "0")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(text(resp).await, "{\"message\":\"Updated\"}\n");
    read_until(&mut one, "b;").await;
    read_until(&mut two, "b;").await;
}

#[tokio::test]
async fn next_link_chains_stream_history_and_end_in_a_hold() {
    let seen = Seen::default();
    let origin = seen
        .origin(|req| {
            let page: u32 = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("page="))
                .map_or(0, |p| p.parse().unwrap());
            let resp = Response::builder();
            if page < 3 {
                resp.header("grip-link", format!("<?page={}>; rel=next", page + 1))
                    .body(full(format!("page{page};")))
                    .unwrap()
            } else {
                resp.header("grip-hold", "stream")
                    .header("grip-channel", "chain")
                    .body(full("live;"))
                    .unwrap()
            }
        })
        .await;
    let proxy = Proxy::start(
        &format!("*,path_beg=/rw/,replace_beg=/hist/ {}\n", origin.target()),
        quiet,
    )
    .await;
    let mut body = get(&proxy.url("/rw/feed")).await.into_body();
    assert_eq!(
        read_until(&mut body, "live;").await,
        "page0;page1;page2;live;"
    );
    let paths: Vec<_> = seen.all().into_iter().map(|r| r.1).collect();
    assert_eq!(
        paths,
        [
            "/hist/feed",
            "/hist/feed?page=1",
            "/hist/feed?page=2",
            "/hist/feed?page=3"
        ]
    );
    proxy.wait_subscribers("chain", 1).await;
    proxy
        .publish_stream("chain", Some("x"), None, "pushed;")
        .await;
    read_until(&mut body, "pushed;").await;
}

#[tokio::test]
async fn gone_link_is_posted_when_the_client_leaves() {
    let seen = Seen::default();
    let origin = seen
        .origin(|_| {
            Response::builder()
                .header("grip-hold", "stream")
                .header("grip-channel", "presence")
                .header("grip-link", "</gone/42>; rel=gone")
                .body(full("hi"))
                .unwrap()
        })
        .await;
    let proxy = Proxy::routed_to(&origin, quiet).await;
    let resp = get(&proxy.url("/room")).await;
    proxy.wait_subscribers("presence", 1).await;
    drop(resp);
    seen.wait_count(2).await;
    let gone = &seen.all()[1];
    assert_eq!((gone.0.as_str(), gone.1.as_str()), ("POST", "/gone/42"));
}

#[tokio::test]
async fn first_subscriber_update_asks_the_origin_once() {
    let seen = Seen::default();
    let s = seen.clone();
    // Holds each request on the channel its path names.
    let origin = Origin::start(move |req| {
        let s = s.clone();
        async move {
            s.record(&req);
            let channel = req.uri().path().trim_start_matches('/').to_string();
            Response::builder()
                .header("grip-hold", "response")
                .header("grip-channel", channel)
                .body(full("t"))
                .unwrap()
        }
    })
    .await;
    let proxy = Proxy::routed_to(&origin, |_| {}).await;
    let poll = |path: &str| {
        let url = proxy.url(path);
        tokio::spawn(async move { text(get(&url).await).await })
    };
    // The first subscriber: its request, then one update about a second later.
    let first = poll("/fsu");
    seen.wait_asked("/fsu", 2).await;
    proxy.wait_subscribers("fsu", 1).await;

    // Neither a second subscriber nor a re-poll after a delivery is a first subscription.
    let second = poll("/fsu");
    seen.wait_asked("/fsu", 3).await;
    proxy.wait_subscribers("fsu", 2).await;
    proxy.publish_items([response_item("fsu", "pub")]).await;
    assert_eq!(first.await.unwrap(), "pub");
    assert_eq!(second.await.unwrap(), "pub");
    let repoll = poll("/fsu");
    seen.wait_asked("/fsu", 4).await;
    proxy.wait_subscribers("fsu", 1).await;

    // Another channel's first subscription, made after all of that: its update is due after
    // any update those could have scheduled, so once it has come, every such one would have.
    let fence = poll("/fence");
    seen.wait_asked("/fence", 2).await;
    proxy.wait_subscribers("fence", 1).await;
    proxy.publish_items([response_item("fsu", "pub2")]).await;
    proxy.publish_items([response_item("fence", "pub3")]).await;
    assert_eq!(repoll.await.unwrap(), "pub2");
    assert_eq!(fence.await.unwrap(), "pub3");
    assert_eq!(seen.asked("/fence"), 2, "{:?}", seen.all());
    assert_eq!(
        seen.asked("/fsu"),
        4,
        "one request per poll and exactly one update: {:?}",
        seen.all()
    );
}

/// Regression: next-link requests carried the client's `Last-Event-ID`, and origins that read it
/// before their link's query (django-eventstream) rendered the first page again, forever.
#[tokio::test]
async fn next_link_requests_do_not_carry_the_clients_headers() {
    let seen: Arc<Mutex<Vec<(String, bool, bool)>>> = Arc::default();
    let s = seen.clone();
    let origin = Origin::start(move |req: Request<hyper::body::Incoming>| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push((
                req.uri().to_string(),
                req.headers().contains_key("last-event-id"),
                req.headers().contains_key("host"),
            ));
            let resp = Response::builder();
            if req.uri().query() == Some("page=2") {
                resp.body(full("end;")).unwrap()
            } else {
                resp.header("grip-link", "</feed?page=2>; rel=next")
                    .body(full("first;"))
                    .unwrap()
            }
        }
    })
    .await;
    let proxy = Proxy::routed_to(&origin, quiet).await;
    let resp = send(
        Request::get(proxy.url("/feed"))
            .header("last-event-id", "7")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(text(resp).await, "first;end;");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            ("/feed".to_string(), true, true),
            ("/feed?page=2".to_string(), false, true)
        ]
    );
}
