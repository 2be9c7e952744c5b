//! Who may use the publish API: the `Authorization` schemes GRIP client libraries send.
//!
//! - `Bearer <JWT>`: signed with one of `[publish] jwt_key` (HS256, ES256 or RS256), with `exp`
//!   required and `exp`/`nbf` checked with `jwt_leeway_secs` of leeway, and `iss` equal to
//!   `jwt_iss` when one is set. This is what `gripcontrol`, django-grip and `@fanoutio/grip` send
//!   for a `key` with an `iss`.
//! - `Bearer <token>`: one of `[publish] token`, what `@fanoutio/grip` and `pubcontrol` send for
//!   a `key` without an `iss`.
//! - `Basic <base64(user:pass)>`: one of `[publish] basic`. `pubcontrol` 3.5 on Python 3 wraps
//!   the base64 in `b'…'` (it formats the bytes object); that form is accepted too.
//!
//! Any one configured scheme passing is enough. Tokens and passwords are kept as SHA-256 digests
//! and compared in constant time, every configured one each time, so neither the comparison nor
//! the length of a guess tells an attacker anything. A rejection names its reason in words that
//! reveal no key material, and is counted by reason for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http::header::{self, HeaderMap, HeaderValue};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::Validation;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::config::publish::JwtKey;
use crate::config::PublishConfig;
use crate::metrics::Page;

/// Why a request was refused. The `Display` text is the body of the `401`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// No `Authorization` header.
    #[error("missing Authorization")]
    Missing,
    /// A scheme that is not configured (`Basic` with only tokens, `Digest`, …).
    #[error("Authorization scheme not accepted")]
    Scheme,
    /// The header or the token in it could not be read.
    #[error("malformed Authorization")]
    Malformed,
    /// A JWT without an `exp` claim: it would be valid forever.
    #[error("token has no exp claim")]
    NoExpiry,
    /// A JWT signed with an algorithm no configured key is for.
    #[error("token algorithm not accepted")]
    Algorithm,
    /// A JWT whose signature no configured key verifies.
    #[error("bad signature")]
    BadSignature,
    /// A JWT past its `exp` (plus the leeway).
    #[error("token expired")]
    Expired,
    /// A JWT before its `nbf` (minus the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// A JWT whose `iss` is not the configured issuer, or that has none.
    #[error("issuer does not match")]
    Issuer,
    /// A Bearer value that is not a configured token (nor a JWT, when keys are configured).
    #[error("unknown token")]
    UnknownToken,
    /// Basic credentials that match no configured pair.
    #[error("bad user or password")]
    BadCredentials,
}

impl Rejection {
    /// Every reason, in the order `/metrics` lists them.
    pub const ALL: [Rejection; 11] = [
        Rejection::Missing,
        Rejection::Scheme,
        Rejection::Malformed,
        Rejection::NoExpiry,
        Rejection::Algorithm,
        Rejection::BadSignature,
        Rejection::Expired,
        Rejection::NotYetValid,
        Rejection::Issuer,
        Rejection::UnknownToken,
        Rejection::BadCredentials,
    ];

    /// The `reason` label of `holdfast_publish_auth_rejected_total`.
    pub fn label(self) -> &'static str {
        match self {
            Rejection::Missing => "missing",
            Rejection::Scheme => "scheme",
            Rejection::Malformed => "malformed",
            Rejection::NoExpiry => "no_exp",
            Rejection::Algorithm => "algorithm",
            Rejection::BadSignature => "bad_signature",
            Rejection::Expired => "expired",
            Rejection::NotYetValid => "not_yet_valid",
            Rejection::Issuer => "issuer",
            Rejection::UnknownToken => "unknown_token",
            Rejection::BadCredentials => "bad_credentials",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

type Digest = [u8; 32];

/// The configured schemes, and the count of rejections by reason.
pub struct Auth {
    jwt: Vec<JwtKey>,
    iss: Option<String>,
    leeway_secs: u64,
    tokens: Vec<Digest>,
    basic: Vec<Digest>,
    challenges: Vec<HeaderValue>,
    rejected: [AtomicU64; Rejection::ALL.len()],
}

/// A configured key could not be read (the file changed since the configuration was checked).
#[derive(Debug, thiserror::Error)]
#[error("publish.jwt_key: {0}")]
pub struct KeyError(String);

impl Auth {
    /// Reads the keys and digests the tokens and passwords of `[publish]`.
    pub fn from_config(config: &PublishConfig) -> Result<Auth, KeyError> {
        let jwt = config.jwt_keys().map_err(KeyError)?;
        let tokens: Vec<Digest> = config.token.iter().map(|t| digest(t.as_bytes())).collect();
        let basic: Vec<Digest> = config.basic.iter().map(|b| digest(b.as_bytes())).collect();
        let mut challenges = Vec::new();
        if !jwt.is_empty() || !tokens.is_empty() {
            challenges.push(HeaderValue::from_static("Bearer realm=\"holdfast\""));
        }
        if !basic.is_empty() {
            challenges.push(HeaderValue::from_static(
                "Basic realm=\"holdfast\", charset=\"UTF-8\"",
            ));
        }
        Ok(Auth {
            jwt,
            iss: config.jwt_iss.clone(),
            leeway_secs: config.jwt_leeway_secs,
            tokens,
            basic,
            challenges,
            rejected: Default::default(),
        })
    }

    /// Whether any scheme is configured; if not, every request passes.
    pub fn is_enabled(&self) -> bool {
        !self.challenges.is_empty()
    }

    /// The `WWW-Authenticate` challenges of a `401`: one per configured scheme.
    pub fn challenges(&self) -> &[HeaderValue] {
        &self.challenges
    }

    /// Checks a request's headers, counting a rejection.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        if !self.is_enabled() {
            return Ok(());
        }
        let result = self.verify(headers, unix_now());
        if let Err(r) = result {
            self.rejected[r.index()].fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Rejections so far for `reason`.
    pub fn rejected(&self, reason: Rejection) -> u64 {
        self.rejected[reason.index()].load(Ordering::Relaxed)
    }

    /// Writes `holdfast_publish_auth_rejected_total`, one sample per reason.
    pub fn metrics(&self, page: &mut Page) {
        let samples = (Rejection::ALL.into_iter())
            .map(|r| (vec![("reason", r.label().to_string())], self.rejected(r)))
            .collect();
        page.counters(
            "holdfast_publish_auth_rejected_total",
            "Publish API requests refused with 401, by reason",
            samples,
        );
    }

    fn verify(&self, headers: &HeaderMap, now: u64) -> Result<(), Rejection> {
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or(Rejection::Missing)?
            .to_str()
            .map_err(|_| Rejection::Malformed)?
            .trim();
        let (scheme, credentials) = value
            .split_once(char::is_whitespace)
            .map_or((value, ""), |(s, c)| (s, c.trim()));
        if scheme.eq_ignore_ascii_case("bearer") {
            self.bearer(credentials, now)
        } else if scheme.eq_ignore_ascii_case("basic") && !self.basic.is_empty() {
            self.basic(credentials)
        } else {
            Err(Rejection::Scheme)
        }
    }

    fn bearer(&self, token: &str, now: u64) -> Result<(), Rejection> {
        if self.jwt.is_empty() && self.tokens.is_empty() {
            return Err(Rejection::Scheme);
        }
        if token.is_empty() {
            return Err(Rejection::Malformed);
        }
        if matches_any(&self.tokens, token.as_bytes()) {
            return Ok(());
        }
        let looks_like_jwt = token.bytes().filter(|&b| b == b'.').count() == 2;
        if !self.jwt.is_empty() && looks_like_jwt {
            self.jwt(token, now)
        } else if !self.tokens.is_empty() {
            Err(Rejection::UnknownToken)
        } else {
            Err(Rejection::Malformed)
        }
    }

    fn basic(&self, credentials: &str) -> Result<(), Rejection> {
        // pubcontrol 3.5 sends `Basic b'dXNlcjpwYXNz'` on Python 3.
        let encoded = credentials
            .strip_prefix("b'")
            .and_then(|c| c.strip_suffix('\''))
            .unwrap_or(credentials);
        let pair = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| Rejection::Malformed)?;
        if matches_any(&self.basic, &pair) {
            Ok(())
        } else {
            Err(Rejection::BadCredentials)
        }
    }

    /// Verifies a JWT against every key for its algorithm. The signature is checked before the
    /// claims, so a claim problem means a key did verify it: that is the more useful answer.
    fn jwt(&self, token: &str, now: u64) -> Result<(), Rejection> {
        let alg = jsonwebtoken::decode_header(token)
            .map_err(|_| Rejection::Malformed)?
            .alg;
        let mut outcome = Err(Rejection::Algorithm);
        for key in self.jwt.iter().filter(|k| k.algorithm == alg) {
            match self.jwt_with(token, key, now) {
                Ok(()) => return Ok(()),
                Err(Rejection::BadSignature) if outcome != Err(Rejection::Algorithm) => {}
                Err(r) => outcome = Err(r),
            }
        }
        outcome
    }

    fn jwt_with(&self, token: &str, key: &JwtKey, now: u64) -> Result<(), Rejection> {
        let mut validation = Validation::new(key.algorithm);
        // The time claims are checked below, against `now`, with this module's reasons.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => Rejection::BadSignature,
                _ => Rejection::Malformed,
            })?
            .claims;
        let exp = claims.exp.ok_or(Rejection::NoExpiry)?;
        if now as f64 >= exp + self.leeway_secs as f64 {
            return Err(Rejection::Expired);
        }
        if let Some(nbf) = claims.nbf {
            if nbf > (now + self.leeway_secs) as f64 {
                return Err(Rejection::NotYetValid);
            }
        }
        match &self.iss {
            Some(want) if claims.iss.as_deref() != Some(want.as_str()) => Err(Rejection::Issuer),
            _ => Ok(()),
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    exp: Option<f64>,
    nbf: Option<f64>,
    iss: Option<String>,
}

fn digest(bytes: &[u8]) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Compares `presented` with every configured digest, without stopping at a match.
fn matches_any(configured: &[Digest], presented: &[u8]) -> bool {
    let presented = digest(presented);
    let mut found = subtle::Choice::from(0);
    for d in configured {
        found |= d.ct_eq(&presented);
    }
    found.into()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
