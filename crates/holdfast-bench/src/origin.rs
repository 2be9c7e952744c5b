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
//! - `--grip reliable-response`: reliable long-polling for `fanout --mode longpoll-reliable` (see
//!   [`GripMode::ReliableResponse`]): a client behind the last published item is answered at once
//!   with the next one, otherwise held with `prev-id`; `/_bench/stats` then also counts `Grip-Last`
//!   retries and immediate answers.
//! - `--grip woh`: a WebSocket-over-HTTP origin (reference §3.4). A `POST` whose events start
//!   with `OPEN` is accepted with `OPEN` and a `c:` control message subscribing the connection
//!   to C, and `Sec-WebSocket-Extensions: grip`; a `CLOSE` is echoed; anything else (`TEXT`,
//!   `PING`, `DISCONNECT`, ...) gets an empty event list. Every answer is `200` with
//!   `Content-Type: application/websocket-events`; `holds` counts the `OPEN`s accepted. Other
//!   methods get the plain answer (so a proxy can be warmed up with a `GET`).
//! - `--grip ws`: a GRIP WebSocket origin (reference §3). A WebSocket upgrade is accepted with
//!   `101` and `Sec-WebSocket-Extensions: grip`, the connection is sent the `c:` message
//!   subscribing it to C, and whatever the proxy sends afterwards is read and dropped; `holds`
//!   counts the upgrades accepted. Requests that are not upgrades get the plain answer.
//! - `--grip bayeux`: the application behind a Bayeux endpoint (route `bayeux=`): every request
//!   is answered `200` with `Grip-Channel: /C`, allowing handshakes and subscriptions to `/C`.
//!
//! `--filter F` (stream and response holds) makes the channel header `Grip-Channel: C; filter=F`
//! and adds `Grip-Set-Meta: user="u<n>", id_format="%(C)s"`, `n` counting holds from 0, so the
//! `skip-self` and `build-id` filters have something to work on.
//!
//! `GET /_bench/stats` is answered by the origin itself with its request counters, so a driver
//! can tell how many holds a proxy without a metrics endpoint has been handed.
//! The process exits by itself after `--exit-after` seconds.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Args, ValueEnum};
use futures_util::{SinkExt as _, StreamExt as _};
use grip::wsevents::{self, Event, EventKind, WsEventsError};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::fanout::control;

/// Body of the plain (`--grip none`) answer.
const HELLO: &[u8] = b"hello world!\n";
/// Initial body of a stream hold: an SSE comment line.
const STREAM_PREAMBLE: &[u8] = b":ok\n\n";
/// Body a long-poll client receives when its hold times out.
const TIMEOUT_BODY: &[u8] = b"timeout\n";
/// Path answered with the origin's own counters.
const STATS_PATH: &str = "/_bench/stats";
/// Path the driver sets the reliable modes' last published id with (`/_bench/last?N`; in
/// `reliable-response` mode the request body is item N's `http-response` body).
const LAST_PATH: &str = "/_bench/last";
/// Query parameter a reliable long-poll client names its position with (`?last=m3`).
pub const LAST_PARAM: &str = "last";
/// The reliable mode's next link.
const NEXT_PATH: &str = "/next";

/// Flags of `holdfast-bench origin`.
#[derive(Debug, Args)]
pub struct OriginArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// What to answer: a plain body, GRIP instructions for a stream or response hold, or
    /// WebSocket-over-HTTP events.
    #[arg(long, value_enum, default_value_t = GripMode::None)]
    grip: GripMode,
    /// Channel named in `Grip-Channel` (`--grip woh`: subscribed to in the `OPEN` answer).
    #[arg(long, default_value = "bench", value_name = "C")]
    channel: String,
    /// `Grip-Timeout` for response holds, in seconds (omitted when not given).
    #[arg(long, value_name = "SECS")]
    grip_timeout: Option<u32>,
    /// Stream holds also subscribe to a channel of their own, `C-<n>` (the n-th hold), so
    /// every subscriber makes a channel: what presence tracking costs at its most.
    #[arg(long)]
    own_channel: bool,
    /// Filter named on the channel (`skip-self`, `build-id`, ...), with per-hold meta.
    #[arg(long, value_name = "F")]
    filter: Option<String>,
    /// `--grip stream`: a request for `/sub/NAME` is held on channel NAME instead of `--channel`
    /// (the many-channels benchmark, whose subscribers use Nchan's paths).
    #[arg(long)]
    channel_from_path: bool,
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
    /// Reliable long-polling. The client's position is the `Grip-Last` naming the channel (sent by
    /// a proxy retrying the request), else the `last` query parameter, in the driver's `--ids`
    /// format (`m<seq>`); none counts as before item 1. If an item after the position is known
    /// (`POST /_bench/last?N` with the item's `http-response` body, after each publish), the
    /// answer is a plain `200` with the first such body; otherwise `Grip-Hold: response`,
    /// `Grip-Channel: C; prev-id=m<position>` (no `prev-id` without a position) and the timeout
    /// body, as `response`.
    ReliableResponse,
    /// WebSocket-over-HTTP: accepts each `OPEN` and subscribes the connection to the channel.
    Woh,
    /// GRIP WebSocket: accepts each WebSocket upgrade with `Sec-WebSocket-Extensions: grip`, sends
    /// the `c:` subscribe message, then reads (and drops) what the proxy sends until it closes.
    Ws,
    /// A Bayeux application: answers every request `200` with `Grip-Channel: /C`, so a `bayeux=`
    /// endpoint allows each handshake and a subscription to Bayeux channel `/C`.
    Bayeux,
}

/// The fixed answer and the counters every connection shares.
struct Answer {
    mode: GripMode,
    channel: HeaderValue,
    /// Channel name as given, for matching `Grip-Last`.
    channel_name: String,
    /// Channel name, for the `id_format` meta; set only with `--filter`.
    meta_channel: Option<String>,
    timeout: Option<HeaderValue>,
    requests: AtomicU64,
    holds: AtomicU64,
    /// Reliable mode: requests other than `/next`, and `/next` requests.
    initial: AtomicU64,
    next: AtomicU64,
    /// Reliable modes: the last id published, as told by the driver (`POST /_bench/last?N`).
    last: AtomicU64,
    /// Reliable long-poll mode: the `http-response` body of each published item, by seq.
    bodies: Mutex<BTreeMap<u64, Bytes>>,
    /// Reliable long-poll mode: requests naming the channel in `Grip-Last`, and requests answered
    /// at once with an item.
    retries: AtomicU64,
    immediate: AtomicU64,
    /// WebSocket-over-HTTP mode: the control message that follows `OPEN` in the accept.
    subscribe: Event,
    /// Stream mode: hold `/sub/NAME` on channel NAME.
    channel_from_path: bool,
    /// `--own-channel`: stream holds also name `C-<n>`.
    own_channel: bool,
}

impl Answer {
    /// The answer for `mode` on `channel` (with a `filter`, and a `Grip-Timeout`), counters at 0.
    fn new(
        mode: GripMode,
        channel: &str,
        filter: Option<&str>,
        timeout: Option<u32>,
    ) -> anyhow::Result<Answer> {
        Ok(Answer {
            mode,
            channel: HeaderValue::from_str(&match filter {
                Some(f) => format!("{channel}; filter={f}"),
                None => channel.to_string(),
            })
            .context("--channel/--filter is not a header value")?,
            channel_name: channel.to_string(),
            meta_channel: filter.map(|_| channel.to_string()),
            timeout: timeout.map(HeaderValue::from),
            requests: AtomicU64::new(0),
            holds: AtomicU64::new(0),
            initial: AtomicU64::new(0),
            next: AtomicU64::new(0),
            last: AtomicU64::new(0),
            bodies: Mutex::new(BTreeMap::new()),
            retries: AtomicU64::new(0),
            immediate: AtomicU64::new(0),
            subscribe: subscribe_event(channel),
            channel_from_path: false,
            own_channel: false,
        })
    }
}

/// Runs the origin until `--exit-after` elapses.
pub fn run(args: OriginArgs) -> anyhow::Result<()> {
    let mut answer = Answer::new(
        args.grip,
        &args.channel,
        args.filter.as_deref(),
        args.grip_timeout,
    )?;
    answer.channel_from_path = args.channel_from_path;
    answer.own_channel = args.own_channel;
    let answer = Arc::new(answer);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = crate::accept::bind(args.listen)?;
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
        let stream = crate::accept::next(&listener, "origin").await;
        let answer = Arc::clone(&answer);
        tokio::spawn(async move {
            let service = service_fn(move |req| respond(Arc::clone(&answer), req));
            // Clients closing mid-request is routine under load; nothing to report.
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

async fn respond(
    answer: Arc<Answer>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == STATS_PATH {
        return Ok(stats(&answer));
    }
    if req.uri().path() == LAST_PATH {
        return Ok(post_last(&answer, req).await);
    }
    answer.requests.fetch_add(1, Ordering::Relaxed);
    if answer.mode == GripMode::Woh && req.method() == http::Method::POST {
        return Ok(woh(&answer, req).await);
    }
    if answer.mode == GripMode::Ws {
        if let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) {
            let accept = derive_accept_key(key.as_bytes());
            answer.holds.fetch_add(1, Ordering::Relaxed);
            let text = String::from_utf8_lossy(&answer.subscribe.content).into_owned();
            tokio::spawn(grip_websocket(req, text));
            return Ok(switching(&accept));
        }
    }
    let response = match answer.mode {
        GripMode::Bayeux => bayeux(&answer),
        GripMode::None | GripMode::Woh | GripMode::Ws => plain(Bytes::from_static(HELLO)),
        GripMode::Stream => stream_hold(&answer, req.uri().path()),
        GripMode::Response => response_hold(&answer),
        GripMode::Reliable => reliable(&answer, &req),
        GripMode::ReliableResponse => reliable_response(&answer, &req),
    };
    Ok(response)
}

/// `GET /_bench/stats`: the counters, one `name value` line each.
fn stats(answer: &Answer) -> Response<Full<Bytes>> {
    let body = format!(
        "requests {}\nholds {}\ninitial {}\nnext {}\nlast {}\nretries {}\nimmediate {}\n",
        answer.requests.load(Ordering::Relaxed),
        answer.holds.load(Ordering::Relaxed),
        answer.initial.load(Ordering::Relaxed),
        answer.next.load(Ordering::Relaxed),
        answer.last.load(Ordering::Relaxed),
        answer.retries.load(Ordering::Relaxed),
        answer.immediate.load(Ordering::Relaxed),
    );
    plain(Bytes::from(body))
}

/// `POST /_bench/last?N`, handed to [`set_last`] with its body; `400` without a number N.
async fn post_last(answer: &Answer, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(n) = req.uri().query().and_then(|q| q.parse::<u64>().ok()) else {
        return bad_request(Bytes::from_static(b"want /_bench/last?N\n"));
    };
    match req.into_body().collect().await {
        Ok(body) => {
            set_last(answer, n, body.to_bytes());
            plain(Bytes::from_static(b"ok\n"))
        }
        Err(e) => bad_request(Bytes::from(format!("cannot read the body: {e}\n"))),
    }
}

/// `400 Bad Request` with a plain `body`.
fn bad_request(body: Bytes) -> Response<Full<Bytes>> {
    let mut r = plain(body);
    *r.status_mut() = StatusCode::BAD_REQUEST;
    r
}

/// `--grip stream`: the hold with its SSE headers and preamble, on the channel the path names
/// with `--channel-from-path`.
fn stream_hold(answer: &Answer, path: &str) -> Response<Full<Bytes>> {
    let n = answer.holds.fetch_add(1, Ordering::Relaxed);
    let mut r = Response::new(Full::new(Bytes::from_static(STREAM_PREAMBLE)));
    let channel = path
        .strip_prefix("/sub/")
        .filter(|name| answer.channel_from_path && !name.is_empty())
        .and_then(|name| HeaderValue::from_str(name).ok())
        .unwrap_or_else(|| answer.channel.clone());
    let h = r.headers_mut();
    h.insert("grip-hold", HeaderValue::from_static("stream"));
    let own = answer.own_channel.then(|| {
        let channel = channel.to_str().unwrap_or("bench");
        HeaderValue::from_str(&format!("{channel}, {}-{n}", answer.channel_name))
    });
    match own {
        Some(Ok(both)) => h.insert("grip-channel", both),
        _ => h.insert("grip-channel", channel),
    };
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    set_meta(answer, n, &mut r);
    r
}

/// `--grip response`: the long-poll hold, with the timeout body.
/// `--grip bayeux`: `Grip-Channel: /C`; `holds` counts the answers.
fn bayeux(answer: &Answer) -> Response<Full<Bytes>> {
    answer.holds.fetch_add(1, Ordering::Relaxed);
    let mut r = plain(Bytes::new());
    let channel = format!("/{}", String::from_utf8_lossy(answer.channel.as_bytes()));
    if let Ok(v) = HeaderValue::from_str(&channel) {
        r.headers_mut().insert("grip-channel", v);
    }
    r
}

fn response_hold(answer: &Answer) -> Response<Full<Bytes>> {
    let n = answer.holds.fetch_add(1, Ordering::Relaxed);
    let mut r = plain(Bytes::from_static(TIMEOUT_BODY));
    let h = r.headers_mut();
    h.insert("grip-hold", HeaderValue::from_static("response"));
    h.insert("grip-channel", answer.channel.clone());
    if let Some(t) = &answer.timeout {
        h.insert("grip-timeout", t.clone());
    }
    set_meta(answer, n, &mut r);
    r
}

/// `POST /_bench/last?N`: item N is the last published; a non-empty `body` is its `http-response`
/// body. Bodies of items after N (from an earlier run) are dropped, so `?0` starts afresh.
fn set_last(answer: &Answer, n: u64, body: Bytes) {
    let mut bodies = answer.bodies.lock().unwrap_or_else(|e| e.into_inner());
    bodies.retain(|&k, _| k <= n);
    if !body.is_empty() {
        bodies.insert(n, body);
    }
    answer.last.store(n, Ordering::Relaxed);
}

/// What the reliable long-poll origin does with a request.
#[derive(Debug, PartialEq, Eq)]
enum LongPoll {
    /// Answer at once with this item's body: the client missed it.
    Immediate(Bytes),
    /// Hold the request on the channel, resuming after this seq (none: no position).
    Hold(Option<u64>),
}

/// A reliable long-poll client's position (the seq of the last item it has) on `channel`: the
/// `Grip-Last` naming the channel if there is one, else the `last` query parameter; and whether
/// a `Grip-Last` named the channel.
fn longpoll_position<B>(req: &Request<B>, channel: &str) -> (Option<u64>, bool) {
    let grip_last = req
        .headers()
        .get_all("grip-last")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|v| {
            let (name, params) = v.split_once(';').unwrap_or((v, ""));
            (name.trim() == channel).then_some(params)
        })
        .map(|params| {
            params.split(';').find_map(|p| {
                let (k, val) = p.trim().split_once('=')?;
                (k.trim() == "last-id")
                    .then(|| control::parse_item_id(val.trim().trim_matches('"')))
                    .flatten()
            })
        })
        .next();
    if let Some(position) = grip_last {
        if position.is_some() {
            return (position, true);
        }
    }
    let query = req.uri().query().unwrap_or("").split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == LAST_PARAM)
            .then(|| control::parse_item_id(v))
            .flatten()
    });
    (query, grip_last.is_some())
}

/// The reliable long-poll decision: the first known item after `position` (none: before item 1)
/// up to `last` is sent at once; with none, the request is held after `position`.
fn longpoll_decision(position: Option<u64>, last: u64, bodies: &BTreeMap<u64, Bytes>) -> LongPoll {
    let after = position.unwrap_or(0);
    if last > after {
        if let Some((_, body)) = bodies.range(after + 1..=last).next() {
            return LongPoll::Immediate(body.clone());
        }
    }
    LongPoll::Hold(position)
}

/// The reliable long-poll answer: a missed item at once, or a response hold with `prev-id`.
fn reliable_response<B>(answer: &Answer, req: &Request<B>) -> Response<Full<Bytes>> {
    let (position, retried) = longpoll_position(req, &answer.channel_name);
    if retried {
        answer.retries.fetch_add(1, Ordering::Relaxed);
    }
    let decision = {
        let bodies = answer.bodies.lock().unwrap_or_else(|e| e.into_inner());
        longpoll_decision(position, answer.last.load(Ordering::Relaxed), &bodies)
    };
    let prev = match decision {
        LongPoll::Immediate(body) => {
            answer.immediate.fetch_add(1, Ordering::Relaxed);
            return plain(body);
        }
        LongPoll::Hold(prev) => prev,
    };
    let n = answer.holds.fetch_add(1, Ordering::Relaxed);
    let mut r = plain(Bytes::from_static(TIMEOUT_BODY));
    let h = r.headers_mut();
    h.insert("grip-hold", HeaderValue::from_static("response"));
    let channel = match prev {
        Some(p) => HeaderValue::from_str(&format!(
            "{}; prev-id={}",
            answer.channel.to_str().unwrap_or("bench"),
            control::item_id(p)
        ))
        .unwrap_or_else(|_| answer.channel.clone()),
        None => answer.channel.clone(),
    };
    h.insert("grip-channel", channel);
    if let Some(t) = &answer.timeout {
        h.insert("grip-timeout", t.clone());
    }
    set_meta(answer, n, &mut r);
    r
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

/// The `101` accepting a GRIP WebSocket.
fn switching(accept: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(accept).expect("base64 is a header value"),
    );
    h.insert(
        header::SEC_WEBSOCKET_EXTENSIONS,
        HeaderValue::from_static("grip"),
    );
    r
}

/// One GRIP WebSocket, once upgraded: subscribe it, then read until the proxy closes it.
async fn grip_websocket(req: Request<Incoming>, subscribe: String) {
    let Ok(upgraded) = hyper::upgrade::on(req).await else {
        return;
    };
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    if ws.send(Message::text(subscribe)).await.is_err() {
        return;
    }
    // Pings are answered and closes echoed by tungstenite while reading.
    while let Some(Ok(_)) = ws.next().await {}
}

/// The WebSocket-over-HTTP answer to one `POST`.
async fn woh(answer: &Answer, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let bad = |why: String| {
        let mut r = plain(Bytes::from(why + "\n"));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        r
    };
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return bad(format!("cannot read the body: {e}")),
    };
    let (opened, events) = match woh_reply(&body, &answer.subscribe) {
        Ok(reply) => reply,
        Err(e) => return bad(e.to_string()),
    };
    let mut r = Response::new(Full::new(events));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(wsevents::CONTENT_TYPE),
    );
    if opened {
        answer.holds.fetch_add(1, Ordering::Relaxed);
        h.insert(
            header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_static("grip"),
        );
    }
    r
}

/// The `c:` control message subscribing a WebSocket-over-HTTP connection to `channel`.
fn subscribe_event(channel: &str) -> Event {
    // Written out rather than through `json!`, whose key order depends on serde_json's features.
    let channel = serde_json::Value::from(channel);
    Event::with_content(
        EventKind::Text,
        format!(r#"c:{{"type":"subscribe","channel":{channel}}}"#),
    )
}

/// The events answering a request's events, and whether they accept an `OPEN`.
fn woh_reply(request: &[u8], subscribe: &Event) -> Result<(bool, Bytes), WsEventsError> {
    let events = wsevents::parse_events(request)?;
    let opened = events.first().is_some_and(|e| e.kind == EventKind::Open);
    let mut out = Vec::new();
    if opened {
        wsevents::encode_events(&[Event::new(EventKind::Open), subscribe.clone()], &mut out);
    } else if let Some(close) = events.iter().find(|e| e.kind == EventKind::Close) {
        wsevents::encode_events(std::slice::from_ref(close), &mut out);
    }
    Ok((opened, Bytes::from(out)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grip_websocket_accept() {
        // RFC 6455 §1.3's example key and accept value.
        let r = switching(&derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(r.status(), StatusCode::SWITCHING_PROTOCOLS);
        let h = r.headers();
        assert_eq!(
            h[header::SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(h[header::SEC_WEBSOCKET_EXTENSIONS], "grip");
        assert_eq!(h[header::UPGRADE], "websocket");
    }

    #[test]
    fn woh_answers() {
        let sub = subscribe_event("bench");
        let cases: &[(&[u8], bool, &[u8])] = &[
            (
                b"OPEN\r\n",
                true,
                b"OPEN\r\nTEXT 28\r\nc:{\"type\":\"subscribe\",\"channel\":\"bench\"}\r\n",
            ),
            (b"TEXT 2\r\nhi\r\n", false, b""),
            (b"PING\r\n", false, b""),
            (b"DISCONNECT\r\n", false, b""),
            (b"", false, b""),
            (
                b"TEXT 1\r\nx\r\nCLOSE 2\r\n\x03\xe8\r\n",
                false,
                b"CLOSE 2\r\n\x03\xe8\r\n",
            ),
            (b"CLOSE\r\n", false, b"CLOSE\r\n"),
        ];
        for &(request, opened, events) in cases {
            let (o, e) = woh_reply(request, &sub).unwrap();
            assert_eq!(
                (o, &e[..]),
                (opened, events),
                "{}",
                String::from_utf8_lossy(request)
            );
        }
        assert!(woh_reply(b"TEXT 5\r\nhi\r\n", &sub).is_err());
    }

    fn lp_request(uri: &str, grip_last: &[&str]) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        for v in grip_last {
            b = b.header("grip-last", *v);
        }
        b.body(()).unwrap()
    }

    fn test_answer() -> Answer {
        Answer::new(GripMode::ReliableResponse, "bench", None, Some(20)).unwrap()
    }

    #[test]
    fn longpoll_position_prefers_grip_last() {
        // (URI, Grip-Last headers, (position, Grip-Last named the channel))
        type Case<'a> = (&'a str, &'a [&'a str], (Option<u64>, bool));
        let cases: &[Case] = &[
            ("/", &[], (None, false)),
            ("/?last=m3", &[], (Some(3), false)),
            ("/?x=1&last=m7&y=2", &[], (Some(7), false)),
            ("/?last=3", &[], (None, false)),
            ("/?last=m3", &["bench; last-id=m5"], (Some(5), true)),
            ("/", &["bench; last-id=\"m5\""], (Some(5), true)),
            // Only the header naming the channel counts, one header per channel or a list.
            ("/?last=m3", &["other; last-id=m9"], (Some(3), false)),
            (
                "/",
                &["other; last-id=m9", "bench; last-id=m4"],
                (Some(4), true),
            ),
            (
                "/",
                &["other; last-id=m9, bench; last-id=m2"],
                (Some(2), true),
            ),
            // A Grip-Last id not in the `m<seq>` format leaves the query parameter.
            ("/?last=m3", &["bench; last-id=zz"], (Some(3), true)),
        ];
        for &(uri, headers, want) in cases {
            assert_eq!(
                longpoll_position(&lp_request(uri, headers), "bench"),
                want,
                "{uri} {headers:?}"
            );
        }
    }

    #[test]
    fn longpoll_answers_at_once_or_holds() {
        let body = |k: u64| Bytes::from(format!("seq={k} ts=1\n"));
        let bodies: BTreeMap<u64, Bytes> = (1..=3).map(|k| (k, body(k))).collect();
        let cases = [
            // (position, last, decision)
            (None, 0, LongPoll::Hold(None)),
            (None, 3, LongPoll::Immediate(body(1))),
            (Some(1), 3, LongPoll::Immediate(body(2))),
            (Some(2), 3, LongPoll::Immediate(body(3))),
            (Some(3), 3, LongPoll::Hold(Some(3))),
            // The client heard of an item from the proxy before the origin was told.
            (Some(4), 3, LongPoll::Hold(Some(4))),
            // Bodies beyond the last announced item are not handed out.
            (Some(1), 1, LongPoll::Hold(Some(1))),
        ];
        for (position, last, want) in cases {
            assert_eq!(
                longpoll_decision(position, last, &bodies),
                want,
                "{position:?} {last}"
            );
        }
    }

    #[test]
    fn own_channel_stream_holds_name_a_channel_each() {
        let mut answer = Answer::new(GripMode::Stream, "bench", None, None).unwrap();
        assert_eq!(stream_hold(&answer, "/").headers()["grip-channel"], "bench");
        answer.own_channel = true;
        assert_eq!(
            stream_hold(&answer, "/").headers()["grip-channel"],
            "bench, bench-1"
        );
        assert_eq!(
            stream_hold(&answer, "/").headers()["grip-channel"],
            "bench, bench-2"
        );
    }

    #[test]
    fn reliable_response_headers() {
        let answer = test_answer();
        let r = reliable_response(&answer, &lp_request("/", &[]));
        let h = r.headers();
        assert_eq!(h["grip-hold"], "response");
        assert_eq!(h["grip-channel"], "bench");
        assert_eq!(h["grip-timeout"], "20");

        set_last(&answer, 1, Bytes::from_static(b"seq=1 ts=9\n"));
        let r = reliable_response(&answer, &lp_request("/", &[]));
        assert!(r.headers().get("grip-hold").is_none());
        assert_eq!(r.status(), StatusCode::OK);

        let r = reliable_response(&answer, &lp_request("/?last=m1", &[]));
        assert_eq!(r.headers()["grip-channel"], "bench; prev-id=m1");
        // A proxy's retry: Grip-Last wins over the query parameter.
        let r = reliable_response(&answer, &lp_request("/?last=m1", &["bench; last-id=m0"]));
        assert!(r.headers().get("grip-hold").is_none());
        assert_eq!(answer.holds.load(Ordering::Relaxed), 2);
        assert_eq!(answer.immediate.load(Ordering::Relaxed), 2);
        assert_eq!(answer.retries.load(Ordering::Relaxed), 1);

        // Resetting forgets the items.
        set_last(&answer, 0, Bytes::new());
        assert!(answer.bodies.lock().unwrap().is_empty());
        let r = reliable_response(&answer, &lp_request("/", &[]));
        assert_eq!(r.headers()["grip-channel"], "bench");
    }
}
