//! One fan-out worker process: a share of the subscribers.
//!
//! Subscriber `i` (its global index, counted over all workers) connects to proxy
//! `i % proxies` of the `--proxy` list, from source address `i % addresses` of `--source-ips`,
//! so every worker spreads its share over every proxy and the parent's round-robin holds over
//! the whole run. The worker opens its subscribers, at most `--connect-concurrency` of them
//! being set up at once, and records the latency of every stamped message they receive. An SSE
//! subscriber reads its stream straight off the socket ([`super::sse`]) and retries (up to
//! [`MAX_CONNECT_ATTEMPTS`] times, with a [`Backoff`]) until its stream delivers its first bytes,
//! then holds that stream and never reconnects (a stream that breaks afterwards is counted as
//! closed); with `--tls` it makes a full TLS handshake first ([`crate::tls`]) and reads the same
//! way through the TLS session. With `--http2` the SSE subscribers are streams of HTTP/2
//! connections read with hyper's client, cleartext with prior knowledge or, with `--tls`, over
//! TLS with ALPN `h2` (a server that selects anything else fails those streams at once). A
//! long-poll subscriber uses hyper's client: it re-polls on the same keep-alive connection as
//! soon as a response completes, and opens a new connection if the old one closes; a reliable
//! one (`--mode longpoll-reliable`) names the highest seq it has received in each re-poll, as
//! `?last=m<seq>` appended to the path. A WebSocket subscriber ([`ws`]) opens its TCP
//! connection the same way as the others and retries like an SSE one until its handshake
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
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{
    AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _,
};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

use super::sse::{self, Body, WireError};
use super::stamp::{self, Stamp};
use super::wire::{self, Counters, ProxyTally, Report, WorkerResult};
use super::Mode;

mod bayeux;
mod ws;

/// Connection attempts a subscriber makes before giving up.
const MAX_CONNECT_ATTEMPTS: u32 = 20;
/// Pause after the first failed attempt; it doubles with each further failure.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);
/// Longest pause between attempts.
const MAX_RECONNECT_PAUSE: Duration = Duration::from_millis(3200);
/// Read buffer of one SSE subscriber (it also has to hold the response head).
const SSE_READ_BUFFER: usize = 4096;
/// What an SSE subscriber keeps for reading its body once the head is in: a published message
/// is a few hundred bytes, and a million subscribers over many workers should not each hold
/// 4 KiB of it (a longer frame takes more reads).
const SSE_BODY_READ_BUFFER: usize = 1024;

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
    /// Proxy addresses the subscribers connect to, round-robin by global index (repeatable).
    #[arg(long = "proxy", required = true)]
    pub proxies: Vec<SocketAddr>,
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
    /// The channel (Bayeux modes subscribe to `/<channel>`).
    #[arg(long, default_value = "bench")]
    pub channel: String,
    /// Exit after this many seconds even if the parent never asks.
    #[arg(long)]
    pub deadline_secs: u64,
    /// SSE subscribers speak TLS.
    #[arg(long)]
    pub tls: bool,
    /// The CA the proxy's certificate is checked against (else it is not checked).
    #[arg(long)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// SSE subscribers are HTTP/2 streams (cleartext with prior knowledge, or with `--tls`
    /// over TLS with ALPN `h2`).
    #[arg(long)]
    pub http2: bool,
    /// With `--http2`, SSE streams per connection (the last connection may have fewer).
    #[arg(long, default_value_t = 1)]
    pub streams_per_connection: usize,
    /// Long-poll subscribers wait this long after an answer before they poll again.
    #[arg(long, default_value_t = 0)]
    pub repoll_delay_ms: u64,
}

/// Counters and samples shared by the subscribers of one worker.
struct Shared {
    proxies: Vec<SocketAddr>,
    hosts: Vec<String>,
    /// The SSE request for each proxy, ready to write.
    sse_requests: Vec<Vec<u8>>,
    path: String,
    /// The Bayeux channel of the Bayeux modes.
    bayeux_channel: String,
    source_ips: Vec<IpAddr>,
    messages: usize,
    /// Long-poll subscribers' pause between an answer and the next poll.
    repoll_delay: std::time::Duration,
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
    /// Wall clock of the worker's first connection attempt (`u64::MAX`: none yet).
    first_connect_us: AtomicU64,
    /// Wall clock when the last of its subscribers became ready so far (0: none yet).
    last_ready_us: AtomicU64,
    samples: Mutex<Samples>,
    errors: Mutex<BTreeMap<String, u64>>,
    /// The TLS client settings, when subscribers speak TLS.
    tls: Option<tokio_rustls::TlsConnector>,
}

/// Every delivery's latency, by message and by proxy; one lock for both.
struct Samples {
    /// `latencies_us[seq - 1]`.
    latencies_us: Vec<Vec<u64>>,
    /// One tally per proxy, in `--proxy` order.
    per_proxy: Vec<ProxyTally>,
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

    /// The proxy subscriber `index` uses, as an index into `proxies`.
    fn proxy_of(&self, index: usize) -> usize {
        index % self.proxies.len()
    }

    /// Tallies an error of a subscriber of proxy `proxy`; with several proxies the text names it.
    fn error(&self, proxy: usize, what: impl Into<String>) {
        let mut what = what.into();
        if self.proxies.len() > 1 {
            what = format!("{}: {what}", self.proxies[proxy]);
        }
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        *errors.entry(what).or_default() += 1;
    }

    /// Counts a subscriber of proxy `proxy` as ready.
    fn mark_ready(&self, proxy: usize) {
        self.ready.fetch_add(1, Ordering::Relaxed);
        self.last_ready_us
            .fetch_max(stamp::now_us(), Ordering::Relaxed);
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.per_proxy[proxy].ready += 1;
    }

    /// Records the stamps found in `text` for one subscriber of proxy `proxy`; `seen` tracks its
    /// sequence numbers. Returns the highest (expected) seq found, duplicates included.
    fn record(&self, text: &str, seen: &mut [bool], proxy: usize) -> Option<u64> {
        let now = stamp::now_us();
        let mut highest = None;
        for Stamp { seq, ts_us } in stamp::parse_stamps(text) {
            let Some(slot) = (seq as usize).checked_sub(1).filter(|&i| i < self.messages) else {
                continue;
            };
            highest = highest.max(Some(seq));
            if std::mem::replace(&mut seen[slot], true) {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.received.fetch_add(1, Ordering::Relaxed);
            self.last_delivery_us.fetch_max(now, Ordering::Relaxed);
            let us = now.saturating_sub(ts_us);
            let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
            samples.latencies_us[slot].push(us);
            samples.per_proxy[proxy].record(slot, us);
        }
        highest
    }

    fn result(&self) -> WorkerResult {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        WorkerResult {
            counters: self.counters(),
            latencies_us: samples.latencies_us.clone(),
            per_proxy: samples.per_proxy.clone(),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            errors: self
                .errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            last_delivery_us: self.last_delivery_us.load(Ordering::Relaxed),
            first_connect_us: match self.first_connect_us.load(Ordering::Relaxed) {
                u64::MAX => 0,
                us => us,
            },
            last_ready_us: self.last_ready_us.load(Ordering::Relaxed),
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
        hosts: args
            .proxies
            .iter()
            .map(|&p| crate::host_header(p))
            .collect(),
        sse_requests: args
            .proxies
            .iter()
            .map(|&p| sse::to_request(&args.path, &crate::host_header(p)))
            .collect(),
        proxies: args.proxies.clone(),
        path: args.path.clone(),
        bayeux_channel: format!("/{}", args.channel),
        source_ips,
        messages: args.messages,
        repoll_delay: std::time::Duration::from_millis(args.repoll_delay_ms),
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
        first_connect_us: AtomicU64::new(u64::MAX),
        last_ready_us: AtomicU64::new(0),
        samples: Mutex::new(Samples {
            latencies_us: vec![Vec::new(); args.messages],
            per_proxy: vec![ProxyTally::new(args.messages); args.proxies.len()],
        }),
        errors: Mutex::new(BTreeMap::new()),
        tls: match args.tls {
            true => {
                let alpn = match args.http2 {
                    true => crate::tls::Alpn::H2,
                    false => crate::tls::Alpn::Http1,
                };
                Some(crate::tls::connector(args.tls_ca.as_deref(), alpn)?)
            }
            false => None,
        },
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the worker runtime")?;
    runtime.block_on(async {
        if args.http2 {
            let k = args.streams_per_connection.max(1);
            for first in (0..args.subscribers).step_by(k) {
                let streams = k.min(args.subscribers - first);
                let shared = Arc::clone(&shared);
                tokio::spawn(h2_connection(shared, args.first_index + first, streams));
            }
        }
        for i in (0..args.subscribers).filter(|_| !args.http2) {
            let shared = Arc::clone(&shared);
            let index = args.first_index + i;
            match args.mode {
                Mode::Sse => tokio::spawn(sse_subscriber(shared, index)),
                Mode::Longpoll => tokio::spawn(longpoll_subscriber(shared, index, false)),
                Mode::LongpollReliable => tokio::spawn(longpoll_subscriber(shared, index, true)),
                Mode::Woh => tokio::spawn(ws::subscriber(shared, index)),
                Mode::BayeuxLp => tokio::spawn(bayeux::long_polling(shared, index)),
                Mode::BayeuxWs => tokio::spawn(bayeux::websocket(shared, index)),
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

/// Opens one TCP connection to subscriber `index`'s proxy, from its source address.
async fn open(shared: &Shared, index: usize) -> std::io::Result<TcpStream> {
    shared
        .first_connect_us
        .fetch_min(stamp::now_us(), Ordering::Relaxed);
    let proxy = shared.proxies[shared.proxy_of(index)];
    let stream = match shared
        .source_ips
        .get(index % shared.source_ips.len().max(1))
    {
        None => TcpStream::connect(proxy).await?,
        Some(ip) => {
            let socket = match ip {
                IpAddr::V4(_) => TcpSocket::new_v4()?,
                IpAddr::V6(_) => TcpSocket::new_v6()?,
            };
            socket.bind(SocketAddr::new(*ip, 0))?;
            socket.connect(proxy).await?
        }
    };
    stream.set_nodelay(true)?;
    // Close with a reset: thousands of client-side TIME_WAIT sockets left by one run would
    // slow the kernel's ephemeral port search for every connect() of the next.
    stream.set_zero_linger()?;
    Ok(stream)
}

/// Opens one hyper client connection to subscriber `index`'s proxy, from its source address.
async fn connect(shared: &Shared, index: usize) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
    let stream = open(shared, index).await?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // The connection ends when either side closes it; the subscriber sees that itself.
        let _ = conn.await;
    });
    Ok(sender)
}

fn request(shared: &Shared, proxy: usize, accept: &'static str) -> Request<Empty<Bytes>> {
    request_to(shared, &shared.path, proxy, accept)
}

/// A request for `path` (which may carry a query) to proxy `proxy`.
fn request_to(
    shared: &Shared,
    path: &str,
    proxy: usize,
    accept: &'static str,
) -> Request<Empty<Bytes>> {
    let mut req = Request::new(Empty::new());
    *req.uri_mut() = path.parse().unwrap_or_else(|_| "/".parse().unwrap());
    let headers = req.headers_mut();
    headers.insert(
        header::HOST,
        shared.hosts[proxy].parse().expect("socket address"),
    );
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
    shared.error(shared.proxy_of(index), "gave up subscribing");
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
    let proxy = shared.proxy_of(index);
    let stream = match open(shared, index).await {
        Ok(s) => s,
        Err(e) => {
            shared.error(proxy, format!("connect: {e}"));
            return StreamEnd::BeforeData;
        }
    };
    if !std::mem::replace(connected, true) {
        shared.connected.fetch_add(1, Ordering::Relaxed);
    }
    let Some(connector) = &shared.tls else {
        return sse_exchange(shared, proxy, permit, seen, stream).await;
    };
    match crate::tls::handshake(connector, stream).await {
        Ok(tls) => sse_exchange(shared, proxy, permit, seen, tls).await,
        Err(e) => {
            shared.error(proxy, format!("TLS handshake: {e}"));
            StreamEnd::BeforeData
        }
    }
}

/// The request and the stream of one SSE attempt on `stream` (TCP, or TLS over it).
async fn sse_exchange<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    proxy: usize,
    permit: tokio::sync::SemaphorePermit<'_>,
    seen: &mut [bool],
    mut stream: S,
) -> StreamEnd {
    let mut permit = Some(permit);
    if let Err(e) = stream.write_all(&shared.sse_requests[proxy]).await {
        shared.error(proxy, format!("request: {e}"));
        return StreamEnd::BeforeData;
    }
    let mut buf = vec![0u8; SSE_READ_BUFFER];
    let (head, mut filled) = match read_head(&mut stream, &mut buf).await {
        Ok(h) => h,
        Err(e) => {
            shared.error(proxy, format!("request: {e}"));
            return StreamEnd::BeforeData;
        }
    };
    if head.status != 200 {
        shared.error(proxy, refusal(&mut stream, &mut buf, head, filled).await);
        return StreamEnd::BeforeData;
    }
    let mut body = Body::new(head.framing);
    let mut pending: Vec<u8> = Vec::new();
    shared.headers.fetch_add(1, Ordering::Relaxed);
    let mut start = head.len;
    loop {
        if let Err(e) = body.feed(&buf[start..filled], &mut pending) {
            shared.error(proxy, format!("stream: {e}"));
            break;
        }
        if !pending.is_empty() && permit.take().is_some() {
            shared.mark_ready(proxy);
        }
        // Only whole lines are parsed; a partial line waits for the next read.
        if let Some(end) = pending.iter().rposition(|&b| b == b'\n') {
            shared.record(&String::from_utf8_lossy(&pending[..=end]), seen, proxy);
            pending.drain(..=end);
        }
        if body.is_done() {
            break;
        }
        if buf.len() > SSE_BODY_READ_BUFFER {
            buf.truncate(SSE_BODY_READ_BUFFER);
            buf.shrink_to_fit();
        }
        start = 0;
        filled = match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                shared.error(proxy, format!("stream: {e}"));
                break;
            }
        };
    }
    if permit.is_some() {
        shared.error(proxy, "stream ended before any data");
        StreamEnd::BeforeData
    } else {
        StreamEnd::AfterData
    }
}

/// One HTTP/2 connection (cleartext with prior knowledge, or TLS with ALPN `h2`) carrying
/// `streams` SSE subscribers, the first of global index `first` (whose proxy and source address
/// the connection uses). The connection is retried like an SSE subscriber's until its handshake
/// completes; then each stream is its own subscriber, retried on that connection until its
/// first body bytes, then held. If the connection fails for good, or the TLS server does not
/// select `h2` (not retried: it would not on the next attempt either), its streams count as
/// failed.
async fn h2_connection(shared: Arc<Shared>, first: usize, streams: usize) {
    let proxy = shared.proxy_of(first);
    let mut backoff = Backoff::new();
    for _ in 0..MAX_CONNECT_ATTEMPTS {
        let sender = {
            let Ok(_permit) = shared.permits.acquire().await else {
                return;
            };
            h2_connect(&shared, first).await
        };
        match sender {
            Ok(sender) => {
                shared
                    .connected
                    .fetch_add(streams as u64, Ordering::Relaxed);
                let scheme = if shared.tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                let uri: http::Uri = format!("{scheme}://{}{}", shared.hosts[proxy], shared.path)
                    .parse()
                    .unwrap_or_else(|_| "/".parse().expect("a path"));
                let tasks: Vec<_> = (0..streams)
                    .map(|_| {
                        let shared = Arc::clone(&shared);
                        tokio::spawn(h2_stream(shared, proxy, sender.clone(), uri.clone()))
                    })
                    .collect();
                for task in tasks {
                    let _ = task.await;
                }
                return;
            }
            Err(H2ConnectError::Alpn(e)) => {
                shared.error(proxy, format!("ALPN: {e}"));
                shared.failed.fetch_add(streams as u64, Ordering::Relaxed);
                return;
            }
            Err(H2ConnectError::Failed(e)) => {
                shared.error(proxy, format!("connect: {e:#}"));
                backoff.wait().await;
            }
        }
    }
    shared.error(proxy, "gave up subscribing");
    shared.failed.fetch_add(streams as u64, Ordering::Relaxed);
}

/// Why an HTTP/2 connection could not be set up.
enum H2ConnectError {
    /// The TLS server did not select `h2`.
    Alpn(String),
    /// Anything else; worth another attempt.
    Failed(anyhow::Error),
}

async fn h2_connect(
    shared: &Shared,
    index: usize,
) -> Result<http2::SendRequest<Empty<Bytes>>, H2ConnectError> {
    let stream = open(shared, index)
        .await
        .map_err(|e| H2ConnectError::Failed(e.into()))?;
    let Some(connector) = &shared.tls else {
        return h2_handshake(stream).await;
    };
    let tls = crate::tls::handshake(connector, stream)
        .await
        .map_err(|e| match crate::tls::alpn_refusal(&e) {
            Some(why) => H2ConnectError::Alpn(why),
            None => H2ConnectError::Failed(anyhow::Error::new(e).context("TLS handshake")),
        })?;
    crate::tls::selected_h2(&tls).map_err(H2ConnectError::Alpn)?;
    h2_handshake(tls).await
}

/// The HTTP/2 handshake on `io`, its connection driven by a task of its own.
async fn h2_handshake<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: S,
) -> Result<http2::SendRequest<Empty<Bytes>>, H2ConnectError> {
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .map_err(|e| H2ConnectError::Failed(e.into()))?;
    tokio::spawn(async move {
        // Its streams see the end themselves.
        let _ = conn.await;
    });
    Ok(sender)
}

/// One SSE subscriber as an HTTP/2 stream on `sender`'s connection: retried there until its
/// first body bytes arrive (holding a connect permit meanwhile), then read to the end.
async fn h2_stream(
    shared: Arc<Shared>,
    proxy: usize,
    mut sender: http2::SendRequest<Empty<Bytes>>,
    uri: http::Uri,
) {
    let mut seen = vec![false; shared.messages];
    let mut backoff = Backoff::new();
    for _ in 0..MAX_CONNECT_ATTEMPTS {
        let Ok(permit) = shared.permits.acquire().await else {
            return;
        };
        let mut permit = Some(permit);
        let mut req = Request::new(Empty::new());
        *req.uri_mut() = uri.clone();
        req.headers_mut().insert(
            header::ACCEPT,
            header::HeaderValue::from_static("text/event-stream"),
        );
        let sent = match sender.ready().await {
            Ok(()) => sender.send_request(req).await,
            Err(e) => Err(e),
        };
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                shared.error(proxy, format!("request: {e}"));
                if sender.is_closed() {
                    break;
                }
                drop(permit);
                backoff.wait().await;
                continue;
            }
        };
        let status = response.status();
        let mut body = response.into_body();
        if status != StatusCode::OK {
            let excerpt = tokio::time::timeout(RECONNECT_PAUSE, body.collect()).await;
            let text = match excerpt {
                Ok(Ok(b)) => body_excerpt(&b.to_bytes()),
                _ => String::new(),
            };
            shared.error(proxy, format!("status {status}: {text}"));
            drop(permit);
            backoff.wait().await;
            continue;
        }
        shared.headers.fetch_add(1, Ordering::Relaxed);
        let mut pending: Vec<u8> = Vec::new();
        loop {
            match body.frame().await {
                None => break,
                Some(Err(e)) => {
                    shared.error(proxy, format!("stream: {e}"));
                    break;
                }
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    pending.extend_from_slice(&data);
                }
            }
            if !pending.is_empty() && permit.take().is_some() {
                shared.mark_ready(proxy);
            }
            // Only whole lines are parsed; a partial line waits for the next frame.
            if let Some(end) = pending.iter().rposition(|&b| b == b'\n') {
                shared.record(&String::from_utf8_lossy(&pending[..=end]), &mut seen, proxy);
                pending.drain(..=end);
            }
        }
        if permit.is_none() {
            shared.closed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        shared.error(proxy, "stream ended before any data");
        drop(permit);
        if sender.is_closed() {
            break;
        }
        backoff.wait().await;
    }
    shared.error(proxy, "gave up subscribing");
    shared.failed.fetch_add(1, Ordering::Relaxed);
}

/// Describes a subscription answered with `head` (not `200`): `status 404 Not Found: ` and the
/// start of the body, of which `buf` holds the first bytes up to `filled`. The rest is read for
/// at most [`RECONNECT_PAUSE`].
async fn refusal<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut [u8],
    head: sse::Head,
    filled: usize,
) -> String {
    let mut body = Body::new(head.framing);
    let mut pending: Vec<u8> = Vec::new();
    let excerpt = async {
        let _ = body.feed(&buf[head.len..filled], &mut pending);
        while pending.len() < 80 && !body.is_done() {
            match stream.read(&mut buf[..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if body.feed(&buf[..n], &mut pending).is_err() {
                        break;
                    }
                }
            }
        }
    };
    let _ = tokio::time::timeout(RECONNECT_PAUSE, excerpt).await;
    let status = StatusCode::from_u16(head.status)
        .map_or_else(|_| head.status.to_string(), |s| s.to_string());
    format!("status {status}: {}", body_excerpt(&pending))
}

/// Reads until `buf` starts with a whole response head; returns it and how much of `buf` is
/// filled (the body's first bytes may follow the head).
async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> anyhow::Result<(sse::Head, usize)> {
    let mut filled = 0;
    loop {
        if let Some(head) = sse::parse_head(&buf[..filled])? {
            return Ok((head, filled));
        }
        if filled == buf.len() {
            if buf.len() >= sse::MAX_HEAD {
                return Err(WireError::HeadTooLarge.into());
            }
            buf.resize(buf.len() * 2, 0);
        }
        match stream.read(&mut buf[filled..]).await? {
            0 => bail!("connection closed before a response"),
            n => filled += n,
        }
    }
}

/// `path` with the reliable long-poll position `?last=m<seq>` (or `&last=...`) appended.
fn with_position(path: &str, seq: u64) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!(
        "{path}{sep}{}={}",
        crate::origin::LAST_PARAM,
        super::control::item_id(seq)
    )
}

/// One long-poll subscriber; `reliable`: each re-poll names the highest seq received so far.
async fn longpoll_subscriber(shared: Arc<Shared>, index: usize, reliable: bool) {
    let mut seen = vec![false; shared.messages];
    // Highest seq received (reliable mode's position).
    let mut highest: Option<u64> = None;
    let mut connected_once = false;
    let mut answered_once = false;
    let mut attempts = 0;
    let mut backoff = Backoff::new();
    let proxy = shared.proxy_of(index);
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
                shared.error(proxy, format!("connect: {e}"));
                attempts += 1;
                backoff.wait().await;
                continue;
            }
        };
        attempts = 0;
        if !std::mem::replace(&mut connected_once, true) {
            shared.connected.fetch_add(1, Ordering::Relaxed);
            shared.mark_ready(proxy);
        } else {
            shared.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        while sender.ready().await.is_ok() {
            let req = match highest.filter(|_| reliable) {
                Some(seq) => request_to(&shared, &with_position(&shared.path, seq), proxy, "*/*"),
                None => request(&shared, proxy, "*/*"),
            };
            let response = match sender.send_request(req).await {
                Ok(r) => r,
                Err(e) => {
                    shared.error(proxy, format!("poll: {e}"));
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
                    shared.error(proxy, format!("poll body: {e}"));
                    backoff.wait().await;
                    break;
                }
            };
            shared.polls.fetch_add(1, Ordering::Relaxed);
            if status != StatusCode::OK {
                shared.error(proxy, format!("status {status}: {}", body_excerpt(&body)));
                backoff.wait().await;
                continue;
            }
            backoff.reset();
            let got = shared.record(&String::from_utf8_lossy(&body), &mut seen, proxy);
            highest = highest.max(got);
            if !shared.repoll_delay.is_zero() {
                tokio::time::sleep(shared.repoll_delay).await;
            }
        }
    }
    shared.error(proxy, "gave up reconnecting");
    shared.failed.fetch_add(1, Ordering::Relaxed);
}

/// The start of an error body, on one line, for the error tally.
fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(80)]);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reliable_polls_name_their_position() {
        assert_eq!(with_position("/", 3), "/?last=m3");
        assert_eq!(with_position("/lp?x=1", 12), "/lp?x=1&last=m12");
    }
}
