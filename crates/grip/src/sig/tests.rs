use super::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

fn secret(text: &str) -> SigKey {
    SigKey::Secret(text.as_bytes().to_vec())
}

fn segment(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn forge(alg: Algorithm, claims: Value, key: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(key.as_bytes()),
    )
    .unwrap()
}

#[test]
fn key_syntax() {
    let cases: &[(&str, SigKey)] = &[
        ("changeme", secret("changeme")),
        ("base64:aGVsbG8=", secret("hello")),
        ("base64:aGVsbG8", secret("hello")),
        ("base64:+/8=", SigKey::Secret(vec![0xfb, 0xff])),
        ("base64: /8=", SigKey::Secret(vec![0xfb, 0xff])),
        (
            "file:/etc/pushpin/key",
            SigKey::File("/etc/pushpin/key".into()),
        ),
        ("File:x", secret("File:x")),
    ];
    for (config, want) in cases {
        assert_eq!(&SigKey::parse(config).unwrap(), want, "config {config:?}");
    }
    let errors = [
        ("", "sig_key is empty"),
        ("base64:", "sig_key is empty"),
        ("base64:a*b", "sig_key starts with 'base64:' but the rest is not valid base64: Invalid symbol 42, offset 1."),
        ("file:", "sig_key 'file:' names no file"),
    ];
    for (config, want) in errors {
        assert_eq!(SigKey::parse(config).unwrap_err().to_string(), want);
    }
}

#[test]
fn key_files() {
    assert_eq!(SigKey::from_file_contents(b"6869\n").unwrap(), secret("hi"));
    assert_eq!(
        SigKey::from_file_contents(b"  4A4b ").unwrap(),
        SigKey::Secret(vec![0x4a, 0x4b])
    );
    let errors: &[(&[u8], &str)] = &[
        (b"", "sig_key is empty"),
        (
            b"abc",
            "sig_key file is not a valid key: the hex secret has an odd number of digits (3)",
        ),
        (b"zz", "sig_key file is not a valid key: it is not hex"),
        // A two-byte character once split a hex pair and panicked (found by fuzz_smoke).
        (
            "é".as_bytes(),
            "sig_key file is not a valid key: it is not hex",
        ),
        (
            b"a\xc3\xa9b",
            "sig_key file is not a valid key: it is not hex",
        ),
        // `from_str_radix` takes a sign; a key file must not.
        (b"+a", "sig_key file is not a valid key: it is not hex"),
        (
            b"\xff\xfe",
            "sig_key file is not a valid key: it is not text",
        ),
        (
            b"-----BEGIN EC PRIVATE KEY-----\nMHc=\n-----END EC PRIVATE KEY-----\n",
            "sig_key file holds a PEM key; only HS256 secrets are supported",
        ),
    ];
    for (contents, want) in errors {
        assert_eq!(
            SigKey::from_file_contents(contents)
                .unwrap_err()
                .to_string(),
            *want
        );
    }
}

#[test]
fn debug_hides_secret() {
    assert_eq!(format!("{:?}", secret("changeme")), "Secret(<8 bytes>)");
}

/// The base64url part `index` of a token, decoded by hand, as text.
fn segment_text(token: &str, index: usize) -> String {
    let part = token.split('.').nth(index).unwrap();
    String::from_utf8(URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

// Tokens made by PyJWT 2.15.1 (`pip install pyjwt`), an HS256 implementation independent of
// jsonwebtoken, each with the Python command that printed it.

/// The claims Holdfast signs at time 1000 with the default issuer, key and TTL, with the header
/// in the order Holdfast writes it:
/// ```text
/// python3 -c 'import jwt; print(jwt.encode({"exp": 4600, "iss": "pushpin"}, "changeme", algorithm="HS256", sort_headers=False))'
/// ```
const PYJWT_PUSHPIN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.\
eyJleHAiOjQ2MDAsImlzcyI6InB1c2hwaW4ifQ.HCihmrrvm83LhsXbYdxms937Qhf-RFwJTiT9XIjZiBs";

/// PyJWT's own (sorted) header order, and `iss` before `exp`:
/// ```text
/// python3 -c 'import jwt; print(jwt.encode({"iss": "origin-check", "exp": 1700003600}, "changeme", algorithm="HS256"))'
/// ```
const PYJWT_SORTED_HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
eyJpc3MiOiJvcmlnaW4tY2hlY2siLCJleHAiOjE3MDAwMDM2MDB9.LvJf9CNu9GhG1C1gh9aCMBEUK5vQyIN57ns2O949fWs";

/// A binary key, no issuer:
/// ```text
/// python3 -c 'import base64, jwt; print(jwt.encode({"exp": 2000}, base64.b64decode("3q2+7w=="), algorithm="HS256"))'
/// ```
const PYJWT_BINARY_KEY: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
eyJleHAiOjIwMDB9.MhCDDJTGL06AFQhi74GPEzVjuFe1_LXBrVgr1UrUr1Y";

#[test]
fn token_shape_matches_pushpin() {
    let token = sign("pushpin", &secret("changeme"), 1000, 3600).unwrap();
    assert_eq!(segment(&token, 0), json!({"typ": "JWT", "alg": "HS256"}));
    assert_eq!(segment(&token, 1), json!({"iss": "pushpin", "exp": 4600}));
    assert_eq!(segment_text(&token, 0), r#"{"typ":"JWT","alg":"HS256"}"#);
    assert_eq!(segment_text(&token, 1), r#"{"exp":4600,"iss":"pushpin"}"#);
}

#[test]
fn signing_matches_an_independent_implementation() {
    // Same header, claims and key: the same bytes, signature included.
    let token = sign("pushpin", &secret("changeme"), 1000, 3600).unwrap();
    assert_eq!(token, PYJWT_PUSHPIN);
}

#[test]
fn tokens_from_an_independent_implementation_verify() {
    let key = secret("changeme");
    assert_eq!(
        verify(PYJWT_PUSHPIN, &key, 1000).unwrap(),
        Claims {
            iss: Some("pushpin".into()),
            exp: 4600
        }
    );
    assert_eq!(
        verify(PYJWT_SORTED_HEADER, &key, 1_700_000_000).unwrap(),
        Claims {
            iss: Some("origin-check".into()),
            exp: 1_700_003_600
        }
    );
    assert_eq!(
        verify(PYJWT_SORTED_HEADER, &key, 1_700_003_600),
        Err(SigError::Expired {
            exp: 1_700_003_600,
            now: 1_700_003_600
        })
    );
    assert_eq!(
        verify(PYJWT_SORTED_HEADER, &secret("changemf"), 0),
        Err(SigError::BadSignature)
    );
    let binary = SigKey::parse("base64:3q2+7w==").unwrap();
    assert_eq!(
        verify(PYJWT_BINARY_KEY, &binary, 1999).unwrap(),
        Claims {
            iss: None,
            exp: 2000
        }
    );
    assert_eq!(
        verify(PYJWT_BINARY_KEY, &key, 1999),
        Err(SigError::BadSignature)
    );
}

#[test]
fn verification() {
    let key = secret("changeme");
    let token = sign("me", &key, 1000, 60).unwrap();
    assert_eq!(
        verify(&token, &key, 1059).unwrap(),
        Claims {
            iss: Some("me".into()),
            exp: 1060
        }
    );
    let no_iss = forge(Algorithm::HS256, json!({"exp": 2000}), "changeme");
    assert_eq!(verify(&no_iss, &key, 1).unwrap().iss, None);

    let cases = [
        (
            token.clone(),
            1060,
            "Grip-Sig token expired at 1060, it is now 1060",
        ),
        (
            forge(Algorithm::HS256, json!({"iss": "x"}), "changeme"),
            0,
            "Grip-Sig token has no 'exp' claim",
        ),
        (
            forge(Algorithm::HS256, json!({"exp": 2000}), "wrong"),
            0,
            "Grip-Sig signature does not match the key",
        ),
        (
            forge(Algorithm::HS384, json!({"exp": 2000}), "changeme"),
            0,
            "Grip-Sig token is malformed: InvalidAlgorithm",
        ),
        (
            "abc".to_string(),
            0,
            "Grip-Sig token is malformed: InvalidToken",
        ),
    ];
    for (token, now, want) in cases {
        assert_eq!(verify(&token, &key, now).unwrap_err().to_string(), want);
    }
}

#[test]
fn file_keys_must_be_loaded() {
    let key = SigKey::parse("file:grip.key").unwrap();
    let want = "sig_key file 'grip.key' has not been read; load it with SigKey::from_file_contents";
    assert_eq!(sign("pushpin", &key, 0, 1).unwrap_err().to_string(), want);
    assert_eq!(verify("a.b.c", &key, 0).unwrap_err().to_string(), want);
}

#[test]
fn features_list() {
    let features: Vec<&str> = GRIP_FEATURES.split(", ").collect();
    assert_eq!(features.len(), 9);
    assert_eq!(features[0], "status");
    assert_eq!(features[8], "link:gone");
    assert!(features.contains(&"filter:var-subst"));
}
