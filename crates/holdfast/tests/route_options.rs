//! Route options beyond matching and rewriting, through the real server: `Pushpin-Route` under
//! `server.accept_pushpin_route`, `orig_headers`, `log_level`, and what an `untrusted` target
//! may not do with next and gone links.

mod support;

use std::sync::{Arc, Mutex};

use hyper::{Request, Response};
use support::binary::Binary;
use support::*;

/// An origin answering `name` and recording each request's path and headers.
async fn named_origin(name: &'static str) -> (Origin, Arc<Mutex<Vec<(String, http::HeaderMap)>>>) {
    let seen: Arc<Mutex<Vec<(String, http::HeaderMap)>>> = Arc::default();
    let log = seen.clone();
    let origin = Origin::start(move |req: Request<hyper::body::Incoming>| {
        log.lock()
            .unwrap()
            .push((req.uri().to_string(), req.headers().clone()));
        async move { Response::new(full(name)) }
    })
    .await;
    (origin, seen)
}

async fn get_with(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send(req.body(full("")).unwrap()).await;
    (resp.status().as_u16(), text(resp).await)
}

#[tokio::test]
async fn pushpin_route_picks_a_route_by_its_id_when_allowed() {
    let (a, a_seen) = named_origin("a").await;
    let (b, b_seen) = named_origin("b").await;
    let routes = format!(
        "* {}\nid=b,path_beg=/only-b/ {}\nx.example,id=twice {}\ny.example,id=twice {}\n",
        a.target(),
        b.target(),
        b.target(),
        b.target()
    );
    let proxy = Proxy::start(&routes, |c| c.server.accept_pushpin_route = true).await;
    // The id wins over the condition (its path_beg does not match, as in Pushpin 1.36).
    assert_eq!(
        get_with(&proxy.url("/x"), &[("pushpin-route", "b")]).await,
        (200, "b".into())
    );
    assert!(b_seen.lock().unwrap()[0].1.get("pushpin-route").is_none());
    // An id several routes share is ignored; an unknown one is no route at all.
    assert_eq!(
        get_with(&proxy.url("/x"), &[("pushpin-route", "twice")]).await,
        (200, "a".into())
    );
    let (status, body) = get_with(&proxy.url("/x"), &[("pushpin-route", "nope")]).await;
    assert_eq!(status, 502);
    assert!(body.starts_with("No route for host: 127.0.0.1:"), "{body}");
    assert!(a_seen
        .lock()
        .unwrap()
        .iter()
        .all(|(_, h)| h.get("pushpin-route").is_none()));

    // Not allowed: the header is a header like any other.
    let closed = Proxy::start(&routes, |_| {}).await;
    assert_eq!(
        get_with(&closed.url("/x"), &[("pushpin-route", "b")]).await,
        (200, "a".into())
    );
    assert_eq!(
        a_seen.lock().unwrap().last().unwrap().1["pushpin-route"],
        "b"
    );
}

#[tokio::test]
async fn orig_headers_sends_marked_copies_and_otherwise_removes_them() {
    let (origin, seen) = named_origin("o").await;
    let routes = format!(
        "*,path_beg=/orig/,orig_headers {t}\n* {t}\n",
        t = origin.target()
    );
    let proxy = Proxy::start(&routes, |_| {}).await;
    let headers = [
        ("x-client", "1"),
        ("grip-last", "forged; last-id=9"),
        ("eb9bf0f5-x-upstream", "kept"),
    ];
    get_with(&proxy.url("/orig/a"), &headers).await;
    get_with(&proxy.url("/plain"), &headers).await;
    let seen = seen.lock().unwrap();
    let marked = &seen[0].1;
    assert_eq!(marked["eb9bf0f5-x-client"], "1");
    assert_eq!(marked["eb9bf0f5-grip-last"], "forged; last-id=9");
    assert_eq!(marked["eb9bf0f5-x-upstream"], "kept");
    assert!(marked["eb9bf0f5-host"]
        .to_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    // The header itself is still handled as always.
    assert!(marked.get("grip-last").is_none());
    assert_eq!(marked["x-client"], "1");
    let plain = &seen[1].1;
    assert!(
        plain.keys().all(|k| !k.as_str().starts_with("eb9bf0f5-")),
        "{plain:?}"
    );
    assert_eq!(plain["x-client"], "1");
}

/// A routes file in a temporary folder, for the binary.
fn routes_file(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes");
    std::fs::write(&path, text).unwrap();
    let path = path.to_str().unwrap().to_string();
    (dir, path)
}

fn start(routes: &str) -> Binary {
    Binary::start([
        "--listen",
        "127.0.0.1:0",
        "--publish-listen",
        "127.0.0.1:0",
        "--routes",
        routes,
        "--log-level",
        "info",
    ])
}

/// Like [`start`], with `outbound.allow` letting `untrusted` targets on loopback through (the
/// config file lives in `dir`).
fn start_allowing_loopback(routes: &str, dir: &tempfile::TempDir) -> Binary {
    let config = dir.path().join("holdfast.toml");
    std::fs::write(&config, "[outbound]\nallow = [\"127.0.0.0/8\"]\n").unwrap();
    Binary::start([
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--publish-listen",
        "127.0.0.1:0",
        "--routes",
        routes,
        "--log-level",
        "info",
    ])
}

#[tokio::test]
async fn log_level_quiets_a_routes_access_log() {
    let (origin, _) = named_origin("o").await;
    let (_dir, routes) = routes_file(&format!(
        "*,path_beg=/quiet/,log_level=1 {t}\n* {t}\n",
        t = origin.target()
    ));
    let running = start(&routes);
    // Both are answered; only the second is logged, at the info the first route is over.
    assert_eq!(
        get_with(&running.url("/quiet/a"), &[]).await,
        (200, "o".into())
    );
    assert_eq!(
        get_with(&running.url("/loud"), &[]).await,
        (200, "o".into())
    );
    let line = running.wait_for(|v| v["fields"]["message"] == "request");
    assert_eq!(line["fields"]["uri"], "/loud");
}

#[tokio::test]
async fn access_log_turns_a_routes_lines_off_or_samples_them() {
    let (origin, _) = named_origin("o").await;
    let dead = dead_port().await;
    let (_dir, routes) = routes_file(&format!(
        "*,path_beg=/off/,access_log=off {t}\n\
         *,path_beg=/half/,access_log=0.5 {t}\n\
         *,path_beg=/broken/,access_log=0.000001 127.0.0.1:{dead}\n\
         * {t}\n",
        t = origin.target()
    ));
    let running = start(&routes);
    assert_eq!(get_with(&running.url("/off/a"), &[]).await.0, 200);
    for n in 0..200 {
        assert_eq!(
            get_with(&running.url(&format!("/half/{n}")), &[]).await.0,
            200
        );
    }
    // A server error is written whatever the share, unless the log is off.
    assert_eq!(get_with(&running.url("/broken/x"), &[]).await.0, 502);
    assert_eq!(get_with(&running.url("/loud"), &[]).await.0, 200);
    let mut seen = Vec::new();
    running.wait_for(|v| {
        if v["fields"]["message"] != "request" {
            return false;
        }
        let uri = v["fields"]["uri"].as_str().unwrap().to_string();
        seen.push((uri.clone(), v["fields"]["status"].as_u64().unwrap()));
        uri == "/loud"
    });
    assert!(
        !seen.iter().any(|(u, _)| u.starts_with("/off/")),
        "{seen:?}"
    );
    let half = seen.iter().filter(|(u, _)| u.starts_with("/half/")).count();
    // Half of 200, drawn at random: far from both ends.
    assert!((20..180).contains(&half), "{half} of 200 logged at 0.5");
    assert!(seen.contains(&("/broken/x".to_string(), 502)), "{seen:?}");
}

#[tokio::test]
async fn log_user_agent_adds_the_clients_user_agent_to_access_lines() {
    let (origin, _) = named_origin("o").await;
    let (dir, routes) = routes_file(&format!("* {}\n", origin.target()));
    let config = dir.path().join("holdfast.toml");
    std::fs::write(&config, "[log]\nuser_agent = true\n").unwrap();
    let running = Binary::start([
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--publish-listen",
        "127.0.0.1:0",
        "--routes",
        &routes,
        "--log-level",
        "info",
    ]);
    let agent = "holdfast-test/1.0 (like curl)";
    assert_eq!(
        get_with(&running.url("/ua"), &[("user-agent", agent)]).await,
        (200, "o".into())
    );
    let line = running.wait_for(|v| v["fields"]["message"] == "request");
    assert_eq!(line["fields"]["user_agent"], agent, "{line}");
}

/// An origin answering `…/start` with `first`, a next link to `next` and a gone link to `gone`,
/// and `…/next` with `second`; it records each request's path and headers.
async fn linking_origin(
    next: &'static str,
    gone: &'static str,
) -> (Origin, Arc<Mutex<Vec<(String, http::HeaderMap)>>>) {
    let seen: Arc<Mutex<Vec<(String, http::HeaderMap)>>> = Arc::default();
    let log = seen.clone();
    let origin = Origin::start(move |req: Request<hyper::body::Incoming>| {
        log.lock()
            .unwrap()
            .push((req.uri().path().to_string(), req.headers().clone()));
        let path = req.uri().path().to_string();
        async move {
            if path.ends_with("/next") {
                return Response::new(full("second\n"));
            }
            Response::builder()
                .header("grip-link", format!("<{next}>; rel=next"))
                .header("grip-link", format!("<{gone}>; rel=gone"))
                .body(full("first\n"))
                .unwrap()
        }
    })
    .await;
    (origin, seen)
}

#[tokio::test]
async fn an_untrusted_target_cannot_send_links_to_another_host() {
    let (origin, seen) = linking_origin(
        "http://elsewhere.example/u/next",
        "http://elsewhere.example/u/gone",
    )
    .await;
    let (_dir, routes) = routes_file(&format!(
        "*,path_beg=/u/ {t},untrusted\n* {t}\n",
        t = origin.target()
    ));
    let running = start_allowing_loopback(&routes, &_dir);
    // The first answer reaches the client; its next link is not followed and the stream ends.
    assert_eq!(
        get_with(&running.url("/u/start"), &[]).await,
        (200, "first\n".into())
    );
    // The gone link is judged when the session starts, the next link after the first answer.
    let refused = running.wait_for(|v| v["fields"]["message"] == "gone link refused");
    assert!(refused["fields"]["error"]
        .as_str()
        .unwrap()
        .contains("/u/gone"));
    let refused = running.wait_for(|v| v["fields"]["message"] == "next link refused");
    assert_eq!(refused["level"], "WARN");
    let error = refused["fields"]["error"].as_str().unwrap();
    assert!(
        error.contains("\"http://elsewhere.example/u/next\"")
            && error.contains("leads away from host 127.0.0.1:")
            && error.contains(&format!(
                "target {} of this route is untrusted",
                origin.target()
            )),
        "{error}"
    );
    let paths: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(paths, ["/u/start"]);
}

#[tokio::test]
async fn a_trusted_target_and_a_same_host_link_are_followed() {
    let (origin, seen) = linking_origin("http://elsewhere.example/t/next", "/t/gone").await;
    let (_dir, routes) = routes_file(&format!(
        "*,path_beg=/u/ {t},untrusted\n* {t}\n",
        t = origin.target()
    ));
    let running = start_allowing_loopback(&routes, &_dir);
    assert_eq!(
        get_with(&running.url("/t/start"), &[]).await,
        (200, "first\nsecond\n".into())
    );
    let (same, _) = linking_origin("/u/next", "/u/gone").await;
    let (_dir2, routes) = routes_file(&format!("* {},untrusted\n", same.target()));
    let untrusted = start_allowing_loopback(&routes, &_dir2);
    assert_eq!(
        get_with(&untrusted.url("/u/start"), &[]).await,
        (200, "first\nsecond\n".into())
    );
    // The trusted route's link to another host was fetched with that host.
    let seen = seen.lock().unwrap();
    assert_eq!(seen[1].0, "/t/next");
    assert_eq!(seen[1].1["host"], "elsewhere.example");
}
