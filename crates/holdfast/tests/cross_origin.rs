//! Automatic cross-origin support (`server.auto_cross_origin`, route `aco`) through the real
//! server, against what Pushpin 1.36 sends for the same exchanges: CORS headers on relayed
//! answers, on preflights, on held long-polls (published and timed out) and on streams; JSON-P
//! in both modes, wrapping relayed answers as Pushpin's proxy does and held long-polls as its
//! handler does; the errors.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::{Request, Response};
use serde_json::json;
use support::*;

/// A fixed `Date`, so JSON-P bodies that carry the origin's headers are exact.
const DATE: &str = "Mon, 07 Dec 2026 06:12:11 GMT";

/// The origin's requests: method, path and query, headers and body.
type Seen = Arc<Mutex<Vec<(String, String, http::HeaderMap, bytes::Bytes)>>>;

/// An origin that records every request and answers as `answer` says for its path.
async fn recording_origin(answer: fn(&str) -> Response<TestBody>) -> (Origin, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let origin = Origin::start(move |req: Request<hyper::body::Incoming>| {
        let log = log.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let path = parts.uri.path().to_string();
            log.lock().unwrap().push((
                parts.method.to_string(),
                parts.uri.to_string(),
                parts.headers,
                body,
            ));
            answer(&path)
        }
    })
    .await;
    (origin, seen)
}

/// The answers of [`recording_origin`] these tests use, by path.
fn answers(path: &str) -> Response<TestBody> {
    let b = Response::builder().header("date", DATE);
    match path {
        "/plain" => b
            .header("server", "origin")
            .header("content-type", "application/json")
            .header("x-custom", "a")
            .header("cache-control", "no-cache")
            .header("x-other", "b")
            .body(full("{\"a\": \"x\\\"y\"}\n")),
        "/err" => b
            .status(404)
            .header("content-type", "text/plain")
            .header("x-e", "1")
            .body(full("not here\n")),
        "/empty" => b.status(204).body(full("")),
        "/own" => b
            .header("access-control-allow-origin", "https://own.example")
            .header("access-control-allow-methods", "GET")
            .header("x-own", "1")
            .body(full("own\n")),
        "/opt" => b.status(204).header("allow", "GET, POST").body(full("")),
        "/lp" => b
            .header("server", "origin")
            .header("content-type", "application/json")
            .header("x-foo", "bar")
            .header("grip-hold", "response")
            .header("grip-channel", "lp")
            .body(full("{\"timeout\": true}\n")),
        "/stream" => b
            .header("content-type", "text/plain")
            .header("x-foo", "bar")
            .header("grip-hold", "stream")
            .header("grip-channel", "st")
            .body(full("start\n")),
        "/gs" => b
            .header("content-type", "text/plain")
            .header("grip-status", "203 Hi")
            .header("x-g", "1")
            .body(full("gs\n")),
        _ => b.header("content-type", "text/plain").body(full("echo\n")),
    }
    .unwrap()
}

/// A response's headers as `name: value` lines, in order, without what the HTTP stacks add or
/// change on their own: framing, `Connection` (`close` while shutting down) and `Date`.
fn lines(resp: &Response<hyper::body::Incoming>) -> Vec<String> {
    resp.headers()
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "content-length" | "transfer-encoding" | "date" | "connection"
            )
        })
        .map(|(k, v)| format!("{}: {}", k, v.to_str().unwrap()))
        .collect()
}

async fn request(
    url: &str,
    method: &str,
    headers: &[(&str, &str)],
) -> Response<hyper::body::Incoming> {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(req.body(full("")).unwrap()).await
}

async fn aco_proxy(origin: &Origin, tweak: impl FnOnce(&mut holdfast::Config)) -> Proxy {
    Proxy::start(
        &format!(
            "*,aco {t}\n\
             *,aco,path_beg=/b/,path_rem=2,jsonp_mode=basic {t}\n\
             *,path_beg=/plain-route/,replace_beg=/ {t}\n",
            t = origin.target()
        ),
        |c| {
            quiet(c);
            tweak(c);
        },
    )
    .await
}

const CORS_DEFAULT: [&str; 4] = [
    "access-control-allow-methods: OPTIONS, HEAD, GET, POST, PUT, DELETE",
    "access-control-allow-credentials: true",
    "access-control-allow-origin: http://a.example",
    "access-control-max-age: 3600",
];

#[tokio::test]
async fn relayed_answers_get_pushpins_cors_headers_in_pushpins_order() {
    let (origin, _) = recording_origin(answers).await;
    let proxy = aco_proxy(&origin, |_| {}).await;
    let resp = request(
        &proxy.url("/plain"),
        "GET",
        &[("origin", "http://a.example")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        lines(&resp),
        [
            "server: origin",
            "content-type: application/json",
            "x-custom: a",
            "cache-control: no-cache",
            "x-other: b",
            "access-control-allow-methods: OPTIONS, HEAD, GET, POST, PUT, DELETE",
            "access-control-expose-headers: Date, Server, X-Custom, X-Other",
            "access-control-allow-credentials: true",
            "access-control-allow-origin: http://a.example",
            "access-control-max-age: 3600",
        ]
    );
    assert_eq!(resp.headers()["date"], DATE);
    assert_eq!(text(resp).await, "{\"a\": \"x\\\"y\"}\n");

    // No Origin: any origin. An error status keeps its status and gets the headers too.
    let resp = request(&proxy.url("/err"), "GET", &[]).await;
    assert_eq!(resp.status(), 404);
    assert_eq!(
        lines(&resp)[2..],
        [
            "access-control-allow-methods: OPTIONS, HEAD, GET, POST, PUT, DELETE",
            "access-control-expose-headers: Date, X-E",
            "access-control-allow-credentials: true",
            "access-control-allow-origin: *",
            "access-control-max-age: 3600",
        ]
    );

    // What the origin set itself stays; the rest is added.
    let resp = request(&proxy.url("/own"), "GET", &[("origin", "http://a.example")]).await;
    assert_eq!(
        lines(&resp),
        [
            "access-control-allow-origin: https://own.example",
            "access-control-allow-methods: GET",
            "x-own: 1",
            "access-control-expose-headers: Date, X-Own",
            "access-control-allow-credentials: true",
            "access-control-max-age: 3600",
        ]
    );
}

#[tokio::test]
async fn cors_is_per_route_unless_turned_on_everywhere() {
    let (origin, _) = recording_origin(answers).await;
    let proxy = aco_proxy(&origin, |_| {}).await;
    let resp = request(
        &proxy.url("/plain-route/plain"),
        "GET",
        &[("origin", "http://a.example")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()
            .keys()
            .all(|k| !k.as_str().starts_with("access-control-")),
        "{:?}",
        lines(&resp)
    );
    let everywhere = aco_proxy(&origin, |c| c.server.auto_cross_origin = true).await;
    let resp = request(
        &everywhere.url("/plain-route/plain"),
        "GET",
        &[("origin", "http://a.example")],
    )
    .await;
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "http://a.example"
    );
}

#[tokio::test]
async fn a_preflight_reaches_the_origin_and_gets_what_it_asked_for() {
    let (origin, seen) = recording_origin(answers).await;
    let proxy = aco_proxy(&origin, |_| {}).await;
    let resp = request(
        &proxy.url("/opt"),
        "OPTIONS",
        &[
            ("origin", "http://a.example"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "x-a, Content-Type"),
            ("access-control-request-headers", "x-b"),
        ],
    )
    .await;
    // Pushpin answers no preflight itself: the origin's status stays.
    assert_eq!(resp.status(), 204);
    assert_eq!(
        lines(&resp),
        [
            "allow: GET, POST",
            "access-control-allow-methods: PUT",
            "access-control-allow-headers: x-a, Content-Type, x-b",
            "access-control-expose-headers: Date, Allow",
            "access-control-allow-credentials: true",
            "access-control-allow-origin: http://a.example",
            "access-control-max-age: 3600",
        ]
    );
    let seen = seen.lock().unwrap();
    assert_eq!(
        (seen[0].0.as_str(), seen[0].1.as_str()),
        ("OPTIONS", "/opt")
    );
    assert_eq!(seen[0].2["access-control-request-method"], "PUT");
}

/// A plain published answer, which the hub writes itself to a long-poll that is not
/// cross-origin, is wrapped like any other here: the CORS headers come with it.
#[tokio::test]
async fn a_plain_published_answer_to_a_cross_origin_long_poll_gets_cors_headers() {
    let (origin, _) = recording_origin(answers).await;
    let proxy = aco_proxy(&origin, |_| {}).await;
    let url = proxy.url("/lp");
    let client =
        tokio::spawn(async move { request(&url, "GET", &[("origin", "http://a.example")]).await });
    proxy.wait_subscribers("lp", 1).await;
    let written = proxy.app.hub.stats().written;
    proxy
        .publish_items([
            json!({"channel": "lp", "formats": {"http-response": {"body": "plain\n"}}}),
        ])
        .await;
    let resp = client.await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "http://a.example"
    );
    assert_eq!(text(resp).await, "plain\n");
    assert_eq!(proxy.app.hub.stats().written, written);
}

#[tokio::test]
async fn a_long_poll_answered_by_a_publish_gets_cors_headers() {
    let (origin, _) = recording_origin(answers).await;
    let proxy = aco_proxy(&origin, |_| {}).await;
    let url = proxy.url("/lp");
    let client =
        tokio::spawn(async move { request(&url, "GET", &[("origin", "http://a.example")]).await });
    proxy.wait_subscribers("lp", 1).await;
    proxy
        .publish_items([json!({"channel": "lp", "formats": {"http-response": {
            "code": 201, "reason": "Made", "body": "published\n",
            "headers": [["Content-Type", "text/x-pub"], ["X-Pub", "1"]]}}})])
        .await;
    let resp = client.await.unwrap();
    assert_eq!(resp.status(), 201);
    // The original headers the item does not name, then the item's, then Pushpin's CORS set.
    assert_eq!(
        lines(&resp),
        [
            "server: origin",
            "x-foo: bar",
            "content-type: text/x-pub",
            "x-pub: 1",
            "access-control-allow-methods: OPTIONS, HEAD, GET, POST, PUT, DELETE",
            "access-control-expose-headers: Date, Server, X-Foo, X-Pub",
            "access-control-allow-credentials: true",
            "access-control-allow-origin: http://a.example",
            "access-control-max-age: 3600",
        ]
    );
    assert_eq!(text(resp).await, "published\n");
}

#[tokio::test]
async fn a_long_poll_that_times_out_gets_cors_headers() {
    let (origin, _) = recording_origin(answers).await;
    let proxy = aco_proxy(&origin, |_| {}).await;
    let url = proxy.url("/lp");
    let client = tokio::spawn(async move { request(&url, "GET", &[]).await });
    proxy.wait_subscribers("lp", 1).await;
    // Shutting down answers held long-polls with their timeout response.
    proxy.shutdown().await;
    let resp = client.await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        lines(&resp),
        [
            "server: origin",
            "content-type: application/json",
            "x-foo: bar",
            "access-control-allow-methods: OPTIONS, HEAD, GET, POST, PUT, DELETE",
            "access-control-expose-headers: Date, Server, X-Foo",
            "access-control-allow-credentials: true",
            "access-control-allow-origin: *",
            "access-control-max-age: 3600",
        ]
    );
    assert_eq!(text(resp).await, "{\"timeout\": true}\n");
}

#[tokio::test]
async fn a_stream_gets_cors_headers_and_never_a_jsonp_wrapper() {
    let (origin, seen) = recording_origin(answers).await;
    let proxy = aco_proxy(&origin, |_| {}).await;
    let resp = request(
        &proxy.url("/stream?callback=f"),
        "GET",
        &[("origin", "http://a.example")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        lines(&resp),
        [
            "content-type: text/plain",
            "x-foo: bar",
            "access-control-allow-methods: OPTIONS, HEAD, GET, POST, PUT, DELETE",
            "access-control-expose-headers: Date, X-Foo",
            "access-control-allow-credentials: true",
            "access-control-allow-origin: http://a.example",
            "access-control-max-age: 3600",
        ]
    );
    let mut body = resp.into_body();
    assert_eq!(read_until(&mut body, "start\n").await, "start\n");
    proxy.wait_subscribers("st", 1).await;
    proxy.publish_stream("st", None, None, "more\n").await;
    assert_eq!(read_until(&mut body, "more\n").await, "more\n");
    // The callback parameter was still taken off the request, as in Pushpin.
    assert_eq!(seen.lock().unwrap()[0].1, "/stream");
}

#[tokio::test]
async fn jsonp_extended_wraps_a_relayed_answer_as_pushpins_proxy() {
    let (origin, seen) = recording_origin(answers).await;
    let proxy = aco_proxy(&origin, |_| {}).await;
    let resp = request(
        &proxy.url("/plain?callback=f&x=1"),
        "GET",
        &[("origin", "http://a.example"), ("accept", "text/html")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    // No CORS headers on JSON-P; the origin's Cache-Control is kept.
    assert_eq!(
        lines(&resp),
        [
            "content-type: application/javascript",
            "cache-control: no-cache"
        ]
    );
    let length: usize = resp.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = text(resp).await;
    assert_eq!(body.len(), length);
    assert_eq!(
        body,
        format!(
            "/**/f({{\"code\": 200, \"reason\": \"OK\", \"headers\": {{\"Cache-Control\":\"no-cache\",\
             \"Content-Length\":\"14\",\"Content-Type\":\"application/json\",\"Date\":\"{DATE}\",\
             \"Server\":\"origin\",\"X-Custom\":\"a\",\"X-Other\":\"b\"}}, \"body\": \
             \"{{\\\"a\\\": \\\"x\\\\\\\"y\\\"}}\\n\"}});\n"
        )
    );
    {
        let seen = seen.lock().unwrap();
        let (method, uri, headers, _) = &seen[0];
        assert_eq!((method.as_str(), uri.as_str()), ("GET", "/plain?x=1"));
        assert_eq!(headers["accept"], "*/*");
    }

    // An origin error is wrapped the same way, with the origin's status and reason inside.
    let resp = request(&proxy.url("/err?callback=cb.x"), "GET", &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        text(resp).await,
        format!(
            "/**/cb.x({{\"code\": 404, \"reason\": \"Not Found\", \"headers\": {{\
             \"Content-Length\":\"9\",\"Content-Type\":\"text/plain\",\"Date\":\"{DATE}\",\
             \"X-E\":\"1\"}}, \"body\": \"not here\\n\"}});\n"
        )
    );
    // A GRIP answer that holds nothing is a relayed answer too (without a Content-Length).
    let resp = request(&proxy.url("/gs?callback=f"), "GET", &[]).await;
    assert_eq!(
        text(resp).await,
        format!(
            "/**/f({{\"code\": 203, \"reason\": \"Hi\", \"headers\": {{\"Content-Type\":\
             \"text/plain\",\"Date\":\"{DATE}\",\"X-G\":\"1\"}}, \"body\": \"gs\\n\"}});\n"
        )
    );
}

#[tokio::test]
async fn jsonp_basic_posts_and_calls_back_with_the_body() {
    let (origin, seen) = recording_origin(answers).await;
    let proxy = aco_proxy(&origin, |_| {}).await;
    let resp = request(&proxy.url("/b/plain?callback=f"), "GET", &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        lines(&resp),
        [
            "content-type: application/javascript",
            "cache-control: no-cache"
        ]
    );
    assert_eq!(text(resp).await, "/**/f({\"a\": \"x\\\"y\"});\n");
    assert_eq!(seen.lock().unwrap()[0].0, "POST");
    // An empty body cannot be wrapped in basic mode (Pushpin's answer).
    let resp = request(&proxy.url("/b/empty?callback=f"), "GET", &[]).await;
    assert_eq!(resp.status(), 500);
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(
        text(resp).await,
        "Upstream response could not be JSON-P encoded.\n"
    );
}

#[tokio::test]
async fn jsonp_request_parameters_shape_the_origin_request() {
    let (origin, seen) = recording_origin(answers).await;
    let proxy = Proxy::start(
        &format!(
            "*,aco,jsonp_cb=cb,jsonp_body=bd,jsonp_defcb=defcb,jsonp_defmethod=PUT {t}\n\
             *,aco,path_beg=/u/ {t}\n",
            t = origin.target()
        ),
        quiet,
    )
    .await;
    // The body parameter alone makes a JSON-P request, with the default callback and method.
    let resp = request(&proxy.url("/c?bd=%7B%22k%22%3A1%7D&keep=%2F"), "GET", &[]).await;
    assert!(text(resp).await.starts_with("/**/defcb({\"code\": 200"));
    let resp = request(
        &proxy.url("/u/x?callback=g&_method=DELETE&_headers=%7B%22X-H%22%3A%22v%22%7D&_body=a%2Bb"),
        "GET",
        &[],
    )
    .await;
    assert!(text(resp).await.starts_with("/**/g({\"code\": 200"));
    let seen = seen.lock().unwrap();
    let (method, uri, headers, body) = &seen[0];
    assert_eq!((method.as_str(), uri.as_str()), ("PUT", "/c?keep=%2F"));
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body.as_ref(), b"{\"k\":1}");
    let (method, uri, headers, body) = &seen[1];
    assert_eq!((method.as_str(), uri.as_str()), ("DELETE", "/u/x"));
    assert_eq!(headers["x-h"], "v");
    assert_eq!(body.as_ref(), b"a+b");
}

#[tokio::test]
async fn a_bad_jsonp_request_is_refused_with_cors_headers() {
    let (origin, seen) = recording_origin(answers).await;
    let proxy = aco_proxy(&origin, |_| {}).await;
    for (query, message) in [
        ("callback=", "Invalid callback parameter.\n"),
        ("callback=alert(1)//", "Invalid callback parameter.\n"),
        ("callback=f&_method=", "Invalid _method parameter.\n"),
        (
            "callback=f&_headers=%5B%5D",
            "Invalid _headers parameter.\n",
        ),
        ("callback=f&_body=", "Invalid _body parameter.\n"),
    ] {
        let resp = request(
            &proxy.url(&format!("/plain?{query}")),
            "GET",
            &[("origin", "http://a.example")],
        )
        .await;
        assert_eq!(resp.status(), 400, "{query}");
        let mut want = vec!["content-type: text/plain"];
        want.extend(CORS_DEFAULT);
        assert_eq!(lines(&resp), want, "{query}");
        assert_eq!(text(resp).await, message, "{query}");
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "no refused request reaches the origin"
    );
}

#[tokio::test]
async fn an_unreachable_origin_is_wrapped_too() {
    let dead = dead_port().await;
    let proxy = Proxy::start(&format!("*,aco 127.0.0.1:{dead}\n"), quiet).await;
    let resp = request(&proxy.url("/x?callback=f"), "GET", &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        text(resp).await,
        format!(
            "/**/f({{\"code\": 502, \"reason\": \"Bad Gateway\", \"headers\": {{\"Content-Type\":\
             \"text/plain\"}}, \"body\": \"Unable to connect to any targets. \
             Tried: 127.0.0.1:{dead}\\n\"}});\n"
        )
    );
    let resp = request(&proxy.url("/x"), "GET", &[("origin", "http://a.example")]).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "http://a.example"
    );
}

#[tokio::test]
async fn jsonp_on_a_held_long_poll_is_wrapped_as_pushpins_handler() {
    let (origin, _) = recording_origin(answers).await;
    let proxy = aco_proxy(&origin, |_| {}).await;
    let ext = proxy.url("/lp?callback=f");
    let basic = proxy.url("/b/lp?callback=f");
    let ext = tokio::spawn(async move { request(&ext, "GET", &[]).await });
    let basic = tokio::spawn(async move { request(&basic, "GET", &[]).await });
    proxy.wait_subscribers("lp", 2).await;
    proxy
        .publish_items([json!({"channel": "lp", "formats": {"http-response": {
            "code": 201, "reason": "Made", "body": "published\n",
            "headers": [["Cache-Control", "max-age=5"], ["Content-Type", "text/x-pub"], ["X-Pub", "1"]]}}})])
        .await;
    let resp = ext.await.unwrap();
    assert_eq!(resp.status(), 200);
    // The held answer's own headers stay, its Content-Type replaced; no CORS headers.
    let want = [
        "server: origin",
        "x-foo: bar",
        "cache-control: max-age=5",
        "x-pub: 1",
        "content-type: application/javascript",
    ];
    assert_eq!(lines(&resp), want);
    assert_eq!(
        text(resp).await,
        format!(
            "/**/f({{\"body\":\"published\\n\",\"code\":201,\"headers\":{{\"Cache-Control\":\
             \"max-age=5\",\"Content-Type\":\"text/x-pub\",\"Date\":\"{DATE}\",\"Server\":\
             \"origin\",\"X-Foo\":\"bar\",\"X-Pub\":\"1\"}},\"reason\":\"Made\"}});\n"
        )
    );
    let resp = basic.await.unwrap();
    assert_eq!(lines(&resp), want);
    assert_eq!(text(resp).await, "/**/f(published);\n");

    // At the timeout (here: shutdown), the origin's response is wrapped the same way.
    let url = proxy.url("/lp?callback=f");
    let held = tokio::spawn(async move { request(&url, "GET", &[]).await });
    proxy.wait_subscribers("lp", 1).await;
    proxy.shutdown().await;
    let resp = held.await.unwrap();
    assert_eq!(
        text(resp).await,
        format!(
            "/**/f({{\"body\":\"{{\\\"timeout\\\": true}}\\n\",\"code\":200,\"headers\":{{\
             \"Content-Type\":\"application/json\",\"Date\":\"{DATE}\",\"Server\":\"origin\",\
             \"X-Foo\":\"bar\"}},\"reason\":\"OK\"}});\n"
        )
    );
}

#[tokio::test]
async fn the_test_target_answers_jsonp_too() {
    let proxy = Proxy::start("*,aco test\n", quiet).await;
    let resp = request(&proxy.url("/?callback=f"), "GET", &[]).await;
    let body = text(resp).await;
    assert!(
        body.starts_with(
            "/**/f({\"code\": 200, \"reason\": \"OK\", \"headers\": {\"Content-Type\":"
        ) && body.ends_with(&format!(
            "\"body\": \"{}\\n\"}});\n",
            holdfast::testhandler::HELLO.trim_end()
        )),
        "{body}"
    );
}

#[tokio::test]
async fn a_long_relayed_body_is_wrapped_as_it_streams() {
    let origin = Origin::start(|_req| async {
        Response::builder()
            .header("content-type", "text/plain")
            .header("cache-control", "no-store")
            .body(full("é".repeat(70_000) + "\n"))
            .unwrap()
    })
    .await;
    let proxy = Proxy::start(&format!("*,aco {}\n", origin.target()), quiet).await;
    let resp = request(&proxy.url("/?callback=f"), "GET", &[]).await;
    assert_eq!(resp.status(), 200);
    // Over limits.max_accept_body: chunked, and (as Pushpin) without the Cache-Control.
    assert_eq!(lines(&resp), ["content-type: application/javascript"]);
    assert!(resp.headers().get("content-length").is_none());
    let body = tokio::time::timeout(Duration::from_secs(10), text(resp))
        .await
        .unwrap();
    let inner = body
        .strip_prefix("/**/f({\"code\": 200, \"reason\": \"OK\", \"headers\": {")
        .and_then(|b| b.split_once("\"body\": \""))
        .map(|(_, b)| b)
        .unwrap();
    assert_eq!(inner, "é".repeat(70_000) + "\\n\"});\n");
}

#[tokio::test]
async fn a_relayed_stream_of_unknown_length_is_wrapped_as_it_comes() {
    let (more_tx, more_rx) = tokio::sync::oneshot::channel::<()>();
    let more_rx = Arc::new(Mutex::new(Some(more_rx)));
    let origin = Origin::start(move |_req| {
        let more = more_rx.lock().unwrap().take().expect("one request");
        async move {
            type Chunk =
                Result<hyper::body::Frame<bytes::Bytes>, Box<dyn std::error::Error + Send + Sync>>;
            let chunk = |c: &'static str| -> Chunk { Ok(hyper::body::Frame::data(c.into())) };
            let chunks =
                futures_util::stream::unfold((0, Some(more)), move |(n, more)| async move {
                    match n {
                        0 => Some((chunk("one\n"), (1, more))),
                        1 => {
                            if let Some(more) = more {
                                let _ = more.await;
                            }
                            Some((chunk("two\n"), (2, None)))
                        }
                        _ => None,
                    }
                });
            Response::builder()
                .header("content-type", "text/plain")
                .body(http_body_util::BodyExt::boxed(
                    http_body_util::StreamBody::new(chunks),
                ))
                .unwrap()
        }
    })
    .await;
    let proxy = Proxy::start(
        &format!("*,aco,jsonp_mode=basic {}\n", origin.target()),
        quiet,
    )
    .await;
    let resp = request(&proxy.url("/?callback=f"), "GET", &[]).await;
    assert_eq!(lines(&resp), ["content-type: application/javascript"]);
    let mut body = resp.into_body();
    // The first part arrives while the origin still holds the rest back.
    assert_eq!(read_until(&mut body, "one").await, "/**/f(one");
    more_tx.send(()).unwrap();
    let mut rest = String::new();
    while let Some(chunk) = next_chunk(&mut body).await {
        rest.push_str(&String::from_utf8_lossy(&chunk));
    }
    // One final newline is dropped, as from a body that came whole.
    assert_eq!(rest, "\ntwo);\n");
}
