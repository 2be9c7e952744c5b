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
            "requests {}\nholds {}\n",
            answer.requests.load(Ordering::Relaxed),
            answer.holds.load(Ordering::Relaxed)
        );
        return Ok(plain(Bytes::from(body)));
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
    };
    Ok(response)
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
