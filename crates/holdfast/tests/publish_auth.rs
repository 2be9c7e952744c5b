//! The publish API's authentication (JWT with HS256, ES256 and RS256 keys, static Bearer
//! tokens, HTTP Basic), its refusal to serve the network unauthenticated, and its input limits,
//! as a publisher and a subscriber see them.

mod support;

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use hyper::body::Incoming;
use hyper::Request;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use holdfast::Config;
use support::binary::{holdfast_publish, Binary};
use support::*;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn data(name: &str) -> String {
    format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn jwt(alg: Algorithm, key: &EncodingKey, claims: Value) -> String {
    encode(&Header::new(alg), &claims, key).unwrap()
}

fn hs256(secret: &str, claims: Value) -> String {
    jwt(
        Algorithm::HS256,
        &EncodingKey::from_secret(secret.as_bytes()),
        claims,
    )
}

/// What a publisher sees: the status, the `WWW-Authenticate` challenges and the body.
struct Answer {
    status: u16,
    challenges: Vec<String>,
    text: String,
}

async fn answer(resp: hyper::Response<Incoming>) -> Answer {
    let status = resp.status().as_u16();
    let challenges = resp
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    Answer {
        status,
        challenges,
        text: text(resp).await,
    }
}

/// POSTs `body` to `path` of the publish API, with `Authorization: <authorization>` if given.
async fn post(proxy: &Proxy, path: &str, authorization: Option<&str>, body: &str) -> Answer {
    let mut req = Request::post(proxy.publish_url(path))
        .header("content-type", "application/json")
        .header("content-length", body.len());
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    answer(send(req.body(full(body.to_string())).unwrap()).await).await
}

async fn get_with(url: &str, authorization: Option<&str>) -> Answer {
    let mut req = Request::get(url);
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    answer(send(req.body(full("")).unwrap()).await).await
}

fn one_item(channel: &str, content: &str) -> String {
    json!({"items": [stream_item(channel, None, None, content)]}).to_string()
}

/// A client holding a stream on `channel` through the test target.
async fn held_stream(proxy: &Proxy, channel: &str) -> Incoming {
    let mut body = get(&proxy.url(&format!("/stream?channel={channel}")))
        .await
        .into_body();
    read_until(&mut body, "[stream opened]\n").await;
    proxy.wait_subscribers(channel, 1).await;
    body
}

/// Publishes `content` with each refused credential, then with each accepted one: every refusal
/// is a `401` with `challenge` and its reason, and the held client receives exactly the accepted
/// publishes, in order.
async fn assert_only_accepted_reach_the_client(
    proxy: &Proxy,
    refused: &[(&str, Option<String>, &str)],
    accepted: &[(&str, String)],
    challenge: &[&str],
) {
    let mut stream = held_stream(proxy, "c").await;
    for (what, authorization, reason) in refused {
        let a = post(
            proxy,
            "/publish/",
            authorization.as_deref(),
            &one_item("c", "refused\n"),
        )
        .await;
        assert_eq!(a.status, 401, "{what}: {}", a.text);
        assert_eq!(a.text, format!("{reason}\n"), "{what}");
        assert_eq!(a.challenges, challenge, "{what}");
    }
    let mut want = String::new();
    for (what, authorization) in accepted {
        let content = format!("{what}\n");
        let a = post(
            proxy,
            "/publish/",
            Some(authorization),
            &one_item("c", &content),
        )
        .await;
        assert_eq!((a.status, a.text.as_str()), (200, "Published\n"), "{what}");
        want.push_str(&content);
    }
    assert_eq!(read_until(&mut stream, &want).await, want);
}

#[tokio::test]
async fn hs256_jwt_with_two_keys_issuer_and_time_claims() {
    let proxy = Proxy::start("* test\n", |c| {
        c.publish.jwt_key = vec!["old-key".into(), "base64:bmV3LWtleQ==".into()]; // new-key
        c.publish.jwt_iss = Some("realm".into());
    })
    .await;
    let t = now();
    let good = json!({"iss": "realm", "exp": t + 600});
    let bearer = |token: String| Some(format!("Bearer {token}"));
    assert_only_accepted_reach_the_client(
        &proxy,
        &[
            ("no header", None, "missing Authorization"),
            (
                "wrong key",
                bearer(hs256("guess", good.clone())),
                "bad signature",
            ),
            (
                "expired",
                bearer(hs256("new-key", json!({"iss": "realm", "exp": t - 3600}))),
                "token expired",
            ),
            (
                "nbf in the future",
                bearer(hs256(
                    "new-key",
                    json!({"iss": "realm", "exp": t + 7200, "nbf": t + 3600}),
                )),
                "token not yet valid",
            ),
            (
                "wrong issuer",
                bearer(hs256("new-key", json!({"iss": "other", "exp": t + 600}))),
                "issuer does not match",
            ),
            (
                "no exp",
                bearer(hs256("new-key", json!({"iss": "realm"}))),
                "token has no exp claim",
            ),
            (
                "basic",
                Some("Basic dTpw".into()),
                "Authorization scheme not accepted",
            ),
        ],
        &[
            (
                "old-key",
                format!("Bearer {}", hs256("old-key", good.clone())),
            ),
            (
                "new-key",
                format!("Bearer {}", hs256("new-key", good.clone())),
            ),
        ],
        &["Bearer realm=\"holdfast\""],
    )
    .await;
}

#[tokio::test]
async fn es256_and_rs256_jwt_with_pem_public_keys() {
    let proxy = Proxy::start("* test\n", |c| {
        c.publish.jwt_key = vec![
            format!("file:{}", data("publish-es256-public.pem")),
            format!("file:{}", data("publish-rs256-public.pem")),
        ];
    })
    .await;
    let es = EncodingKey::from_ec_pem(&std::fs::read(data("publish-es256-private.pem")).unwrap())
        .unwrap();
    let rs = EncodingKey::from_rsa_pem(&std::fs::read(data("publish-rs256-private.pem")).unwrap())
        .unwrap();
    let claims = json!({"iss": "anyone", "exp": now() + 600});
    let es_token = jwt(Algorithm::ES256, &es, claims.clone());
    // The same header and signature over other claims.
    let parts: Vec<&str> = es_token.split('.').collect();
    let forged_claims = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        json!({"iss": "anyone", "exp": now() + 999_999}).to_string(),
    );
    let forged = format!("{}.{forged_claims}.{}", parts[0], parts[2]);
    let hs = hs256("a-secret", claims.clone());
    assert_only_accepted_reach_the_client(
        &proxy,
        &[
            (
                "ES256 signature over other claims",
                Some(format!("Bearer {forged}")),
                "bad signature",
            ),
            (
                "HS256 with no HS256 key configured",
                Some(format!("Bearer {hs}")),
                "token algorithm not accepted",
            ),
            (
                "RS256 expired",
                Some(format!(
                    "Bearer {}",
                    jwt(Algorithm::RS256, &rs, json!({"exp": now() - 3600}))
                )),
                "token expired",
            ),
        ],
        &[
            ("es256", format!("Bearer {es_token}")),
            (
                "rs256",
                format!("Bearer {}", jwt(Algorithm::RS256, &rs, claims.clone())),
            ),
        ],
        &["Bearer realm=\"holdfast\""],
    )
    .await;
}

#[tokio::test]
async fn static_tokens_and_basic_credentials() {
    let proxy = Proxy::start("* test\n", |c| {
        c.publish.token = vec!["token-one".into(), "token-two".into()];
        c.publish.basic = vec!["publisher:s3cret".into()];
    })
    .await;
    // base64("publisher:s3cret") and base64("publisher:guess")
    let good = "cHVibGlzaGVyOnMzY3JldA==";
    let bad = "cHVibGlzaGVyOmd1ZXNz";
    assert_only_accepted_reach_the_client(
        &proxy,
        &[
            ("no header", None, "missing Authorization"),
            (
                "unknown token",
                Some("Bearer token-three".into()),
                "unknown token",
            ),
            (
                "wrong password",
                Some(format!("Basic {bad}")),
                "bad user or password",
            ),
            (
                "not base64",
                Some("Basic ***".into()),
                "malformed Authorization",
            ),
            (
                "other scheme",
                Some("Digest x".into()),
                "Authorization scheme not accepted",
            ),
        ],
        &[
            ("token-one", "Bearer token-one".into()),
            ("token-two", "Bearer token-two".into()),
            ("basic", format!("Basic {good}")),
            ("basic-python3", format!("Basic b'{good}'")),
        ],
        &[
            "Bearer realm=\"holdfast\"",
            "Basic realm=\"holdfast\", charset=\"UTF-8\"",
        ],
    )
    .await;
}

#[tokio::test]
async fn recover_and_metrics_need_auth_and_count_rejections_by_reason() {
    let proxy = Proxy::start("* test\n", |c| {
        c.publish.jwt_key = vec!["k".into()];
        c.publish.token = vec!["scrape".into()];
    })
    .await;
    let ok = Some("Bearer scrape");
    // `GET /` stays open: it says what answers, nothing more.
    let root = get_with(&proxy.publish_url("/"), None).await;
    assert_eq!((root.status, root.text.as_str()), (200, "Holdfast API\n"));
    let metrics = proxy.publish_url("/metrics");
    let refused = get_with(&metrics, None).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.challenges, ["Bearer realm=\"holdfast\""]);
    assert_eq!(post(&proxy, "/recover", None, "").await.status, 401);
    assert_eq!(post(&proxy, "/recover", ok, "").await.status, 200);
    let expired = format!("Bearer {}", hs256("k", json!({"exp": now() - 3600})));
    for _ in 0..2 {
        assert_eq!(
            post(&proxy, "/publish/", Some(expired.as_str()), "{}")
                .await
                .status,
            401
        );
    }
    assert_eq!(
        post(&proxy, "/publish/", Some("Bearer nope"), "{}")
            .await
            .status,
        401
    );
    let page = get_with(&metrics, ok).await;
    assert_eq!(page.status, 200);
    for (reason, count) in [
        ("missing", 2),
        ("expired", 2),
        ("unknown_token", 1),
        ("bad_signature", 0),
    ] {
        let line = format!("holdfast_publish_auth_rejected_total{{reason=\"{reason}\"}} {count}\n");
        assert!(page.text.contains(&line), "no {line:?} in\n{}", page.text);
    }
    assert!(page
        .text
        .contains("# TYPE holdfast_publish_auth_rejected counter\n"));
}

#[tokio::test]
async fn publish_limits_name_the_limit_that_was_hit() {
    let proxy = Proxy::start("* test\n", |c: &mut Config| {
        c.publish.max_items = 3;
        c.publish.max_json_depth = 8;
        c.limits.max_publish_body = 2000;
    })
    .await;
    let items = |n: usize| {
        json!({"items": (0..n).map(|i| stream_item("c", None, None, &format!("{i}\n"))).collect::<Vec<_>>()})
            .to_string()
    };
    let mut stream = held_stream(&proxy, "c").await;

    let too_many = post(&proxy, "/publish/", None, &items(4)).await;
    assert_eq!(too_many.status, 413);
    assert_eq!(
        too_many.text,
        "Request has 4 items, over publish.max_items (3).\n"
    );

    // {"items":[{"x":[…]}]} with `levels` arrays in a field Holdfast ignores: 3 + levels deep.
    let nested = |levels: usize| {
        let mut v = json!("x");
        for _ in 0..levels {
            v = json!([v]);
        }
        json!({"items": [{"channel": "c", "x": v, "formats": {"http-stream": {"content": "deep\n"}}}]})
            .to_string()
    };
    let too_deep = post(&proxy, "/publish/", None, &nested(6)).await;
    assert_eq!(too_deep.status, 400);
    assert_eq!(
        too_deep.text,
        "Request body nests deeper than publish.max_json_depth (8 levels).\n"
    );

    let too_big = post(&proxy, "/publish/", None, &one_item("c", &"x".repeat(2000))).await;
    assert_eq!(too_big.status, 413);
    assert_eq!(
        too_big.text,
        "Request body exceeds limits.max_publish_body (2000 bytes).\n"
    );

    // At the limits: 3 items, and 8 levels.
    let at_limit = post(&proxy, "/publish/", None, &items(3)).await;
    assert_eq!(at_limit.status, 200, "{}", at_limit.text);
    let deep_enough = post(&proxy, "/publish/", None, &nested(5)).await;
    assert_eq!(deep_enough.status, 200, "{}", deep_enough.text);
    assert_eq!(read_until(&mut stream, "deep\n").await, "0\n1\n2\ndeep\n");
}

/// Runs the binary with `args`: its exit code and stderr.
fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_unauthenticated_publish_api_refuses_to_start_off_loopback() {
    let open = ["--listen", "127.0.0.1:0", "--publish-listen", "0.0.0.0:0"];
    for extra in [&[][..], &["--check-config"][..]] {
        let args: Vec<&str> = open.iter().chain(extra).copied().collect();
        let (code, err) = run(&args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(
            err.contains("server.publish_listen: 0.0.0.0:0 is not a loopback address"),
            "{err}"
        );
        assert!(err.contains("--publish-allow-unauthenticated"), "{err}");
    }
    // Any scheme, or the explicit override, lets it start.
    for extra in [
        &["--publish-token", "t"][..],
        &["--publish-basic", "u:p"][..],
        &["--publish-jwt-key", "k", "--publish-jwt-iss", "i"][..],
        &["--publish-allow-unauthenticated"][..],
    ] {
        let args: Vec<&str> = open
            .iter()
            .chain(extra)
            .chain(&["--check-config"])
            .copied()
            .collect();
        let (code, err) = run(&args);
        assert_eq!(code, Some(0), "{args:?}: {err}");
    }
    // A bad key is a configuration error too, named without its value.
    let (code, err) = run(&["--publish-jwt-key", "base64:s3cret!", "--check-config"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("publish.jwt_key: key 1"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}

#[tokio::test]
async fn the_binary_serves_an_open_publish_api_only_when_told_and_warns() {
    let binary = Binary::start([
        "--listen",
        "127.0.0.1:0",
        "--publish-listen",
        "0.0.0.0:0",
        "--publish-allow-unauthenticated",
    ]);
    let warnings: Vec<&str> = binary
        .startup
        .iter()
        .filter(|v| v["level"] == "WARN")
        .filter_map(|v| v["fields"]["message"].as_str())
        .collect();
    assert!(
        warnings.iter().any(|m| m.contains("publish API")
            && m.contains("no authentication")
            && m.contains("--publish-allow-unauthenticated")),
        "{warnings:?}"
    );
    // The API is served, unauthenticated.
    let publish = binary
        .wait_for(|v| v["fields"]["message"] == "listening" && v["fields"]["kind"] == "Publish");
    let port = publish["fields"]["addr"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let resp = get_with(&format!("http://127.0.0.1:{port}/metrics"), None).await;
    assert_eq!(resp.status, 200);
}

#[tokio::test]
async fn the_binary_takes_the_auth_flags() {
    let binary = Binary::start([
        "--listen",
        "127.0.0.1:0",
        "--publish-listen",
        "127.0.0.1:0",
        "--publish-jwt-key",
        "k1",
        "--publish-jwt-key",
        "k2",
        "--publish-jwt-iss",
        "realm",
        "--publish-token",
        "tok",
        "--publish-basic",
        "u:p",
    ]);
    let line = binary
        .wait_for(|v| v["fields"]["message"] == "listening" && v["fields"]["kind"] == "Publish");
    let addr: std::net::SocketAddr = line["fields"]["addr"].as_str().unwrap().parse().unwrap();
    let url = format!("http://{addr}/recover");
    let post = |authorization: Option<String>| {
        let mut req = Request::post(url.as_str()).header("content-length", "0");
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        async move { answer(send(req.body(full("")).unwrap()).await).await }
    };
    let refused = post(None).await;
    assert_eq!(refused.status, 401);
    // The operator sees the refusal in the log, with its reason and where it came from.
    let logged = binary.wait_for(|v| v["fields"]["reason"].is_string());
    assert_eq!(logged["level"], "INFO");
    assert_eq!(logged["fields"]["reason"], "missing");
    assert_eq!(logged["fields"]["from"], "127.0.0.1");
    assert_eq!(
        logged["fields"]["message"],
        "publish API request refused: missing Authorization"
    );
    assert_eq!(
        refused.challenges,
        [
            "Bearer realm=\"holdfast\"",
            "Basic realm=\"holdfast\", charset=\"UTF-8\""
        ]
    );
    let claims = |iss: &str| json!({"iss": iss, "exp": now() + 60});
    for (authorization, status) in [
        (format!("Bearer {}", hs256("k1", claims("realm"))), 200),
        (format!("Bearer {}", hs256("k2", claims("realm"))), 200),
        (format!("Bearer {}", hs256("k2", claims("else"))), 401),
        ("Bearer tok".to_string(), 200),
        ("Basic dTpw".to_string(), 200), // u:p
        ("Basic dTpx".to_string(), 401), // u:q
    ] {
        assert_eq!(
            post(Some(authorization.clone())).await.status,
            status,
            "{authorization}"
        );
    }
}

#[tokio::test]
async fn holdfast_publish_signs_from_a_grip_url_or_sends_the_credentials_it_is_given() {
    let proxy = Proxy::start("* test\n", |c| {
        c.publish.jwt_key = vec!["base64:c2VjcmV0".into()]; // secret
        c.publish.jwt_iss = Some("realm".into());
        c.publish.token = vec!["tok".into()];
        c.publish.basic = vec!["pub:pw".into()];
        quiet(c);
    })
    .await;
    let mut stream = held_stream(&proxy, "c").await;
    let base = format!("http://{}", proxy.publish);
    let accepted = [
        (
            "a GRIP URL with iss and key",
            vec![format!("--spec={base}/?iss=realm&key=base64:c2VjcmV0")],
        ),
        (
            "a GRIP URL with a key only",
            vec![format!("--spec={base}?key=tok")],
        ),
        (
            "--bearer",
            vec![format!("--spec={base}"), "--bearer=tok".into()],
        ),
        (
            "--user",
            vec![format!("--spec={base}"), "-u".into(), "pub:pw".into()],
        ),
    ];
    for (i, (what, mut args)) in accepted.into_iter().enumerate() {
        args.extend(["c".to_string(), format!("item {i}")]);
        let (code, stdout, stderr) = holdfast_publish(args).await;
        assert_eq!(code, Some(0), "{what}: {stderr}");
        assert_eq!(stdout, "Published\n", "{what}");
        let want = format!("item {i}\n");
        assert_eq!(read_until(&mut stream, &want).await, want, "{what}");
    }
    let refused = [
        (
            "a wrong JWT key",
            vec![format!("--spec={base}/?iss=realm&key=wrong")],
        ),
        ("no credentials", vec![format!("--spec={base}")]),
    ];
    for (what, mut args) in refused {
        args.extend(["c".to_string(), "refused".to_string()]);
        let (code, stdout, stderr) = holdfast_publish(args).await;
        assert_eq!(code, Some(1), "{what}: {stdout}");
        assert!(
            stderr.starts_with("holdfast publish: 401 Unauthorized: "),
            "{what}: {stderr}"
        );
    }
    // Nothing refused reached the client: the next item is the one after.
    let (code, _, stderr) = holdfast_publish(vec![
        format!("--spec={base}"),
        "--bearer=tok".into(),
        "c".into(),
        "last".into(),
    ])
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(read_until(&mut stream, "last\n").await, "last\n");
}
