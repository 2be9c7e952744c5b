//! `Grip-Sig`: the signed token that tells an origin a request came through the
//! proxy (reference §2.9), and the `Grip-Feature` list sent beside it.
//!
//! The token is an HS256 JWT with header `{"typ":"JWT","alg":"HS256"}` and
//! claims `{"iss": <issuer>, "exp": <now + ttl>}`. Time is always passed in, so
//! signing and checking are pure. Keys use Pushpin's config syntax (see
//! [`SigKey::parse`]); reading a `file:` key is left to the caller, which knows
//! the config directory. Error messages never include key material.

use std::fmt;
use std::path::PathBuf;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::fields::decode_base64;

/// The `Grip-Feature` value: Pushpin 1.36's list plus `link:gone`.
pub const GRIP_FEATURES: &str = "status, session, link:next, filter:skip-self, filter:skip-users, \
filter:require-sub, filter:build-id, filter:var-subst, link:gone";

/// Issuer used when none is configured (`sig_iss`).
pub const DEFAULT_ISSUER: &str = "pushpin";
/// Key used when none is configured (`sig_key`).
pub const DEFAULT_KEY: &str = "changeme";
/// Token lifetime Pushpin uses, in seconds.
pub const DEFAULT_TTL_SECS: u64 = 3600;

/// A signing key as written in configuration.
#[derive(Clone, PartialEq, Eq)]
pub enum SigKey {
    /// An HS256 secret.
    Secret(Vec<u8>),
    /// `file:<path>`: the caller reads the file and passes its contents to
    /// [`SigKey::from_file_contents`]. Relative paths are relative to the
    /// config directory.
    File(PathBuf),
}

impl fmt::Debug for SigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SigKey::Secret(secret) => write!(f, "Secret(<{} bytes>)", secret.len()),
            SigKey::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

impl SigKey {
    /// Parses the config syntax: a plain string is the secret itself,
    /// `base64:<data>` is a base64 secret (spaces read as `+`, as they come out
    /// of URL query strings), `file:<path>` names a key file.
    ///
    /// ```
    /// use grip::sig::SigKey;
    ///
    /// assert_eq!(SigKey::parse("changeme").unwrap(), SigKey::Secret(b"changeme".to_vec()));
    /// assert_eq!(SigKey::parse("base64:aGk=").unwrap(), SigKey::Secret(b"hi".to_vec()));
    /// assert!(matches!(SigKey::parse("file:keys/grip").unwrap(), SigKey::File(_)));
    /// ```
    pub fn parse(config: &str) -> Result<SigKey, SigError> {
        if let Some(path) = config.strip_prefix("file:") {
            if path.is_empty() {
                return Err(SigError::EmptyKeyFilePath);
            }
            return Ok(SigKey::File(PathBuf::from(path)));
        }
        let secret = match config.strip_prefix("base64:") {
            Some(encoded) => decode_base64(&encoded.replace(' ', "+"))
                .map_err(|e| SigError::InvalidBase64Key(e.to_string()))?,
            None => config.as_bytes().to_vec(),
        };
        if secret.is_empty() {
            return Err(SigError::EmptyKey);
        }
        Ok(SigKey::Secret(secret))
    }

    /// Turns the contents of a `file:` key into a key. The file holds the
    /// secret hex-encoded; surrounding whitespace is ignored. PEM keys (ES256,
    /// RS256) are recognised and refused.
    pub fn from_file_contents(contents: &[u8]) -> Result<SigKey, SigError> {
        let text = std::str::from_utf8(contents)
            .map_err(|_| SigError::InvalidKeyFile("it is not text".to_string()))?
            .trim();
        if text.starts_with("-----BEGIN") {
            return Err(SigError::UnsupportedPemKey);
        }
        if text.is_empty() {
            return Err(SigError::EmptyKey);
        }
        // Checked before slicing pairs: a multi-byte character would split inside a pair, and
        // `from_str_radix` alone would take a `+` sign.
        if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SigError::InvalidKeyFile("it is not hex".to_string()));
        }
        if text.len() % 2 != 0 {
            return Err(SigError::InvalidKeyFile(format!(
                "the hex secret has an odd number of digits ({})",
                text.len()
            )));
        }
        let secret = (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| SigError::InvalidKeyFile("it is not hex".to_string()))?;
        Ok(SigKey::Secret(secret))
    }

    fn secret(&self) -> Result<&[u8], SigError> {
        match self {
            SigKey::Secret(secret) => Ok(secret),
            SigKey::File(path) => Err(SigError::KeyFileNotLoaded(path.clone())),
        }
    }
}

/// The verified claims of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `iss`, when the token has one.
    pub iss: Option<String>,
    /// `exp`, seconds since the Unix epoch.
    pub exp: u64,
}

#[derive(Serialize)]
struct OutClaims<'a> {
    exp: u64,
    iss: &'a str,
}

#[derive(Deserialize)]
struct InClaims {
    iss: Option<String>,
    exp: Option<f64>,
}

/// Why a token could not be made or accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    /// The key is the empty string.
    #[error("sig_key is empty")]
    EmptyKey,
    /// `base64:` followed by something that is not base64.
    #[error("sig_key starts with 'base64:' but the rest is not valid base64: {0}")]
    InvalidBase64Key(String),
    /// `file:` with no path.
    #[error("sig_key 'file:' names no file")]
    EmptyKeyFilePath,
    /// A `file:` key was used before its contents were loaded.
    #[error("sig_key file '{}' has not been read; load it with SigKey::from_file_contents", .0.display())]
    KeyFileNotLoaded(PathBuf),
    /// The key file does not hold a hex secret.
    #[error("sig_key file is not a valid key: {0}")]
    InvalidKeyFile(String),
    /// The key file holds a PEM key.
    #[error("sig_key file holds a PEM key; only HS256 secrets are supported")]
    UnsupportedPemKey,
    /// Encoding the token failed.
    #[error("could not sign Grip-Sig token: {0}")]
    Sign(String),
    /// The token is not a well-formed HS256 JWT.
    #[error("Grip-Sig token is malformed: {0}")]
    Malformed(String),
    /// The signature does not match the key.
    #[error("Grip-Sig signature does not match the key")]
    BadSignature,
    /// The token has no `exp` claim.
    #[error("Grip-Sig token has no 'exp' claim")]
    MissingExp,
    /// The token has expired.
    #[error("Grip-Sig token expired at {exp}, it is now {now}")]
    Expired {
        /// The token's `exp`.
        exp: u64,
        /// The time it was checked at.
        now: u64,
    },
}

/// Makes a `Grip-Sig` token for `iss`, valid until `now_unix + ttl_secs`.
///
/// ```
/// use grip::sig::{sign, verify, SigKey};
///
/// let key = SigKey::parse("changeme").unwrap();
/// let token = sign("pushpin", &key, 1_700_000_000, 3600).unwrap();
/// let claims = verify(&token, &key, 1_700_000_100).unwrap();
/// assert_eq!(claims.iss.as_deref(), Some("pushpin"));
/// assert_eq!(claims.exp, 1_700_003_600);
/// ```
pub fn sign(iss: &str, key: &SigKey, now_unix: u64, ttl_secs: u64) -> Result<String, SigError> {
    let claims = OutClaims {
        exp: now_unix.saturating_add(ttl_secs),
        iss,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(key.secret()?),
    )
    .map_err(|e| SigError::Sign(e.to_string()))
}

/// Checks a `Grip-Sig` token's signature and expiry at `now_unix`. A token is
/// expired from its `exp` second on. The issuer is returned, not checked.
///
/// ```
/// use grip::sig::{sign, verify, SigError, SigKey};
///
/// let key = SigKey::parse("changeme").unwrap();
/// let token = sign("pushpin", &key, 100, 10).unwrap();
/// assert_eq!(verify(&token, &key, 110), Err(SigError::Expired { exp: 110, now: 110 }));
/// let other = SigKey::parse("other").unwrap();
/// assert_eq!(verify(&token, &other, 100), Err(SigError::BadSignature));
/// ```
pub fn verify(token: &str, key: &SigKey, now_unix: u64) -> Result<Claims, SigError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<InClaims>(
        token,
        &DecodingKey::from_secret(key.secret()?),
        &validation,
    )
    .map_err(|e| match e.kind() {
        ErrorKind::InvalidSignature => SigError::BadSignature,
        _ => SigError::Malformed(e.to_string()),
    })?;
    let exp = data.claims.exp.ok_or(SigError::MissingExp)?;
    let exp = if exp <= 0.0 { 0 } else { exp as u64 };
    if now_unix >= exp {
        return Err(SigError::Expired { exp, now: now_unix });
    }
    Ok(Claims {
        iss: data.claims.iss,
        exp,
    })
}

#[cfg(test)]
mod tests;
