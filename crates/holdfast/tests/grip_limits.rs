//! Origin input that must not hurt, through the real server: timeouts too large for the clock,
//! channel names that are empty, huge or hold control characters, and more channels than one
//! connection may have. Each gets a `502` that names the problem, and the server keeps serving.

mod support;

use hyper::{Request, Response};
use serde_json::json;
use support::*;

/// One path's answer: its headers and body.
type Answer = (&'static str, Vec<(&'static str, String)>, String);

/// An origin answering each path with its own GRIP instructions; `/ok` is a stream hold on
/// channel `ok`.
async fn origin(answers: Vec<Answer>) -> Origin {
    let answers = std::sync::Arc::new(answers);
    Origin::start(move |req: Request<hyper::body::Incoming>| {
        let answers = answers.clone();
        async move {
            let path = req.uri().path().to_string();
            if path == "/ok" {
                return Response::builder()
                    .header("grip-hold", "stream")
                    .header("grip-channel", "ok")
                    .body(full("ok;"))
                    .unwrap();
            }
            let (_, headers, body) = answers
                .iter()
                .find(|(p, _, _)| *p == path)
                .unwrap_or_else(|| panic!("no answer for {path}"));
            let mut resp = Response::builder();
            for (k, v) in headers {
                resp = resp.header(*k, v.as_str());
            }
            resp.body(full(body.clone())).unwrap()
        }
    })
    .await
}

/// Holdfast with every request routed to `origin` on a `debug` route, so a 502 says why.
async fn debug_proxy(origin: &Origin) -> Proxy {
    Proxy::start(&format!("*,debug {}\n", origin.target()), |_| {}).await
}

/// Asks each path and checks the answer is a `502` whose text names every `needles` entry;
/// then checks that a stream opened before still gets what is published, so nothing else broke.
async fn assert_all_refused(proxy: &Proxy, cases: &[(&str, Vec<String>)]) {
    let stream = get(&proxy.url("/ok")).await;
    proxy.wait_subscribers("ok", 1).await;
    for (path, needles) in cases {
        let resp = get(&proxy.url(path)).await;
        // A hold that was accepted would never end: read the body of a refusal only.
        assert_eq!(resp.status(), 502, "{path}");
        let body = text(resp).await;
        for needle in needles {
            assert!(
                body.contains(needle.as_str()),
                "{path}: {needle:?} in {body:?}"
            );
        }
    }
    proxy.publish_stream("ok", None, None, "still").await;
    let mut body = stream.into_body();
    assert_eq!(read_until(&mut body, "ok;still").await, "ok;still");
}

/// An `application/grip-instruct` answer.
fn grip_instruct(path: &'static str, doc: serde_json::Value) -> Answer {
    let headers = vec![("content-type", "application/grip-instruct".to_string())];
    (path, headers, doc.to_string())
}

/// A stream hold on `channels` (a `Grip-Channel` value) with `extra` headers.
fn stream_on(path: &'static str, channels: &str, extra: &[(&'static str, String)]) -> Answer {
    let mut headers = vec![
        ("grip-hold", "stream".to_string()),
        ("grip-channel", channels.to_string()),
    ];
    headers.extend(extra.iter().cloned());
    (path, headers, String::new())
}

const HUGE: &str = "18446744073709551615";

#[tokio::test]
async fn timeouts_too_large_for_the_clock_are_502_and_the_server_keeps_serving() {
    let mut response_hold = stream_on("/timeout", "c", &[("grip-timeout", HUGE.into())]);
    response_hold.1[0].1 = "response".to_string();
    let answers = vec![
        response_hold,
        stream_on(
            "/keep-alive",
            "c",
            &[("grip-keep-alive", format!("ka; timeout={HUGE}"))],
        ),
        stream_on(
            "/link",
            "c",
            &[("grip-link", format!("</next>; rel=next; timeout={HUGE}"))],
        ),
        grip_instruct(
            "/json-timeout",
            json!({"hold": {"channels": [{"name": "c"}], "timeout": i64::MAX}}),
        ),
        grip_instruct(
            "/json-keep-alive",
            json!({"hold": {"mode": "stream", "channels": [{"name": "c"}],
                "keep-alive": {"content": "ka", "timeout": i64::MAX}}}),
        ),
    ];
    let origin = origin(answers).await;
    let proxy = debug_proxy(&origin).await;
    let max = i64::MAX.to_string();
    let cases = [
        ("/timeout", vec!["Grip-Timeout".into(), HUGE.into()]),
        ("/keep-alive", vec!["Grip-Keep-Alive".into(), HUGE.into()]),
        ("/link", vec!["Grip-Link".into(), HUGE.into()]),
        ("/json-timeout", vec!["'timeout'".into(), max.clone()]),
        ("/json-keep-alive", vec!["'timeout'".into(), max]),
    ];
    assert_all_refused(&proxy, &cases).await;
}

#[tokio::test]
async fn bad_channel_names_are_502_naming_the_problem() {
    let answers = vec![
        stream_on("/empty", "", &[]),
        stream_on("/empty-item", "a,,b", &[]),
        stream_on("/long", &"x".repeat(100 * 1024), &[]),
        stream_on("/tab", "a\tb", &[]),
        grip_instruct(
            "/json-newline",
            json!({"hold": {"mode": "stream", "channels": [{"name": "a\nb"}]}}),
        ),
        grip_instruct(
            "/json-long",
            json!({"hold": {"mode": "stream", "channels": [{"name": "y".repeat(600)}]}}),
        ),
    ];
    let origin = origin(answers).await;
    let proxy = debug_proxy(&origin).await;
    let cases = [
        ("/empty", vec!["Grip-Channel".into(), "empty".into()]),
        ("/empty-item", vec!["'a,,b'".into(), "empty".into()]),
        (
            "/long",
            vec!["Grip-Channel".into(), "102400 bytes".into(), "512".into()],
        ),
        ("/tab", vec!["Grip-Channel".into(), "U+0009".into()]),
        (
            "/json-newline",
            vec!["grip-instruct".into(), "U+000A".into()],
        ),
        ("/json-long", vec!["600 bytes".into(), "512".into()]),
    ];
    assert_all_refused(&proxy, &cases).await;
}

#[tokio::test]
async fn a_route_prefix_counts_towards_the_channel_name_limit() {
    let origin = origin(vec![stream_on("/long", &"z".repeat(510), &[])]).await;
    let proxy = Proxy::start(
        &format!(
            "*,path_beg=/ok {t}\n*,prefix=pre-,debug {t}\n",
            t = origin.target()
        ),
        |_| {},
    )
    .await;
    let cases = [("/long", vec!["514 bytes".into(), "'pre-zzz".into()])];
    assert_all_refused(&proxy, &cases).await;
}

/// `c0, c1, …` up to `n` channels.
fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[tokio::test]
async fn more_channels_than_the_limit_are_refused_whole_not_cut_short() {
    let json_channels: Vec<_> = names("j", 21)
        .into_iter()
        .map(|n| json!({ "name": n }))
        .collect();
    let answers = vec![
        stream_on("/twenty", &names("c", 20).join(", "), &[]),
        stream_on("/twenty-one", &names("c", 21).join(", "), &[]),
        grip_instruct(
            "/json",
            json!({"hold": {"mode": "stream", "channels": json_channels}}),
        ),
    ];
    let origin = origin(answers).await;
    let proxy = debug_proxy(&origin).await;
    let refused = vec![
        "21 channels".to_string(),
        "limits.max_channels_per_connection".to_string(),
        "(20)".to_string(),
    ];
    let cases = [("/twenty-one", refused.clone()), ("/json", refused)];
    assert_all_refused(&proxy, &cases).await;

    // At the limit every channel is held, the last one included.
    let resp = get(&proxy.url("/twenty")).await;
    assert_eq!(resp.status(), 200);
    proxy.wait_subscribers("c19", 1).await;
    proxy.publish_stream("c19", None, None, "to the 20th").await;
    let mut body = resp.into_body();
    assert_eq!(read_until(&mut body, "to the 20th").await, "to the 20th");
}

#[tokio::test]
async fn a_higher_limit_holds_every_channel_and_sub_channels_count() {
    let answers = vec![
        stream_on("/twenty-one", &names("c", 21).join(", "), &[]),
        stream_on("/with-subs", &names("d", 29).join(", "), &[]),
    ];
    let origin = origin(answers).await;
    let proxy = Proxy::start(
        &format!(
            "*,path_beg=/with-subs,debug {t},sub=s1,sub=s2\n*,debug {t}\n",
            t = origin.target()
        ),
        |c| c.limits.max_channels_per_connection = 30,
    )
    .await;
    let resp = get(&proxy.url("/twenty-one")).await;
    assert_eq!(resp.status(), 200);
    proxy.wait_subscribers("c20", 1).await;
    proxy.publish_stream("c20", None, None, "to the 21st").await;
    let mut body = resp.into_body();
    assert_eq!(read_until(&mut body, "to the 21st").await, "to the 21st");

    let cases = [("/with-subs", vec!["31 channels".into(), "(30)".into()])];
    assert_all_refused(&proxy, &cases).await;
}
