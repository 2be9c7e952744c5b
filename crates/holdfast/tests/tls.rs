//! TLS termination on the client listeners: a CA made at test time signs the certificate
//! Holdfast serves, and real rustls clients verify it. Plain HTTP/1.1 and HTTP/2 (by ALPN),
//! held SSE streams and wss WebSockets all work over TLS, requests on a TLS listener are
//! routed as `ssl=yes` and reach the origin with `X-Forwarded-Proto: https`, every supported
//! key type is served, and bad certificate or key files stop the binary naming the file. With a
//! `runner/certs/`-style folder, SNI picks the certificate (name, wildcard, `default_<port>`),
//! and files replaced while running are served to new connections, a bad one never.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use support::ws::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

/// A certificate authority made for one test.
struct Ca {
    cert: rcgen::Certificate,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Holdfast test CA");
        let cert = params.self_signed(&key).unwrap();
        Ca {
            cert,
            issuer: Issuer::new(params, key),
        }
    }

    fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A leaf certificate for `names` with the key `key`, signed by this CA.
    fn leaf(&self, names: &[&str], key: &KeyPair) -> rcgen::Certificate {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, &names[0]);
        params.signed_by(key, &self.issuer).unwrap()
    }

    /// Writes a certificate for `localhost` and 127.0.0.1 (followed by the CA, as a chain) and
    /// its ECDSA P-256 key into `dir`; returns the two paths and the leaf.
    fn write_pair(&self, dir: &Path) -> (PathBuf, PathBuf, CertificateDer<'static>) {
        let key = KeyPair::generate().unwrap();
        self.write_pair_with(dir, &key, key.serialize_pem())
    }

    fn write_pair_with(
        &self,
        dir: &Path,
        key: &KeyPair,
        key_pem: String,
    ) -> (PathBuf, PathBuf, CertificateDer<'static>) {
        let leaf = self.leaf(&["localhost", "127.0.0.1"], key);
        let (cert_path, key_path) = (dir.join("server.crt"), dir.join("server.key"));
        std::fs::write(&cert_path, leaf.pem() + &self.cert.pem()).unwrap();
        std::fs::write(&key_path, key_pem).unwrap();
        (cert_path, key_path, leaf.der().clone())
    }
}

impl Ca {
    /// Writes `<stem>.crt` (a certificate for `names`, then this CA) and `<stem>.key` into `dir`,
    /// each written aside and renamed into place, the key first; returns the certificate.
    fn write_named(&self, dir: &Path, stem: &str, names: &[&str]) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let leaf = self.leaf(names, &key);
        let put = |ext: &str, text: String| {
            let aside = dir.join(format!(".{stem}.{ext}.new"));
            std::fs::write(&aside, text).unwrap();
            std::fs::rename(&aside, dir.join(format!("{stem}.{ext}"))).unwrap();
        };
        put("key", key.serialize_pem());
        put("crt", leaf.pem() + &self.cert.pem());
        leaf.der().clone()
    }
}

/// A TLS client trusting only `ca`, offering `alpn`.
fn connector(ca: &CertificateDer<'static>, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

/// Connects to `addr` over TLS as `name`, verifying against `ca`.
async fn connect_tls(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    name: &str,
    alpn: &[&[u8]],
) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(name.to_string()).unwrap();
    tokio::time::timeout(WAIT, connector(ca, alpn).connect(name, tcp))
        .await
        .expect("handshake within 10 s")
        .expect("certificate verified against the test CA")
}

/// The certificate `addr` presents to a client asking for `name`; `None` when the handshake
/// fails (no certificate for the name, or one the client does not accept for it).
async fn served(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    name: &str,
) -> Option<CertificateDer<'static>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(name.to_string()).unwrap();
    let tls = tokio::time::timeout(WAIT, connector(ca, &[]).connect(name, tcp))
        .await
        .expect("handshake ends within 10 s")
        .ok()?;
    Some(peer_leaf(&tls))
}

/// Polls until `addr` presents `want` for `name` (bounded: fails after 10 s).
async fn wait_served(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    name: &str,
    want: &CertificateDer<'static>,
) {
    let deadline = Instant::now() + WAIT;
    while served(addr, ca, name).await.as_ref() != Some(want) {
        assert!(
            Instant::now() < deadline,
            "{name}: the expected certificate not served within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A proxy whose TLS listener serves the certificate folder `dir`.
async fn certs_proxy(dir: &Path) -> Proxy {
    let dir = dir.to_path_buf();
    Proxy::start("* test\n", move |c| {
        c.tls.listen = vec!["127.0.0.1:0".parse().unwrap()];
        c.tls.certs = Some(dir);
    })
    .await
}

/// The certificate the server presented on `tls`.
fn peer_leaf(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// Sends `req` over an HTTP/1.1 connection on `tls`.
async fn send_h1(tls: TlsStream<TcpStream>, req: Request<TestBody>) -> Response<Incoming> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender.send_request(req).await.unwrap()
}

/// A GET of `path` for `localhost`.
fn get_req(path: &str) -> Request<TestBody> {
    Request::get(path)
        .header("host", "localhost")
        .body(full(""))
        .unwrap()
}

/// A proxy with `routes` and a TLS listener serving the pair in `pair`.
async fn tls_proxy(routes: &str, pair: &(PathBuf, PathBuf, CertificateDer<'static>)) -> Proxy {
    tls_proxy_with(routes, pair, |_| {}).await
}

/// [`tls_proxy`], with the rest of the configuration changed by `tweak`.
async fn tls_proxy_with(
    routes: &str,
    pair: &(PathBuf, PathBuf, CertificateDer<'static>),
    tweak: impl FnOnce(&mut holdfast::Config) + Send + 'static,
) -> Proxy {
    let (cert, key) = (pair.0.clone(), pair.1.clone());
    Proxy::start(routes, move |c| {
        c.tls.listen = vec!["127.0.0.1:0".parse().unwrap()];
        c.tls.cert = Some(cert);
        c.tls.key = Some(key);
        tweak(c);
    })
    .await
}

/// An origin that answers `from origin` and hands each request's headers to the test.
async fn recording_origin() -> (Origin, mpsc::UnboundedReceiver<http::HeaderMap>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let origin = Origin::start(move |req| {
        let _ = tx.send(req.headers().clone());
        async { Response::new(full("from origin")) }
    })
    .await;
    (origin, rx)
}

#[tokio::test]
async fn a_get_over_tls_is_routed_as_ssl_and_the_origin_sees_https() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let pair = ca.write_pair(dir.path());
    let (origin, mut seen) = recording_origin().await;
    // Only requests that arrived over TLS match the origin's route.
    let routes = format!("*,ssl=yes {}\n* test\n", origin.target());
    let proxy = tls_proxy(&routes, &pair).await;

    let tls = connect_tls(proxy.tls.unwrap(), &ca.der(), "localhost", &[b"http/1.1"]).await;
    assert_eq!(
        peer_leaf(&tls),
        pair.2,
        "the configured certificate is served"
    );
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let req = Request::get("/hello")
        .header("host", "localhost")
        .header("x-forwarded-proto", "gopher")
        .body(full(""))
        .unwrap();
    let resp = send_h1(tls, req).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(text(resp).await, "from origin");
    let headers = seen.recv().await.unwrap();
    assert_eq!(headers["x-forwarded-proto"], "https");

    // The same request in plaintext is not `ssl` and takes the other route.
    let resp = get(&proxy.url("/hello")).await;
    assert_ne!(text(resp).await, "from origin");
    assert!(seen.try_recv().is_err());
}

#[tokio::test]
async fn http2_over_tls_is_chosen_by_alpn() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let pair = ca.write_pair(dir.path());
    let (origin, mut seen) = recording_origin().await;
    let proxy = tls_proxy(&format!("* {}\n", origin.target()), &pair).await;

    let tls = connect_tls(proxy.tls.unwrap(), &ca.der(), "localhost", &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("https://localhost/two")
        .body(full(""))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.version(), Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(text(resp).await, "from origin");
    assert_eq!(seen.recv().await.unwrap()["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn a_held_sse_stream_over_tls_receives_a_publish() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let pair = ca.write_pair(dir.path());
    let origin = grip_origin(
        200,
        &[
            ("grip-hold", "stream"),
            ("grip-channel", "news"),
            ("content-type", "text/event-stream"),
        ],
        "event: open\ndata: \n\n",
    )
    .await;
    let proxy = tls_proxy(&format!("* {}\n", origin.target()), &pair).await;

    let tls = connect_tls(proxy.tls.unwrap(), &ca.der(), "localhost", &[b"http/1.1"]).await;
    let resp = send_h1(tls, get_req("/events")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    read_until(&mut body, "event: open\ndata: \n\n").await;
    proxy.wait_subscribers("news", 1).await;
    proxy
        .publish_stream("news", None, None, "data: over tls\n\n")
        .await;
    assert_eq!(
        read_until(&mut body, "data: over tls\n\n").await,
        "data: over tls\n\n"
    );
    // The stream was taken from hyper, TLS session and all, by the held-stream writer.
    assert_eq!(proxy.direct_streams(), 1);

    // Many publishes in a row, and one larger than a TLS record, arrive whole and in order,
    // whether the hub or the writer made their records.
    let big = format!("data: {}\n\n", "x".repeat(100_000));
    let mut items: Vec<_> = (0..50)
        .map(|i| stream_item("news", None, None, &format!("data: {i}\n\n")))
        .collect();
    items.push(stream_item("news", None, None, &big));
    items.push(stream_item("news", None, None, "data: end\n\n"));
    proxy.publish_items(items).await;
    let got = read_until(&mut body, "data: end\n\n").await;
    let want: String = (0..50).map(|i| format!("data: {i}\n\n")).collect();
    assert_eq!(got, want + &big + "data: end\n\n");
}

/// An origin that holds every request as an SSE stream on channel `news`.
async fn sse_origin() -> Origin {
    grip_origin(
        200,
        &[
            ("grip-hold", "stream"),
            ("grip-channel", "news"),
            ("content-type", "text/event-stream"),
        ],
        "event: open\ndata: \n\n",
    )
    .await
}

/// Reads from `tls` until what was read ends with `want`; everything read (bounded: 10 s).
async fn read_tls_until(tls: &mut TlsStream<TcpStream>, want: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(want.as_bytes()) {
        let n = tokio::time::timeout(WAIT, tls.read(&mut buf))
            .await
            .expect("data within 10 s")
            .unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(got).unwrap()
}

#[tokio::test]
async fn a_client_leaving_a_held_tls_stream_releases_it() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let pair = ca.write_pair(dir.path());
    let origin = sse_origin().await;
    let proxy = tls_proxy(&format!("* {}\n", origin.target()), &pair).await;
    let addr = proxy.tls.unwrap();

    // A client that says close_notify and keeps its socket open, one that only closes its
    // socket, and one that goes on: only the third stays.
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut tls = connect_tls(addr, &ca.der(), "localhost", &[b"http/1.1"]).await;
        tls.write_all(b"GET /events HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        read_tls_until(&mut tls, "event: open\ndata: \n\n\r\n").await;
        streams.push(tls);
    }
    proxy.wait_subscribers("news", 3).await;
    assert_eq!(proxy.direct_streams(), 3);
    let mut stays = streams.pop().unwrap();
    let closes = streams.pop().unwrap();
    let mut notifies = streams.pop().unwrap();

    notifies.get_mut().1.send_close_notify();
    notifies.flush().await.unwrap();
    proxy.wait_direct_streams(2).await;
    proxy.wait_subscribers("news", 2).await;
    // And the server has closed the connection, with nothing more sent.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, notifies.read_to_end(&mut rest))
        .await
        .expect("closed by the server within 10 s");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));

    drop(closes);
    proxy.wait_direct_streams(1).await;
    proxy.wait_subscribers("news", 1).await;

    proxy
        .publish_stream("news", None, None, "data: still here\n\n")
        .await;
    read_tls_until(&mut stays, "data: still here\n\n\r\n").await;
}

#[tokio::test]
async fn a_long_poll_over_tls_receives_a_publish() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let pair = ca.write_pair(dir.path());
    let origin = grip_origin(
        200,
        &[("grip-hold", "response"), ("grip-channel", "lp")],
        "timed out\n",
    )
    .await;
    let proxy = tls_proxy(&format!("* {}\n", origin.target()), &pair).await;

    let tls = connect_tls(proxy.tls.unwrap(), &ca.der(), "localhost", &[b"http/1.1"]).await;
    let poll = tokio::spawn(send_h1(tls, get_req("/poll")));
    proxy.wait_subscribers("lp", 1).await;
    proxy
        .publish_items([response_item("lp", "published\n")])
        .await;
    let resp = tokio::time::timeout(WAIT, poll)
        .await
        .expect("answered within 10 s")
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(text(resp).await, "published\n");
}

#[tokio::test]
async fn a_held_stream_over_http2_and_tls_receives_a_publish_through_hyper() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let pair = ca.write_pair(dir.path());
    let origin = sse_origin().await;
    let proxy = tls_proxy(&format!("* {}\n", origin.target()), &pair).await;

    let tls = connect_tls(proxy.tls.unwrap(), &ca.der(), "localhost", &[b"h2"]).await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("https://localhost/events")
        .body(full(""))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.version(), Version::HTTP_2);
    let mut body = resp.into_body();
    read_until(&mut body, "event: open\ndata: \n\n").await;
    proxy.wait_subscribers("news", 1).await;
    proxy
        .publish_stream("news", None, None, "data: h2\n\n")
        .await;
    assert_eq!(read_until(&mut body, "data: h2\n\n").await, "data: h2\n\n");
    // HTTP/2 streams share their connection: they stay with hyper.
    assert_eq!(proxy.direct_streams(), 0);
}

#[tokio::test]
async fn a_websocket_over_wss_receives_a_publish() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let pair = ca.write_pair(dir.path());
    let mut origin = WsOrigin::start(Some("grip")).await;
    let proxy = tls_proxy(&format!("* {},sub=room\n", origin.target()), &pair).await;

    let tls = connect_tls(proxy.tls.unwrap(), &ca.der(), "localhost", &[b"http/1.1"]).await;
    let (mut client, resp) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async("wss://localhost/ws", tls),
    )
    .await
    .expect("WebSocket handshake within 10 s")
    .expect("WebSocket handshake accepted");
    assert_eq!(resp.status(), 101);
    let (headers, mut ws) = origin.next().await;
    assert_eq!(headers["x-forwarded-proto"], "wss");

    proxy.wait_subscribers("room", 1).await;
    publish_ws(&proxy, "room", json!({"content": "published over wss"})).await;
    assert_eq!(recv_text(&mut client).await, "published over wss");
    // Messages pass both ways through the TLS session.
    client.send(Message::text("from client")).await.unwrap();
    assert_eq!(recv_text(&mut ws).await, "from client");
    ws.send(Message::text("m:from origin")).await.unwrap();
    assert_eq!(recv_text(&mut client).await, "from origin");
}

/// Runs `openssl` with `args`; the test needs it to make RSA keys (ring cannot) and to convert
/// keys to their traditional forms.
fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl on PATH");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Converts a PKCS#8 PEM key to its traditional form with `openssl <cmd>`: PKCS#1 for `rsa`,
/// SEC1 for `ec`.
fn traditional(dir: &Path, cmd: &str, pkcs8: &str) -> String {
    let path = dir.join("pkcs8.pem");
    std::fs::write(&path, pkcs8).unwrap();
    let p = path.to_str().unwrap();
    let (out, begin) = match cmd {
        "rsa" => (
            openssl(&[cmd, "-in", p, "-traditional"]),
            "-----BEGIN RSA PRIVATE KEY-----",
        ),
        _ => (openssl(&[cmd, "-in", p]), "-----BEGIN EC PRIVATE KEY-----"),
    };
    assert!(out.contains(begin), "{out}");
    out
}

#[tokio::test]
async fn rsa_ecdsa_and_ed25519_keys_in_every_pem_form_are_served() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let rsa_pem = openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
    ]);
    let rsa = KeyPair::from_pem(&rsa_pem).unwrap();
    let p256 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let ed25519 = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let cases = [
        ("RSA, PKCS#8", &rsa, rsa_pem.clone()),
        (
            "RSA, PKCS#1",
            &rsa,
            traditional(dir.path(), "rsa", &rsa_pem),
        ),
        ("ECDSA P-256, PKCS#8", &p256, p256.serialize_pem()),
        (
            "ECDSA P-256, SEC1",
            &p256,
            traditional(dir.path(), "ec", &p256.serialize_pem()),
        ),
        ("ECDSA P-384, PKCS#8", &p384, p384.serialize_pem()),
        ("Ed25519, PKCS#8", &ed25519, ed25519.serialize_pem()),
    ];
    for (what, key, key_pem) in cases {
        let pair = ca.write_pair_with(dir.path(), key, key_pem);
        let proxy = tls_proxy("* test\n", &pair).await;
        let tls = connect_tls(proxy.tls.unwrap(), &ca.der(), "127.0.0.1", &[]).await;
        assert_eq!(peer_leaf(&tls), pair.2, "{what}");
        let resp = send_h1(tls, get_req("/")).await;
        assert_eq!(resp.status(), 200, "{what}");
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn a_connection_that_never_starts_the_handshake_is_closed_at_the_header_timeout() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let pair = ca.write_pair(dir.path());
    let proxy = tls_proxy_with("* test\n", &pair, |c| c.timeouts.client_header_secs = 1).await;
    let mut silent = TcpStream::connect(proxy.tls.unwrap()).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, silent.read(&mut buf))
        .await
        .expect("closed by the server within 10 s")
        .unwrap_or(0);
    assert_eq!(n, 0, "the server closes without a byte");
}

/// Runs the binary with `args` and waits (at most 10 s) for it to exit; its code and stderr.
fn run_binary(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--publish-listen",
            "127.0.0.1:0",
            "--tls-listen",
            "127.0.0.1:0",
        ])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            child.kill().unwrap();
            panic!("holdfast {args:?} still running after 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr)
}

#[test]
fn a_bad_certificate_or_key_file_exits_2_naming_the_file() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = ca.write_pair(dir.path());
    let other_key = dir.path().join("other.key");
    std::fs::write(&other_key, KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let (other_key, garbage, missing) = (
        other_key.to_str().unwrap(),
        garbage.to_str().unwrap(),
        missing.to_str().unwrap(),
    );
    let cases: &[(&str, &str, &[&str])] = &[
        (missing, key, &[missing, "cannot read"]),
        (garbage, key, &[garbage, "no PEM certificate"]),
        (cert, garbage, &[garbage, "no PEM private key"]),
        // A key file holding a certificate has no key either.
        (cert, cert, &[cert, "no PEM private key"]),
        (cert, other_key, &[cert, other_key, "does not match"]),
    ];
    for (c, k, needles) in cases {
        let (code, stderr) = run_binary(&["--tls-cert", c, "--tls-key", k]);
        assert_eq!(code, Some(2), "--tls-cert {c} --tls-key {k}: {stderr}");
        for needle in *needles {
            assert!(stderr.contains(needle), "{needle:?} in {stderr:?}");
        }
    }
    // The publish listener's certificate is checked the same way.
    let (code, stderr) = run_binary(&[
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        "--publish-tls-cert",
        garbage,
        "--publish-tls-key",
        key,
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(garbage), "{stderr}");

    // A certificate folder with a bad file, and one with a certificate but no key.
    let certs = tempfile::tempdir().unwrap();
    ca.write_named(certs.path(), "good.test", &["good.test"]);
    let bad = certs.path().join("bad.test.crt");
    std::fs::write(&bad, "not a certificate\n").unwrap();
    let folder = certs.path().to_str().unwrap();
    let (code, stderr) = run_binary(&["--tls-certs", folder]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(bad.to_str().unwrap()), "{stderr}");
    std::fs::remove_file(&bad).unwrap();
    ca.write_named(certs.path(), "keyless.test", &["keyless.test"]);
    let keyless = certs.path().join("keyless.test.key");
    std::fs::remove_file(&keyless).unwrap();
    let (code, stderr) = run_binary(&["--tls-certs", folder]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(keyless.to_str().unwrap()), "{stderr}");

    // A TLS listener without a certificate is a configuration error too.
    let (code, stderr) = run_binary(&[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("tls.listen"), "{stderr}");
}

#[tokio::test]
async fn sni_picks_the_name_then_its_wildcard_then_the_listeners_default() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let exact = ca.write_named(dir.path(), "a.example.test", &["a.example.test"]);
    let wild = ca.write_named(dir.path(), "_.example.test", &["*.example.test"]);
    let proxy = certs_proxy(dir.path()).await;
    let addr = proxy.tls.unwrap();
    let root = ca.der();

    assert_eq!(served(addr, &root, "a.example.test").await, Some(exact));
    assert_eq!(
        served(addr, &root, "b.example.test").await,
        Some(wild.clone())
    );
    assert_eq!(served(addr, &root, "B.Example.Test").await, Some(wild));
    // A wildcard covers one label only, and there is no default yet: no certificate at all.
    assert_eq!(served(addr, &root, "x.b.example.test").await, None);
    assert_eq!(served(addr, &root, "other.test").await, None);

    // The listener's own default, added while running, serves the names nothing else fits,
    // and clients that send no name (an IP address).
    let stem = format!("default_{}", addr.port());
    let default = ca.write_named(dir.path(), &stem, &["other.test", "127.0.0.1"]);
    wait_served(addr, &root, "other.test", &default).await;
    assert_eq!(served(addr, &root, "127.0.0.1").await, Some(default));
    // Another port's default is not this listener's.
    let elsewhere = ca.write_named(dir.path(), "default_1", &["elsewhere.test"]);
    let marker = ca.write_named(dir.path(), "marker.test", &["marker.test"]);
    wait_served(addr, &root, "marker.test", &marker).await;
    assert_ne!(served(addr, &root, "elsewhere.test").await, Some(elsewhere));
}

#[tokio::test]
async fn a_replaced_certificate_is_served_to_new_connections_and_open_ones_go_on() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let first = ca.write_named(dir.path(), "localhost", &["localhost"]);
    let proxy = certs_proxy(dir.path()).await;
    let addr = proxy.tls.unwrap();
    let root = ca.der();

    let open = connect_tls(addr, &root, "localhost", &[b"http/1.1"]).await;
    assert_eq!(peer_leaf(&open), first);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(open))
        .await
        .unwrap();
    tokio::spawn(conn);
    assert_eq!(
        sender.send_request(get_req("/")).await.unwrap().status(),
        200
    );

    let second = ca.write_named(dir.path(), "localhost", &["localhost"]);
    assert_ne!(first, second);
    wait_served(addr, &root, "localhost", &second).await;
    // The connection made before the reload still carries requests.
    let resp = sender.send_request(get_req("/")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(!text(resp).await.is_empty());
}

#[tokio::test]
async fn a_bad_replacement_is_rejected_and_the_old_certificate_stays() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let good = ca.write_named(dir.path(), "localhost", &["localhost"]);
    let proxy = certs_proxy(dir.path()).await;
    let addr = proxy.tls.unwrap();
    let root = ca.der();
    assert_eq!(served(addr, &root, "localhost").await, Some(good.clone()));

    // A broken certificate; then the good certificate back with a key that is not its own.
    let good_pem = std::fs::read_to_string(dir.path().join("localhost.crt")).unwrap();
    let other_key = KeyPair::generate().unwrap().serialize_pem();
    let steps: [&[(&str, &str)]; 2] = [
        &[(
            "localhost.crt",
            "-----BEGIN CERTIFICATE-----\nnot base64!\n",
        )],
        &[("localhost.crt", &good_pem), ("localhost.key", &other_key)],
    ];
    for (i, files) in steps.into_iter().enumerate() {
        for (file, contents) in files {
            std::fs::write(dir.path().join(file), contents).unwrap();
        }
        // A new name written after the bad file shows a reload has read the folder since.
        let name = format!("marker{i}.test");
        let marker = ca.write_named(dir.path(), &format!("marker{i}.test"), &[&name]);
        wait_served(addr, &root, &name, &marker).await;
        assert_eq!(
            served(addr, &root, "localhost").await,
            Some(good.clone()),
            "after {files:?}"
        );
    }
}

#[tokio::test]
async fn a_publish_over_https_reaches_a_held_stream_and_plain_http_gets_no_answer() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, leaf) = ca.write_pair(dir.path());
    let origin = grip_origin(
        200,
        &[("grip-hold", "stream"), ("grip-channel", "pub")],
        "open\n",
    )
    .await;
    let proxy = Proxy::routed_to(&origin, move |c| {
        c.tls.publish_cert = Some(cert);
        c.tls.publish_key = Some(key);
    })
    .await;
    let mut held = get(&proxy.url("/")).await.into_body();
    read_until(&mut held, "open\n").await;
    proxy.wait_subscribers("pub", 1).await;

    let tls = connect_tls(proxy.publish, &ca.der(), "localhost", &[b"http/1.1"]).await;
    assert_eq!(peer_leaf(&tls), leaf);
    let items = json!({ "items": [stream_item("pub", None, None, "over https\n")] });
    let req = Request::post("/publish/")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(full(items.to_string()))
        .unwrap();
    let resp = send_h1(tls, req).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(read_until(&mut held, "over https\n").await, "over https\n");

    // The publish listener speaks only TLS now: a plaintext request is not answered.
    let mut plain = TcpStream::connect(proxy.publish).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut plain,
        b"POST /publish/ HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(WAIT, plain.read_to_end(&mut got))
        .await
        .expect("closed by the server within 10 s");
    assert!(
        !got.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}

#[tokio::test]
async fn the_largest_header_timeout_overflows_no_deadline_on_either_listener() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let pair = ca.write_pair(dir.path());
    let proxy = tls_proxy_with("* test\n", &pair, |c| {
        c.timeouts.client_header_secs = u64::MAX
    })
    .await;
    for _ in 0..2 {
        let tls = connect_tls(proxy.tls.unwrap(), &ca.der(), "localhost", &[]).await;
        assert_eq!(send_h1(tls, get_req("/")).await.status(), 200);
        assert_eq!(get(&proxy.url("/")).await.status(), 200);
    }
}

/// The address of the binary's TLS client listener (`kind` "Client") or publish listener
/// ("Publish"), from its "listening" log line.
fn listening(hf: &support::binary::Binary, kind: &str) -> SocketAddr {
    let line = hf.wait_for(|v| {
        v["fields"]["message"] == "listening"
            && v["fields"]["kind"] == kind
            && v["fields"]["tls"] == true
    });
    line["fields"]["addr"].as_str().unwrap().parse().unwrap()
}

/// Waits for an error log line that names `file`.
fn rejected(hf: &support::binary::Binary, file: &Path) -> String {
    let file = file.to_str().unwrap().to_string();
    let line = hf.wait_for(|v| {
        v["level"] == "ERROR"
            && v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(&file))
    });
    line["fields"]["message"].as_str().unwrap().to_string()
}

/// Publishes `content` on channel `test` through the publish API at `addr`, over HTTPS.
async fn publish_https(addr: SocketAddr, ca: &CertificateDer<'static>, content: &str) {
    let tls = connect_tls(addr, ca, "localhost", &[b"http/1.1"]).await;
    let items = json!({ "items": [stream_item("test", None, None, content)] });
    let req = Request::post("/publish/")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(full(items.to_string()))
        .unwrap();
    assert_eq!(send_h1(tls, req).await.status(), 200);
}

#[tokio::test]
async fn certificate_files_are_reloaded_on_change_and_sighup_and_a_bad_one_is_rejected() {
    let ca = Ca::new();
    let root = ca.der();
    let dir = tempfile::tempdir().unwrap();
    let first = ca.write_named(dir.path(), "server", &["localhost"]);
    let publish_first = ca.write_named(dir.path(), "publish", &["localhost"]);
    let file = |name: &str| dir.path().join(name);
    let arg = |name: &str| file(name).to_str().unwrap().to_string();
    let hf = support::binary::Binary::start([
        "--listen",
        "127.0.0.1:0",
        "--publish-listen",
        "127.0.0.1:0",
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        &arg("server.crt"),
        "--tls-key",
        &arg("server.key"),
        "--publish-tls-cert",
        &arg("publish.crt"),
        "--publish-tls-key",
        &arg("publish.key"),
    ]);
    let tls = listening(&hf, "Client");
    let publish = listening(&hf, "Publish");
    assert_eq!(served(tls, &root, "localhost").await, Some(first));
    assert_eq!(
        served(publish, &root, "localhost").await,
        Some(publish_first)
    );

    // A held stream opened before the files change.
    let conn = connect_tls(tls, &root, "localhost", &[b"http/1.1"]).await;
    let mut held = send_h1(conn, get_req("/stream")).await.into_body();
    publish_https(publish, &root, "before\n").await;
    read_until(&mut held, "before\n").await;

    // New pairs, each written beside and renamed over the old files (the key first).
    let second = ca.write_named(dir.path(), "server", &["localhost"]);
    let publish_second = ca.write_named(dir.path(), "publish", &["localhost"]);
    wait_served(tls, &root, "localhost", &second).await;
    wait_served(publish, &root, "localhost", &publish_second).await;
    publish_https(publish, &root, "after\n").await;
    read_until(&mut held, "after\n").await;

    // A broken certificate file is rejected by name, and the pair in force stays; SIGHUP reads
    // it again, and rejects it again.
    std::fs::write(file("server.crt"), "not a certificate\n").unwrap();
    let message = rejected(&hf, &file("server.crt"));
    assert!(message.contains("previous one stays in force"), "{message}");
    assert_eq!(served(tls, &root, "localhost").await, Some(second.clone()));
    hf.signal("HUP");
    rejected(&hf, &file("server.crt"));
    assert_eq!(served(tls, &root, "localhost").await, Some(second));

    // A publish key that is not its certificate's is rejected too.
    std::fs::write(
        file("publish.key"),
        KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let message = rejected(&hf, &file("publish.key"));
    assert!(message.contains("does not match"), "{message}");
    assert_eq!(
        served(publish, &root, "localhost").await,
        Some(publish_second)
    );

    // The stream opened at the start still carries publishes.
    publish_https(publish, &root, "still\n").await;
    read_until(&mut held, "still\n").await;
}
