//! `holdfast-bench fanout --http2 --tls` run as a user runs it: the binary, its worker
//! processes, a real Holdfast on a `--tls-listen` listener in this process and a GRIP origin
//! written here; and against TLS servers that do not select ALPN `h2`, which must be refused by
//! name instead of leaving the run waiting.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use holdfast::config::routes::RouteTable;
use holdfast::{Config, Server};

/// Longest a whole `fanout` run may take here; it needs a few seconds.
const RUN_TIMEOUT: Duration = Duration::from_secs(90);

/// A CA and a server certificate it signs for 127.0.0.1, as files in `dir`, and the server's
/// certificate and key for a server written here.
struct Certs {
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

fn certs(dir: &Path) -> Certs {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let files = Certs {
        ca_file: dir.join("ca.crt"),
        cert_file: dir.join("server.crt"),
        key_file: dir.join("server.key"),
        cert: cert.der().clone(),
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
    };
    std::fs::write(&files.ca_file, ca_pem).unwrap();
    std::fs::write(&files.cert_file, cert.pem()).unwrap();
    std::fs::write(&files.key_file, key.serialize_pem()).unwrap();
    files
}

/// A GRIP origin holding every request as an SSE stream on channel `bench`, as
/// `holdfast-bench origin --grip stream` does.
async fn stream_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let service = service_fn(|_req: Request<hyper::body::Incoming>| async {
                let response = Response::builder()
                    .header("Grip-Hold", "stream")
                    .header("Grip-Channel", "bench")
                    .header("Content-Type", "text/event-stream")
                    .body(Full::new(Bytes::from_static(b":ok\n\n")))
                    .unwrap();
                Ok::<_, Infallible>(response)
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service),
            );
        }
    });
    addr
}

/// Holdfast routing everything to `origin`, with a TLS listener on `certs`' certificate: its
/// TLS address and its publish address, and what stops it.
async fn holdfast_tls(
    dir: &Path,
    origin: SocketAddr,
    certs: &Certs,
) -> (SocketAddr, SocketAddr, oneshot::Sender<()>) {
    let routes = dir.join("routes");
    std::fs::write(&routes, format!("* {origin}\n")).unwrap();
    let mut config = Config::default();
    config.server.listen = vec!["127.0.0.1:0".parse().unwrap()];
    config.server.publish_listen = "127.0.0.1:0".parse().unwrap();
    config.server.routes = Some(routes.clone());
    config.tls.listen = vec!["127.0.0.1:0".parse().unwrap()];
    config.tls.cert = Some(certs.cert_file.clone());
    config.tls.key = Some(certs.key_file.clone());
    config.validate(Path::new("test")).unwrap();
    let server = Server::bind(config, RouteTable::load(&routes).unwrap())
        .await
        .unwrap();
    let (tls, publish) = (server.tls_addrs()[0], server.publish_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    (tls, publish, stop)
}

/// Runs `holdfast-bench fanout` with `args`, within [`RUN_TIMEOUT`].
async fn fanout(args: &[String]) -> Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_holdfast-bench"))
        .arg("fanout")
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(RUN_TIMEOUT, run)
        .await
        .expect("fanout finished in time")
        .expect("fanout started")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_over_tls_get_every_message() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let origin = stream_origin().await;
    let (tls, publish, _stop) = holdfast_tls(dir.path(), origin, &certs).await;
    // 25 streams over 3 connections (10, 10 and 5 streams).
    let out = fanout(&[
        format!("--proxy={tls}"),
        format!("--publish={publish}"),
        "--mode=sse".into(),
        "--subscribers=25".into(),
        "--messages=3".into(),
        "--interval-ms=100".into(),
        "--workers=1".into(),
        "--http2".into(),
        "--streams-per-connection=10".into(),
        "--tls".into(),
        format!("--tls-ca={}", certs.ca_file.display()),
        "--settle-ms=200".into(),
        "--drain-ms=10000".into(),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let report: Value = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON report in:\n{stdout}\n{stderr}"));
    assert_eq!(report["mode"], "sse-h2x10-tls", "{report}");
    assert_eq!(report["subscribed"], 25, "{report}");
    assert_eq!(report["delivered"], 75, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["duplicates"], 0, "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
}

/// A TLS server on `certs`' certificate that selects from `alpn` (none at all when empty) and
/// then holds each connection without a word.
async fn tls_server(certs: &Certs, alpn: &[&[u8]]) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![certs.cert.clone()],
            PrivateKeyDer::Pkcs8(certs.key.clone_key()),
        )
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    // Held until the client goes away.
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = tokio::io::AsyncReadExt::read(&mut tls, &mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_over_tls_is_refused_by_name_when_the_server_does_not_select_h2() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let cases: [(&[&[u8]], &str); 2] = [
        // rustls answers an offer it has nothing in common with by an alert.
        (&[b"http/1.1"], "refused ALPN h2"),
        // A server without ALPN completes the handshake and selects nothing.
        (&[], "selected no ALPN protocol, not h2"),
    ];
    for (alpn, needle) in cases {
        let server = tls_server(&certs, alpn).await;
        let alpn: Vec<_> = alpn.iter().map(|p| String::from_utf8_lossy(p)).collect();
        let out = fanout(&[
            format!("--proxy={server}"),
            // Never reached: the run is refused before anything is published.
            "--publish=127.0.0.1:1".into(),
            "--mode=sse".into(),
            "--subscribers=4".into(),
            "--workers=1".into(),
            "--http2".into(),
            "--tls".into(),
            format!("--tls-ca={}", certs.ca_file.display()),
        ])
        .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{alpn:?}: {stderr}");
        assert!(stderr.contains(needle), "{alpn:?}: {stderr}");
        assert!(
            stderr.contains(&format!("--http2 --tls: proxy {server}")),
            "{alpn:?}: {stderr}"
        );
    }
}
