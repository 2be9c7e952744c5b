//! TLS client settings for the load tools: subscribers that speak HTTPS (`fanout --tls`, over
//! HTTP/1.1 or, with `--http2`, HTTP/2) and the handshake-rate client ([`crate::handshakes`]).
//!
//! ALPN offers one protocol, [`Alpn`]: `http/1.1`, or `h2` alone for HTTP/2 subscribers, which
//! then check with [`selected_h2`] that the server chose it (a server that answers without ALPN
//! or with `http/1.1` would otherwise meet HTTP/2 frames it cannot read).
//!
//! Every connection makes a full handshake (no session resumption), as thousands of distinct
//! clients would. With `--tls-ca` the server's certificate is checked against that CA; without
//! it, it is not checked at all, which leaves the client's CPU to the server under test (two
//! ECDSA verifications per handshake would cost the client more than the server's one
//! signature). The cipher suites are offered in browsers' order, AES-128-GCM first (rustls's
//! own order puts AES-256-GCM with SHA-384 first, which costs both sides more per handshake).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{AlertDescription, ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The application protocol a client offers in ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// `http/1.1`.
    Http1,
    /// `h2`: HTTP/2 over TLS.
    H2,
}

impl Alpn {
    fn id(self) -> &'static [u8] {
        match self {
            Alpn::Http1 => b"http/1.1",
            Alpn::H2 => b"h2",
        }
    }
}

/// The client settings: trust `ca` (a PEM file of CA certificates), or check nothing; offer
/// `alpn`.
pub fn connector(ca: Option<&Path>, alpn: Alpn) -> anyhow::Result<TlsConnector> {
    Ok(TlsConnector::from(client_config(ca, alpn)?))
}

/// The settings of [`connector`], for a client without tokio.
pub fn client_config(ca: Option<&Path>, alpn: Alpn) -> anyhow::Result<Arc<ClientConfig>> {
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
    config.alpn_protocols = vec![alpn.id().to_vec()];
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

/// Checks that the server selected `h2` in the handshake of `tls`; the error names the ALPN
/// protocol it selected instead, or says it selected none.
pub fn selected_h2(tls: &TlsStream<TcpStream>) -> Result<(), String> {
    match tls.get_ref().1.alpn_protocol() {
        Some(b"h2") => Ok(()),
        Some(other) => Err(format!(
            "the server selected ALPN {:?}, not h2: it does not serve HTTP/2 over TLS there",
            String::from_utf8_lossy(other)
        )),
        None => Err(
            "the server selected no ALPN protocol, not h2: it does not serve HTTP/2 over TLS there"
                .into(),
        ),
    }
}

/// Whether the handshake error `e` is the server refusing every protocol the client offered in
/// ALPN, and if so what to say.
pub fn alpn_refusal(e: &std::io::Error) -> Option<String> {
    let e = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    match e {
        rustls::Error::AlertReceived(AlertDescription::NoApplicationProtocol)
        | rustls::Error::NoApplicationProtocol => Some(format!(
            "the server refused ALPN h2 ({e}): it does not serve HTTP/2 over TLS there"
        )),
        _ => None,
    }
}

/// Makes one TLS handshake to `addr` offering ALPN `h2` (trusting `ca` as [`connector`] does)
/// and checks that the server selected it, within `within`: HTTP/2 subscribers are refused
/// before any starts if it does not.
pub async fn check_h2(addr: SocketAddr, ca: Option<&Path>, within: Duration) -> anyhow::Result<()> {
    let connector = connector(ca, Alpn::H2)?;
    let attempt = async {
        let tcp = TcpStream::connect(addr).await.context("connect")?;
        let tls = handshake(&connector, tcp)
            .await
            .map_err(|e| match alpn_refusal(&e) {
                Some(why) => anyhow::anyhow!("{why}"),
                None => anyhow::Error::new(e).context("TLS handshake"),
            })?;
        selected_h2(&tls).map_err(anyhow::Error::msg)
    };
    tokio::time::timeout(within, attempt)
        .await
        .with_context(|| format!("no TLS handshake within {} s", within.as_secs()))?
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
