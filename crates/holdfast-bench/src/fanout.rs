//! The fan-out benchmark driver.
//!
//! A run has four phases, each with a time cap:
//!
//! 1. **Subscribe.** `--subscribers` are spread over `--workers` processes ([`pool`], each one a
//!    [`worker`]), none holding more than [`MAX_PER_WORKER`] sockets. With `--http2` each
//!    subscriber is an HTTP/2 stream, `--streams-per-connection` of them on one cleartext
//!    prior-knowledge connection, or with `--tls` on one TLS connection that negotiated ALPN
//!    `h2` (checked once per proxy before the workers start). With several `--proxy`
//!    addresses, subscriber `i` (counted over all workers) goes to proxy `i % proxies`: every
//!    worker gets the whole list, so each proxy gets an equal share (±1) whatever the number of
//!    workers. The driver then waits until they are all subscribed, decided by `--ready`:
//!    - `metrics`: `holdfast_subscriptions` summed over the `GET /metrics` of every `--publish`
//!      address is ≥ N (Holdfast, a Holdfast cluster, the floor server), without a break for
//!      `--settle-ms`. `--metrics-path` and `--metric` read another page and sample, e.g.
//!      Nchan's `nchan_stub_status` with its `subscribers: N` line.
//!    - `settle`: for proxies without such a count (Pushpin). SSE: every subscriber has received
//!      its response headers and the origin's initial body. Long-poll (plain or reliable): every
//!      subscriber has connected and sent its request. WebSocket: every subscriber's handshake has completed.
//!      With `--origin`, the origin must also have answered at least that many GRIP holds (for
//!      WebSockets, `OPEN`s). Then the counters (and the origin's count) must stay unchanged for
//!      `--settle-ms`.
//!
//!    Either way the subscribe time runs until the start of that quiet period, the signal read
//!    every 50 ms. SSE and WebSocket runs also time the phase at the clients, from the first
//!    connection attempt to the last subscriber becoming ready (first body bytes, or completed
//!    handshake), and take the subscribe rate from that when every subscriber became ready.
//! 2. **Publish.** `--messages` stamped messages ([`stamp`]) `--interval-ms` apart, on a fixed
//!    schedule that does not drift with the publish round trip; `--publish-style` says whether
//!    as Pushpin's `POST /publish/` JSON or as Nchan's raw `POST /pub/CHANNEL`. `--publish-to
//!    one` posts each to the first `--publish` address (a Holdfast cluster: any instance reaches
//!    every subscriber); `each` posts it to every address at once (separate Pushpins), stamped
//!    once before the first post, so its latency counts from the start of the whole publish.
//!    With `--mode longpoll-reliable`, items get ids as with `--ids`, the driver resets the bench
//!    origin (`--origin`) before subscribing, and after each publish gives it the item
//!    (`POST /_bench/last?N`, body the item's `http-response` body), so the origin can answer a
//!    client that missed it.
//! 3. **Drain.** Wait until every subscriber has every message, or deliveries stop for
//!    [`DRAIN_IDLE`], or `--drain-ms` passes.
//! 4. **Report** ([`report`]): per message publish → last delivery (the max), p50/p90/p99, delivered and lost,
//!    overall and per proxy; deliveries per second from the first publish to the last delivery
//!    (with `--subscribers 1 --burst`, the rate one client can be sent messages at); subscribe
//!    rate; memory (`--proxy-pid`, summed: every process of the system under test, a cluster's
//!    Redis included) before and after subscribing; CPU time of those processes, of
//!    `--watch-pid` and of the workers, per phase.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use tokio::time::Instant;

pub mod control;
pub mod pool;
pub mod report;
pub mod sse;
pub mod stamp;
pub mod wire;
pub mod worker;

use crate::usage;
use pool::Pool;
use report::{Context, Publication};

/// Most sockets one worker process opens, under the 20,000 open-file limit per process.
pub const MAX_PER_WORKER: usize = 19_000;
/// The drain phase ends once no delivery has arrived for this long.
const DRAIN_IDLE: Duration = Duration::from_secs(3);
/// How often the drain and the publish pauses check on the workers.
const POLL_EVERY: Duration = Duration::from_millis(200);
/// Longest wait for the TLS handshake that checks a proxy selects ALPN `h2`.
const H2_CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the readiness signal is read while subscribing.
const SUBSCRIBE_POLL_EVERY: Duration = Duration::from_millis(50);

/// Subscriber kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// HTTP streaming with `text/event-stream`; messages are `http-stream` content.
    Sse,
    /// Long-polling; messages are `http-response` bodies and clients re-poll after each one.
    Longpoll,
    /// Reliable long-polling (origin `holdfast-bench origin --grip reliable-response`, given with
    /// `--origin`): as `longpoll`, but items carry ids (as with `--ids`), each re-poll names the
    /// highest seq received (`?last=m<seq>`), and after each publish the driver tells the origin
    /// the item (`POST /_bench/last?N` with its body), so a client that missed items between
    /// polls gets them from the proxy's history or, on a `Grip-Last` retry, from the origin.
    LongpollReliable,
    /// WebSockets; messages are `ws-message` content. Through a WebSocket-over-HTTP route
    /// (`over_http`, origin `holdfast-bench origin --grip woh`, which subscribes each connection
    /// in its `OPEN` answer) or a GRIP WebSocket route (origin `--grip ws`, which sends the
    /// subscribe message itself); either way nothing reaches the client before the first
    /// publish, so a subscriber counts as ready once its handshake completes.
    Woh,
    /// Bayeux long-polling at a `bayeux=` endpoint (`--path`, e.g. `/bayeux`; origin
    /// `holdfast-bench origin --grip bayeux`, which allows every subscription): each subscriber
    /// handshakes, subscribes to Bayeux channel `/<--channel>` and then keeps one
    /// `/meta/connect` POST in flight on its keep-alive connection; messages are `json-object`
    /// items whose `data` is the stamp. Ready once the subscribe is answered.
    BayeuxLp,
    /// Bayeux over WebSocket: the handshake is POSTed, then subscribe and connects go over one
    /// WebSocket to `--path`, as Faye does.
    BayeuxWs,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Sse => "sse",
            Mode::Longpoll => "longpoll",
            Mode::LongpollReliable => "longpoll-reliable",
            Mode::Woh => "woh",
            Mode::BayeuxLp => "bayeux-lp",
            Mode::BayeuxWs => "bayeux-ws",
        }
    }
}

/// How messages are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PublishStyle {
    /// Pushpin's `POST /publish/` with a JSON item (Holdfast, Pushpin, the floor server).
    Grip,
    /// Nchan's `POST /pub/CHANNEL` with the raw message as the body (SSE and WebSocket
    /// subscribers).
    Nchan,
}

/// How the driver decides that every subscriber is subscribed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Ready {
    /// Poll the metrics page (`--metrics-path`) of every `--publish` address for `--metric`,
    /// summed, ≥ N.
    Metrics,
    /// Wait for client-side (and origin-side) signs, then for them to stay still.
    Settle,
}

/// Where each message is posted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PublishTo {
    /// The first `--publish` address only (one proxy, or a Holdfast cluster).
    One,
    /// Every `--publish` address, concurrently (independent proxies such as Pushpin).
    Each,
}

impl PublishTo {
    fn name(self) -> &'static str {
        match self {
            PublishTo::One => "one",
            PublishTo::Each => "each",
        }
    }
}

/// Flags of `holdfast-bench fanout`.
#[derive(Debug, Args)]
pub struct FanoutArgs {
    /// Proxy address the subscribers connect to (repeatable: subscribers are spread over them
    /// round-robin).
    #[arg(long = "proxy", value_name = "ADDR", required = true)]
    proxies: Vec<SocketAddr>,
    /// Publish API address (`POST /publish/`, or Nchan's `POST /pub/CHANNEL`; the metrics page
    /// of `--ready metrics` is read there too); repeatable. `--ready metrics` sums over all of
    /// them; `--publish-to` says where messages go.
    #[arg(long = "publish", value_name = "ADDR", required = true)]
    publish: Vec<SocketAddr>,
    /// Post each message to the first `--publish` address, or to each of them.
    #[arg(long, value_enum, default_value_t = PublishTo::One)]
    publish_to: PublishTo,
    /// How messages are published.
    #[arg(long, value_enum, default_value_t = PublishStyle::Grip)]
    publish_style: PublishStyle,
    /// Subscriber kind.
    #[arg(long, value_enum)]
    mode: Mode,
    /// Number of subscribers.
    #[arg(long, value_name = "N")]
    subscribers: usize,
    /// Number of messages to publish.
    #[arg(long, default_value_t = 5, value_name = "M")]
    messages: usize,
    /// Pause between publishes, in milliseconds.
    #[arg(long, default_value_t = 1000, value_name = "I")]
    interval_ms: u64,
    /// Worker processes (default: enough for 19,000 sockets each, at least 2).
    #[arg(long, value_name = "W")]
    workers: Option<usize>,
    /// Subscribers being set up at once, over all workers.
    #[arg(long, default_value_t = 256, value_name = "K")]
    connect_concurrency: usize,
    /// Comma-separated source addresses for the subscribers, used round-robin.
    #[arg(long, default_value = "", value_name = "IPS")]
    source_ips: String,
    /// Request path of the subscribers.
    #[arg(long, default_value = "/")]
    path: String,
    /// Channel to publish to (must match the origin's `Grip-Channel`).
    #[arg(long, default_value = "bench")]
    channel: String,
    /// Process of the system under test whose resident memory is measured (repeatable; values
    /// are summed, so give every process it needs: all proxy instances, and a cluster's Redis).
    #[arg(long = "proxy-pid", value_name = "PID")]
    proxy_pids: Vec<u32>,
    /// Other process whose CPU time is reported but whose memory is not counted (repeatable),
    /// e.g. the bench origin.
    #[arg(long = "watch-pid", value_name = "PID")]
    watch_pids: Vec<u32>,
    /// How readiness is decided.
    #[arg(long, value_enum, default_value_t = Ready::Metrics)]
    ready: Ready,
    /// Metric holding the subscription count, for `--ready metrics`: a line `NAME N` or
    /// `NAME: N` of the metrics page.
    #[arg(long, default_value = "holdfast_subscriptions")]
    metric: String,
    /// Path of the metrics page on the publish address, for `--ready metrics`.
    #[arg(long, default_value = "/metrics", value_name = "PATH")]
    metrics_path: String,
    /// The bench origin's address: `--ready settle` also waits for its hold count, and the
    /// report gives its request count while subscribing and in total.
    #[arg(long, value_name = "ADDR")]
    origin: Option<SocketAddr>,
    /// Quiet period required by `--ready settle`, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    settle_ms: u64,
    /// Cap on the subscribe phase, in seconds.
    #[arg(long, default_value_t = 180)]
    subscribe_timeout_secs: u64,
    /// Cap on the wait for deliveries after the last publish, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    drain_ms: u64,
    /// Appended to each message's content after its stamp, e.g. ` id=%I` for `build-id`.
    #[arg(long, default_value = "", value_name = "S")]
    content_suffix: String,
    /// Item `meta` of each message, a JSON object, e.g. `{"sender":"nobody"}`.
    #[arg(long, value_name = "JSON")]
    item_meta: Option<String>,
    /// Give each item `id` `m<seq>` and `prev-id` `m<seq-1>` (implied by `--mode
    /// longpoll-reliable`).
    #[arg(long)]
    ids: bool,
    /// Publish all messages back to back over one keep-alive connection (a new connection per
    /// request if the server closes it, as Pushpin's does), each request sent when the previous
    /// one is answered, ignoring `--interval-ms`; print the publish rate as a `{"burst": ...}`
    /// line before the report.
    #[arg(long)]
    burst: bool,
    /// With `--burst`, items per publish request.
    #[arg(long, default_value_t = 1, value_name = "K")]
    items_per_publish: usize,
    /// Long-poll subscribers wait this long after each answer before they poll again (0: at
    /// once). With a delay longer than a message's answers take, the answers are measured
    /// without re-polls competing with them; keep it well under `--interval-ms`, or the
    /// re-polls miss the next message.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    repoll_delay_ms: u64,
    /// Subscribers connect over TLS (SSE only; HTTP/1.1, or HTTP/2 with `--http2`); the publish
    /// address stays plain HTTP.
    #[arg(long)]
    tls: bool,
    /// PEM file of the CA the proxy's certificate is checked against, with `--tls`; without it
    /// the certificate is not checked.
    #[arg(long, value_name = "FILE", requires = "tls")]
    tls_ca: Option<PathBuf>,
    /// Publish by inserting each message into the outbox table `--postgres-outbox` of this
    /// PostgreSQL (`postgres://…`), one autocommitted `INSERT` each, for Holdfast's PostgreSQL
    /// source to publish, instead of posting it; the stamp is taken just before the `INSERT`.
    #[arg(long, value_name = "URL", conflicts_with = "burst")]
    publish_postgres: Option<String>,
    /// The outbox table `--publish-postgres` inserts into.
    #[arg(long, value_name = "TABLE", default_value = "holdfast_outbox")]
    postgres_outbox: String,
    /// Subscribers are HTTP/2 streams, read with hyper's client (`--mode sse` only): over
    /// cleartext connections with prior knowledge (h2c, no upgrade), or with `--tls` over TLS
    /// offering ALPN `h2` alone (the run is refused, naming ALPN, if a proxy selects anything
    /// else). Each stream is one subscriber for readiness, delivery and loss, as an HTTP/1.1 one
    /// is.
    #[arg(long)]
    http2: bool,
    /// With `--http2`, SSE streams per connection: each worker opens its share of the
    /// subscribers in connections of K streams (its last connection may have fewer).
    #[arg(long, default_value_t = 1, value_name = "K")]
    streams_per_connection: usize,
    /// Label copied into the report.
    #[arg(long, default_value = "")]
    label: String,
}

/// Runs one fan-out benchmark and prints its report.
pub fn run(args: FanoutArgs) -> anyhow::Result<()> {
    if args.subscribers == 0 || args.messages == 0 {
        bail!("--subscribers and --messages must be at least 1");
    }
    if args.publish_style == PublishStyle::Nchan {
        // Nchan long-polls resume by Last-Modified/Etag, which the subscribers do not send;
        // items carry no id, meta or batch there. Its WebSocket subscribers get the raw
        // message as a text frame, which is what `--mode woh` reads.
        if !matches!(args.mode, Mode::Sse | Mode::Woh) {
            bail!("--publish-style nchan works with --mode sse or woh only");
        }
        if args.burst || args.ids || args.item_meta.is_some() {
            bail!("--publish-style nchan takes none of --burst, --ids, --item-meta");
        }
    }
    if args.tls && args.mode != Mode::Sse {
        bail!("--tls works with --mode sse only");
    }
    if args.http2 && args.mode != Mode::Sse {
        bail!("--http2 works with --mode sse only");
    }
    if args.streams_per_connection == 0 {
        bail!("--streams-per-connection must be at least 1");
    }
    if args.streams_per_connection != 1 && !args.http2 {
        bail!("--streams-per-connection needs --http2");
    }
    if args.mode == Mode::LongpollReliable {
        if args.origin.is_none() {
            bail!("--mode longpoll-reliable needs --origin (the bench origin, --grip reliable-response)");
        }
        if args.burst {
            bail!("--mode longpoll-reliable tells the origin of each publish; it takes no --burst");
        }
    }
    if args.burst && args.publish_to == PublishTo::Each && args.publish.len() > 1 {
        bail!("--burst publishes to one address; use --publish-to one");
    }
    let source_ips = crate::parse_ip_list(&args.source_ips).map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let summary = runtime.block_on(drive(&args, &source_ips))?;
    report::print(&summary);
    Ok(())
}

async fn drive(args: &FanoutArgs, source_ips: &[IpAddr]) -> anyhow::Result<report::Summary> {
    let n = args.subscribers;
    let workers = args
        .workers
        .unwrap_or_else(|| n.div_ceil(MAX_PER_WORKER).max(2))
        .clamp(1, n);
    if n.div_ceil(workers) > MAX_PER_WORKER {
        bail!("{n} subscribers over {workers} workers is more than {MAX_PER_WORKER} per worker");
    }
    let origin_requests = || async {
        match args.origin {
            Some(origin) => control::read_metric(origin, "/_bench/stats", "requests")
                .await
                .ok()
                .map(|v| v as u64),
            None => None,
        }
    };
    if let (Mode::LongpollReliable, Some(origin)) = (args.mode, args.origin) {
        // Forget an earlier run's items, or the first polls would be answered with them.
        control::set_origin_last(origin, 0, None).await?;
    }
    if args.http2 && args.tls {
        // A server that does not select h2 would fail every subscriber; say so before any.
        for &proxy in &args.proxies {
            crate::tls::check_h2(proxy, args.tls_ca.as_deref(), H2_CHECK_TIMEOUT)
                .await
                .with_context(|| format!("--http2 --tls: proxy {proxy}"))?;
        }
    }
    let mut usage = Usage::default();
    usage.take(args, &[]);
    let requests_before = origin_requests().await;
    let started = Instant::now();
    let mut pool = Pool::spawn(worker_args(args, workers, source_ips))?;
    let worker_pids = pool.pids();
    let subscribed = subscribe(args, &mut pool, started).await;
    usage.take(args, &worker_pids);
    let requests_subscribed = origin_requests().await;

    let publish_started_us = stamp::now_us();
    let published = publish_all(args, &mut pool).await;
    drain(args, &mut pool).await;
    usage.take(args, &worker_pids);
    let requests_after = origin_requests().await;
    let results = pool.finish().await;

    let ctx = Context {
        label: args.label.clone(),
        mode: match (args.http2, args.tls) {
            (true, false) => format!("sse-h2x{}", args.streams_per_connection),
            (true, true) => format!("sse-h2x{}-tls", args.streams_per_connection),
            (false, _) => args.mode.name().into(),
        },
        subscribers: n as u64,
        workers,
        interval_ms: args.interval_ms,
        ready_by: match args.ready {
            Ready::Metrics => "metrics".into(),
            Ready::Settle => "settle".into(),
        },
        proxies: args.proxies.iter().map(ToString::to_string).collect(),
        publish_to: args.publish_to.name().into(),
        publish: args.publish.iter().map(ToString::to_string).collect(),
        subscribed: subscribed.count,
        subscribe_secs: subscribed.secs,
        settled: subscribed.settled,
        proxy_usage: usage.proxy,
        other_usage: usage.other,
        origin_requests: [requests_before, requests_subscribed, requests_after],
        publish_started_us,
    };
    Ok(report::summarize(ctx, &published, results))
}

/// Process samples at the three moments of a run: before subscribing, subscribed, after the
/// messages. `proxy[k]` is `None` when a `--proxy-pid` could not be read at moment `k` (its
/// memory would be wrong); other processes that cannot be read are left out.
#[derive(Default)]
struct Usage {
    proxy: [Option<Vec<usage::Sample>>; 3],
    other: [Vec<usage::Sample>; 3],
    taken: usize,
}

impl Usage {
    fn take(&mut self, args: &FanoutArgs, worker_pids: &[u32]) {
        let k = self.taken.min(2);
        self.taken += 1;
        if !args.proxy_pids.is_empty() {
            match usage::sample_all(&args.proxy_pids) {
                Ok(s) => self.proxy[k] = Some(s),
                Err(e) => eprintln!("fanout: cannot measure the proxy processes: {e:#}"),
            }
        }
        self.other[k] = args
            .watch_pids
            .iter()
            .chain(worker_pids)
            .filter_map(|&pid| usage::sample(pid).ok())
            .collect();
    }
}

fn item_opts(args: &FanoutArgs) -> anyhow::Result<control::ItemOpts> {
    let meta = match &args.item_meta {
        Some(m) => Some(serde_json::from_str(m).map_err(|e| anyhow::anyhow!("--item-meta: {e}"))?),
        None => None,
    };
    Ok(control::ItemOpts {
        suffix: args.content_suffix.clone(),
        meta,
        ids: args.ids || args.mode == Mode::LongpollReliable,
    })
}

/// `--burst`: every message back to back, `--items-per-publish` per request, one connection.
async fn publish_burst(args: &FanoutArgs, pool: &mut Pool) -> anyhow::Result<Vec<Publication>> {
    let opts = item_opts(args)?;
    let k = args.items_per_publish.max(1);
    let total = args.messages as u64;
    let mut next = 1u64;
    let requests = total.div_ceil(k as u64);
    let channel = args.channel.clone();
    let mode = args.mode;
    let publisher = control::publish_keepalive(args.publish[0], || {
        if next > total {
            return None;
        }
        let stamps: Vec<_> = (next..(next + k as u64).min(total + 1))
            .map(stamp::Stamp::now)
            .collect();
        next += stamps.len() as u64;
        Some(control::publish_body_with(&channel, mode, &stamps, &opts))
    });
    tokio::pin!(publisher);
    // Keep reading the workers' reports while publishing.
    let (secs, errors) = loop {
        tokio::select! {
            r = &mut publisher => break r?,
            _ = pool.pump_for(POLL_EVERY) => {}
        }
    };
    println!(
        "{}",
        serde_json::json!({
            "burst": {
                "messages": total,
                "requests": requests,
                "items_per_publish": k,
                "secs": secs,
                "messages_per_sec": total as f64 / secs,
                "requests_per_sec": requests as f64 / secs,
                "errors": errors.len(),
                "first_error": errors.first(),
            }
        })
    );
    Ok((1..=total)
        .map(|seq| Publication {
            seq,
            publish_ms: 0.0,
            error: None,
        })
        .collect())
}

/// Publishes the stamped messages on a fixed schedule, listening to the workers in between.
async fn publish_all(args: &FanoutArgs, pool: &mut Pool) -> Vec<Publication> {
    if args.burst {
        match publish_burst(args, pool).await {
            Ok(p) => return p,
            Err(e) => {
                eprintln!("fanout: burst publish failed: {e:#}");
                return Vec::new();
            }
        }
    }
    let opts = item_opts(args).unwrap_or_else(|e| {
        eprintln!("fanout: {e:#}; publishing without item options");
        control::ItemOpts::default()
    });
    if let Some(url) = &args.publish_postgres {
        return publish_postgres(args, url, &opts, pool).await;
    }
    let targets = match args.publish_to {
        PublishTo::One => &args.publish[..1],
        PublishTo::Each => &args.publish[..],
    };
    let mut published = Vec::with_capacity(args.messages);
    let first_at = Instant::now();
    for k in 0..args.messages {
        let at = first_at + Duration::from_millis(args.interval_ms * k as u64);
        pool.pump_until(at).await;
        // One stamp for all the posts: latency counts from before the first one is sent.
        let stamp = stamp::Stamp::now(k as u64 + 1);
        let request =
            control::publish_request(args.publish_style, &args.channel, args.mode, stamp, &opts);
        let sent = Instant::now();
        let outcomes = control::publish_each(targets, request).await;
        let publish_ms = sent.elapsed().as_secs_f64() * 1000.0;
        let mut errors: Vec<String> = outcomes
            .into_iter()
            .filter_map(|o| o.err().map(|e| format!("{e:#}")))
            .collect();
        if let (Mode::LongpollReliable, Some(origin)) = (args.mode, args.origin) {
            // After the publish, as an app records an item once it is published; a client that
            // re-polls in between is held at its position and caught up by the proxy.
            let body = control::longpoll_body(stamp, &opts);
            if let Err(e) = control::set_origin_last(origin, stamp.seq, Some(body)).await {
                errors.push(format!("telling the origin: {e:#}"));
            }
        }
        published.push(Publication {
            seq: stamp.seq,
            publish_ms,
            error: (!errors.is_empty()).then(|| errors.join("; ")),
        });
    }
    published
}

/// `--publish-postgres`: each message an outbox row, inserted on the same schedule.
async fn publish_postgres(
    args: &FanoutArgs,
    url: &str,
    opts: &control::ItemOpts,
    pool: &mut Pool,
) -> Vec<Publication> {
    let client = match tokio_postgres::connect(url, tokio_postgres::NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            client
        }
        Err(e) => {
            eprintln!("fanout: cannot connect to {url}: {e}");
            return Vec::new();
        }
    };
    let insert = format!(
        "INSERT INTO {} (item) VALUES ($1::text::jsonb)",
        args.postgres_outbox
    );
    let mut published = Vec::with_capacity(args.messages);
    let first_at = Instant::now();
    for k in 0..args.messages {
        let at = first_at + Duration::from_millis(args.interval_ms * k as u64);
        pool.pump_until(at).await;
        let stamp = stamp::Stamp::now(k as u64 + 1);
        let item = control::publish_item(&args.channel, args.mode, stamp, opts).to_string();
        let sent = Instant::now();
        let outcome = client.execute(insert.as_str(), &[&item]).await;
        published.push(Publication {
            seq: stamp.seq,
            publish_ms: sent.elapsed().as_secs_f64() * 1000.0,
            error: outcome.err().map(|e| format!("INSERT: {e}")),
        });
    }
    published
}

/// The `fanout-worker` argument lists, subscribers and connect budget split evenly.
fn worker_args(args: &FanoutArgs, workers: usize, source_ips: &[IpAddr]) -> Vec<Vec<String>> {
    let n = args.subscribers;
    let deadline = args.subscribe_timeout_secs
        + (args.interval_ms * args.messages as u64 + args.drain_ms) / 1000
        + 120;
    let mut first = 0;
    (0..workers)
        .map(|w| {
            let count = n / workers + usize::from(w < n % workers);
            let mut list: Vec<String> = args
                .proxies
                .iter()
                .map(|p| format!("--proxy={p}"))
                .collect();
            list.extend([
                format!("--mode={}", args.mode.name()),
                format!("--subscribers={count}"),
                format!("--first-index={first}"),
                format!("--messages={}", args.messages),
                format!(
                    "--connect-concurrency={}",
                    (args.connect_concurrency / workers).max(1)
                ),
                format!("--source-ips={}", crate::to_ip_list(source_ips)),
                format!("--path={}", args.path),
                format!("--channel={}", args.channel),
                format!("--deadline-secs={deadline}"),
                format!("--repoll-delay-ms={}", args.repoll_delay_ms),
            ]);
            if args.tls {
                list.push("--tls".into());
            }
            if let Some(ca) = &args.tls_ca {
                list.push(format!("--tls-ca={}", ca.display()));
            }
            if args.http2 {
                list.push("--http2".into());
                list.push(format!(
                    "--streams-per-connection={}",
                    args.streams_per_connection
                ));
            }
            first += count;
            list
        })
        .collect()
}

/// How the subscribe phase ended.
struct Subscribed {
    /// Subscribers counted as subscribed.
    count: u64,
    /// Seconds from the start until the quiet period began (or until the cap).
    secs: f64,
    /// Whether the quiet period was reached before the cap.
    settled: bool,
}

/// Waits until every subscriber is subscribed and has stayed so for `--settle-ms`, or until the
/// cap passes.
async fn subscribe(args: &FanoutArgs, pool: &mut Pool, started: Instant) -> Subscribed {
    let n = args.subscribers as u64;
    let deadline = started + Duration::from_secs(args.subscribe_timeout_secs);
    let settle = Duration::from_millis(args.settle_ms);
    // Start of the current run of polls in which the condition held.
    let mut reached: Option<Instant> = None;
    let mut last_key = None;
    let mut still_since = Instant::now();
    let mut warned = false;
    let mut count;
    loop {
        pool.pump_for(SUBSCRIBE_POLL_EVERY).await;
        let now = Instant::now();
        let totals = pool.totals();
        let (holds, metric) = match args.ready {
            Ready::Metrics => {
                let page = control::sum_metric(&args.publish, &args.metrics_path, &args.metric);
                let (v, error) = page.await;
                if let Some(e) = error {
                    if !std::mem::replace(&mut warned, true) {
                        eprintln!("fanout: cannot read {}: {e:#}", args.metric);
                    }
                }
                (None, Some(v as u64))
            }
            Ready::Settle => match args.origin {
                Some(origin) => (origin_holds(origin, &mut warned).await, None),
                None => (None, None),
            },
        };
        let all_seen = match metric {
            // A count can touch N and fall back while the proxy re-asks the origin for held
            // requests (Holdfast and Pushpin do so one second after a channel's first
            // subscriber), hence the quiet period in this mode too.
            Some(v) => {
                count = v;
                v >= n
            }
            None => {
                count = match args.mode {
                    Mode::Sse | Mode::Woh | Mode::BayeuxLp | Mode::BayeuxWs => totals.ready,
                    Mode::Longpoll | Mode::LongpollReliable => totals.connected,
                };
                count + totals.failed >= n && holds.is_none_or(|h| h >= count)
            }
        };
        let key = (totals.ready, totals.connected, totals.failed, holds);
        if last_key != Some(key) {
            last_key = Some(key);
            still_since = now;
        }
        if !all_seen {
            reached = None;
        } else if reached.is_none() {
            reached = Some(now);
        }
        let quiet = match metric {
            Some(_) => reached.is_some_and(|r| now - r >= settle),
            None => all_seen && now - still_since >= settle,
        };
        if quiet || now >= deadline {
            if !quiet {
                eprintln!(
                    "fanout: subscriptions not settled after {}s ({count} of {n}); publishing anyway",
                    args.subscribe_timeout_secs
                );
            }
            let at = reached.unwrap_or(now);
            return Subscribed {
                count: count.min(n),
                secs: (at - started).as_secs_f64(),
                settled: quiet,
            };
        }
    }
}

async fn origin_holds(origin: SocketAddr, warned: &mut bool) -> Option<u64> {
    match control::read_metric(origin, "/_bench/stats", "holds").await {
        Ok(v) => Some(v as u64),
        Err(e) => {
            if !std::mem::replace(warned, true) {
                eprintln!("fanout: cannot read the origin's hold count: {e:#}");
            }
            None
        }
    }
}

/// Waits for deliveries to complete or stop after the last publish.
async fn drain(args: &FanoutArgs, pool: &mut Pool) {
    let expected = (args.subscribers * args.messages) as u64;
    let last_publish = Instant::now();
    let cap = last_publish + Duration::from_millis(args.drain_ms);
    let mut received = pool.totals().received;
    let mut changed = last_publish;
    loop {
        pool.pump_for(POLL_EVERY).await;
        let now = Instant::now();
        let r = pool.totals().received;
        if r != received {
            received = r;
            changed = now;
        }
        if r >= expected || now - changed >= DRAIN_IDLE || now >= cap {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: FanoutArgs,
    }

    fn parse(extra: &[&str]) -> FanoutArgs {
        let base = ["fanout", "--proxy=127.0.0.1:1", "--publish=127.0.0.1:2"];
        Cli::try_parse_from(base.iter().chain(extra))
            .expect("flags parse")
            .args
    }

    #[test]
    fn http2_streams_per_connection_reach_every_worker() {
        let args = parse(&[
            "--mode=sse",
            "--subscribers=250",
            "--http2",
            "--streams-per-connection=100",
        ]);
        let lists = worker_args(&args, 2, &[]);
        assert_eq!(lists.len(), 2);
        for list in &lists {
            assert!(list.contains(&"--http2".to_string()), "{list:?}");
            assert!(
                list.contains(&"--streams-per-connection=100".to_string()),
                "{list:?}"
            );
        }
        // HTTP/1.1 workers are given neither flag.
        let plain = worker_args(&parse(&["--mode=sse", "--subscribers=4"]), 2, &[]);
        assert!(plain[0].iter().all(|a| !a.contains("http2")), "{plain:?}");
    }

    #[test]
    fn the_repoll_delay_reaches_every_worker() {
        #[derive(Parser)]
        struct WorkerCli {
            #[command(flatten)]
            args: worker::WorkerArgs,
        }
        let args = parse(&[
            "--mode=longpoll",
            "--subscribers=3",
            "--repoll-delay-ms=1500",
        ]);
        for list in worker_args(&args, 2, &[]) {
            let flags = std::iter::once("fanout-worker".to_string()).chain(list);
            let worker = WorkerCli::try_parse_from(flags)
                .expect("worker flags parse")
                .args;
            assert_eq!(worker.repoll_delay_ms, 1500);
        }
    }

    #[test]
    fn http2_flags_that_cannot_work_are_refused_by_name() {
        let cases: [(&[&str], &str); 3] = [
            (
                &["--mode=longpoll", "--subscribers=1", "--http2"],
                "--http2 works with --mode sse only",
            ),
            (
                &[
                    "--mode=sse",
                    "--subscribers=1",
                    "--streams-per-connection=5",
                ],
                "--streams-per-connection needs --http2",
            ),
            (
                &[
                    "--mode=sse",
                    "--subscribers=1",
                    "--http2",
                    "--streams-per-connection=0",
                ],
                "--streams-per-connection must be at least 1",
            ),
        ];
        for (flags, needle) in cases {
            let err = run(parse(flags)).expect_err("refused").to_string();
            assert!(err.contains(needle), "{flags:?}: {err}");
        }
    }
}
