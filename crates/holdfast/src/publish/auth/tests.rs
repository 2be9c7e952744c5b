use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::{Auth, Rejection};
use crate::config::PublishConfig;

const NOW: u64 = 1_700_000_000;

fn auth(tweak: impl FnOnce(&mut PublishConfig)) -> Auth {
    let mut config = PublishConfig::default();
    tweak(&mut config);
    Auth::from_config(&config).unwrap()
}

fn hs256(secret: &str, claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn with(authorization: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, HeaderValue::from_str(authorization).unwrap());
    headers
}

// A table of tokens and the reason each gets: one row per case, read top to bottom.
#[test]
fn jwt_claims_and_keys_give_each_reason() {
    let a = auth(|c| {
        c.jwt_key = vec!["old".into(), "base64:bmV3".into()]; // "new"
        c.jwt_iss = Some("realm".into());
    });
    let valid = json!({"iss": "realm", "exp": NOW + 600});
    let cases: Vec<(&str, String, Result<(), Rejection>)> = vec![
        ("first key", hs256("old", valid.clone()), Ok(())),
        ("second key", hs256("new", valid.clone()), Ok(())),
        (
            "other key",
            hs256("other", valid.clone()),
            Err(Rejection::BadSignature),
        ),
        (
            "expired beyond the leeway",
            hs256("new", json!({"iss": "realm", "exp": NOW - 61})),
            Err(Rejection::Expired),
        ),
        (
            "expired within the leeway",
            hs256("new", json!({"iss": "realm", "exp": NOW - 59})),
            Ok(()),
        ),
        (
            "nbf beyond the leeway",
            hs256(
                "new",
                json!({"iss": "realm", "exp": NOW + 600, "nbf": NOW + 61}),
            ),
            Err(Rejection::NotYetValid),
        ),
        (
            "nbf within the leeway",
            hs256(
                "new",
                json!({"iss": "realm", "exp": NOW + 600, "nbf": NOW + 60}),
            ),
            Ok(()),
        ),
        (
            "no exp",
            hs256("new", json!({"iss": "realm"})),
            Err(Rejection::NoExpiry),
        ),
        (
            "other issuer",
            hs256("new", json!({"iss": "other", "exp": NOW + 600})),
            Err(Rejection::Issuer),
        ),
        (
            "no issuer",
            hs256("new", json!({"exp": NOW + 600})),
            Err(Rejection::Issuer),
        ),
        (
            "a claim error beats the other key's bad signature",
            hs256("old", json!({"iss": "realm", "exp": NOW - 100})),
            Err(Rejection::Expired),
        ),
        (
            "HS512",
            encode(
                &Header::new(Algorithm::HS512),
                &valid,
                &EncodingKey::from_secret(b"new"),
            )
            .unwrap(),
            Err(Rejection::Algorithm),
        ),
        ("not base64", "a.b.c".to_string(), Err(Rejection::Malformed)),
        ("not a JWT", "abc".to_string(), Err(Rejection::Malformed)),
    ];
    for (what, token, want) in cases {
        assert_eq!(
            a.verify(&with(&format!("Bearer {token}")), NOW),
            want,
            "{what}"
        );
    }
}

#[test]
fn tokens_basic_and_schemes() {
    let a = auth(|c| {
        c.token = vec!["t-1".into(), "t-2".into()];
        c.basic = vec!["user:pa:ss".into()];
    });
    let cases: Vec<(Option<&str>, Result<(), Rejection>)> = vec![
        (Some("Bearer t-1"), Ok(())),
        (Some("bearer  t-2 "), Ok(())),
        (Some("Bearer t-3"), Err(Rejection::UnknownToken)),
        (Some("Bearer t-1x"), Err(Rejection::UnknownToken)),
        // A JWT when no JWT key is configured is just an unknown token.
        (Some("Bearer a.b.c"), Err(Rejection::UnknownToken)),
        (Some("Bearer"), Err(Rejection::Malformed)),
        // base64("user:pa:ss"): the password may hold a colon.
        (Some("Basic dXNlcjpwYTpzcw=="), Ok(())),
        // The same, as pubcontrol on Python 3 sends it.
        (Some("Basic b'dXNlcjpwYTpzcw=='"), Ok(())),
        // base64("user:wrong")
        (
            Some("Basic dXNlcjp3cm9uZw=="),
            Err(Rejection::BadCredentials),
        ),
        (Some("Basic !!"), Err(Rejection::Malformed)),
        (Some("Digest x"), Err(Rejection::Scheme)),
        (None, Err(Rejection::Missing)),
    ];
    for (header, want) in cases {
        let headers = header.map(with).unwrap_or_default();
        assert_eq!(a.verify(&headers, NOW), want, "{header:?}");
    }
}

#[test]
fn a_scheme_that_is_not_configured_is_refused() {
    let tokens_only = auth(|c| c.token = vec!["t".into()]);
    assert_eq!(
        tokens_only.verify(&with("Basic dTpw"), NOW),
        Err(Rejection::Scheme)
    );
    let basic_only = auth(|c| c.basic = vec!["u:p".into()]);
    assert_eq!(
        basic_only.verify(&with("Bearer t"), NOW),
        Err(Rejection::Scheme)
    );
    assert_eq!(basic_only.verify(&with("Basic dTpw"), NOW), Ok(()));
}

#[test]
fn challenges_follow_the_configured_schemes() {
    let names = |a: &Auth| -> Vec<String> {
        a.challenges()
            .iter()
            .map(|c| c.to_str().unwrap().split(' ').next().unwrap().to_string())
            .collect()
    };
    assert!(names(&auth(|_| {})).is_empty());
    assert!(!auth(|_| {}).is_enabled());
    assert_eq!(names(&auth(|c| c.jwt_key = vec!["k".into()])), ["Bearer"]);
    assert_eq!(names(&auth(|c| c.basic = vec!["u:p".into()])), ["Basic"]);
    assert_eq!(
        names(&auth(|c| {
            c.token = vec!["t".into()];
            c.basic = vec!["u:p".into()];
        })),
        ["Bearer", "Basic"]
    );
}

#[test]
fn check_counts_rejections_by_reason_and_open_apis_pass() {
    assert_eq!(auth(|_| {}).check(&HeaderMap::new()), Ok(()));
    let a = auth(|c| c.token = vec!["t".into()]);
    assert_eq!(a.check(&HeaderMap::new()), Err(Rejection::Missing));
    assert_eq!(a.check(&HeaderMap::new()), Err(Rejection::Missing));
    assert_eq!(a.check(&with("Bearer x")), Err(Rejection::UnknownToken));
    assert_eq!(a.check(&with("Bearer t")), Ok(()));
    assert_eq!(a.rejected(Rejection::Missing), 2);
    assert_eq!(a.rejected(Rejection::UnknownToken), 1);
    assert_eq!(a.rejected(Rejection::Expired), 0);
    let mut page = crate::metrics::Page::default();
    a.metrics(&mut page);
    let text = page.into_text();
    assert!(
        text.contains("holdfast_publish_auth_rejected_total{reason=\"missing\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("holdfast_publish_auth_rejected_total{reason=\"expired\"} 0\n"),
        "{text}"
    );
}

#[test]
fn reason_labels_are_distinct_and_listed_in_index_order() {
    let mut labels: Vec<&str> = Rejection::ALL.iter().map(|r| r.label()).collect();
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(labels.len(), Rejection::ALL.len());
    for (i, r) in Rejection::ALL.iter().enumerate() {
        assert_eq!(r.index(), i, "{r:?} is out of place in ALL");
    }
}
