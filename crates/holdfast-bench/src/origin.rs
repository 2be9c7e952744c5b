//! A minimal, fast HTTP/1.1 origin for the benchmarks.
//!
//! Every request gets the same answer, chosen at start-up, so the origin costs as little as
//! possible and the proxy is what gets measured:
//!
//! - `--grip none`: `200 OK`, `text/plain`, body `hello world!\n` (13 bytes), keep-alive.
//! - `--grip stream`: `Grip-Hold: stream`, `Grip-Channel: C`, `Content-Type: text/event-stream`
//!   and a short SSE comment as the initial body, so a subscriber sees bytes once it is held.
//! - `--grip response`: `Grip-Hold: response`, `Grip-Channel: C`; the body is what a long-poll
//!   client gets if its hold times out.
//! - `--grip reliable`: reliable SSE for the reconnect-storm benchmark (see [`GripMode::Reliable`]);
//!   `/_bench/stats` then also counts initial and `/next` requests.
//!
//! `--filter F` (stream and response holds) makes the channel header `Grip-Channel: C; filter=F`
//! and adds `Grip-Set-Meta: user="u<n>", id_format="%(C)s"`, `n` counting holds from 0, so the
//! `skip-self` and `build-id` filters have something to work on.
//!
//! `GET /_bench/stats` is answered by the origin itself with its request counters, so a driver
//! can tell how many holds a proxy without a metrics endpoint has been handed.
//! The process exits by itself after `--exit-after` seconds.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Args, ValueEnum};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Body of the plain (`--grip none`) answer.
const HELLO: &[u8] = b"hello world!\n";
/// Initial body of a stream hold: an SSE comment line.
const STREAM_PREAMBLE: &[u8] = b":ok\n\n";
/// Body a long-poll client receives when its hold times out.
const TIMEOUT_BODY: &[u8] = b"timeout\n";
/// Path answered with the origin's own counters.
const STATS_PATH: &str = "/_bench/stats";
/// Path the driver sets the reliable mode's last published id with (`/_bench/last?N`).
const LAST_PATH: &str = "/_bench/last";
/// The reliable mode's next link.
const NEXT_PATH: &str = "/next";

/// Flags of `holdfast-bench origin`.
#[derive(Debug, Args)]
pub struct OriginArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// What to answer: a plain body, or GRIP instructions for a stream or response hold.
    #[arg(long, value_enum, default_value_t = GripMode::None)]
    grip: GripMode,
    /// Channel named in `Grip-Channel`.
    #[arg(long, default_value = "bench", value_name = "C")]
    channel: String,
    /// `Grip-Timeout` for response holds, in seconds (omitted when not given).
    #[arg(long, value_name = "SECS")]
    grip_timeout: Option<u32>,
    /// Filter named on the channel (`skip-self`, `build-id`, ...), with per-hold meta.
    #[arg(long, value_name = "F")]
    filter: Option<String>,
    /// Worker threads of the runtime.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Exit after this many seconds.
    #[arg(long, default_value_t = 3600, value_name = "SECS")]
    exit_after: u64,
}

/// The kind of answer the origin gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GripMode {
    /// A plain 13-byte body.
    None,
    /// `Grip-Hold: stream` with `Content-Type: text/event-stream`.
    Stream,
    /// `Grip-Hold: response` (long-polling).
    Response,
    /// Reliable SSE: `Grip-Hold: stream`, `Grip-Channel: C; prev-id=P` (P from `Last-Event-ID`,
    /// or `Grip-Last` on next-link requests, else `0`) and `Grip-Link: </next>; rel=next`.
    /// `/next` answers the items after P up to the id last set with `POST /_bench/last?N`.
    Reliable,
}

/// The fixed answer and the counters every connection shares.
struct Answer {
    mode: GripMode,
    channel: HeaderValue,
    /// Channel name, for the `id_format` meta; set only with `--filter`.
    meta_channel: Option<String>,
    timeout: Option<HeaderValue>,
    requests: AtomicU64,
    holds: AtomicU64,
    /// Reliable mode: requests other than `/next`, and `/next` requests.
    initial: AtomicU64,
    next: AtomicU64,
    /// Reliable mode: the last id published, as told by the driver (`POST /_bench/last?N`).
    last: AtomicU64,
}

/// Runs the origin until `--exit-after` elapses.
pub fn run(args: OriginArgs) -> anyhow::Result<()> {
    let answer = Arc::new(Answer {
        mode: args.grip,
        channel: HeaderValue::from_str(&match &args.filter {
            Some(f) => format!("{}; filter={f}", args.channel),
            None => args.channel.clone(),
        })
        .context("--channel/--filter is not a header value")?,
        meta_channel: args.filter.as_ref().map(|_| args.channel.clone()),
        timeout: args.grip_timeout.map(HeaderValue::from),
        requests: AtomicU64::new(0),
        holds: AtomicU64::new(0),
        initial: AtomicU64::new(0),
        next: AtomicU64::new(0),
        last: AtomicU64::new(0),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        let accept = accept_loop(listener, answer);
        // Expiry is the normal way out; the loop itself only returns on a listener error.
        match tokio::time::timeout(Duration::from_secs(args.exit_after), accept).await {
            Ok(result) => result,
            Err(_) => Ok(()),
        }
    })
}

async fn accept_loop(listener: TcpListener, answer: Arc<Answer>) -> anyhow::Result<()> {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            // Out of descriptors or a reset before accept: keep serving the others.
            Err(e) => {
                eprintln!("origin: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let answer = Arc::clone(&answer);
        tokio::spawn(async move {
            let service = service_fn(move |req| respond(Arc::clone(&answer), req));
            // Clients closing mid-request is routine under load; nothing to report.
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn respond(
    answer: Arc<Answer>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == STATS_PATH {
        let body = format!(
            "requests {}\nholds {}\ninitial {}\nnext {}\nlast {}\n",
            answer.requests.load(Ordering::Relaxed),
            answer.holds.load(Ordering::Relaxed),
            answer.initial.load(Ordering::Relaxed),
            answer.next.load(Ordering::Relaxed),
            answer.last.load(Ordering::Relaxed),
        );
        return Ok(plain(Bytes::from(body)));
    }
    if req.uri().path() == LAST_PATH {
        let n = req.uri().query().and_then(|q| q.parse::<u64>().ok());
        return Ok(match n {
            Some(n) => {
                answer.last.store(n, Ordering::Relaxed);
                plain(Bytes::from_static(b"ok\n"))
            }
            None => {
                let mut r = plain(Bytes::from_static(b"want /_bench/last?N\n"));
                *r.status_mut() = StatusCode::BAD_REQUEST;
                r
            }
        });
    }
    answer.requests.fetch_add(1, Ordering::Relaxed);
    let response = match answer.mode {
        GripMode::None => plain(Bytes::from_static(HELLO)),
        GripMode::Stream => {
            let n = answer.holds.fetch_add(1, Ordering::Relaxed);
            let mut r = Response::new(Full::new(Bytes::from_static(STREAM_PREAMBLE)));
            let h = r.headers_mut();
            h.insert("grip-hold", HeaderValue::from_static("stream"));
            h.insert("grip-channel", answer.channel.clone());
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            set_meta(&answer, n, &mut r);
            r
        }
        GripMode::Response => {
            let n = answer.holds.fetch_add(1, Ordering::Relaxed);
            let mut r = plain(Bytes::from_static(TIMEOUT_BODY));
            let h = r.headers_mut();
            h.insert("grip-hold", HeaderValue::from_static("response"));
            h.insert("grip-channel", answer.channel.clone());
            if let Some(t) = &answer.timeout {
                h.insert("grip-timeout", t.clone());
            }
            set_meta(&answer, n, &mut r);
            r
        }
        GripMode::Reliable => reliable(&answer, &req),
    };
    Ok(response)
}

/// The reliable-SSE answer: a stream hold resuming after the client's position, with a next link.
/// Initial requests get an empty body (just the SSE comment); `/next` gets the items after the
/// position up to the last published id, each `id: K` / `data: item K`, the same as published.
fn reliable<B>(answer: &Answer, req: &Request<B>) -> Response<Full<Bytes>> {
    answer.holds.fetch_add(1, Ordering::Relaxed);
    let is_next = req.uri().path() == NEXT_PATH;
    let grip_last = req
        .headers()
        .get_all("grip-last")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(grip_last_id);
    let event_id = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let position = if is_next {
        answer.next.fetch_add(1, Ordering::Relaxed);
        grip_last.or(event_id).unwrap_or(0)
    } else {
        answer.initial.fetch_add(1, Ordering::Relaxed);
        event_id.or(grip_last).unwrap_or(0)
    };
    let mut body = STREAM_PREAMBLE.to_vec();
    let mut prev = position;
    if is_next {
        let last = answer.last.load(Ordering::Relaxed);
        while prev < last {
            prev += 1;
            body.extend_from_slice(reliable_event(prev).as_bytes());
        }
    }
    let mut r = Response::new(Full::new(Bytes::from(body)));
    let h = r.headers_mut();
    h.insert("grip-hold", HeaderValue::from_static("stream"));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{}; prev-id={prev}",
        answer.channel.to_str().unwrap_or("bench")
    )) {
        h.insert("grip-channel", v);
    }
    h.insert("grip-link", HeaderValue::from_static("</next>; rel=next"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// The SSE event for item `id` in reliable mode (what the driver publishes, too).
pub fn reliable_event(id: u64) -> String {
    format!("id: {id}\ndata: item {id}\n\n")
}

/// The numeric `last-id` of a `Grip-Last: ch; last-id=N` value.
fn grip_last_id(v: &str) -> Option<u64> {
    v.split(';').find_map(|p| {
        let (k, val) = p.trim().split_once('=')?;
        (k.trim() == "last-id")
            .then(|| val.trim().trim_matches('"').parse().ok())
            .flatten()
    })
}

/// With `--filter`, adds `Grip-Set-Meta: user="u<n>", id_format="%(C)s"`.
fn set_meta<B>(answer: &Answer, n: u64, r: &mut Response<B>) {
    if let Some(ch) = &answer.meta_channel {
        if let Ok(v) = HeaderValue::from_str(&format!("user=\"u{n}\", id_format=\"%({ch})s\"")) {
            r.headers_mut().insert("grip-set-meta", v);
        }
    }
}

fn plain(body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}
