//! Pass-through proxying through the real server: bodies, statuses, headers, failover, errors,
//! routes and their rewrites, reload.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response};
use support::*;

/// An origin that echoes the request: body back as body, request line and headers as headers.
async fn echo_origin() -> Origin {
    Origin::start(|req: Request<hyper::body::Incoming>| async move {
        let mut resp = Response::builder()
            .status(200)
            .header("x-seen-method", req.method().as_str())
            .header("x-seen-path", req.uri().to_string());
        for (k, v) in req.headers() {
            resp = resp.header(format!("x-seen-{}", k.as_str()), v.clone());
        }
        let body = req.into_body().collect().await.unwrap().to_bytes();
        resp.body(full(body)).unwrap()
    })
    .await
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

#[tokio::test]
async fn bodies_arrive_byte_identical_both_ways() {
    let origin = echo_origin().await;
    let proxy = Proxy::start(&format!("* {}\n", origin.target()), |_| {}).await;
    for size in [0usize, 1, 5 * 1024 * 1024] {
        let body = pattern(size);
        let resp = send(
            Request::post(proxy.url("/echo"))
                .body(full(body.clone()))
                .unwrap(),
        )
        .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-seen-method"], "POST");
        if size > 0 {
            assert_eq!(resp.headers()["x-seen-content-length"], size.to_string());
        }
        let got = bytes(resp).await;
        assert_eq!(got.len(), size);
        assert!(got == body, "body of {size} bytes changed");
    }
}

#[tokio::test]
async fn chunked_request_and_response_stream_through() {
    let origin = echo_origin().await;
    let proxy = Proxy::start(&format!("* {}\n", origin.target()), |_| {}).await;
    let chunks: Vec<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>> = (0..50)
        .map(|i| Ok(Frame::data(Bytes::from(format!("chunk-{i};")))))
        .collect();
    let body = StreamBody::new(futures_util::stream::iter(chunks)).boxed();
    let resp = send(Request::post(proxy.url("/c")).body(body).unwrap()).await;
    assert_eq!(resp.headers()["x-seen-transfer-encoding"], "chunked");
    let want: String = (0..50).map(|i| format!("chunk-{i};")).collect();
    assert_eq!(text(resp).await, want);
}

#[tokio::test]
async fn status_and_custom_headers_survive_and_hop_headers_do_not() {
    let origin = Origin::start(|req: Request<hyper::body::Incoming>| async move {
        let status = req
            .uri()
            .path()
            .trim_start_matches('/')
            .parse::<u16>()
            .unwrap();
        Response::builder()
            .status(status)
            .header("x-custom", "kept")
            .header("keep-alive", "timeout=99")
            .header("set-cookie", "a=1")
            .header("set-cookie", "b=2")
            .body(full(if status == 204 || status == 304 {
                ""
            } else {
                "body"
            }))
            .unwrap()
    })
    .await;
    let proxy = Proxy::start(&format!("* {}\n", origin.target()), |_| {}).await;
    for status in [200u16, 201, 204, 304, 404, 418, 500, 503] {
        let resp = get(&proxy.url(&format!("/{status}"))).await;
        assert_eq!(resp.status().as_u16(), status);
        assert_eq!(resp.headers()["x-custom"], "kept");
        assert!(resp.headers().get("keep-alive").is_none());
        let cookies: Vec<_> = resp.headers().get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        let body = text(resp).await;
        let want = if status == 204 || status == 304 {
            ""
        } else {
            "body"
        };
        assert_eq!(body, want, "status {status}");
    }
    let head = send(Request::head(proxy.url("/200")).body(full("")).unwrap()).await;
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "4");
    assert_eq!(text(head).await, "");
}

#[tokio::test]
async fn dead_origin_is_502_naming_the_targets() {
    let a = dead_port().await;
    let b = dead_port().await;
    let proxy = Proxy::start(&format!("* 127.0.0.1:{a} 127.0.0.1:{b}\n"), |_| {}).await;
    let resp = get(&proxy.url("/")).await;
    assert_eq!(resp.status(), 502);
    let body = text(resp).await;
    assert!(body.contains(&format!("127.0.0.1:{a}")), "{body}");
    assert!(body.contains(&format!("127.0.0.1:{b}")), "{body}");
    assert!(!body.contains("refused"), "details only with debug: {body}");

    let debug = Proxy::start(&format!("*,debug 127.0.0.1:{a}\n"), |_| {}).await;
    let body = text(get(&debug.url("/")).await).await;
    assert!(body.to_lowercase().contains("refused"), "{body}");
}

#[tokio::test]
async fn failover_reaches_the_second_target_with_the_body() {
    let dead = dead_port().await;
    let origin = echo_origin().await;
    let proxy = Proxy::start(&format!("* 127.0.0.1:{dead} {}\n", origin.target()), |_| {}).await;
    let resp = send(
        Request::post(proxy.url("/f"))
            .body(full("payload"))
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(text(resp).await, "payload");
}

#[tokio::test]
async fn slow_origin_is_504() {
    let origin = Origin::start(|_req| async move {
        std::future::pending::<()>().await;
        unreachable!()
    })
    .await;
    let proxy = Proxy::start(&format!("* {}\n", origin.target()), |c| {
        c.timeouts.origin_response_secs = 1;
    })
    .await;
    let resp = get(&proxy.url("/slow")).await;
    assert_eq!(resp.status(), 504);
}

#[tokio::test]
async fn client_grip_headers_never_reach_the_origin_but_holdfasts_sig_does() {
    let origin = echo_origin().await;
    let proxy = Proxy::start(&format!("* {}\n", origin.target()), |_| {}).await;
    let resp = send(
        Request::get(proxy.url("/"))
            .header("grip-sig", "forged")
            .header("grip-last", "c; last-id=1")
            .header("connection", "x-hop")
            .header("x-hop", "1")
            .body(full(""))
            .unwrap(),
    )
    .await;
    let h = resp.headers();
    assert!(h.get("x-seen-grip-last").is_none());
    assert!(h.get("x-seen-x-hop").is_none());
    let sig = h["x-seen-grip-sig"].to_str().unwrap();
    assert_ne!(sig, "forged");
    let key = grip::sig::SigKey::parse("changeme").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = grip::sig::verify(sig, &key, now).expect("Grip-Sig verifies with sig_key");
    assert_eq!(claims.iss.as_deref(), Some("pushpin"));
    assert!(h["x-seen-grip-feature"]
        .to_str()
        .unwrap()
        .contains("link:next"));
    assert_eq!(h["x-seen-x-forwarded-for"], "127.0.0.1");
}

#[tokio::test]
async fn route_rewrites_reach_the_origin() {
    let origin = echo_origin().await;
    let t = origin.target();
    let routes = format!(
        "*,path_beg=/api/,replace_beg=/v2/ {t}\n\
         *,path_beg=/rem,path_rem=4 {t}\n\
         *,path_beg=/host,as_host=internal.example:8080 {t}\n\
         *,path_beg=/hdr,header=X-Route:yes,header=User-Agent: {t}\n\
         *,path_beg=/thost {t},host=target.example\n\
         * {t}\n"
    );
    let proxy = Proxy::start(&routes, |_| {}).await;
    let cases = [
        ("/api/items?q=1", "x-seen-path", "/v2/items?q=1"),
        ("/rem/x/y", "x-seen-path", "/x/y"),
        ("/host/a", "x-seen-host", "internal.example:8080"),
        ("/hdr", "x-seen-x-route", "yes"),
        ("/thost", "x-seen-host", "target.example"),
        ("/plain", "x-seen-host", &proxy.addr.to_string()),
    ];
    for (path, header, want) in cases {
        let resp = send(
            Request::get(proxy.url(path))
                .header("user-agent", "test-agent")
                .body(full(""))
                .unwrap(),
        )
        .await;
        assert_eq!(resp.headers()[header], want, "{path}");
        if path == "/hdr" {
            assert!(resp.headers().get("x-seen-user-agent").is_none());
        }
    }
}

#[tokio::test]
async fn routes_reload_on_change_and_bad_files_keep_the_old_routes() {
    let a = Origin::start(|_| async { Response::new(full("from-a")) }).await;
    let b = Origin::start(|_| async { Response::new(full("from-b")) }).await;
    let proxy = Proxy::start(&format!("* {}\n", a.target()), |_| {}).await;
    assert_eq!(text(get(&proxy.url("/")).await).await, "from-a");

    // A broken file is rejected with its line, and routing is unchanged.
    std::fs::write(
        &proxy.routes_file,
        format!("* {}\n*,bogus x:1\n", b.target()),
    )
    .unwrap();
    let err = proxy.app.routes.reload().unwrap_err();
    assert_eq!(err.line, 2);
    assert_eq!(text(get(&proxy.url("/")).await).await, "from-a");

    // A good file takes over once the watcher sees it.
    std::fs::write(&proxy.routes_file, format!("* {}\n", b.target())).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if text(get(&proxy.url("/")).await).await == "from-b" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "routes file change not picked up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn client_disconnect_cancels_the_origin_request() {
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
    let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
    let slots = Arc::new(Mutex::new((Some(entered_tx), Some(dropped_tx))));
    struct OnDrop(Option<tokio::sync::oneshot::Sender<()>>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            if let Some(tx) = self.0.take() {
                let _ = tx.send(());
            }
        }
    }
    let origin = Origin::start(move |_req| {
        let slots = slots.clone();
        async move {
            let (entered, dropped) = {
                let mut s = slots.lock().unwrap();
                (s.0.take(), s.1.take())
            };
            let _guard = OnDrop(dropped);
            if let Some(tx) = entered {
                let _ = tx.send(());
            }
            std::future::pending::<()>().await;
            unreachable!()
        }
    })
    .await;
    let proxy = Proxy::start(&format!("* {}\n", origin.target()), |_| {}).await;
    let stream = send_raw(proxy.addr, b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n").await;
    tokio::time::timeout(Duration::from_secs(10), entered_rx)
        .await
        .expect("origin got the request")
        .unwrap();
    drop(stream);
    tokio::time::timeout(Duration::from_secs(10), dropped_rx)
        .await
        .expect("origin request cancelled after the client left")
        .unwrap();
}

#[tokio::test]
async fn test_target_says_hello() {
    let proxy = Proxy::start("* test\n", |_| {}).await;
    let resp = get(&proxy.url("/")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(text(resp).await, holdfast::testhandler::HELLO);
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
    let slots = Arc::new(Mutex::new((Some(release_rx), Some(entered_tx))));
    let origin = Origin::start(move |_req| {
        let slots = slots.clone();
        async move {
            let (release, entered) = {
                let mut s = slots.lock().unwrap();
                (s.0.take(), s.1.take())
            };
            if let Some(e) = entered {
                let _ = e.send(());
            }
            if let Some(r) = release {
                let _ = r.await;
            }
            Response::new(full("finished"))
        }
    })
    .await;
    let proxy = Proxy::start(&format!("* {}\n", origin.target()), |_| {}).await;
    let url = proxy.url("/inflight");
    let request = tokio::spawn(async move { text(get(&url).await).await });
    entered_rx.await.unwrap();
    let addr = proxy.addr;
    let stopping = tokio::spawn(proxy.shutdown());
    // New connections are refused once the listeners close.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "listener still open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    release_tx.send(()).unwrap();
    assert_eq!(request.await.unwrap(), "finished");
    stopping.await.unwrap();
}

#[tokio::test]
async fn http2_clients_are_served() {
    let origin = echo_origin().await;
    let proxy = Proxy::start(&format!("* {}\n", origin.target()), |_| {}).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<TestBody>();
    let resp = client
        .request(
            Request::post(proxy.url("/h2"))
                .body(full("over h2"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-seen-host"], proxy.addr.to_string());
    assert_eq!(text(resp).await, "over h2");
}

#[tokio::test]
async fn origin_requests_beyond_the_per_target_limit_wait_for_a_free_slot() {
    // The origin holds every request until the test lets one go.
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel::<()>();
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let origin = {
        let release = release.clone();
        Origin::start(move |_req| {
            let arrived_tx = arrived_tx.clone();
            let release = release.clone();
            async move {
                arrived_tx.send(()).unwrap();
                release.acquire().await.unwrap().forget();
                Response::new(full("done"))
            }
        })
        .await
    };
    let proxy = Arc::new(
        Proxy::start(&format!("* {}\n", origin.target()), |c| {
            c.timeouts.origin_concurrency_per_target = 1;
        })
        .await,
    );
    let requests: Vec<_> = (0..2)
        .map(|i| {
            let url = proxy.url(&format!("/{i}"));
            tokio::spawn(async move { text(get(&url).await).await })
        })
        .collect();
    arrived.recv().await.unwrap();
    // The second request is queued in Holdfast, not sent to the origin.
    let waiting = || async {
        let resp = get(&proxy.publish_url("/metrics")).await;
        let body = text(resp).await;
        body.lines()
            .find_map(|l| l.strip_prefix("holdfast_origin_requests_waiting "))
            .map(|v| v.trim().to_string())
    };
    let queued = tokio::time::timeout(Duration::from_secs(10), async {
        while waiting().await.as_deref() != Some("1") {
            tokio::task::yield_now().await;
        }
    });
    assert!(queued.await.is_ok(), "the second request never waited");
    assert!(
        arrived.try_recv().is_err(),
        "a second request reached the origin"
    );
    release.add_permits(1);
    arrived.recv().await.unwrap();
    release.add_permits(1);
    for r in requests {
        assert_eq!(r.await.unwrap(), "done");
    }
    assert_eq!(waiting().await.as_deref(), Some("0"));
}

#[tokio::test]
async fn open_streams_do_not_keep_their_origin_slot() {
    // `/plain` streams a body that never ends; `/held` answers with a GRIP stream hold.
    let origin = Origin::start(|req: Request<hyper::body::Incoming>| async move {
        match req.uri().path() {
            "/plain" => {
                let first: Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>> =
                    Ok(Frame::data(Bytes::from_static(b"first\n")));
                let chunks = futures_util::StreamExt::chain(
                    futures_util::stream::iter([first]),
                    futures_util::stream::pending(),
                );
                Response::new(StreamBody::new(chunks).boxed())
            }
            "/held" => Response::builder()
                .header("grip-hold", "stream")
                .header("grip-channel", "slots")
                .body(full("held\n"))
                .unwrap(),
            _ => Response::new(full("quick")),
        }
    })
    .await;
    let proxy = Proxy::start(&format!("* {}\n", origin.target()), |c| {
        c.timeouts.origin_concurrency_per_target = 1;
    })
    .await;
    let mut plain = get(&proxy.url("/plain")).await.into_body();
    assert_eq!(read_until(&mut plain, "first\n").await, "first\n");
    let mut held = get(&proxy.url("/held")).await.into_body();
    assert_eq!(read_until(&mut held, "held\n").await, "held\n");
    // Both streams are still open, and the one slot is free for the next request.
    let quick = tokio::time::timeout(Duration::from_secs(10), async {
        text(get(&proxy.url("/quick")).await).await
    });
    assert_eq!(quick.await.expect("a stream kept the slot"), "quick");
    drop((plain, held));
}

/// `holdfast_descriptors_in_use` from the metrics endpoint.
async fn descriptors_in_use(proxy: &Proxy) -> String {
    let body = text(get(&proxy.publish_url("/metrics")).await).await;
    body.lines()
        .find_map(|l| l.strip_prefix("holdfast_descriptors_in_use "))
        .expect("metric present")
        .trim()
        .to_string()
}

#[tokio::test]
async fn a_client_over_the_descriptor_budget_waits_while_the_publish_api_still_works() {
    // The built-in test target holds streams without any origin socket, so only clients count.
    let proxy = Proxy::start("* test\n", |c| c.limits.descriptors = 2).await;
    let mut a = get(&proxy.url("/stream")).await.into_body();
    let mut b = get(&proxy.url("/stream")).await.into_body();
    proxy.wait_subscribers("test", 2).await;
    assert_eq!(descriptors_in_use(&proxy).await, "2");
    // A third client is not accepted yet; it is served once a descriptor is free.
    let third = tokio::spawn({
        let url = proxy.url("/stream");
        async move { get(&url).await.into_body() }
    });
    // The publish listener is outside the budget: publishing works and reaches both streams.
    let (status, _) = proxy
        .publish_json(serde_json::json!({"items": [
            {"channel": "test", "formats": {"http-stream": {"content": "while full\n"}}}
        ]}))
        .await;
    assert_eq!(status, 200);
    assert!(read_until(&mut a, "while full\n")
        .await
        .contains("while full\n"));
    assert!(read_until(&mut b, "while full\n")
        .await
        .contains("while full\n"));
    assert!(
        !third.is_finished(),
        "a client over the budget was served while none was free"
    );
    drop(a);
    let mut c = tokio::time::timeout(Duration::from_secs(10), third)
        .await
        .expect("the waiting client was never accepted")
        .unwrap();
    proxy.wait_subscribers("test", 2).await;
    proxy
        .publish_json(serde_json::json!({"items": [
            {"channel": "test", "formats": {"http-stream": {"content": "after\n"}}}
        ]}))
        .await;
    assert!(read_until(&mut c, "after\n").await.contains("after\n"));
    assert!(read_until(&mut b, "after\n").await.contains("after\n"));
}

#[tokio::test]
async fn an_origin_connection_over_the_descriptor_budget_is_refused_with_503() {
    let origin = echo_origin().await;
    // One descriptor: the client's own connection takes it, none is left for the origin.
    let proxy = Proxy::start(&format!("* {}\n", origin.target()), |c| {
        c.limits.descriptors = 1;
    })
    .await;
    let resp = get(&proxy.url("/x")).await;
    assert_eq!(resp.status(), 503);
    let body = text(resp).await;
    assert!(body.contains("no file descriptor free"), "{body}");
    assert!(body.contains("limits.descriptors"), "{body}");
    // With room for the origin socket the same request goes through.
    let roomy = Proxy::start(&format!("* {}\n", origin.target()), |c| {
        c.limits.descriptors = 2;
    })
    .await;
    let resp = get(&roomy.url("/x")).await;
    let status = resp.status();
    assert_eq!(status, 200, "{}", text(resp).await);
}
