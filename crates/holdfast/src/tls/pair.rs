//! A certificate and its key from two files (`--tls-cert`/`--tls-key`,
//! `--publish-tls-cert`/`--publish-tls-key`), read again on reload.
//!
//! The pair in force is swapped whole, so a handshake always sees one certificate with its own
//! key. [`PairFiles::reload`] keeps the pair in force when the files cannot be used (unreadable,
//! not PEM, a key that is not the certificate's, or a half-written replacement), and says so
//! with the file named; open connections keep the session they have either way.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::{load_key_pair, read, TlsError};

/// A certificate file, its key file, and the pair read from them last.
#[derive(Debug)]
pub struct PairFiles {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    /// The pair in force, and a digest of the two files it was read from.
    current: RwLock<(Arc<CertifiedKey>, Digest)>,
}

/// SHA-256 over the certificate file's length and bytes, then the key file's bytes.
type Digest = [u8; 32];

/// What [`PairFiles::reload`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// The files hold a new pair, now in force.
    Changed,
    /// The files are as they were.
    Unchanged,
}

impl PairFiles {
    /// Reads the pair; an error names the file that cannot be used.
    pub fn load(cert: &Path, key: &Path, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let digest = digest(cert, key)?;
        let pair = load_key_pair(cert, key, &provider)?;
        Ok(PairFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider,
            current: RwLock::new((Arc::new(pair), digest)),
        })
    }

    /// The certificate file and the key file.
    pub fn paths(&self) -> [&Path; 2] {
        [&self.cert, &self.key]
    }

    /// The pair in force.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    /// Reads the files again. A pair that cannot be used is the error, and the one in force
    /// stays.
    pub fn reload(&self) -> Result<Reloaded, TlsError> {
        let digest = digest(&self.cert, &self.key)?;
        if self.current.read().unwrap_or_else(|e| e.into_inner()).1 == digest {
            return Ok(Reloaded::Unchanged);
        }
        let pair = load_key_pair(&self.cert, &self.key, &self.provider)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (Arc::new(pair), digest);
        Ok(Reloaded::Changed)
    }
}

impl ResolvesServerCert for PairFiles {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn digest(cert: &Path, key: &Path) -> Result<Digest, TlsError> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let cert = read(cert)?;
    ctx.update(&(cert.len() as u64).to_be_bytes());
    ctx.update(&cert);
    ctx.update(&read(key)?);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(out)
}
