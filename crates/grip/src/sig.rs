//! `Grip-Sig`: the signed token that tells an origin a request came through the
//! proxy (reference §2.9), and the `Grip-Feature` list sent beside it.
//!
//! The token is a JWT with header `{"typ":"JWT","alg":…}` and claims
//! `{"iss": <issuer>, "exp": <now + ttl>}`. The algorithm follows the key, as
//! Pushpin's does: HS256 with a secret, ES256 with an EC P-256 private key,
//! RS256 with an RSA private key (PEM). A [`Signer`] or [`Verifier`] is a key
//! read and checked once; [`sign`] and [`verify`] build one per call. Time is
//! always passed in, so signing and checking are pure. Keys use Pushpin's
//! config syntax (see [`SigKey::parse`]); reading a `file:` key is left to the
//! caller, which knows the config directory. Error messages never include key
//! material.

mod pem;

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

/// A key as written in configuration.
#[derive(Clone, PartialEq, Eq)]
pub enum SigKey {
    /// An HS256 secret.
    Secret(Vec<u8>),
    /// A PEM key (the text, `-----BEGIN …`): a private key signs (ES256 for EC
    /// P-256, RS256 for RSA), a public key verifies. [`Signer::new`] and
    /// [`Verifier::new`] check it.
    Pem(Vec<u8>),
    /// `file:<path>`: the caller reads the file and passes its contents to
    /// [`SigKey::from_file_contents`]. Relative paths are relative to the
    /// config directory.
    File(PathBuf),
}

impl fmt::Debug for SigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SigKey::Secret(secret) => write!(f, "Secret(<{} bytes>)", secret.len()),
            SigKey::Pem(text) => write!(f, "Pem(<{} bytes>)", text.len()),
            SigKey::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

impl SigKey {
    /// Parses the config syntax: a plain string is the secret itself,
    /// `base64:<data>` is a base64 secret (spaces read as `+`, as they come out
    /// of URL query strings), `file:<path>` names a key file. A value (or
    /// base64-decoded value) that starts with `-----BEGIN` is a PEM key; Pushpin
    /// reads PEM keys from `file:` only, so the other two forms are Holdfast's.
    ///
    /// ```
    /// use grip::sig::SigKey;
    ///
    /// assert_eq!(SigKey::parse("changeme").unwrap(), SigKey::Secret(b"changeme".to_vec()));
    /// assert_eq!(SigKey::parse("base64:aGk=").unwrap(), SigKey::Secret(b"hi".to_vec()));
    /// assert!(matches!(SigKey::parse("file:keys/grip").unwrap(), SigKey::File(_)));
    /// assert!(matches!(SigKey::parse("-----BEGIN PRIVATE KEY-----\n…").unwrap(), SigKey::Pem(_)));
    /// ```
    pub fn parse(config: &str) -> Result<SigKey, SigError> {
        if let Some(path) = config.strip_prefix("file:") {
            if path.is_empty() {
                return Err(SigError::EmptyKeyFilePath);
            }
            return Ok(SigKey::File(PathBuf::from(path)));
        }
        let bytes = match config.strip_prefix("base64:") {
            Some(encoded) => decode_base64(&encoded.replace(' ', "+"))
                .map_err(|e| SigError::InvalidBase64Key(base64_problem(&e)))?,
            None => config.as_bytes().to_vec(),
        };
        if bytes.is_empty() {
            return Err(SigError::EmptyKey);
        }
        if is_pem(&bytes) {
            return Ok(SigKey::Pem(bytes));
        }
        Ok(SigKey::Secret(bytes))
    }

    /// Turns the contents of a `file:` key into a key, as Pushpin 1.38+ reads
    /// one: a file that starts with `-----BEGIN` is a PEM key, any other holds
    /// the secret hex-encoded (surrounding whitespace is ignored).
    pub fn from_file_contents(contents: &[u8]) -> Result<SigKey, SigError> {
        if is_pem(contents) {
            return Ok(SigKey::Pem(contents.to_vec()));
        }
        let text = std::str::from_utf8(contents)
            .map_err(|_| SigError::InvalidKeyFile("it is not text".to_string()))?
            .trim();
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
}

/// What is wrong with a key's base64, without the offending character (a character of a key).
fn base64_problem(e: &base64::DecodeError) -> String {
    match e {
        base64::DecodeError::InvalidByte(offset, _) => {
            format!("a character that is not base64 at offset {offset}")
        }
        base64::DecodeError::InvalidLength(_) => "the length is not that of base64".to_string(),
        base64::DecodeError::InvalidLastSymbol(offset, _) => {
            format!("the last character, at offset {offset}, is not a possible ending")
        }
        base64::DecodeError::InvalidPadding => "the padding is wrong".to_string(),
    }
}

fn is_pem(bytes: &[u8]) -> bool {
    bytes.trim_ascii_start().starts_with(b"-----BEGIN")
}

/// A key that signs `Grip-Sig` tokens, read and checked: HS256 with a secret,
/// ES256 with an EC P-256 private key, RS256 with an RSA private key.
#[derive(Clone)]
pub struct Signer {
    algorithm: Algorithm,
    key: EncodingKey,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({:?})", self.algorithm)
    }
}

impl Signer {
    /// Reads `key`. A PEM key must be an unencrypted private key in PKCS#8
    /// (`PRIVATE KEY`, either type) or PKCS#1 (`RSA PRIVATE KEY`) form; it is
    /// tried once here, so a key that cannot sign fails now rather than on
    /// every request.
    pub fn new(key: &SigKey) -> Result<Signer, SigError> {
        match key {
            SigKey::Secret(secret) => Ok(Signer {
                algorithm: Algorithm::HS256,
                key: EncodingKey::from_secret(secret),
            }),
            SigKey::Pem(text) => pem::signer(text),
            SigKey::File(path) => Err(SigError::KeyFileNotLoaded(path.clone())),
        }
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Makes a token for `iss`, valid until `now_unix + ttl_secs`.
    pub fn sign(&self, iss: &str, now_unix: u64, ttl_secs: u64) -> Result<String, SigError> {
        let claims = OutClaims {
            exp: now_unix.saturating_add(ttl_secs),
            iss,
        };
        self.sign_claims(&claims)
    }

    /// Makes a token carrying `claims` as they are, for tokens with more than `iss` and `exp`
    /// (webhook deliveries add the body's hash).
    pub fn sign_claims<T: serde::Serialize>(&self, claims: &T) -> Result<String, SigError> {
        jsonwebtoken::encode(&Header::new(self.algorithm), claims, &self.key)
            .map_err(|e| SigError::Sign(e.to_string()))
    }
}

/// A key that checks `Grip-Sig` tokens, read and checked: a secret (HS256), or
/// a PEM public key, EC P-256 (ES256) or RSA (RS256).
#[derive(Clone)]
pub struct Verifier {
    algorithm: Algorithm,
    key: DecodingKey,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Verifier({:?})", self.algorithm)
    }
}

impl Verifier {
    /// Reads `key`. A PEM key must be a public key (`PUBLIC KEY`, or
    /// `RSA PUBLIC KEY`).
    pub fn new(key: &SigKey) -> Result<Verifier, SigError> {
        match key {
            SigKey::Secret(secret) => Ok(Verifier {
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(secret),
            }),
            SigKey::Pem(text) => pem::verifier(text),
            SigKey::File(path) => Err(SigError::KeyFileNotLoaded(path.clone())),
        }
    }

    /// The one algorithm tokens checked with this key may use.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The key, for checks of other claims than [`Verifier::verify`] makes.
    pub fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }

    /// Checks a token's signature and expiry at `now_unix`. A token is
    /// expired from its `exp` second on. The issuer is returned, not checked.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Claims, SigError> {
        let mut validation = Validation::new(self.algorithm);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let data =
            jsonwebtoken::decode::<InClaims>(token, &self.key, &validation).map_err(|e| match e
                .kind()
            {
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

/// Why a key could not be read, or a token made or accepted. The messages name
/// no field (the caller knows which one it read) and show no key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    /// The key is the empty string.
    #[error("the key is empty")]
    EmptyKey,
    /// `base64:` followed by something that is not base64.
    #[error("the key starts with 'base64:' but the rest is not valid base64: {0}")]
    InvalidBase64Key(String),
    /// `file:` with no path.
    #[error("the key's 'file:' names no file")]
    EmptyKeyFilePath,
    /// A `file:` key was used before its contents were loaded.
    #[error("key file '{}' has not been read; load it with SigKey::from_file_contents", .0.display())]
    KeyFileNotLoaded(PathBuf),
    /// The key file holds neither a PEM key nor a hex secret.
    #[error("the key file is not a valid key: {0}")]
    InvalidKeyFile(String),
    /// The key starts like PEM but is not.
    #[error("the key is not valid PEM: {0}")]
    InvalidPem(String),
    /// The PEM text holds no key (a certificate, parameters, …).
    #[error("the PEM block is labelled '{0}', which is not a key Holdfast can use")]
    NotAKey(String),
    /// A public key where a private key is needed.
    #[error("the PEM key is a public key ({0}); signing needs the private key")]
    PublicKeyCannotSign(String),
    /// A private key where a public key is needed.
    #[error(
        "the PEM key is a private key ({0}); give the public key instead \
         (openssl pkey -in KEY -pubout)"
    )]
    PrivateKeyCannotVerify(String),
    /// An EC private key in SEC1 form, which the JWT library cannot use.
    #[error(
        "the PEM key is an EC PRIVATE KEY (SEC1 form); convert it to PKCS#8 \
         (openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.p8)"
    )]
    Sec1Key,
    /// An EC key on another curve than P-256.
    #[error("the PEM key is an EC key that is not on P-256 (ES256 needs P-256)")]
    NotP256,
    /// Neither EC nor RSA (Ed25519, DSA, …).
    #[error("the PEM key is neither EC P-256 (ES256) nor RSA (RS256)")]
    UnsupportedKeyType,
    /// The key parsed but could not make a signature.
    #[error("the PEM key cannot sign: {0}")]
    UnusableKey(String),
    /// Encoding the token failed.
    #[error("could not sign Grip-Sig token: {0}")]
    Sign(String),
    /// The token is not a well-formed JWT for the key's algorithm.
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

/// Makes a `Grip-Sig` token for `iss`, valid until `now_unix + ttl_secs`,
/// with the algorithm `key` calls for ([`Signer`]).
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
    Signer::new(key)?.sign(iss, now_unix, ttl_secs)
}

/// Checks a `Grip-Sig` token's signature and expiry at `now_unix` with `key`
/// ([`Verifier`]). A token is expired from its `exp` second on. The issuer is
/// returned, not checked.
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
    Verifier::new(key)?.verify(token, now_unix)
}

#[cfg(test)]
mod tests;
