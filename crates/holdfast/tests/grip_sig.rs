//! `Grip-Sig` as an origin sees it: signed with a PEM private key (ES256 or RS256) in every form
//! `sig_key` takes, globally or per route, and checked by the origin with the public key alone,
//! through `jsonwebtoken` rather than Holdfast's own verifier.

mod support;

use base64::Engine as _;
use hyper::{Request, Response};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use support::*;

/// A file of `tests/data` (see its README).
fn data(name: &str) -> String {
    format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn read(name: &str) -> String {
    std::fs::read_to_string(data(name)).unwrap()
}

/// An origin that answers with the `Grip-Sig` it was sent as its body.
async fn sig_origin() -> Origin {
    Origin::start(|req: Request<hyper::body::Incoming>| async move {
        let sig = req
            .headers()
            .get("grip-sig")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        Response::new(full(sig))
    })
    .await
}

/// The `Grip-Sig` the origin got for one request to `path`.
async fn sig_seen(proxy: &Proxy, path: &str) -> String {
    let resp = get(&proxy.url(path)).await;
    assert_eq!(resp.status(), 200);
    let sig = text(resp).await;
    assert!(!sig.is_empty(), "the origin got no Grip-Sig");
    sig
}

/// What an origin holding only `public` (a PEM file of tests/data) makes of `token`.
fn origin_check(token: &str, alg: Algorithm, public: &str) -> jsonwebtoken::errors::Result<Value> {
    let pem = read(public);
    let key = match alg {
        Algorithm::ES256 => DecodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        _ => DecodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    };
    let mut validation = Validation::new(alg);
    validation.set_issuer(&["pushpin", "per-route"]);
    jsonwebtoken::decode::<Value>(token, &key, &validation).map(|t| t.claims)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn pem_private_keys_sign_grip_sig_in_every_key_form() {
    let origin = sig_origin().await;
    let es_private = read("publish-es256-private.pem");
    let rs_private = read("publish-rs256-private.pem");
    let base64 = |pem: &str| {
        format!(
            "base64:{}",
            base64::engine::general_purpose::STANDARD.encode(pem)
        )
    };
    // (sig_key, the algorithm it must sign with, the public key that verifies it, one that must not)
    let cases = [
        (
            format!("file:{}", data("publish-es256-private.pem")),
            Algorithm::ES256,
            "publish-es256-public.pem",
        ),
        (
            format!("file:{}", data("publish-rs256-private.pem")),
            Algorithm::RS256,
            "publish-rs256-public.pem",
        ),
        (
            es_private.clone(),
            Algorithm::ES256,
            "publish-es256-public.pem",
        ),
        (
            base64(&rs_private),
            Algorithm::RS256,
            "publish-rs256-public.pem",
        ),
        (
            base64(&es_private),
            Algorithm::ES256,
            "publish-es256-public.pem",
        ),
    ];
    for (key, alg, public) in cases {
        let shown = key.lines().next().unwrap().to_string();
        let proxy = Proxy::routed_to(&origin, |c| c.grip.sig_key = key).await;
        let sig = sig_seen(&proxy, "/").await;
        let claims = origin_check(&sig, alg, public)
            .unwrap_or_else(|e| panic!("{shown}: the origin cannot verify {sig}: {e}"));
        assert_eq!(claims["iss"], "pushpin", "{shown}");
        let exp = claims["exp"].as_u64().unwrap();
        assert!(
            exp > now() + 3000 && exp <= now() + 3600,
            "{shown}: exp {exp}"
        );
        // Holdfast's own secret, or the wrong public key, does not verify it.
        assert!(
            grip::sig::verify(&sig, &grip::sig::SigKey::parse("changeme").unwrap(), now()).is_err()
        );
        let (other_alg, other_public) = match alg {
            Algorithm::ES256 => (Algorithm::RS256, "publish-rs256-public.pem"),
            _ => (Algorithm::ES256, "publish-es256-public.pem"),
        };
        assert!(
            origin_check(&sig, other_alg, other_public).is_err(),
            "{shown}"
        );
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn a_route_signs_with_its_own_pem_key() {
    let origin = sig_origin().await;
    let t = origin.target();
    let routes = format!(
        "*,path_beg=/ec,sig_key=file:{},sig_iss=per-route {t}\n* {t}\n",
        data("publish-es256-private.pem")
    );
    let proxy = Proxy::start(&routes, |_| {}).await;

    let routed = sig_seen(&proxy, "/ec/x").await;
    let claims = origin_check(&routed, Algorithm::ES256, "publish-es256-public.pem").unwrap();
    assert_eq!(claims["iss"], "per-route");

    // Other routes keep the global HS256 key.
    let global = sig_seen(&proxy, "/other").await;
    let header = jsonwebtoken::decode_header(&global).unwrap();
    assert_eq!(header.alg, Algorithm::HS256);
    let key = grip::sig::SigKey::parse("changeme").unwrap();
    assert_eq!(
        grip::sig::verify(&global, &key, now())
            .unwrap()
            .iss
            .as_deref(),
        Some("pushpin")
    );
}
