//! `[tls]`: the client listeners that terminate TLS, and the certificates they present.
//!
//! Only paths are checked here (a listener needs a certificate and its key, and the other way
//! round); the files themselves are read by [`crate::tls`], which names the file in every error.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `[tls]`: TLS termination on client listeners (HTTPS and wss).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Client listeners that speak TLS, served like `server.listen` otherwise (same routes,
    /// connection cap and timeouts). Pushpin's `https_ports`. `--tls-listen` (repeatable)
    /// replaces the list. Default: none.
    pub listen: Vec<SocketAddr>,
    /// PEM file with the certificate, followed by its chain. Relative paths are relative to the
    /// config file's folder. `--tls-cert`.
    pub cert: Option<PathBuf>,
    /// PEM file with the certificate's private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC); RSA,
    /// ECDSA (P-256, P-384) and Ed25519 keys. `--tls-key`.
    pub key: Option<PathBuf>,
    /// A folder laid out as Pushpin's `runner/certs/`: `<servername>.crt` and `.key`, wildcard
    /// `_.example.com.crt`, and `default_<port>.crt` for a listener's other connections. The
    /// client's server name (SNI) picks the certificate; `cert` serves the names none fits.
    /// Reloaded when it changes. `--tls-certs`.
    pub certs: Option<PathBuf>,
    /// PEM certificate (with its chain) for the publish API: when set with `publish_key`, the
    /// publish listener (`server.publish_listen`) speaks HTTPS only. `--publish-tls-cert`.
    pub publish_cert: Option<PathBuf>,
    /// PEM private key of `publish_cert`. `--publish-tls-key`.
    pub publish_key: Option<PathBuf>,
}

/// The `--tls-*` command-line flags.
#[derive(Debug, Clone, Default)]
pub struct TlsOverrides {
    /// `--tls-listen`, repeatable; replaces `tls.listen` when given.
    pub listen: Vec<SocketAddr>,
    /// `--tls-cert`.
    pub cert: Option<PathBuf>,
    /// `--tls-key`.
    pub key: Option<PathBuf>,
    /// `--tls-certs`.
    pub certs: Option<PathBuf>,
    /// `--publish-tls-cert`.
    pub publish_cert: Option<PathBuf>,
    /// `--publish-tls-key`.
    pub publish_key: Option<PathBuf>,
}

impl TlsConfig {
    /// Applies the `--tls-*` flags.
    pub fn apply(&mut self, o: TlsOverrides) {
        if !o.listen.is_empty() {
            self.listen = o.listen;
        }
        if o.cert.is_some() {
            self.cert = o.cert;
        }
        if o.key.is_some() {
            self.key = o.key;
        }
        if o.certs.is_some() {
            self.certs = o.certs;
        }
        if o.publish_cert.is_some() {
            self.publish_cert = o.publish_cert;
        }
        if o.publish_key.is_some() {
            self.publish_key = o.publish_key;
        }
    }

    /// Resolves relative file paths against `dir`, the config file's folder.
    pub fn resolve_paths(&mut self, dir: &Path) {
        let paths = [
            &mut self.cert,
            &mut self.key,
            &mut self.certs,
            &mut self.publish_cert,
            &mut self.publish_key,
        ];
        for path in paths.into_iter().flatten() {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        }
    }

    /// The first problem, as `(field, message)`.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        match (&self.cert, &self.key) {
            (Some(_), None) => return Err(("tls.key", "tls.cert is set without its key".into())),
            (None, Some(_)) => {
                return Err(("tls.cert", "tls.key is set without its certificate".into()))
            }
            _ => {}
        }
        match (&self.publish_cert, &self.publish_key) {
            (Some(_), None) => {
                return Err((
                    "tls.publish_key",
                    "tls.publish_cert is set without its key".into(),
                ))
            }
            (None, Some(_)) => {
                return Err((
                    "tls.publish_cert",
                    "tls.publish_key is set without its certificate".into(),
                ))
            }
            _ => {}
        }
        let has_certs = self.cert.is_some() || self.certs.is_some();
        if !self.listen.is_empty() && !has_certs {
            return Err((
                "tls.listen",
                "a TLS listener needs certificates: set tls.cert and tls.key, or tls.certs".into(),
            ));
        }
        if self.listen.is_empty() && has_certs {
            return Err((
                "tls.listen",
                "certificates are set but no TLS listener (tls.listen)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_and_files_go_together() {
        let addr: SocketAddr = "127.0.0.1:8443".parse().unwrap();
        let cases = [
            (vec![addr], Some("c"), None, None, Some("tls.key")),
            (vec![addr], None, Some("k"), None, Some("tls.cert")),
            (vec![addr], None, Some("k"), Some("d"), Some("tls.cert")),
            (vec![addr], None, None, None, Some("tls.listen")),
            (vec![], Some("c"), Some("k"), None, Some("tls.listen")),
            (vec![], None, None, Some("d"), Some("tls.listen")),
            (vec![addr], Some("c"), Some("k"), None, None),
            (vec![addr], None, None, Some("d"), None),
            (vec![addr], Some("c"), Some("k"), Some("d"), None),
            (vec![], None, None, None, None),
        ];
        for (listen, cert, key, certs, want) in cases {
            let c = TlsConfig {
                listen,
                cert: cert.map(PathBuf::from),
                key: key.map(PathBuf::from),
                certs: certs.map(PathBuf::from),
                ..TlsConfig::default()
            };
            assert_eq!(c.check().err().map(|(f, _)| f), want, "{c:?}");
        }
        let publish = [
            (Some("c"), None, Some("tls.publish_key")),
            (None, Some("k"), Some("tls.publish_cert")),
            (Some("c"), Some("k"), None),
        ];
        for (cert, key, want) in publish {
            let c = TlsConfig {
                publish_cert: cert.map(PathBuf::from),
                publish_key: key.map(PathBuf::from),
                ..TlsConfig::default()
            };
            assert_eq!(c.check().err().map(|(f, _)| f), want, "{c:?}");
        }
    }
}
