//! What one TLS session costs rustls on the server, alone: `--count` server connections, each
//! after a full handshake with an in-memory client (no sockets) and one small request read, kept
//! in memory; the growth of this process's resident memory per session is printed as one JSON
//! line. The server settings are Holdfast's (ring provider, TLS 1.2 and 1.3, ALPN `h2` and
//! `http/1.1`), and a held TLS stream in Holdfast keeps exactly this state (`sink::Wire`), so
//! this is the floor under what TLS adds to a held stream's memory.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use clap::Args;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConnection, ServerConfig, ServerConnection};

/// Flags of `holdfast-bench tls-session`.
#[derive(Debug, Args)]
pub struct SessionArgs {
    /// PEM certificate (and chain) the server presents.
    #[arg(long, value_name = "FILE")]
    cert: PathBuf,
    /// PEM private key of `--cert`.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// Sessions kept.
    #[arg(long, default_value_t = 10_000)]
    count: usize,
}

/// Sessions made before the first sample, so one-time allocations are not counted.
const WARM: usize = 100;

/// Runs the measurement and prints its report.
pub fn run(args: SessionArgs) -> anyhow::Result<()> {
    let chain = CertificateDer::pem_file_iter(&args.cert)
        .with_context(|| format!("{}: cannot read", args.cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: bad PEM", args.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&args.key)
        .with_context(|| format!("{}: no private key", args.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the certificate and key")?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let server = Arc::new(server);
    let client = crate::tls::client_config(None, crate::tls::Alpn::Http1)?;
    let mut kept = Vec::with_capacity(args.count + WARM);
    let mut before = 0;
    let mut suite = String::new();
    for i in 0..args.count + WARM {
        if i == WARM {
            before = resident()?;
        }
        let mut c = ClientConnection::new(client.clone(), ServerName::try_from("localhost")?)?;
        let mut s = ServerConnection::new(server.clone())?;
        exchange(&mut c, &mut s)?;
        c.writer()
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
        exchange(&mut c, &mut s)?;
        let mut request = [0u8; 64];
        if s.reader().read(&mut request)? == 0 {
            bail!("the server read no request");
        }
        if suite.is_empty() {
            suite = format!("{:?}", s.negotiated_cipher_suite().map(|s| s.suite()));
        }
        kept.push(Box::new(s));
    }
    let per = (resident()? - before) as f64 / args.count as f64;
    println!(
        "{}",
        serde_json::json!({
            "sessions": args.count,
            "suite": suite,
            "rss_per_session_bytes": per.round(),
            "server_connection_size": std::mem::size_of::<ServerConnection>(),
        })
    );
    Ok(())
}

/// Moves TLS records both ways until neither side has any to send.
fn exchange(c: &mut ClientConnection, s: &mut ServerConnection) -> anyhow::Result<()> {
    for _ in 0..16 {
        let mut moved = false;
        let mut wire = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut wire)?;
        }
        let mut from_client = &wire[..];
        while !from_client.is_empty() {
            moved = true;
            s.read_tls(&mut from_client)?;
            s.process_new_packets()?;
        }
        let mut wire = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut wire)?;
        }
        let mut from_server = &wire[..];
        while !from_server.is_empty() {
            moved = true;
            c.read_tls(&mut from_server)?;
            c.process_new_packets()?;
        }
        if !moved {
            return Ok(());
        }
    }
    bail!("the handshake did not settle")
}

/// This process's resident memory, in bytes.
fn resident() -> anyhow::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .context("/proc/self/statm")?
        .parse()?;
    Ok(pages * 4096)
}
