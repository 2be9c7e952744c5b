//! TLS termination for the client listeners, and for the publish listener when it has a
//! certificate: the certificate files, read into what rustls serves, and the server
//! configuration every TLS connection shares.
//!
//! A listener presents, by the name the client asked for (SNI), a certificate of the
//! `--tls-certs` folder ([`dir`]: the name's own, its wildcard, the listener's
//! `default_<port>`), else the `--tls-cert` one. The folder is read again when it changes
//! ([`dir::CertDir::reload`]), and so are the `--tls-cert`/`--tls-key` files and the publish
//! listener's ([`pair::PairFiles::reload`]); a handshake reads the current state once.
//!
//! rustls runs on the `ring` crypto provider, the one the origin client already uses
//! ([`crate::origin`]): one provider in the binary, and it builds with a Rust toolchain alone
//! (pure Rust plus assembly), where `aws-lc-rs` needs cmake and a C compiler. ALPN offers `h2`
//! and `http/1.1`; hyper's auto builder then tells them apart by the first bytes, as on a plain
//! listener.
//!
//! Every error names the file it is about, so a bad certificate or key stops Holdfast at start
//! with the file in the message.

pub mod dir;
pub mod pair;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;
use dir::CertDir;
use pair::PairFiles;

/// A certificate or key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}", path = path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not PEM, or a PEM block in it is damaged.
    #[error("{path}: not a valid PEM file: {message}", path = path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM reader said.
        message: String,
    },
    /// The certificate file has no `CERTIFICATE` block.
    #[error("{path}: no PEM certificate in the file", path = path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file has no private key block.
    #[error(
        "{path}: no PEM private key in the file (expected PKCS#8, PKCS#1 RSA or SEC1 EC)",
        path = path.display()
    )]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The key is of a type or size rustls cannot sign with.
    #[error("{path}: unsupported private key: {source}", path = path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// Why rustls refused it.
        source: rustls::Error,
    },
    /// The first certificate does not parse, or is not for the key.
    #[error("{cert}: does not match the key in {key}: {source}", cert = cert.display(), key = key.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls found.
        source: rustls::Error,
    },
    /// rustls refused the protocol settings (not expected with the provider's defaults).
    #[error("TLS settings refused: {0}")]
    Settings(rustls::Error),
}

/// A TLS client configuration (ring) that checks servers against the system's root
/// certificates; a root that cannot be read is logged and left out. Origins, outbound
/// requests and presence POSTs use it.
pub fn client_config() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for err in &native.errors {
        tracing::warn!(error = %err, "could not load a system TLS root certificate");
    }
    roots.add_parsable_certificates(native.certs);
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// The crypto provider of every TLS listener.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM certificate chain and its private key, and checks that they belong together.
pub fn load_key_pair(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = read_chain(cert)?;
    let key_der = read_key(key)?;
    let signer = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|source| TlsError::Key {
            path: key.to_path_buf(),
            source,
        })?;
    let pair = CertifiedKey::new(chain, signer);
    match pair.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(pair)
        }
        Err(source) => Err(TlsError::Mismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            source,
        }),
    }
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_path_buf(),
        },
        e => TlsError::Pem {
            path: path.to_path_buf(),
            message: e.to_string(),
        },
    })
}

/// The rustls server settings of a listener that presents what `resolver` picks.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Settings)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What the TLS client listeners present: the certificates of a folder, picked by name, and
/// one certificate for every other name.
#[derive(Debug)]
pub struct Certificates {
    dir: Option<CertDir>,
    single: Option<PairFiles>,
    provider: Arc<CryptoProvider>,
}

impl Certificates {
    /// Reads the files `[tls]` names; `None` when it names none. The first bad file is an
    /// error.
    pub fn load(config: &TlsConfig) -> Result<Option<Arc<Certificates>>, TlsError> {
        let provider = provider();
        let single = match (&config.cert, &config.key) {
            (Some(cert), Some(key)) => Some(PairFiles::load(cert, key, provider.clone())?),
            _ => None,
        };
        let dir = match &config.certs {
            Some(path) => Some(CertDir::load(path, provider.clone())?),
            None => None,
        };
        if single.is_none() && dir.is_none() {
            return Ok(None);
        }
        Ok(Some(Arc::new(Certificates {
            dir,
            single,
            provider,
        })))
    }

    /// The certificate folder, when there is one.
    pub fn dir(&self) -> Option<&CertDir> {
        self.dir.as_ref()
    }

    /// The `--tls-cert`/`--tls-key` pair, when there is one.
    pub fn single(&self) -> Option<&PairFiles> {
        self.single.as_ref()
    }

    /// The pair for a handshake on listener `port` that asked for `server_name`.
    fn pick(&self, server_name: Option<&str>, port: u16) -> Option<Arc<CertifiedKey>> {
        let from_dir = self.dir.as_ref().and_then(|d| d.pick(server_name, port));
        from_dir.or_else(|| self.single.as_ref().map(PairFiles::current))
    }

    /// The acceptor of the TLS listener on `port`.
    pub fn acceptor(self: &Arc<Self>, port: u16) -> Result<TlsAcceptor, TlsError> {
        let resolver = Arc::new(Resolver {
            certs: self.clone(),
            port,
        });
        Ok(TlsAcceptor::from(server_config(
            resolver,
            self.provider.clone(),
        )?))
    }
}

/// The acceptor of the publish listener, with the files of its certificate (for reload), when
/// `[tls]` gives it one.
pub fn publish_acceptor(
    config: &TlsConfig,
) -> Result<Option<(TlsAcceptor, Arc<PairFiles>)>, TlsError> {
    let (Some(cert), Some(key)) = (&config.publish_cert, &config.publish_key) else {
        return Ok(None);
    };
    let provider = provider();
    let pair = Arc::new(PairFiles::load(cert, key, provider.clone())?);
    let acceptor = TlsAcceptor::from(server_config(pair.clone(), provider)?);
    Ok(Some((acceptor, pair)))
}

/// Picks a listener's certificate for each handshake.
#[derive(Debug)]
struct Resolver {
    certs: Arc<Certificates>,
    port: u16,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let pair = self.certs.pick(hello.server_name(), self.port);
        if pair.is_none() {
            tracing::debug!(
                server_name = hello.server_name(),
                port = self.port,
                "no certificate for this name; handshake refused"
            );
        }
        pair
    }
}
