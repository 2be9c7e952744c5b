//! `holdfast-bench channels`: many channels with a few subscribers each, and a steady stream of
//! publishes at rising rates.
//!
//! 1. **Subscribe.** `--channels` × `--per-channel` SSE subscribers, subscriber `i` on
//!    `GET /sub/c<i / per-channel>` (Nchan's subscriber location; the bench origin's
//!    `--channel-from-path` holds the same path on channel `c<k>`), read straight off the socket
//!    as the fan-out workers do. Ready when every one has its first body bytes, then (with
//!    `--metric`) when the proxy's count reaches them all, then `--settle-ms`. A refused
//!    subscribe (in a burst of subscribes Pushpin answers some with `502` or `500 Accept service
//!    unavailable.`) is tried again, at most `--subscribe-attempts` times; the summary counts
//!    the refusals by reason, and a subscriber that runs out of attempts fails the run, which
//!    then has no result: every target is measured with all its subscribers.
//! 2. **Steps.** For each rate of `--rates` (messages per second), `--step-secs` of publishing:
//!    `--publish-connections` keep-alive connections each send their share of the rate on a
//!    fixed schedule (late sends go at once, never skipped), one message per request to a
//!    random channel, stamped with its send time. Then a drain: until every subscriber of each
//!    accepted message has it, or nothing arrives for [`DRAIN_IDLE`], or [`DRAIN_MAX`].
//! 3. **Report.** One JSON line per step (offered and achieved publish rate, mean publish round
//!    trip, deliveries/s, p50/p99/max publish → delivery, lost, publish errors, and the CPU
//!    seconds the target's processes (`--target-pid`) and this driver used over the step and
//!    its drain), then a summary line naming the step with the most deliveries/s among those
//!    with p99 within `--p99-limit-ms`, 0 lost and 0 publish errors. The run stops at the first
//!    step that misses, or when the publisher cannot reach 90 % of the offered rate because the
//!    target's publish answers slowed down (the summary gives their mean round trip).
//!
//! # Threads
//!
//! The subscribers' readers run on the calling thread (one current-thread runtime: 18,000
//! sockets that each get a few bytes now and then are cheap to poll from one thread, and the
//! per-step counters stay uncontended). The publishers run on their own multi-thread runtime of
//! `--publish-threads` workers, so a busy reader thread no longer holds back the publish
//! schedule, and the limit a run finds is the proxy's fan-out and publish API rather than the
//! driver's one thread. Both share the machine's cores with the proxy: on a small machine the
//! highest rate is in the end set by CPU per delivery, the target's plus the driver's, and the
//! driver's share is the same for every target; the step lines give both CPU figures so the
//! target's own cost per delivery can be read off.
//!
//! The stamp's `seq` carries its step (`step * STEP_SEQ + n`), so a late delivery is counted
//! for the step that sent it, whichever thread sent it.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::Args;
use http::{header, Method, Request};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

use crate::fanout::control::{read_metric, ItemOpts};
use crate::fanout::sse::{self, Body};
use crate::fanout::stamp::{self, Stamp};
use crate::fanout::{Mode, PublishStyle};
use crate::usage;

/// Seq numbers per step: step `k`'s messages are `k * STEP_SEQ + 1 …`.
const STEP_SEQ: u64 = 1_000_000_000;
/// Most steps a run may have.
const MAX_STEPS: usize = 64;
/// The drain ends when nothing arrived for this long…
const DRAIN_IDLE: Duration = Duration::from_secs(2);
/// …or after this long in any case.
const DRAIN_MAX: Duration = Duration::from_secs(15);
/// Cap on the subscribe phase and on the wait for the proxy's count.
const SUBSCRIBE_MAX: Duration = Duration::from_secs(300);
/// Longest pause between two attempts at one subscribe.
const SUBSCRIBE_PAUSE_MAX: Duration = Duration::from_secs(3);
/// Cap on one publish request.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Flags of `holdfast-bench channels`.
#[derive(Debug, Args)]
pub struct ChannelsArgs {
    /// Proxy address the subscribers connect to.
    #[arg(long, value_name = "ADDR")]
    proxy: SocketAddr,
    /// Publish address.
    #[arg(long, value_name = "ADDR")]
    publish: SocketAddr,
    /// `grip`: Pushpin's `POST /publish/` with one item; `nchan`: `POST /pub/CHANNEL`.
    #[arg(long, value_enum, default_value_t = PublishStyle::Grip)]
    publish_style: PublishStyle,
    /// Number of channels.
    #[arg(long, default_value_t = 9000)]
    channels: usize,
    /// SSE subscribers on each channel.
    #[arg(long, default_value_t = 2)]
    per_channel: usize,
    /// Offered publish rates, messages per second, one step each, in order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "250,500,1000,2000,4000,8000,12000,16000,24000,32000,48000"
    )]
    rates: Vec<u64>,
    /// Seconds of publishing per step.
    #[arg(long, default_value_t = 5)]
    step_secs: u64,
    /// A step passes with p99 publish → delivery at most this.
    #[arg(long, default_value_t = 50)]
    p99_limit_ms: u64,
    /// Keep-alive publish connections, one request at a time on each.
    #[arg(long, default_value_t = 32)]
    publish_connections: usize,
    /// Worker threads of the publishers' runtime (the subscribers read on the main thread); the
    /// default, 2, is one per core of the two-core machine the benchmarks are recorded on.
    #[arg(long, default_value_t = 2)]
    publish_threads: usize,
    /// Attempts at one subscribe before it counts as failed (pauses of 0.1 s doubling to 3 s
    /// between them).
    #[arg(long, default_value_t = 10)]
    subscribe_attempts: u32,
    /// Process of the target whose CPU time is reported per step (repeatable, summed).
    #[arg(long = "target-pid", value_name = "PID")]
    target_pids: Vec<u32>,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Comma-separated source addresses for the subscribers, round-robin (none: the kernel's
    /// choice).
    #[arg(long, default_value = "", value_name = "IPS")]
    source_ips: String,
    /// Metrics page and sample counting subscriptions (e.g. `/metrics` and
    /// `holdfast_subscriptions`, or Nchan's `/nchan_status` and `subscribers`), read from the
    /// publish address; none: ready when every subscriber has its first body bytes.
    #[arg(long, value_name = "NAME")]
    metric: Option<String>,
    #[arg(long, default_value = "/metrics", value_name = "PATH")]
    metric_path: String,
    /// Quiet time after the subscribers are ready, before the first step.
    #[arg(long, default_value_t = 1000)]
    settle_ms: u64,
    /// Label of the proxy in the report.
    #[arg(long, default_value = "proxy")]
    label: String,
}

/// What every subscriber and publisher shares.
struct Shared {
    /// Subscribers with their first body bytes.
    ready: AtomicUsize,
    /// Subscribers whose stream failed or ended.
    failed: AtomicUsize,
    /// Subscribe attempts refused and tried again, by reason.
    retried: Mutex<BTreeMap<String, usize>>,
    first_error: Mutex<Option<String>>,
    /// Per step: deliveries received, and their latencies in microseconds.
    received: Vec<AtomicU64>,
    latencies: Vec<Mutex<Vec<u32>>>,
    /// When the last delivery arrived, as microseconds since the epoch.
    last_delivery_us: AtomicU64,
}

impl Shared {
    fn error(&self, e: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.first_error.lock().unwrap().get_or_insert(e);
    }
}

pub fn run(args: ChannelsArgs) -> anyhow::Result<()> {
    if args.channels == 0
        || args.per_channel == 0
        || args.publish_connections == 0
        || args.publish_threads == 0
        || args.subscribe_attempts == 0
    {
        bail!(
            "--channels, --per-channel, --publish-connections, --publish-threads and \
             --subscribe-attempts must be at least 1"
        );
    }
    if args.rates.is_empty() || args.rates.len() > MAX_STEPS || args.rates.contains(&0) {
        bail!("--rates must list 1 to {MAX_STEPS} rates, none of them 0");
    }
    let source_ips = crate::parse_ip_list(&args.source_ips).map_err(anyhow::Error::msg)?;
    // Fails early, with the pid, if a target process is not there to measure.
    usage::sample_all(&args.target_pids).context("--target-pid")?;
    let publishers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.publish_threads)
        .thread_name("publisher")
        .enable_all()
        .build()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(drive(args, source_ips, publishers.handle().clone()));
    // The subscribers' sockets go first, then the publishers' runtime, without waiting on it.
    drop(runtime);
    publishers.shutdown_background();
    outcome
}

async fn drive(
    args: ChannelsArgs,
    source_ips: Vec<IpAddr>,
    publishers: tokio::runtime::Handle,
) -> anyhow::Result<()> {
    let n = args.channels * args.per_channel;
    let shared = Arc::new(Shared {
        ready: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        retried: Mutex::new(BTreeMap::new()),
        first_error: Mutex::new(None),
        received: (0..MAX_STEPS).map(|_| AtomicU64::new(0)).collect(),
        latencies: (0..MAX_STEPS).map(|_| Mutex::new(Vec::new())).collect(),
        last_delivery_us: AtomicU64::new(0),
    });
    let permits = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let started = Instant::now();
    for i in 0..n {
        let path = format!("/sub/c{}", i / args.per_channel);
        let source = (!source_ips.is_empty()).then(|| source_ips[i % source_ips.len()]);
        tokio::spawn(subscriber(
            shared.clone(),
            permits.clone(),
            args.proxy,
            source,
            path,
            args.subscribe_attempts,
        ));
    }
    if let Err(e) = wait_ready(&args, &shared, n, started).await {
        // No result: the summary line says why, for the table.
        let why = format!("no result: {e:#}");
        print_summary(
            &args,
            &shared,
            started.elapsed().as_secs_f64(),
            None,
            &why,
            true,
        );
        return Err(e);
    }
    let subscribe_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "channels: {n} subscribers on {} channels ready in {subscribe_secs:.1} s",
        args.channels
    );
    tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;

    let mut best: Option<serde_json::Value> = None;
    let mut stopped = "every rate passed".to_string();
    for (step, &rate) in args.rates.iter().enumerate() {
        let outcome = match run_step(&args, &shared, &publishers, step, rate).await {
            Ok(outcome) => outcome,
            Err(e) => {
                // E.g. a target process gone: the summary still says why the run ended.
                let why = format!("step {} could not be measured: {e:#}", step + 1);
                print_summary(&args, &shared, subscribe_secs, best, &why, false);
                return Err(e);
            }
        };
        println!("{outcome}");
        let passed = outcome["passed"].as_bool() == Some(true);
        let publish_limited = outcome["publish_limited"].as_bool() == Some(true);
        best = pick_best(best, outcome.clone());
        if !passed {
            stopped = "the p99 limit was passed, or messages were lost".to_string();
            break;
        }
        if publish_limited {
            stopped = format!(
                "the publisher could not reach the offered rate (publish answers took {} ms on \
                 average)",
                outcome["publish_mean_ms"]
            );
            break;
        }
        if shared.failed.load(Ordering::Relaxed) > 0 {
            stopped = "subscribers failed".to_string();
            break;
        }
    }
    print_summary(&args, &shared, subscribe_secs, best, &stopped, false);
    Ok(())
}

/// The run's last line: the highest passing step, or why there is none.
fn print_summary(
    args: &ChannelsArgs,
    shared: &Shared,
    subscribe_secs: f64,
    best: Option<serde_json::Value>,
    stopped: &str,
    no_result: bool,
) {
    let best = best.as_ref();
    let retried = shared.retried.lock().unwrap().clone();
    println!(
        "{}",
        serde_json::json!({
            "label": args.label,
            "channels": args.channels,
            "per_channel": args.per_channel,
            "subscribers": args.channels * args.per_channel,
            "subscribe_secs": (subscribe_secs * 10.0).round() / 10.0,
            "best_deliveries_per_sec": best.map(|b| b["deliveries_per_sec"].clone()),
            "best_p99_ms": best.map(|b| b["p99_ms"].clone()),
            "best_target_cpu_us_per_delivery":
                best.map(|b| b["target_cpu_us_per_delivery"].clone()),
            "stopped": stopped,
            "no_result": no_result,
            "failed_subscribers": shared.failed.load(Ordering::Relaxed),
            "subscribe_retries": retried.values().sum::<usize>(),
            "subscribe_retries_by_reason": retried,
            "publish_connections": args.publish_connections,
            "publish_threads": args.publish_threads,
            "first_error": shared.first_error.lock().unwrap().clone(),
        })
    );
}

/// Until every subscriber has its first body bytes (and the proxy's count, with `--metric`).
async fn wait_ready(
    args: &ChannelsArgs,
    shared: &Shared,
    n: usize,
    started: Instant,
) -> anyhow::Result<()> {
    loop {
        let failed = shared.failed.load(Ordering::Relaxed);
        if failed > 0 {
            bail!(
                "{failed} subscribers failed: {}",
                shared
                    .first_error
                    .lock()
                    .unwrap()
                    .clone()
                    .unwrap_or_default()
            );
        }
        if shared.ready.load(Ordering::Relaxed) >= n {
            break;
        }
        if started.elapsed() > SUBSCRIBE_MAX {
            bail!(
                "only {} of {n} subscribers ready",
                shared.ready.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let Some(metric) = &args.metric else {
        return Ok(());
    };
    loop {
        let count = read_metric(args.publish, &args.metric_path, metric).await?;
        if count >= n as f64 {
            return Ok(());
        }
        if started.elapsed() > SUBSCRIBE_MAX {
            bail!("{metric} stayed at {count}, under {n}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One SSE subscriber: connects (waiting for a permit), reads its stream to the end, and
/// records every stamped delivery.
async fn subscriber(
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    proxy: SocketAddr,
    source: Option<IpAddr>,
    path: String,
    attempts: u32,
) {
    // Held until the first body bytes: at most `--connect-concurrency` subscribes in flight.
    let mut permit = permits.acquire_owned().await.ok();
    // A proxy may refuse a subscribe while it warms up or while a burst of subscribes keeps it
    // busy (Pushpin answers 502 or 500): tried again with a growing pause, at most `attempts`
    // times.
    let mut pause = Duration::from_millis(100);
    let mut attempt = 1;
    let (mut stream, rest, mut body) = loop {
        match establish(proxy, source, &path).await {
            Ok(ok) => break ok,
            Err(e) if attempt >= attempts => {
                return shared.error(format!("{path}: {e} (attempt {attempt} of {attempts})"))
            }
            Err(e) => {
                *shared.retried.lock().unwrap().entry(e).or_default() += 1;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(SUBSCRIBE_PAUSE_MAX);
                attempt += 1;
            }
        }
    };
    let mut text = Vec::new();
    let mut first = rest;
    let mut chunk = [0u8; 4096];
    let mut ready = false;
    loop {
        if !first.is_empty() {
            if let Err(e) = body.feed(&first, &mut text) {
                return shared.error(format!("{path}: {e}"));
            }
            first.clear();
        }
        if !text.is_empty() && !ready {
            ready = true;
            shared.ready.fetch_add(1, Ordering::Relaxed);
            drop(permit.take());
        }
        // Whole lines only; a partial one waits for the rest.
        if let Some(end) = text.iter().rposition(|&b| b == b'\n') {
            let now = stamp::now_us();
            let lines = String::from_utf8_lossy(&text[..=end]).into_owned();
            for Stamp { seq, ts_us } in stamp::parse_stamps(&lines) {
                let step = (seq / STEP_SEQ) as usize;
                if step < MAX_STEPS {
                    shared.received[step].fetch_add(1, Ordering::Relaxed);
                    let latency = now.saturating_sub(ts_us).min(u64::from(u32::MAX)) as u32;
                    shared.latencies[step].lock().unwrap().push(latency);
                    shared.last_delivery_us.store(now, Ordering::Relaxed);
                }
            }
            text.drain(..=end);
        }
        if body.is_done() {
            return shared.error(format!("{path}: the stream ended"));
        }
        match stream.read(&mut chunk).await {
            Ok(0) => return shared.error(format!("{path}: the stream was closed")),
            Ok(k) => first.extend_from_slice(&chunk[..k]),
            Err(e) => return shared.error(format!("{path}: {e}")),
        }
    }
}

/// Connects, sends the subscribe request and reads the response head: the stream, the bytes read
/// past the head, and the body's decoder; or why not (without the path, so that the reasons of
/// many subscribers can be counted together), for a `200` with a readable head only.
async fn establish(
    proxy: SocketAddr,
    source: Option<IpAddr>,
    path: &str,
) -> Result<(TcpStream, Vec<u8>, Body), String> {
    let mut stream = open(proxy, source)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(&sse::to_request(path, &crate::host_header(proxy)))
        .await
        .map_err(|e| format!("request: {e}"))?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) => return Err("closed before the response head".to_string()),
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
            Err(e) => return Err(format!("reading the response head: {e}")),
        }
        match sse::parse_head(&buf) {
            Ok(Some(head)) if head.status == 200 => {
                let rest = buf[head.len..].to_vec();
                return Ok((stream, rest, Body::new(head.framing)));
            }
            Ok(Some(head)) => return Err(refusal(head.status, &head.framing, &buf[head.len..])),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Why a subscribe was refused: the status, and the first line of a `Content-Length` body if it
/// came with the head (Pushpin's `Accept service unavailable.`), at most 80 characters.
fn refusal(status: u16, framing: &sse::Framing, body: &[u8]) -> String {
    let text = match framing {
        sse::Framing::Length(_) => String::from_utf8_lossy(body),
        _ => "".into(),
    };
    match text.lines().map(str::trim).find(|l| !l.is_empty()) {
        Some(line) => format!(
            "status {status}: {}",
            line.chars().take(80).collect::<String>()
        ),
        None => format!("status {status}"),
    }
}

async fn open(proxy: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let stream = match source {
        None => TcpStream::connect(proxy).await?,
        Some(ip) => {
            let socket = match ip {
                IpAddr::V4(_) => TcpSocket::new_v4()?,
                IpAddr::V6(_) => TcpSocket::new_v6()?,
            };
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(proxy).await?
        }
    };
    stream.set_nodelay(true)?;
    stream.set_zero_linger()?;
    Ok(stream)
}

/// One step: publish at `rate` for `--step-secs` (the publishers on their own runtime), drain,
/// and summarise.
async fn run_step(
    args: &ChannelsArgs,
    shared: &Shared,
    publishers: &tokio::runtime::Handle,
    step: usize,
    rate: u64,
) -> anyhow::Result<serde_json::Value> {
    let conns = args.publish_connections as u64;
    let total = rate * args.step_secs;
    let cpu_before = CpuTimes::sample(&args.target_pids)?;
    let start = Instant::now();
    let next_seq = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..conns {
        // Connection c sends messages c, c + conns, c + 2 conns, … of the step, message m due
        // at start + m / rate.
        let next_seq = next_seq.clone();
        let (publish, style, channels) = (args.publish, args.publish_style, args.channels);
        tasks.spawn_on(
            async move {
                let mut accepted = 0u64;
                let mut errors = Vec::new();
                // Time spent waiting on publish answers, for the step's mean round trip.
                let mut waited = Duration::ZERO;
                let mut sender = None;
                let mut rng = Rng::new(step as u64 * 7919 + c + 1);
                let mut m = c;
                while m < total {
                    let due = start + Duration::from_micros(m * 1_000_000 / rate);
                    tokio::time::sleep_until(due.into()).await;
                    let seq = step as u64 * STEP_SEQ + next_seq.fetch_add(1, Ordering::Relaxed) + 1;
                    let channel = format!("c{}", rng.below(channels as u64));
                    let sent = Instant::now();
                    let answer =
                        publish_one(&mut sender, publish, style, &channel, Stamp::now(seq)).await;
                    waited += sent.elapsed();
                    match answer {
                        Ok(()) => accepted += 1,
                        Err(e) => {
                            sender = None;
                            errors.push(format!("{e:#}"));
                        }
                    }
                    m += conns;
                }
                (accepted, errors, waited)
            },
            publishers,
        );
    }
    let (mut accepted, mut errors, mut waited) = (0u64, Vec::new(), Duration::ZERO);
    while let Some(joined) = tasks.join_next().await {
        let (a, e, w) = joined.context("a publish task panicked")?;
        accepted += a;
        errors.extend(e);
        waited += w;
    }
    let sent = accepted + errors.len() as u64;
    let publish_mean_ms = waited.as_secs_f64() * 1000.0 / sent.max(1) as f64;
    let publish_secs = start.elapsed().as_secs_f64();
    let expected = accepted * args.per_channel as u64;

    // Drain: until all arrived, nothing came for DRAIN_IDLE, or DRAIN_MAX.
    let drain_start = Instant::now();
    loop {
        let got = shared.received[step].load(Ordering::Relaxed);
        let idle_us =
            stamp::now_us().saturating_sub(shared.last_delivery_us.load(Ordering::Relaxed));
        if got >= expected
            || Duration::from_micros(idle_us) > DRAIN_IDLE
            || drain_start.elapsed() > DRAIN_MAX
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = shared.received[step].load(Ordering::Relaxed);
    let cpu = CpuTimes::sample(&args.target_pids)?.since(&cpu_before);
    let mut lat = std::mem::take(&mut *shared.latencies[step].lock().unwrap());
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        (f64::from(lat[i]) / 100.0).round() / 10.0
    };
    let p99 = pct(0.99);
    let lost = expected.saturating_sub(got);
    let achieved = accepted as f64 / publish_secs;
    let passed =
        lost == 0 && errors.is_empty() && !lat.is_empty() && p99 <= args.p99_limit_ms as f64;
    Ok(serde_json::json!({
        "label": args.label,
        "step": step + 1,
        "offered_per_sec": rate,
        "published_per_sec": achieved.round(),
        "deliveries_per_sec": (got as f64 / publish_secs).round(),
        "delivered": got,
        "lost": lost,
        "publish_errors": errors.len(),
        "first_publish_error": errors.first(),
        "p50_ms": pct(0.5),
        "p99_ms": p99,
        "max_ms": pct(1.0),
        "passed": passed,
        "publish_limited": achieved < 0.9 * rate as f64,
        "publish_mean_ms": (publish_mean_ms * 100.0).round() / 100.0,
        "step_secs": (cpu.wall_secs * 100.0).round() / 100.0,
        "target_cpu_secs": (!args.target_pids.is_empty()).then(|| (cpu.target_secs * 100.0).round() / 100.0),
        "bench_cpu_secs": (cpu.bench_secs * 100.0).round() / 100.0,
        "target_cpu_us_per_delivery": (!args.target_pids.is_empty() && got > 0)
            .then(|| (cpu.target_secs * 1e7 / got as f64).round() / 10.0),
    }))
}

/// The better of the best step so far and this one: a passing step with more deliveries/s. (A
/// step that passes but whose publisher fell behind can deliver less than the one before.)
fn pick_best(
    best: Option<serde_json::Value>,
    outcome: serde_json::Value,
) -> Option<serde_json::Value> {
    let rate = |v: &serde_json::Value| v["deliveries_per_sec"].as_f64().unwrap_or(0.0);
    if outcome["passed"].as_bool() != Some(true) {
        return best;
    }
    match best {
        Some(b) if rate(&b) >= rate(&outcome) => Some(b),
        _ => Some(outcome),
    }
}

/// CPU seconds so far of the target's processes (summed) and of this driver, and when.
#[derive(Debug, Clone, Copy, PartialEq)]
struct CpuTimes {
    target_secs: f64,
    bench_secs: f64,
    wall_secs: f64,
}

impl CpuTimes {
    /// Reads `/proc` now; fails, naming the pid, if a target process has gone.
    fn sample(target_pids: &[u32]) -> anyhow::Result<CpuTimes> {
        let target = usage::sample_all(target_pids).context("a --target-pid process")?;
        let bench = usage::sample(std::process::id())?;
        Ok(CpuTimes {
            target_secs: target.iter().map(|s| s.cpu_secs).sum(),
            bench_secs: bench.cpu_secs,
            wall_secs: stamp::now_us() as f64 / 1e6,
        })
    }

    /// What was used from `before` to `self`.
    fn since(&self, before: &CpuTimes) -> CpuTimes {
        CpuTimes {
            target_secs: (self.target_secs - before.target_secs).max(0.0),
            bench_secs: (self.bench_secs - before.bench_secs).max(0.0),
            wall_secs: (self.wall_secs - before.wall_secs).max(0.0),
        }
    }
}

/// Publishes one stamped message to `channel` over the kept-alive `sender` (opened when `None`).
async fn publish_one(
    sender: &mut Option<http1::SendRequest<Full<Bytes>>>,
    addr: SocketAddr,
    style: PublishStyle,
    channel: &str,
    stamp: Stamp,
) -> anyhow::Result<()> {
    let request = crate::fanout::control::publish_request(
        style,
        channel,
        Mode::Sse,
        stamp,
        &ItemOpts::default(),
    );
    let exchange = async {
        let conn = match sender.take().filter(|s| !s.is_closed()) {
            Some(s) => s,
            None => {
                let stream = TcpStream::connect(addr)
                    .await
                    .with_context(|| format!("connecting to {addr}"))?;
                stream.set_nodelay(true)?;
                let (s, conn) = http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                s
            }
        };
        let mut conn = conn;
        conn.ready().await?;
        let mut req = Request::new(Full::new(Bytes::from(request.body)));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = request.path.parse()?;
        req.headers_mut()
            .insert(header::HOST, crate::host_header(addr).parse()?);
        req.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(request.content_type),
        );
        let response = conn.send_request(req).await?;
        let status = response.status();
        let closing = response
            .headers()
            .get(header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let body = response.into_body().collect().await?.to_bytes();
        if !closing {
            *sender = Some(conn);
        }
        if !status.is_success() {
            bail!(
                "publish answered {status}: {}",
                String::from_utf8_lossy(&body).trim()
            );
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(PUBLISH_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("no publish answer within {PUBLISH_TIMEOUT:?}"))?
}

/// A small xorshift generator: which channel each message goes to, the same every run.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_is_the_passing_step_with_most_deliveries() {
        let step = |n: u64, rate: f64, passed: bool| serde_json::json!({"step": n, "deliveries_per_sec": rate, "passed": passed});
        let best = pick_best(None, step(1, 100.0, false));
        assert!(best.is_none());
        let best = pick_best(best, step(2, 2000.0, true));
        let best = pick_best(best, step(3, 4000.0, true));
        // Passed, but its publisher fell behind: fewer deliveries than step 3.
        let best = pick_best(best, step(4, 3000.0, true));
        let best = pick_best(best, step(5, 9000.0, false));
        assert_eq!(best.unwrap()["step"], 3);
    }

    #[test]
    fn refusal_names_status_and_body_line() {
        let length = sse::Framing::Length(28);
        assert_eq!(
            refusal(500, &length, b"Accept service unavailable.\n"),
            "status 500: Accept service unavailable."
        );
        assert_eq!(refusal(502, &length, b""), "status 502");
        // A chunked body's first line is a chunk size, not a reason.
        assert_eq!(
            refusal(503, &sse::Framing::Chunked, b"1c\r\nbusy\r\n"),
            "status 503"
        );
        let long = "x".repeat(200);
        assert_eq!(
            refusal(500, &length, long.as_bytes()).len(),
            "status 500: ".len() + 80
        );
    }

    #[test]
    fn cpu_times_subtract_per_field() {
        let before = CpuTimes {
            target_secs: 10.0,
            bench_secs: 3.0,
            wall_secs: 100.0,
        };
        let after = CpuTimes {
            target_secs: 12.5,
            bench_secs: 3.25,
            wall_secs: 104.0,
        };
        let used = after.since(&before);
        assert_eq!(
            used,
            CpuTimes {
                target_secs: 2.5,
                bench_secs: 0.25,
                wall_secs: 4.0
            }
        );
        // A restarted target never yields negative time.
        assert_eq!(before.since(&after).target_secs, 0.0);
    }

    #[test]
    fn cpu_times_read_this_process() {
        let me = std::process::id();
        // The targets are read before the driver, and CPU time only grows.
        let t = CpuTimes::sample(&[me]).unwrap();
        assert!(t.target_secs <= t.bench_secs);
        let e = CpuTimes::sample(&[u32::MAX]).unwrap_err();
        assert!(format!("{e:#}").contains(&u32::MAX.to_string()), "{e:#}");
    }

    #[test]
    fn rng_spreads_over_every_channel() {
        let mut rng = Rng::new(1);
        let mut seen = [false; 50];
        for _ in 0..5000 {
            seen[rng.below(50) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
}
