//! The status page on the publish listener: `GET /status` (a small HTML page, its script and
//! style embedded in the binary), `GET /status.json` (one snapshot) and `GET /status/events`
//! (a Server-Sent Events stream of one snapshot a second, which the page reads). All of them
//! are behind the publish API's authentication, like `/metrics`; see docs/status.md.
//!
//! A snapshot reads the shared state as it is: client connections, held sessions by transport
//! ([`crate::conns::Held`]), the hub's counters, subscriptions by mode and its busiest channels
//! in one pass over its shards ([`crate::hub::Hub::overview`]), each origin target's health
//! ([`crate::origin::health`]) and the cluster bus's Redis servers. Rates are per stream: each
//! event's rates are the counters' change since the stream's previous event, divided by the time
//! between them; `/status.json`, a single reading, has none.
//!
//! At most `publish.max_status_streams` streams are served at once (a semaphore; one more gets
//! `503` naming the setting), and each ends when shutdown begins, so an open page never holds
//! the drain.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body::Frame;
use http_body_util::StreamBody;
use serde_json::{json, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::app::App;
use crate::http::{boxed, full, text_response, Body};
use crate::metrics::Transport;

/// Channels listed as the busiest.
pub const BUSIEST: usize = 10;

/// How often a stream sends a snapshot.
const EVERY: Duration = Duration::from_secs(1);

const PAGE: &str = include_str!("status/page.html");
const SCRIPT: &str = include_str!("status/status.js");
const STYLE: &str = include_str!("status/status.css");
/// The page's icon, so that the browser does not ask the API for a `/favicon.ico`.
const ICON: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 16 16\">\
                    <rect width=\"16\" height=\"16\" rx=\"3\" fill=\"#1d2330\"/>\
                    <path d=\"M4 12V4h2v3h4V4h2v8h-2V9H6v3z\" fill=\"#fff\"/></svg>";

/// The page loads only its own script and style and connects only to its own origin; nothing
/// inline runs.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The status page's state: when this instance started, and the streams' cap.
pub struct Status {
    started: Instant,
    streams: Arc<Semaphore>,
    max_streams: usize,
}

/// The counters a rate is computed from.
#[derive(Clone, Copy)]
struct Reading {
    at: Instant,
    received: u64,
    published: u64,
    delivered: u64,
}

impl Status {
    /// The state for `app`, with `publish.max_status_streams` streams at most.
    pub fn new(app: &App) -> Status {
        let max_streams = app.config.publish.max_status_streams;
        Status {
            started: Instant::now(),
            streams: Arc::new(Semaphore::new(max_streams)),
            max_streams,
        }
    }

    /// Answers a `GET` under `/status`, or `None` when `path` is not the status page's.
    pub fn handle(&self, app: &Arc<App>, path: &str) -> Option<Response<Body>> {
        Some(match path {
            "/status" => asset(PAGE, "text/html; charset=utf-8"),
            "/status/status.js" => asset(SCRIPT, "text/javascript; charset=utf-8"),
            "/status/status.css" => asset(STYLE, "text/css; charset=utf-8"),
            "/status/icon.svg" => asset(ICON, "image/svg+xml"),
            "/status.json" => {
                let (snapshot, _) = self.snapshot(app, None);
                let mut resp = Response::new(full(snapshot.to_string()));
                set(&mut resp, header::CONTENT_TYPE, "application/json");
                set(&mut resp, header::CACHE_CONTROL, "no-store");
                resp
            }
            "/status/events" => self.events(app),
            _ => return None,
        })
    }

    /// `GET /status/events`: a snapshot at once, then one a second, until the client goes or
    /// shutdown begins.
    fn events(&self, app: &Arc<App>) -> Response<Body> {
        let Ok(permit) = self.streams.clone().try_acquire_owned() else {
            tracing::info!(
                max = self.max_streams,
                "status stream refused: publish.max_status_streams reached"
            );
            let mut resp = text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "Too many status streams open (publish.max_status_streams = {}).\n",
                    self.max_streams
                ),
            );
            set(&mut resp, header::RETRY_AFTER, "5");
            return resp;
        };
        let stream = EventStream {
            app: app.clone(),
            started: self.started,
            ticks: tokio::time::interval(EVERY),
            stopped: Box::pin(app.shutdown.signal().into_stopped()),
            last: None,
            first: true,
            _permit: permit,
        };
        let events = futures_util::stream::unfold(stream, |mut s| async move {
            let chunk = s.next().await?;
            Some((Ok::<_, std::convert::Infallible>(Frame::data(chunk)), s))
        });
        let mut resp = Response::new(boxed(StreamBody::new(events)));
        set(&mut resp, header::CONTENT_TYPE, "text/event-stream");
        set(&mut resp, header::CACHE_CONTROL, "no-store");
        resp
    }

    /// A snapshot of the state, with rates since `last` when given; and the reading the next
    /// rates start from.
    fn snapshot(&self, app: &App, last: Option<Reading>) -> (Value, Reading) {
        snapshot(app, self.started, last)
    }
}

/// One status stream's state.
struct EventStream {
    app: Arc<App>,
    started: Instant,
    ticks: tokio::time::Interval,
    stopped: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>>,
    last: Option<Reading>,
    first: bool,
    _permit: OwnedSemaphorePermit,
}

impl EventStream {
    /// The next event, or `None` once shutdown has begun.
    async fn next(&mut self) -> Option<Bytes> {
        tokio::select! {
            _ = &mut self.stopped => return None,
            _ = self.ticks.tick() => {}
        }
        let (snapshot, reading) = snapshot(&self.app, self.started, self.last);
        self.last = Some(reading);
        // A page that lost its stream tries again after 5 s.
        let retry = if std::mem::take(&mut self.first) {
            "retry: 5000\n"
        } else {
            ""
        };
        Some(Bytes::from(format!("{retry}data: {snapshot}\n\n")))
    }
}

fn snapshot(app: &App, started: Instant, last: Option<Reading>) -> (Value, Reading) {
    let o = app.hub.overview(BUSIEST);
    let s = &o.stats;
    let now = Reading {
        at: Instant::now(),
        received: app.traffic.items_received(),
        published: s.published,
        delivered: s.delivered,
    };
    let rates = last.map(|last| {
        let secs = now.at.saturating_duration_since(last.at).as_secs_f64();
        let per_sec = |now: u64, then: u64| {
            if secs > 0.0 {
                // Two decimals are plenty for a chart.
                (now.saturating_sub(then) as f64 / secs * 100.0).round() / 100.0
            } else {
                0.0
            }
        };
        json!({
            "received": per_sec(now.received, last.received),
            "published": per_sec(now.published, last.published),
            "delivered": per_sec(now.delivered, last.delivered),
        })
    });
    let held: serde_json::Map<String, Value> = Transport::ALL
        .iter()
        .map(|t| (t.label().to_string(), json!(app.connections.of(*t))))
        .collect();
    let busiest: Vec<Value> = o
        .busiest
        .iter()
        .map(|(channel, n)| json!({ "channel": channel, "subscribers": n }))
        .collect();
    let servers = app.bus.servers();
    let cluster = (!servers.is_empty()).then(|| json!({ "redis": servers }));
    let snapshot = json!({
        "instance": app.instance,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": started.elapsed().as_secs(),
        "ready": !app.shutdown.is_announced() && app.bus.is_connected(),
        "draining": app.shutdown.is_announced(),
        "connections": {
            "clients": app.client_connections(),
            "held": held,
        },
        "subscriptions": {
            "total": s.subscriptions,
            "long-poll": o.long_polls,
            "stream": o.streams,
            "websocket": o.websockets,
        },
        "channels": s.channels,
        "busiest": busiest,
        "totals": {
            "received": now.received,
            "published": s.published,
            "delivered": s.delivered,
            "dropped": s.dropped,
        },
        "rates": rates,
        "origins": app.origins.health().targets(),
        "origins_untracked": app.origins.health().untracked(),
        "cluster": cluster,
        "warnings": app.config.open_publish_api_warning().into_iter().collect::<Vec<_>>(),
    });
    (snapshot, now)
}

fn asset(text: &'static str, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(text));
    set(&mut resp, header::CONTENT_TYPE, content_type);
    set(&mut resp, header::CACHE_CONTROL, "no-cache");
    set(&mut resp, header::CONTENT_SECURITY_POLICY, CSP);
    set(&mut resp, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    resp
}

fn set(resp: &mut Response<Body>, name: header::HeaderName, value: &'static str) {
    resp.headers_mut()
        .insert(name, HeaderValue::from_static(value));
}
