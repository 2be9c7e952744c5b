use super::*;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
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
        ("", "the key is empty"),
        ("base64:", "the key is empty"),
        ("base64:a*b", "the key starts with 'base64:' but the rest is not valid base64: a character that is not base64 at offset 1"),
        ("file:", "the key's 'file:' names no file"),
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
        (b"", "the key is empty"),
        (
            b"abc",
            "the key file is not a valid key: the hex secret has an odd number of digits (3)",
        ),
        (b"zz", "the key file is not a valid key: it is not hex"),
        // A two-byte character once split a hex pair and panicked (found by the fuzzing smoke test).
        (
            "é".as_bytes(),
            "the key file is not a valid key: it is not hex",
        ),
        (
            b"a\xc3\xa9b",
            "the key file is not a valid key: it is not hex",
        ),
        // `from_str_radix` takes a sign; a key file must not.
        (b"+a", "the key file is not a valid key: it is not hex"),
        (
            b"\xff\xfe",
            "the key file is not a valid key: it is not text",
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
    let want = "key file 'grip.key' has not been read; load it with SigKey::from_file_contents";
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

/// A key file from `tests/data` (see its README for how each was made).
fn data(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn pem_key(name: &str) -> SigKey {
    SigKey::from_file_contents(&data(name)).unwrap()
}

/// An RS256 token PyJWT 2.15.1 made with `rs256-private.pem`, Holdfast's claims at time 1000 and
/// its header order. RSA PKCS#1 v1.5 signatures are deterministic, so Holdfast must make the same
/// bytes:
/// ```text
/// python3 -c 'import jwt; print(jwt.encode({"exp": 4600, "iss": "pushpin"}, open("rs256-private.pem").read(), algorithm="RS256", sort_headers=False))'
/// ```
const PYJWT_RS256: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJleHAiOjQ2MDAsImlzcyI6InB1c2hwaW4ifQ.\
sjU8lPcc_Zjc46sKZ3jaMPZohss0ww4SxleyFLA0QNp1qdGnuBqSn_Y9hPt_FxRtJgGi7m9k_5_LNB2W-VlWo8K4W7sYjFK1YITP\
p1Uco2kUzyZAbcQ0heEvczCSLX6CgjHA0SlrUUuIcmDTJwnHJxvhDnCFIq2DR7v71WvpE-6gXUf0SsIHvUQ08rtR1Z4j3D2iy0L2\
w4-JrDawgba_tIOp75AOr5pxPxcwk_kciXgjuiORb64jdTz6Qt89et6Ufk6wDnZdHsBNPFpLmBIoTqubYvELp6qnscjYwJzyoxlj\
X3-ibPcjvNMgCXb54EE7sC_DHHpPn09WdttC61CLAw";

/// An ES256 token PyJWT 2.15.1 (with `cryptography`) made with `es256-private.pem`:
/// ```text
/// python3 -c 'import jwt; print(jwt.encode({"iss": "pyjwt", "exp": 2000000000}, open("es256-private.pem").read(), algorithm="ES256"))'
/// ```
const PYJWT_ES256: &str = "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.\
eyJpc3MiOiJweWp3dCIsImV4cCI6MjAwMDAwMDAwMH0.\
HknKgKhUihF9oEU3j5jKLAikudlwxhErSeUT-pZgvz8KNTNH7vLlhOHsidcJJoGbbBJFjxinD2EAzpyL934qRg";

#[test]
fn pem_keys_are_read_from_every_key_form() {
    let text = data("es256-private.pem");
    let inline = String::from_utf8(text.clone()).unwrap();
    let encoded = format!("base64:{}", STANDARD.encode(&text));
    let want = SigKey::Pem(text.clone());
    assert_eq!(SigKey::parse(&inline).unwrap(), want);
    assert_eq!(SigKey::parse(&encoded).unwrap(), want);
    assert_eq!(SigKey::from_file_contents(&text).unwrap(), want);
    // Leading blank lines, as a TOML multi-line string leaves them, are still PEM.
    let padded = format!("\n  {inline}");
    assert!(matches!(SigKey::parse(&padded).unwrap(), SigKey::Pem(_)));
    assert_eq!(format!("{want:?}"), format!("Pem(<{} bytes>)", text.len()));
}

#[test]
fn private_pem_keys_sign_with_the_algorithm_of_their_type() {
    let cases = [
        ("es256-private.pem", Algorithm::ES256),
        ("rs256-private.pem", Algorithm::RS256),
        ("rs256-private-pkcs1.pem", Algorithm::RS256),
    ];
    for (name, alg) in cases {
        let signer = Signer::new(&pem_key(name)).unwrap();
        assert_eq!(signer.algorithm(), alg, "{name}");
        let token = signer.sign("pushpin", 1000, 3600).unwrap();
        let alg_name = format!("{alg:?}");
        assert_eq!(
            segment(&token, 0),
            json!({"typ": "JWT", "alg": alg_name}),
            "{name}"
        );
        assert_eq!(segment(&token, 1), json!({"iss": "pushpin", "exp": 4600}));
    }
}

#[test]
fn pem_tokens_verify_with_the_matching_public_key_only() {
    let es_public = Verifier::new(&pem_key("es256-public.pem")).unwrap();
    let rs_public = Verifier::new(&pem_key("rs256-public.pem")).unwrap();
    let rs_pkcs1 = Verifier::new(&pem_key("rs256-public-pkcs1.pem")).unwrap();
    assert_eq!(es_public.algorithm(), Algorithm::ES256);
    assert_eq!(rs_public.algorithm(), Algorithm::RS256);
    assert_eq!(rs_pkcs1.algorithm(), Algorithm::RS256);

    let es = sign("pushpin", &pem_key("es256-private.pem"), 1000, 60).unwrap();
    let rs = sign("pushpin", &pem_key("rs256-private.pem"), 1000, 60).unwrap();
    let want = Claims {
        iss: Some("pushpin".into()),
        exp: 1060,
    };
    assert_eq!(es_public.verify(&es, 1059).unwrap(), want);
    assert_eq!(rs_public.verify(&rs, 1059).unwrap(), want);
    assert_eq!(rs_pkcs1.verify(&rs, 1059).unwrap(), want);
    assert_eq!(
        es_public.verify(&es, 1060),
        Err(SigError::Expired {
            exp: 1060,
            now: 1060
        })
    );

    // Another key's token, or a token whose claims were changed, does not verify.
    let malformed = |reason: &str| Err(SigError::Malformed(reason.to_string()));
    assert_eq!(es_public.verify(&rs, 0), malformed("InvalidAlgorithm"));
    assert_eq!(rs_public.verify(&es, 0), malformed("InvalidAlgorithm"));
    let later = URL_SAFE_NO_PAD.encode(r#"{"exp":99999,"iss":"pushpin"}"#);
    let parts: Vec<&str> = es.split('.').collect();
    let tampered = format!("{}.{later}.{}", parts[0], parts[2]);
    assert_eq!(es_public.verify(&tampered, 0), Err(SigError::BadSignature));

    // An HS256 token keyed with the public key's own text (the algorithm-confusion attack)
    // is refused: a PEM key verifies its own algorithm only.
    let public_text = String::from_utf8(data("es256-public.pem")).unwrap();
    let confused = forge(Algorithm::HS256, json!({"exp": 2000}), &public_text);
    assert_eq!(
        es_public.verify(&confused, 0),
        malformed("InvalidAlgorithm")
    );
}

#[test]
fn pem_signing_matches_an_independent_implementation() {
    let signer = Signer::new(&pem_key("rs256-private.pem")).unwrap();
    assert_eq!(signer.sign("pushpin", 1000, 3600).unwrap(), PYJWT_RS256);
    let es_public = Verifier::new(&pem_key("es256-public.pem")).unwrap();
    assert_eq!(
        es_public.verify(PYJWT_ES256, 1_999_999_999).unwrap(),
        Claims {
            iss: Some("pyjwt".into()),
            exp: 2_000_000_000
        }
    );
}

#[test]
fn unusable_pem_keys_are_named_without_their_contents() {
    let certificate = b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n".to_vec();
    let not_base64 = b"-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n".to_vec();
    let mut truncated = ::pem::parse(data("es256-private.pem")).unwrap();
    let cut = truncated.contents()[..60].to_vec();
    truncated = ::pem::Pem::new("PRIVATE KEY", cut);
    let truncated = ::pem::encode(&truncated).into_bytes();
    let public_only = "the PEM key is a public key";
    let signing: &[(&str, Vec<u8>, &str)] = &[
        ("es256-public.pem", data("es256-public.pem"), public_only),
        (
            "rs256-public-pkcs1",
            data("rs256-public-pkcs1.pem"),
            public_only,
        ),
        (
            "SEC1",
            data("es256-private-sec1.pem"),
            "EC PRIVATE KEY (SEC1 form); convert it to PKCS#8",
        ),
        (
            "ecparam -genkey",
            data("ecparam-genkey.pem"),
            "EC PRIVATE KEY (SEC1 form)",
        ),
        ("P-384", data("p384-private.pem"), "not on P-256"),
        (
            "Ed25519",
            data("ed25519-private.pem"),
            "neither EC P-256 (ES256) nor RSA (RS256)",
        ),
        ("certificate", certificate.clone(), "labelled 'CERTIFICATE'"),
        (
            "not base64",
            not_base64.clone(),
            "the key is not valid PEM: its body is not valid base64",
        ),
        (
            "truncated",
            truncated.clone(),
            "the key is not valid PEM: the key inside is malformed",
        ),
    ];
    for (what, text, want) in signing {
        let err = Signer::new(&SigKey::Pem(text.clone()))
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{what}: {err}");
        assert_shows_nothing_of(text, &err);
    }
    let private_only = "the PEM key is a private key";
    let verifying: &[(&str, Vec<u8>, &str)] = &[
        ("es256-private.pem", data("es256-private.pem"), private_only),
        (
            "rs256-private-pkcs1",
            data("rs256-private-pkcs1.pem"),
            private_only,
        ),
        ("SEC1", data("es256-private-sec1.pem"), private_only),
        ("P-384", data("p384-public.pem"), "not on P-256"),
        (
            "Ed25519",
            data("ed25519-public.pem"),
            "neither EC P-256 (ES256) nor RSA (RS256)",
        ),
        ("certificate", certificate, "labelled 'CERTIFICATE'"),
        (
            "not base64",
            not_base64,
            "the key is not valid PEM: its body is not valid base64",
        ),
    ];
    for (what, text, want) in verifying {
        let err = Verifier::new(&SigKey::Pem(text.clone()))
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{what}: {err}");
        assert_shows_nothing_of(text, &err);
    }
}

/// No base64 line of a PEM text appears in `message`.
fn assert_shows_nothing_of(text: &[u8], message: &str) {
    for line in String::from_utf8_lossy(text).lines() {
        if !line.starts_with("-----") && line.len() > 8 {
            assert!(!message.contains(line), "{message} shows key material");
        }
    }
}
