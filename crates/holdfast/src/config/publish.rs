//! `[publish]`: who may use the publish API, and how much one publish request may carry.
//!
//! Keys are written as `sig_key` is (`grip::sig::SigKey`): a plain secret, `base64:<data>`, or
//! `file:<path>`. A key file holds either a hex secret (HS256, as Pushpin reads `sig_key` files)
//! or a PEM public key: a P-256 key verifies ES256 tokens, an RSA key RS256 tokens (a PEM key may
//! also be given inline or as `base64:`, as `sig_key` may). The keys are
//! read and checked here, when the configuration is validated, so a bad key stops Holdfast at
//! start with the field named; the publish API turns the same [`JwtKey`]s into its verifier.
//! Error messages never include key material, tokens or passwords.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey};
use serde::{Deserialize, Serialize};

/// `[publish]`: authentication and input limits of the publish API (`/publish`, `/recover`,
/// `/metrics`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PublishConfig {
    /// Keys a JWT in `Authorization: Bearer` may be signed with, in `sig_key`'s forms: a secret
    /// (HS256), or a PEM public key (P-256: ES256, RSA: RS256) in a `file:<path>`, inline or as
    /// `base64:`. Several keys may be listed so that keys can be rotated. Relative paths are
    /// relative to the config file's folder. `--publish-jwt-key` (repeatable) replaces the list.
    pub jwt_key: Vec<String>,
    /// The `iss` a JWT must carry; unset, any issuer (or none) is accepted. `--publish-jwt-iss`.
    pub jwt_iss: Option<String>,
    /// Seconds of clock difference allowed when checking a JWT's `exp` and `nbf`. Default 60.
    pub jwt_leeway_secs: u64,
    /// Static tokens accepted as `Authorization: Bearer <token>` (what GRIP libraries send for
    /// a `key` without an `iss`). `--publish-token` (repeatable) replaces the list.
    pub token: Vec<String>,
    /// `USER:PASS` pairs accepted as HTTP Basic credentials. `--publish-basic` (repeatable)
    /// replaces the list.
    pub basic: Vec<String>,
    /// Let the publish API listen on a non-loopback address with no authentication configured.
    /// Default false: such a configuration refuses to start. It does not turn configured
    /// authentication off. `--publish-allow-unauthenticated`.
    pub allow_unauthenticated: bool,
    /// Items one publish request may carry; more get `413`. Default 1000.
    pub max_items: usize,
    /// How deep arrays and objects may nest in a publish request body (`{"items":[{}]}` is 3);
    /// deeper gets `400`. Default 32, at least 7 (a standard item with `http-response` headers
    /// given as pairs nests 7 deep).
    pub max_json_depth: usize,
    /// Live status streams (`GET /status/events`, what an open status page reads) served at
    /// once; one more gets `503`. 0 refuses them all. Default 4.
    pub max_status_streams: usize,
    /// The largest request head (request line and headers, in bytes) the publish API reads;
    /// unset, `limits.max_header_size`, as for clients. At least 8192. Pushpin's
    /// `push_in_http_max_headers_size`.
    pub max_header_size: Option<usize>,
}

impl Default for PublishConfig {
    fn default() -> Self {
        Self {
            jwt_key: Vec::new(),
            jwt_iss: None,
            jwt_leeway_secs: 60,
            token: Vec::new(),
            basic: Vec::new(),
            allow_unauthenticated: false,
            max_items: 1000,
            max_json_depth: 32,
            max_status_streams: 4,
            max_header_size: None,
        }
    }
}

/// The smallest `max_json_depth` that still lets every standard publish item through.
pub const MIN_JSON_DEPTH: usize = 7;

/// A key a publish JWT may be signed with, read and checked.
#[derive(Clone)]
pub struct JwtKey {
    /// The one algorithm tokens signed with this key may use.
    pub algorithm: Algorithm,
    /// The key, as `jsonwebtoken` verifies with it.
    pub key: DecodingKey,
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JwtKey({:?})", self.algorithm)
    }
}

/// The `--publish-*` flags; each list, when given, replaces the file's.
#[derive(Debug, Clone, Default)]
pub struct PublishOverrides {
    /// `--publish-jwt-key`, repeatable.
    pub jwt_key: Vec<String>,
    /// `--publish-jwt-iss`.
    pub jwt_iss: Option<String>,
    /// `--publish-token`, repeatable.
    pub token: Vec<String>,
    /// `--publish-basic`, repeatable.
    pub basic: Vec<String>,
    /// `--publish-allow-unauthenticated`: sets `allow_unauthenticated` when given.
    pub allow_unauthenticated: bool,
}

impl PublishConfig {
    /// Applies the command-line flags on top of the file's values.
    pub(super) fn apply(&mut self, flags: PublishOverrides) {
        if !flags.jwt_key.is_empty() {
            self.jwt_key = flags.jwt_key;
        }
        if flags.jwt_iss.is_some() {
            self.jwt_iss = flags.jwt_iss;
        }
        if !flags.token.is_empty() {
            self.token = flags.token;
        }
        if !flags.basic.is_empty() {
            self.basic = flags.basic;
        }
        if flags.allow_unauthenticated {
            self.allow_unauthenticated = true;
        }
    }

    /// Whether any scheme is configured; without one the publish API accepts everyone.
    pub fn is_authenticated(&self) -> bool {
        !(self.jwt_key.is_empty() && self.token.is_empty() && self.basic.is_empty())
    }

    /// Reads every `jwt_key`. Errors name the key by its place in the list (and a key file by
    /// its path), never by its value.
    pub fn jwt_keys(&self) -> Result<Vec<JwtKey>, String> {
        self.jwt_key
            .iter()
            .enumerate()
            .map(|(i, text)| JwtKey::load(text).map_err(|e| format!("key {}: {e}", i + 1)))
            .collect()
    }

    /// Checks the values: the publish API is not open to the network by accident, every key
    /// loads, every `basic` is `USER:PASS`, tokens are usable in a header, and the limits are in
    /// range. `listen` is `server.publish_listen`; `open_by_pushpin` says a pushpin.conf put it
    /// there, which allows it without authentication, as `allow_unauthenticated` does. Returns
    /// the field and the problem.
    pub(super) fn check(
        &self,
        listen: SocketAddr,
        open_by_pushpin: bool,
    ) -> Result<(), (&'static str, String)> {
        let allowed = self.allow_unauthenticated || open_by_pushpin;
        if !listen.ip().is_loopback() && !self.is_authenticated() && !allowed {
            return Err((
                "server.publish_listen",
                format!(
                    "{listen} is not a loopback address and the publish API has no \
                     authentication, so anyone who can reach it could publish: configure \
                     --publish-jwt-key, --publish-token or --publish-basic ([publish] jwt_key, \
                     token, basic), or pass --publish-allow-unauthenticated ([publish] \
                     allow_unauthenticated = true) to serve it without authentication"
                ),
            ));
        }
        self.jwt_keys().map_err(|e| ("publish.jwt_key", e))?;
        if self.jwt_iss.is_some() && self.jwt_key.is_empty() {
            return Err((
                "publish.jwt_iss",
                "an issuer is set but no publish.jwt_key is configured".to_string(),
            ));
        }
        for (i, token) in self.token.iter().enumerate() {
            if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err((
                    "publish.token",
                    format!(
                        "token {} must be printable ASCII with no spaces, or no client could send it",
                        i + 1
                    ),
                ));
            }
        }
        for (i, pair) in self.basic.iter().enumerate() {
            match pair.split_once(':') {
                Some((user, _)) if !user.is_empty() => {}
                _ => {
                    return Err((
                        "publish.basic",
                        format!("entry {} is not USER:PASS with a non-empty user", i + 1),
                    ))
                }
            }
        }
        if self.max_items == 0 {
            return Err(("publish.max_items", "must be at least 1".to_string()));
        }
        if self.max_json_depth < MIN_JSON_DEPTH {
            return Err((
                "publish.max_json_depth",
                format!(
                    "{} is below the minimum of {MIN_JSON_DEPTH}",
                    self.max_json_depth
                ),
            ));
        }
        Ok(())
    }

    /// Resolves relative `file:` keys against `dir`, the config file's folder.
    pub(super) fn resolve_paths(&mut self, dir: &Path) {
        for key in &mut self.jwt_key {
            *key = super::keys::resolve(key, dir);
        }
    }
}

impl JwtKey {
    /// Reads a key in `sig_key`'s forms ([`super::keys`]): a secret (HS256), or a PEM public
    /// key — inline, `base64:` or in a `file:` — EC P-256 (ES256) or RSA (RS256).
    pub fn load(text: &str) -> Result<JwtKey, String> {
        let verifier = super::keys::verifier(text)?;
        Ok(JwtKey {
            algorithm: verifier.algorithm(),
            key: verifier.decoding_key().clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use jsonwebtoken::Algorithm;

    use super::JwtKey;
    use crate::config::Config;

    fn data(name: &str) -> String {
        format!("file:{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    fn validate(text: &str) -> Result<Config, String> {
        let mut config = Config::parse(text, Path::new("c.toml")).map_err(|e| e.to_string())?;
        config.source = crate::config::Source::Toml(text.to_string());
        config
            .validate(Path::new("c.toml"))
            .map(|()| config)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn an_open_publish_api_must_stay_on_loopback_unless_allowed() {
        let open = "[server]\npublish_listen = \"0.0.0.0:5561\"\n";
        let err = validate(open).unwrap_err();
        assert!(
            err.starts_with("c.toml:2: server.publish_listen: 0.0.0.0:5561"),
            "{err}"
        );
        assert!(err.contains("--publish-allow-unauthenticated"), "{err}");
        validate(&format!("{open}[publish]\nallow_unauthenticated = true\n")).unwrap();
        validate(&format!("{open}[publish]\ntoken = [\"t\"]\n")).unwrap();
        validate(&format!("{open}[publish]\nbasic = [\"u:p\"]\n")).unwrap();
        validate(&format!("{open}[publish]\njwt_key = [\"k\"]\n")).unwrap();
        for loopback in ["127.0.0.1:1", "127.0.0.2:1", "[::1]:1"] {
            validate(&format!("[server]\npublish_listen = \"{loopback}\"\n")).unwrap();
        }
        let err = validate("[server]\npublish_listen = \"[::]:5561\"\n").unwrap_err();
        assert!(err.contains("--publish-allow-unauthenticated"), "{err}");
    }

    #[test]
    fn keys_in_every_form_get_their_algorithm() {
        let dir = tempfile::tempdir().unwrap();
        let hex = dir.path().join("hex");
        std::fs::write(&hex, "6b6579\n").unwrap();
        let cases = [
            ("plain".to_string(), Algorithm::HS256),
            ("base64:a2V5".to_string(), Algorithm::HS256),
            (format!("file:{}", hex.display()), Algorithm::HS256),
            (data("publish-es256-public.pem"), Algorithm::ES256),
            (data("publish-rs256-public.pem"), Algorithm::RS256),
        ];
        for (text, alg) in cases {
            assert_eq!(JwtKey::load(&text).unwrap().algorithm, alg, "{text}");
        }
    }

    #[test]
    fn bad_keys_and_credentials_are_named_without_their_values() {
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("odd-hex");
        std::fs::write(&odd, "abc").unwrap();
        let missing = dir.path().join("missing");
        // (the [publish] lines, what the error must say, a secret it must not show)
        let cases = [
            (
                format!("jwt_key = [\"{}\"]", data("publish-p384-public.pem")),
                "not on P-256".to_string(),
                None,
            ),
            (
                format!("jwt_key = [\"{}\"]", data("publish-es256-private.pem")),
                "private key".to_string(),
                None,
            ),
            (
                format!("jwt_key = [\"k\", \"file:{}\"]", missing.display()),
                format!(
                    "publish.jwt_key: key 2: cannot read key file {}",
                    missing.display()
                ),
                None,
            ),
            (
                format!("jwt_key = [\"file:{}\"]", odd.display()),
                "odd number of digits".to_string(),
                Some("abc"),
            ),
            (
                "jwt_key = [\"base64:!!secret!!\"]".to_string(),
                "publish.jwt_key: key 1: the key starts with 'base64:'".to_string(),
                Some("secret"),
            ),
            (
                "jwt_key = [\"\"]".to_string(),
                "the key is empty".to_string(),
                None,
            ),
            (
                "basic = [\"no-colon-password\"]".to_string(),
                "c.toml:3: publish.basic: entry 1 is not USER:PASS".to_string(),
                Some("no-colon-password"),
            ),
            (
                "token = [\"has space\"]".to_string(),
                "publish.token: token 1 must be printable ASCII".to_string(),
                Some("has space"),
            ),
            (
                "jwt_iss = \"realm\"".to_string(),
                "publish.jwt_iss: an issuer is set but no publish.jwt_key".to_string(),
                None,
            ),
            (
                "max_items = 0".to_string(),
                "publish.max_items: must be at least 1".to_string(),
                None,
            ),
            (
                "max_json_depth = 6".to_string(),
                "publish.max_json_depth: 6 is below the minimum of 7".to_string(),
                None,
            ),
        ];
        for (lines, want, secret) in cases {
            let text = format!("[server]\n[publish]\n{lines}\n");
            let err = validate(&text).unwrap_err();
            assert!(err.contains(&want), "{lines}: {err}");
            if let Some(secret) = secret {
                assert!(!err.contains(secret), "{lines}: {err} shows the secret");
            }
        }
    }

    #[test]
    fn relative_key_files_are_found_beside_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k.hex"), "6b6579").unwrap();
        let path = dir.path().join("holdfast.toml");
        std::fs::write(&path, "[publish]\njwt_key = [\"file:k.hex\", \"plain\"]\n").unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(
            config.publish.jwt_key,
            [
                format!("file:{}", dir.path().join("k.hex").display()),
                "plain".into()
            ]
        );
        config.validate(&path).unwrap();
    }
}
