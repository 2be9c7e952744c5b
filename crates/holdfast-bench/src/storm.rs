//! `holdfast-bench storm`: origin requests caused by a reconnect storm of reliable-SSE clients.
//!
//! Needs the bench origin in `--grip reliable` mode behind the proxy. Phases, every wait capped:
//!
//! 1. N clients `GET /stream` with `Last-Event-ID: 0`; wait until all have response headers, then
//!    `--settle-secs` (past the proxy's first-subscription update).
//! 2. Publish items `1..=5` (`id` K, `prev-id` K-1, content `id: K\ndata: item K\n\n`); wait until
//!    every client has received exactly 1..5.
//! 3. Drop every connection; wait `--away-secs`; publish 6..10 (and tell the origin, so its
//!    `/next` can serve them).
//! 4. Snapshot the origin's counters; all N reconnect with `Last-Event-ID: 5` from another source
//!    address; wait until every client has received exactly 6..10; snapshot again, and once more
//!    `--settle-secs` later.
//!
//! Prints one JSON line with the request counts per phase and the catch-up time.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::Args;
use http::{header, Method, Request};
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::fanout::control::{parse_sample, send};

/// Flags of `holdfast-bench storm`.
#[derive(Debug, Args)]
pub struct StormArgs {
    /// Proxy address the clients connect to.
    #[arg(long, value_name = "ADDR")]
    proxy: SocketAddr,
    /// Publish API address (Pushpin-style `POST /publish/`).
    #[arg(long, value_name = "ADDR")]
    publish: SocketAddr,
    /// The bench origin (`--grip reliable`), for its counters.
    #[arg(long, value_name = "ADDR")]
    origin: SocketAddr,
    /// Number of SSE clients.
    #[arg(long, default_value_t = 2000)]
    clients: usize,
    /// Channel published to.
    #[arg(long, default_value = "bench")]
    channel: String,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    /// Seconds to wait after everyone is connected, and after catch-up before the last snapshot.
    #[arg(long, default_value_t = 3)]
    settle_secs: u64,
    /// Seconds between dropping the connections and publishing 6..10.
    #[arg(long, default_value_t = 3)]
    away_secs: u64,
    /// Cap on each wait, in seconds.
    #[arg(long, default_value_t = 120)]
    wait_secs: u64,
    /// Label copied into the JSON line.
    #[arg(long, default_value = "")]
    label: String,
}

/// Progress of one phase, shared by its client tasks.
#[derive(Default)]
struct Phase {
    headers: AtomicUsize,
    done: AtomicUsize,
    wrong: AtomicUsize,
    failed: AtomicUsize,
}

/// Runs the storm and prints its JSON line.
pub fn run(args: StormArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(storm(args))
}

async fn storm(args: StormArgs) -> anyhow::Result<()> {
    let wait = Duration::from_secs(args.wait_secs);
    set_origin_last(args.origin, 0).await?;
    let s0 = origin_stats(args.origin).await?;

    // Phase 1+2: connect, then 1..5.
    let first = Arc::new(Phase::default());
    let t = Instant::now();
    let mut clients = spawn_clients(
        &args,
        Ipv4Addr::new(127, 0, 0, 1),
        0,
        (1..=5).collect(),
        &first,
    );
    wait_for(
        &first.headers,
        args.clients,
        wait,
        "initial headers",
        &first,
    )
    .await?;
    let connect_ms = t.elapsed().as_millis();
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let s1 = origin_stats(args.origin).await?;
    for id in 1..=5 {
        publish(&args, id).await?;
    }
    set_origin_last(args.origin, 5).await?;
    wait_for(&first.done, args.clients, wait, "items 1..5", &first).await?;
    let s2 = origin_stats(args.origin).await?;

    // Phase 3: away.
    clients.abort_all();
    while clients.join_next().await.is_some() {}
    tokio::time::sleep(Duration::from_secs(args.away_secs)).await;
    for id in 6..=10 {
        publish(&args, id).await?;
    }
    set_origin_last(args.origin, 10).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s3 = origin_stats(args.origin).await?;

    // Phase 4: reconnect storm.
    let second = Arc::new(Phase::default());
    let t = Instant::now();
    let mut clients = spawn_clients(
        &args,
        Ipv4Addr::new(127, 0, 0, 2),
        5,
        (6..=10).collect(),
        &second,
    );
    let caught = wait_for(&second.done, args.clients, wait, "items 6..10", &second).await;
    let catch_up_ms = t.elapsed().as_millis();
    let s4 = origin_stats(args.origin).await?;
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let s5 = origin_stats(args.origin).await?;
    clients.abort_all();
    while clients.join_next().await.is_some() {}

    let outcome = Outcome {
        stats: [s0, s1, s2, s3, s4, s5],
        connect_ms,
        catch_up_ms,
        caught_up: second.done.load(Ordering::Relaxed),
        wrong: second.wrong.load(Ordering::Relaxed),
        failed: second.failed.load(Ordering::Relaxed),
        error: caught.err().map(|e| format!("{e:#}")),
    };
    println!("{}", outcome.to_json(&args.label, args.clients));
    Ok(())
}

/// What a storm measured.
struct Outcome {
    /// The origin's counters before connecting, once connected and settled, after items 1..5,
    /// after the time away and 6..10, once caught up, and `--settle-secs` later.
    stats: [Stats; 6],
    /// Phase 1: from the first connect until every client had its response headers.
    connect_ms: u128,
    /// Phase 4: from the first reconnect until every client had 6..10 (or the wait gave up).
    catch_up_ms: u128,
    /// Phase 4's clients that received exactly 6..10, something else, or failed.
    caught_up: usize,
    wrong: usize,
    failed: usize,
    /// Why phase 4 gave up waiting, if it did.
    error: Option<String>,
}

impl Outcome {
    /// The JSON line: request counts per phase (`initial` and `next` requests), the catch-up
    /// time, and how the reconnect went for `clients` clients.
    fn to_json(&self, label: &str, clients: usize) -> serde_json::Value {
        let [s0, s1, s2, s3, s4, s5] = &self.stats;
        let n = clients as f64;
        let d = |a: &Stats, b: &Stats| (b.initial - a.initial, b.next - a.next);
        let (ci, cn) = d(s0, s1);
        let (pi, pn) = d(s1, s2);
        let (ri, rn) = d(s3, s4);
        let (li, ln) = d(s3, s5);
        serde_json::json!({
            "label": label,
            "clients": clients,
            "connect_ms": self.connect_ms,
            "connect_initial": ci, "connect_next": cn,
            "publish1_5_initial": pi, "publish1_5_next": pn,
            "away_requests": (s3.initial + s3.next) - (s2.initial + s2.next),
            "reconnect_initial": ri, "reconnect_next": rn,
            "reconnect_per_client": ((ri + rn) as f64 / n * 100.0).round() / 100.0,
            "caught_up": self.caught_up,
            "wrong": self.wrong,
            "failed": self.failed,
            "catch_up_ms": self.catch_up_ms,
            "settled_initial": li, "settled_next": ln,
            "settled_per_client": ((li + ln) as f64 / n * 100.0).round() / 100.0,
            "error": self.error,
        })
    }
}

/// Starts one task per client; each connects from `source`, resumes from `last_event_id` and
/// counts itself done when it has received exactly `expect`.
fn spawn_clients(
    args: &StormArgs,
    source: Ipv4Addr,
    last_event_id: u64,
    expect: Vec<u64>,
    phase: &Arc<Phase>,
) -> JoinSet<()> {
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let expect = Arc::new(expect);
    let mut set = JoinSet::new();
    for _ in 0..args.clients {
        let (gate, expect, phase, proxy) = (
            Arc::clone(&gate),
            Arc::clone(&expect),
            Arc::clone(phase),
            args.proxy,
        );
        set.spawn(async move {
            if client(proxy, source, last_event_id, &expect, &phase, &gate)
                .await
                .is_err()
            {
                phase.failed.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    set
}

async fn client(
    proxy: SocketAddr,
    source: Ipv4Addr,
    last_event_id: u64,
    expect: &[u64],
    phase: &Phase,
    gate: &Semaphore,
) -> anyhow::Result<()> {
    let permit = gate.acquire().await?;
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    let stream = socket.connect(proxy).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(Method::GET)
        .uri("/stream")
        .header(header::HOST, crate::host_header(proxy))
        .header(header::ACCEPT, "text/event-stream")
        .header("last-event-id", last_event_id.to_string())
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(req).await?;
    drop(permit);
    if !response.status().is_success() {
        bail!("status {}", response.status());
    }
    phase.headers.fetch_add(1, Ordering::Relaxed);
    let mut body = response.into_body();
    let mut buf = Vec::new();
    let mut got = Vec::new();
    let mut wrong = false;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            if let Some(id) = line.trim_end().strip_prefix("id: ") {
                got.push(id.parse::<u64>().unwrap_or(u64::MAX));
                if got.len() > expect.len() || expect[..got.len()] != got[..] {
                    if !wrong {
                        wrong = true;
                        phase.wrong.fetch_add(1, Ordering::Relaxed);
                        eprintln!("storm: client expected {expect:?}, got {got:?}");
                    }
                } else if got.len() == expect.len() {
                    phase.done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    bail!("stream ended")
}

async fn wait_for(
    counter: &AtomicUsize,
    target: usize,
    cap: Duration,
    what: &str,
    phase: &Phase,
) -> anyhow::Result<()> {
    let t = Instant::now();
    while counter.load(Ordering::Relaxed) < target {
        if t.elapsed() > cap {
            bail!(
                "{what}: {} of {target} after {cap:?} (failed {}, wrong {})",
                counter.load(Ordering::Relaxed),
                phase.failed.load(Ordering::Relaxed),
                phase.wrong.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

async fn publish(args: &StormArgs, id: u64) -> anyhow::Result<()> {
    let body = serde_json::json!({ "items": [{
        "channel": args.channel,
        "id": id.to_string(),
        "prev-id": (id - 1).to_string(),
        "formats": { "http-stream": { "content": crate::origin::reliable_event(id) } },
    }]});
    let (status, answer) = send(
        args.publish,
        Method::POST,
        "/publish/",
        Some(body.to_string()),
    )
    .await?;
    if !status.is_success() {
        bail!(
            "publish {id} answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    Ok(())
}

struct Stats {
    initial: u64,
    next: u64,
}

async fn origin_stats(origin: SocketAddr) -> anyhow::Result<Stats> {
    let (_, body) = send(origin, Method::GET, "/_bench/stats", None).await?;
    let text = String::from_utf8_lossy(&body);
    let get = |k| {
        parse_sample(&text, k)
            .map(|v| v as u64)
            .context("origin stats")
    };
    Ok(Stats {
        initial: get("initial")?,
        next: get("next")?,
    })
}

async fn set_origin_last(origin: SocketAddr, n: u64) -> anyhow::Result<()> {
    let (status, _) = send(origin, Method::POST, &format!("/_bench/last?{n}"), None).await?;
    if !status.is_success() {
        bail!("origin /_bench/last answered {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_counts_requests_per_phase() {
        let stats = |initial, next| Stats { initial, next };
        let outcome = Outcome {
            stats: [
                stats(3, 0),
                stats(7, 0),
                stats(7, 1),
                stats(9, 2),
                stats(12, 8),
                stats(13, 9),
            ],
            connect_ms: 40,
            catch_up_ms: 250,
            caught_up: 3,
            wrong: 1,
            failed: 0,
            error: None,
        };
        let line = outcome.to_json("t", 4);
        let expected = serde_json::json!({
            "label": "t",
            "clients": 4,
            "connect_ms": 40,
            "connect_initial": 4, "connect_next": 0,
            "publish1_5_initial": 0, "publish1_5_next": 1,
            "away_requests": 3,
            "reconnect_initial": 3, "reconnect_next": 6,
            "reconnect_per_client": 2.25,
            "caught_up": 3,
            "wrong": 1,
            "failed": 0,
            "catch_up_ms": 250,
            "settled_initial": 4, "settled_next": 7,
            "settled_per_client": 2.75,
            "error": null,
        });
        assert_eq!(line, expected);
    }
}
