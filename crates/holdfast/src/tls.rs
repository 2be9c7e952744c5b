//! TLS termination for the client listeners: the certificate files, read into what rustls
//! serves, and the server configuration every TLS connection shares.
//!
//! rustls runs on the `ring` crypto provider, the one the origin client already uses
//! ([`crate::origin`]): one provider in the binary, and it builds with a Rust toolchain alone
//! (pure Rust plus assembly), where `aws-lc-rs` needs cmake and a C compiler. ALPN offers `h2`
//! and `http/1.1`; hyper's auto builder then tells them apart by the first bytes, as on a plain
//! listener.
//!
//! Every error names the file it is about, so a bad certificate or key stops Holdfast at start
//! with the file in the message.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ResolvesServerCert;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

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

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
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

/// The acceptor of the TLS client listeners, or `None` when `[tls]` configures none.
pub fn client_acceptor(config: &TlsConfig) -> Result<Option<TlsAcceptor>, TlsError> {
    let (Some(cert), Some(key)) = (&config.cert, &config.key) else {
        return Ok(None);
    };
    let provider = provider();
    let pair = load_key_pair(cert, key, &provider)?;
    let resolver = Arc::new(SingleCertAndKey::from(pair));
    Ok(Some(TlsAcceptor::from(server_config(resolver, provider)?)))
}
