//! One fan-out worker process: a share of the subscribers.
//!
//! The worker opens its subscribers through the proxy, at most `--connect-concurrency` of them
//! being set up at once, and records the latency of every stamped message they receive. An SSE
//! subscriber retries (up to [`MAX_CONNECT_ATTEMPTS`] times, with a [`Backoff`]) until its
//! stream delivers its first bytes, then holds that stream and never reconnects (a stream that
//! breaks afterwards is counted as closed). A long-poll subscriber re-polls on the same
//! keep-alive connection as soon as a response completes, and opens a new connection if the old
//! one closes. A WebSocket subscriber ([`ws`]) retries like an SSE one until its handshake
//! completes. Every failed attempt is tallied by its error text.
//!
//! The worker runs on a single-threaded runtime; it reports over stdout (see [`super::wire`]) and
//! exits when asked on stdin, when stdin closes, or at `--deadline-secs`, whichever comes first.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::Args;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncBufReadExt as _;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

use super::stamp::{self, Stamp};
use super::wire::{self, Counters, Report, WorkerResult};
use super::Mode;

mod ws;

/// Connection attempts a long-poll subscriber makes before giving up.
const MAX_CONNECT_ATTEMPTS: u32 = 20;
/// Pause after the first failed attempt; it doubles with each further failure.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);
/// Longest pause between attempts.
const MAX_RECONNECT_PAUSE: Duration = Duration::from_millis(3200);

/// Exponential pacing of a subscriber's retries, so a proxy that is failing requests is not
/// also flooded with immediate retries.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(RECONNECT_PAUSE)
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(MAX_RECONNECT_PAUSE);
    }

    fn reset(&mut self) {
        self.0 = RECONNECT_PAUSE;
    }
}

/// Flags of the hidden `fanout-worker` subcommand, set by the parent.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Proxy address the subscribers connect to.
    #[arg(long)]
    pub proxy: SocketAddr,
    /// Subscriber kind.
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// Subscribers this worker opens.
    #[arg(long)]
    pub subscribers: usize,
    /// Global index of this worker's first subscriber (spreads source addresses evenly).
    #[arg(long, default_value_t = 0)]
    pub first_index: usize,
    /// Number of messages the parent will publish (sequence numbers 1..=M).
    #[arg(long)]
    pub messages: usize,
    /// Subscribers of this worker being set up at once.
    #[arg(long)]
    pub connect_concurrency: usize,
    /// Comma-separated source addresses, used round-robin.
    #[arg(long, default_value = "")]
    pub source_ips: String,
    /// Request path.
    #[arg(long)]
    pub path: String,
    /// Exit after this many seconds even if the parent never asks.
    #[arg(long)]
    pub deadline_secs: u64,
}

/// Counters and samples shared by the subscribers of one worker.
struct Shared {
    proxy: SocketAddr,
    host: String,
    path: String,
    source_ips: Vec<IpAddr>,
    messages: usize,
    permits: Semaphore,
    connected: AtomicU64,
    headers: AtomicU64,
    ready: AtomicU64,
    failed: AtomicU64,
    closed: AtomicU64,
    reconnects: AtomicU64,
    polls: AtomicU64,
    received: AtomicU64,
    duplicates: AtomicU64,
    last_delivery_us: AtomicU64,
    latencies_us: Mutex<Vec<Vec<u64>>>,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    fn counters(&self) -> Counters {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counters {
            connected: get(&self.connected),
            headers: get(&self.headers),
            ready: get(&self.ready),
            failed: get(&self.failed),
            closed: get(&self.closed),
            reconnects: get(&self.reconnects),
            polls: get(&self.polls),
            received: get(&self.received),
        }
    }

    fn error(&self, what: impl Into<String>) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        *errors.entry(what.into()).or_default() += 1;
    }

    /// Records the stamps found in `text` for one subscriber; `seen` tracks its sequence numbers.
    fn record(&self, text: &str, seen: &mut [bool]) {
        let now = stamp::now_us();
        for Stamp { seq, ts_us } in stamp::parse_stamps(text) {
            let Some(slot) = (seq as usize).checked_sub(1).filter(|&i| i < self.messages) else {
                continue;
            };
            if std::mem::replace(&mut seen[slot], true) {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.received.fetch_add(1, Ordering::Relaxed);
            self.last_delivery_us.fetch_max(now, Ordering::Relaxed);
            let mut lat = self.latencies_us.lock().unwrap_or_else(|e| e.into_inner());
            lat[slot].push(now.saturating_sub(ts_us));
        }
    }

    fn result(&self) -> WorkerResult {
        WorkerResult {
            counters: self.counters(),
            latencies_us: self
                .latencies_us
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            errors: self
                .errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            last_delivery_us: self.last_delivery_us.load(Ordering::Relaxed),
        }
    }
}

/// Runs the worker until it is asked for its result or its deadline passes.
pub fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let source_ips = crate::parse_ip_list(&args.source_ips).map_err(anyhow::Error::msg)?;
    if args.connect_concurrency == 0 {
        bail!("--connect-concurrency must be at least 1");
    }
    let shared = Arc::new(Shared {
        proxy: args.proxy,
        host: crate::host_header(args.proxy),
        path: args.path.clone(),
        source_ips,
        messages: args.messages,
        permits: Semaphore::new(args.connect_concurrency),
        connected: AtomicU64::new(0),
        headers: AtomicU64::new(0),
        ready: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        closed: AtomicU64::new(0),
        reconnects: AtomicU64::new(0),
        polls: AtomicU64::new(0),
        received: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        last_delivery_us: AtomicU64::new(0),
        latencies_us: Mutex::new(vec![Vec::new(); args.messages]),
        errors: Mutex::new(BTreeMap::new()),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the worker runtime")?;
    runtime.block_on(async {
        for i in 0..args.subscribers {
            let shared = Arc::clone(&shared);
            let index = args.first_index + i;
            match args.mode {
                Mode::Sse => tokio::spawn(sse_subscriber(shared, index)),
                Mode::Longpoll => tokio::spawn(longpoll_subscriber(shared, index)),
                Mode::Woh => tokio::spawn(ws::subscriber(shared, index)),
            };
        }
        tokio::spawn(report_progress(Arc::clone(&shared)));
        let deadline = tokio::time::sleep(Duration::from_secs(args.deadline_secs));
        tokio::select! {
            () = wait_for_finish() => {}
            () = deadline => eprintln!("fanout-worker: deadline reached, reporting"),
        }
    });
    emit(&Report::Result(shared.result()))?;
    // Subscriber tasks and the blocking stdin reader would only delay the exit.
    std::process::exit(0);
}

/// Returns when the parent writes `finish` or closes stdin.
async fn wait_for_finish() {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim() == wire::FINISH {
            return;
        }
    }
}

async fn report_progress(shared: Arc<Shared>) {
    let mut last = None;
    let mut tick = tokio::time::interval(wire::PROGRESS_EVERY);
    loop {
        tick.tick().await;
        let now = shared.counters();
        if last != Some(now) {
            if let Err(e) = emit(&Report::Progress(now)) {
                eprintln!("fanout-worker: cannot report: {e}");
                return;
            }
            last = Some(now);
        }
    }
}

fn emit(report: &Report) -> anyhow::Result<()> {
    let line = serde_json::to_string(report)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// Opens one TCP connection to the proxy, from the source address for `index`.
async fn open_tcp(shared: &Shared, index: usize) -> anyhow::Result<TcpStream> {
    let stream = match shared
        .source_ips
        .get(index % shared.source_ips.len().max(1))
    {
        None => TcpStream::connect(shared.proxy).await?,
        Some(ip) => {
            let socket = match ip {
                IpAddr::V4(_) => TcpSocket::new_v4()?,
                IpAddr::V6(_) => TcpSocket::new_v6()?,
            };
            socket.bind(SocketAddr::new(*ip, 0))?;
            socket.connect(shared.proxy).await?
        }
    };
    stream.set_nodelay(true)?;
    // Close with a reset: thousands of client-side TIME_WAIT sockets left by one run would
    // slow the kernel's ephemeral port search for every connect() of the next.
    stream.set_zero_linger()?;
    Ok(stream)
}

/// Opens one HTTP/1.1 client connection to the proxy, from the source address for `index`.
async fn connect(shared: &Shared, index: usize) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
    let stream = open_tcp(shared, index).await?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // The connection ends when either side closes it; the subscriber sees that itself.
        let _ = conn.await;
    });
    Ok(sender)
}

fn request(shared: &Shared, accept: &'static str) -> Request<Empty<Bytes>> {
    let mut req = Request::new(Empty::new());
    *req.uri_mut() = shared.path.parse().unwrap_or_else(|_| "/".parse().unwrap());
    let headers = req.headers_mut();
    headers.insert(header::HOST, shared.host.parse().expect("socket address"));
    headers.insert(header::ACCEPT, header::HeaderValue::from_static(accept));
    req
}

async fn sse_subscriber(shared: Arc<Shared>, index: usize) {
    let mut seen = vec![false; shared.messages];
    let mut connected = false;
    let mut backoff = Backoff::new();
    for _ in 0..MAX_CONNECT_ATTEMPTS {
        let outcome = {
            let Ok(permit) = shared.permits.acquire().await else {
                return;
            };
            sse_stream(&shared, index, permit, &mut seen, &mut connected).await
        };
        match outcome {
            // Once data has flowed, a broken stream is a result, not something to retry.
            StreamEnd::AfterData => {
                shared.closed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            StreamEnd::BeforeData => backoff.wait().await,
        }
    }
    shared.error("gave up subscribing");
    shared.failed.fetch_add(1, Ordering::Relaxed);
}

/// How an SSE stream attempt ended.
enum StreamEnd {
    /// Nothing was received: the attempt may be repeated.
    BeforeData,
    /// The stream was established and has now ended.
    AfterData,
}

/// One SSE attempt: holds `permit` until the first body bytes arrive, then reads to the end.
/// `connected` is set on the subscriber's first established connection.
async fn sse_stream(
    shared: &Shared,
    index: usize,
    permit: tokio::sync::SemaphorePermit<'_>,
    seen: &mut [bool],
    connected: &mut bool,
) -> StreamEnd {
    let mut permit = Some(permit);
    let mut sender = match connect(shared, index).await {
        Ok(s) => s,
        Err(e) => {
            shared.error(format!("connect: {e}"));
            return StreamEnd::BeforeData;
        }
    };
    if !std::mem::replace(connected, true) {
        shared.connected.fetch_add(1, Ordering::Relaxed);
    }
    let response = match sender
        .send_request(request(shared, "text/event-stream"))
        .await
    {
        Ok(r) => r,
        Err(e) => {
            shared.error(format!("request: {e}"));
            return StreamEnd::BeforeData;
        }
    };
    let status = response.status();
    if status != StatusCode::OK {
        let body = match tokio::time::timeout(RECONNECT_PAUSE, response.into_body().collect()).await
        {
            Ok(Ok(b)) => b.to_bytes(),
            _ => Bytes::new(),
        };
        shared.error(format!("status {status}: {}", body_excerpt(&body)));
        return StreamEnd::BeforeData;
    }
    shared.headers.fetch_add(1, Ordering::Relaxed);
    let mut body = response.into_body();
    let mut pending: Vec<u8> = Vec::new();
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if permit.take().is_some() {
                    shared.ready.fetch_add(1, Ordering::Relaxed);
                }
                pending.extend_from_slice(&data);
                // Only whole lines are parsed; a partial line waits for the next frame.
                if let Some(end) = pending.iter().rposition(|&b| b == b'\n') {
                    let text = String::from_utf8_lossy(&pending[..=end]).into_owned();
                    pending.drain(..=end);
                    shared.record(&text, seen);
                }
            }
            Some(Err(e)) => {
                shared.error(format!("stream: {e}"));
                break;
            }
            None => break,
        }
    }
    if permit.is_some() {
        shared.error("stream ended before any data");
        StreamEnd::BeforeData
    } else {
        StreamEnd::AfterData
    }
}

async fn longpoll_subscriber(shared: Arc<Shared>, index: usize) {
    let mut seen = vec![false; shared.messages];
    let mut connected_once = false;
    let mut answered_once = false;
    let mut attempts = 0;
    let mut backoff = Backoff::new();
    while attempts < MAX_CONNECT_ATTEMPTS {
        let sender = {
            let Ok(_permit) = shared.permits.acquire().await else {
                return;
            };
            connect(&shared, index).await
        };
        let mut sender = match sender {
            Ok(s) => s,
            Err(e) => {
                shared.error(format!("connect: {e}"));
                attempts += 1;
                backoff.wait().await;
                continue;
            }
        };
        attempts = 0;
        if !std::mem::replace(&mut connected_once, true) {
            shared.connected.fetch_add(1, Ordering::Relaxed);
            shared.ready.fetch_add(1, Ordering::Relaxed);
        } else {
            shared.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        while sender.ready().await.is_ok() {
            let response = match sender.send_request(request(&shared, "*/*")).await {
                Ok(r) => r,
                Err(e) => {
                    shared.error(format!("poll: {e}"));
                    backoff.wait().await;
                    break;
                }
            };
            if !std::mem::replace(&mut answered_once, true) {
                shared.headers.fetch_add(1, Ordering::Relaxed);
            }
            let status = response.status();
            let body = match response.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    shared.error(format!("poll body: {e}"));
                    backoff.wait().await;
                    break;
                }
            };
            shared.polls.fetch_add(1, Ordering::Relaxed);
            if status != StatusCode::OK {
                shared.error(format!("status {status}: {}", body_excerpt(&body)));
                backoff.wait().await;
                continue;
            }
            backoff.reset();
            shared.record(&String::from_utf8_lossy(&body), &mut seen);
        }
    }
    shared.error("gave up reconnecting");
    shared.failed.fetch_add(1, Ordering::Relaxed);
}

/// The start of an error body, on one line, for the error tally.
fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(80)]);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
