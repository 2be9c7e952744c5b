//! The TLS handshake rate of a server: `--processes` client processes (this binary re-executed
//! with the hidden `handshake-worker` subcommand), each with its share of `--concurrency`
//! connections in a loop for `--secs`: connect, full handshake (no resumption, certificate not
//! checked: see [`crate::tls`]), send `close_notify` (without closing the TCP side), and read
//! until the server closes. A round
//! counts when the server closed cleanly (its `close_notify`, or end of stream), which it can
//! only do after it has checked the client's `Finished`; anything else — refused connection,
//! failed handshake, an alert, a reset, no answer within 10 s — is an error, tallied by its text.
//! The report is one JSON line: rounds completed, per second over the whole run, errors, and the
//! CPU time the server's processes (`--proxy-pid`) used meanwhile, so a run can tell whether the
//! server or the clients were short of CPU.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

/// Longest one round (connect, handshake, close) may take before it counts as an error.
const ROUND_TIMEOUT: Duration = Duration::from_secs(10);

/// Flags of `holdfast-bench handshakes`.
#[derive(Debug, Args)]
pub struct HandshakeArgs {
    /// The TLS server's address.
    #[arg(long, value_name = "ADDR")]
    target: SocketAddr,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Connections in flight at once, over all processes.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Client processes.
    #[arg(long, default_value_t = 2)]
    processes: usize,
    /// Comma-separated source addresses, used round-robin.
    #[arg(long, default_value = "")]
    source_ips: String,
    /// Process of the server whose CPU time over the run is reported (repeatable, summed).
    #[arg(long = "proxy-pid", value_name = "PID")]
    proxy_pids: Vec<u32>,
    /// Label copied into the report.
    #[arg(long, default_value = "")]
    label: String,
}

/// Flags of the hidden `handshake-worker` subcommand, set by `handshakes`.
#[derive(Debug, Args)]
pub struct HandshakeWorkerArgs {
    #[arg(long)]
    target: SocketAddr,
    #[arg(long)]
    secs: u64,
    #[arg(long)]
    concurrency: usize,
    #[arg(long, default_value = "")]
    source_ips: String,
    /// This worker's index, to spread the source addresses.
    #[arg(long, default_value_t = 0)]
    index: usize,
}

/// What one worker process reports.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Tally {
    completed: u64,
    errors: BTreeMap<String, u64>,
}

/// Runs the client processes and prints the report.
pub fn run(args: HandshakeArgs) -> anyhow::Result<()> {
    if args.processes == 0 || args.concurrency < args.processes {
        bail!("--concurrency must be at least --processes, which must be at least 1");
    }
    let exe = std::env::current_exe().context("locating this executable")?;
    let cpu = || -> Option<f64> {
        let samples = crate::usage::sample_all(&args.proxy_pids).ok()?;
        Some(samples.iter().map(|s| s.cpu_secs).sum())
    };
    let cpu_before = cpu();
    let started = std::time::Instant::now();
    let children = (0..args.processes)
        .map(|i| {
            let share = args.concurrency / args.processes
                + usize::from(i < args.concurrency % args.processes);
            std::process::Command::new(&exe)
                .arg("handshake-worker")
                .arg(format!("--target={}", args.target))
                .arg(format!("--secs={}", args.secs))
                .arg(format!("--concurrency={share}"))
                .arg(format!("--source-ips={}", args.source_ips))
                .arg(format!("--index={i}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .with_context(|| format!("starting handshake worker {i}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut total = Tally::default();
    for (i, child) in children.into_iter().enumerate() {
        let out = child
            .wait_with_output()
            .with_context(|| format!("waiting for handshake worker {i}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let tally: Tally = match text.lines().last().map(serde_json::from_str) {
            Some(Ok(t)) => t,
            _ => bail!("handshake worker {i} gave no report ({})", out.status),
        };
        total.completed += tally.completed;
        for (e, n) in tally.errors {
            *total.errors.entry(e).or_default() += n;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let server_cpu_secs = match (cpu_before, cpu()) {
        (Some(a), Some(b)) if !args.proxy_pids.is_empty() => Some(b - a),
        _ => None,
    };
    let errors: u64 = total.errors.values().sum();
    println!(
        "{}",
        serde_json::json!({
            "label": args.label,
            "target": args.target.to_string(),
            "processes": args.processes,
            "concurrency": args.concurrency,
            "secs": args.secs,
            "wall_secs": wall,
            "handshakes": total.completed,
            "handshakes_per_sec": total.completed as f64 / args.secs as f64,
            "errors": errors,
            "error_kinds": total.errors,
            "server_cpu_secs": server_cpu_secs,
            "server_cores": server_cpu_secs.map(|c| c / wall),
        })
    );
    Ok(())
}

/// One client process: `--concurrency` loops of handshakes until `--secs` have passed.
pub fn run_worker(args: HandshakeWorkerArgs) -> anyhow::Result<()> {
    let source_ips = crate::parse_ip_list(&args.source_ips).map_err(anyhow::Error::msg)?;
    let connector = crate::tls::connector(None, crate::tls::Alpn::Http1)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let completed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(args.secs);
        let mut tasks = Vec::new();
        for k in 0..args.concurrency {
            let source =
                (!source_ips.is_empty()).then(|| source_ips[(args.index + k) % source_ips.len()]);
            let (connector, completed, errors) =
                (connector.clone(), completed.clone(), errors.clone());
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    let round =
                        tokio::time::timeout(ROUND_TIMEOUT, round(&connector, args.target, source));
                    match round.await {
                        Ok(Ok(())) => {
                            completed.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Err(e)) => tally(&errors, e.to_string()),
                        Err(_) => tally(&errors, "no answer within 10 s".into()),
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let errors = std::mem::take(&mut *errors.lock().unwrap_or_else(|e| e.into_inner()));
    let tally = Tally {
        completed: completed.load(Ordering::Relaxed),
        errors,
    };
    println!("{}", serde_json::to_string(&tally)?);
    Ok(())
}

fn tally(errors: &Mutex<BTreeMap<String, u64>>, what: String) {
    *errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(what)
        .or_default() += 1;
}

/// One handshake: connect, handshake, `close_notify`, read until the server closes cleanly.
async fn round(
    connector: &tokio_rustls::TlsConnector,
    target: SocketAddr,
    source: Option<IpAddr>,
) -> anyhow::Result<()> {
    let tcp = match source {
        None => TcpStream::connect(target).await,
        Some(ip) => {
            let socket = match ip {
                IpAddr::V4(_) => TcpSocket::new_v4()?,
                IpAddr::V6(_) => TcpSocket::new_v6()?,
            };
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(target).await
        }
    }
    .context("connect")?;
    tcp.set_nodelay(true)?;
    // The server closes the TCP connection first and this side answers with a reset, so tens
    // of thousands of rounds leave no TIME_WAIT on either side (a `shutdown` here would, and
    // the ports of the source addresses would run out within a run).
    tcp.set_zero_linger()?;
    let mut tls = crate::tls::handshake(connector, tcp)
        .await
        .context("handshake")?;
    tls.get_mut().1.send_close_notify();
    tls.flush().await.context("close_notify")?;
    let mut rest = [0u8; 256];
    match tls.read(&mut rest).await {
        Ok(0) => Ok(()),
        // The server closed the connection without a close_notify of its own.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(()),
        Ok(_) => bail!("the server sent data after close_notify"),
        Err(e) => Err(anyhow::Error::new(e).context("waiting for the server to close")),
    }
}
