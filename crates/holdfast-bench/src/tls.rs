//! TLS client settings for the load tools: subscribers that speak HTTPS (`fanout --tls`) and
//! the handshake-rate client ([`crate::handshakes`]).
//!
//! Every connection makes a full handshake (no session resumption), as thousands of distinct
//! clients would. With `--tls-ca` the server's certificate is checked against that CA; without
//! it, it is not checked at all, which leaves the client's CPU to the server under test (two
//! ECDSA verifications per handshake would cost the client more than the server's one
//! signature). The cipher suites are offered in browsers' order, AES-128-GCM first (rustls's
//! own order puts AES-256-GCM with SHA-384 first, which costs both sides more per handshake).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The client settings: trust `ca` (a PEM file of CA certificates), or check nothing.
pub fn connector(ca: Option<&Path>) -> anyhow::Result<TlsConnector> {
    Ok(TlsConnector::from(client_config(ca)?))
}

/// The settings of [`connector`], for a client without tokio.
pub fn client_config(ca: Option<&Path>) -> anyhow::Result<Arc<ClientConfig>> {
    let mut provider = rustls::crypto::ring::default_provider();
    let first = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256.suite();
    provider.cipher_suites.sort_by_key(|s| s.suite() != first);
    let provider = Arc::new(provider);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let mut config = match ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("{}: cannot read", path.display()))?
            {
                let cert = cert.with_context(|| format!("{}: bad PEM", path.display()))?;
                roots
                    .add(cert)
                    .with_context(|| format!("{}: not a CA certificate", path.display()))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(provider)))
            .with_no_client_auth(),
    };
    config.resumption = Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Makes the TLS handshake on `tcp`, to the server at `tcp`'s peer address (sent no SNI: it is
/// an IP address).
pub async fn handshake(
    connector: &TlsConnector,
    tcp: TcpStream,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = ServerName::IpAddress(tcp.peer_addr()?.ip().into());
    connector.connect(name, tcp).await
}

/// Accepts any certificate and any handshake signature.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
