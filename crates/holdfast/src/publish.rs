//! The publish/control API on `--publish-listen`, as Pushpin's (reference §4.1), plus
//! `GET /metrics` and the status page ([`status`]).
//!
//! Every request but `GET /` (which answers `Holdfast API` and tells nothing else) must pass
//! [`auth`] when a scheme is configured; a refused one gets `401` with a `WWW-Authenticate`
//! challenge per configured scheme and the reason in plain text. A publish is then held to
//! `limits.max_publish_body` bytes (`413`), `publish.max_json_depth` levels of nesting (`400`)
//! and `publish.max_items` items (`413`) — see [`limits`]. Errors are plain text and name what
//! was wrong; a bad publish never reaches the hub, and an accepted one is handed to the hub
//! before the response is sent.

pub mod auth;
pub mod limits;
pub mod presence;
pub mod status;

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::app::App;
use crate::http::text_response;
use crate::http::{full, Body};
use crate::metrics::{Input, Page};

use auth::{Auth, Rejection};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

/// The publish API: the shared state, and who may use it.
pub struct Api {
    app: Arc<App>,
    auth: Auth,
    status: status::Status,
}

impl Api {
    /// The API over `app`, with the authentication of its `[publish]` configuration.
    pub fn new(app: Arc<App>) -> Result<Api, auth::KeyError> {
        let auth = Auth::from_config(&app.config.publish)?;
        let status = status::Status::new(&app);
        Ok(Api { app, auth, status })
    }

    /// Handles one request to the publish API from `peer`.
    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let app = &self.app;
        let path = req.uri().path().trim_end_matches('/').to_string();
        match (path.as_str(), req.method()) {
            ("", &Method::GET) => return text_response(StatusCode::OK, "Holdfast API\n"),
            // Probes for load balancers and supervisors need no credentials.
            ("/healthz", &Method::GET | &Method::HEAD) => {
                return text_response(StatusCode::OK, "ok\n")
            }
            ("/readyz", &Method::GET | &Method::HEAD) => return readiness(app),
            _ => {}
        }
        if let Err(reason) = self.auth.check(req.headers()) {
            return self.unauthorized(reason, peer);
        }
        if matches!(req.method(), &Method::GET | &Method::HEAD) {
            if let Some(resp) = self.status.handle(app, &path) {
                return resp;
            }
            if let Some(resp) = presence::handle(app, &path).await {
                return resp;
            }
        }
        if crate::webhook::api::is_route(&path) {
            return crate::webhook::api::handle(&app.webhooks, &path, req).await;
        }
        match (path.as_str(), req.method()) {
            ("/metrics", &Method::GET) => self.metrics(),
            ("/publish", &Method::POST) => publish(app, req).await,
            ("/recover", &Method::POST) => recover(app, &req),
            ("/publish" | "/recover", method) => {
                // Pushpin's words, method included.
                let mut resp = text_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("Method not allowed: {method}.\n"),
                );
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST"));
                resp
            }
            _ => text_response(StatusCode::NOT_FOUND, "Not Found\n"),
        }
    }

    /// The one place a refusal becomes a response: `401`, a challenge per configured scheme,
    /// and the reason.
    fn unauthorized(&self, reason: Rejection, peer: SocketAddr) -> Response<Body> {
        tracing::info!(
            from = %peer.ip(),
            reason = reason.label(),
            "publish API request refused: {reason}"
        );
        let mut resp = text_response(StatusCode::UNAUTHORIZED, format!("{reason}\n"));
        for challenge in self.auth.challenges() {
            resp.headers_mut()
                .append(header::WWW_AUTHENTICATE, challenge.clone());
        }
        resp
    }

    /// The families of `GET /metrics`.
    pub fn metrics_page(&self) -> Page {
        let mut page = metrics_page(&self.app);
        self.auth.metrics(&mut page);
        page
    }

    /// `GET /metrics`: the hub's counters, the origin slots, the descriptor budget, the cluster
    /// bus and the publish API's refusals, in the Prometheus text format.
    fn metrics(&self) -> Response<Body> {
        let mut resp = Response::new(full(self.metrics_page().into_text()));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
        );
        resp
    }
}

/// `GET /readyz`: `200 ready` when this instance should get new clients, else `503` with one
/// line per reason: shutdown announced or begun, or (in cluster mode) a Redis server of the bus
/// not connected, so publishes could not be accepted. The routes are loaded before the
/// listeners open, so they are always in.
fn readiness(app: &App) -> Response<Body> {
    let mut reasons = Vec::new();
    if app.shutdown.is_announced() {
        reasons.push("draining: shutdown has begun");
    }
    if !app.bus.is_connected() {
        reasons.push("cluster bus: not every Redis server is connected");
    }
    if reasons.is_empty() {
        return text_response(StatusCode::OK, "ready\n");
    }
    text_response(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("not ready\n{}\n", reasons.join("\n")),
    )
}

fn negotiate(req: &Request<Incoming>) -> Option<Format> {
    let Some(accept) = req.headers().get(header::ACCEPT) else {
        return Some(Format::Text);
    };
    let accept = accept.to_str().ok()?;
    accept
        .split(',')
        .map(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .find_map(|t| match t.as_str() {
            "text/plain" | "text/*" | "*/*" => Some(Format::Text),
            "application/json" | "application/*" => Some(Format::Json),
            _ => None,
        })
}

async fn publish(app: &App, req: Request<Incoming>) -> Response<Body> {
    let Some(format) = negotiate(&req) else {
        return text_response(
            StatusCode::NOT_ACCEPTABLE,
            "Not Acceptable. Supported formats are text/plain and application/json.\n",
        );
    };
    let limit = app.config.limits.max_publish_body;
    match req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        None => {
            return text_response(
                StatusCode::LENGTH_REQUIRED,
                "Request requires Content-Length.\n",
            )
        }
        Some(n) if n > limit as u64 => return too_large(limit),
        Some(_) => {}
    }
    let body = match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large(limit),
        Err(e) => {
            tracing::debug!(error = %e, "publish body could not be read");
            return text_response(StatusCode::BAD_REQUEST, "Request body could not be read.\n");
        }
    };
    let limits = &app.config.publish;
    if limits::nests_deeper_than(&body, limits.max_json_depth) {
        tracing::info!(
            max = limits.max_json_depth,
            "publish rejected: nested too deep"
        );
        return text_response(
            StatusCode::BAD_REQUEST,
            format!(
                "Request body nests deeper than publish.max_json_depth ({} levels).\n",
                limits.max_json_depth
            ),
        );
    }
    let items = match grip::publish::parse_publish_body(&body) {
        Ok(items) => items,
        Err(e) => {
            tracing::info!(error = %e, "publish rejected");
            return text_response(StatusCode::BAD_REQUEST, format!("{e}\n"));
        }
    };
    if items.len() > limits.max_items {
        tracing::info!(
            items = items.len(),
            max = limits.max_items,
            "publish rejected: too many items"
        );
        return text_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Request has {} items, over publish.max_items ({}).\n",
                items.len(),
                limits.max_items
            ),
        );
    }
    let count = items.len();
    app.traffic.received(crate::metrics::Input::Http, count);
    if let Err(e) = app.publish(items).await {
        tracing::warn!(error = %e, items = count, "publish refused");
        return text_response(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"));
    }
    tracing::debug!(items = count, "control: POST /publish/ code=200");
    message(format, "Published")
}

/// `POST /recover`: forget every channel's last id and update every HTTP session.
fn recover(app: &App, req: &Request<Incoming>) -> Response<Body> {
    let Some(format) = negotiate(req) else {
        return text_response(
            StatusCode::NOT_ACCEPTABLE,
            "Not Acceptable. Supported formats are text/plain and application/json.\n",
        );
    };
    if !req.headers().contains_key(header::CONTENT_LENGTH) {
        return text_response(
            StatusCode::LENGTH_REQUIRED,
            "Request requires Content-Length.\n",
        );
    }
    let sessions = app.hub.recover();
    tracing::info!(
        sessions,
        "recover: every channel's last id forgotten, sessions updating"
    );
    message(format, "Updated")
}

fn too_large(limit: usize) -> Response<Body> {
    text_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("Request body exceeds limits.max_publish_body ({limit} bytes).\n"),
    )
}

fn message(format: Format, text: &str) -> Response<Body> {
    match format {
        Format::Text => text_response(StatusCode::OK, format!("{text}\n")),
        Format::Json => {
            // Ends in a newline, as Pushpin's answer does.
            let body = format!("{}\n", serde_json::json!({ "message": text }));
            let mut resp = Response::new(full(body));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
    }
}

/// The figures of `GET /metrics` that come from the shared state.
fn metrics_page(app: &App) -> Page {
    let s = app.hub.stats();
    let mut page = Page::default();
    let label = |k: &'static str, v: &str| vec![(k, v.to_string())];
    page.gauge(
        "holdfast_channels",
        "Channels with at least one subscriber",
        s.channels as i64,
    )
    .gauge(
        "holdfast_subscriptions",
        "Channel subscriptions of held connections",
        s.subscriptions as i64,
    );
    app.connections.register(&mut page);
    app.presence.metrics(&mut page);
    page.counters(
        "holdfast_items_received_total",
        "Publish items received, by input: the HTTP publish API, ZeroMQ (inputs and command socket), PostgreSQL sources, the cluster bus (Redis)",
        vec![
            (label("input", "http"), app.traffic.received_at(Input::Http)),
            (label("input", "zmq"), app.traffic.received_at(Input::Zmq)),
            (
                label("input", "postgres"),
                app.traffic.received_at(Input::Postgres),
            ),
            (label("input", "cluster"), app.bus.items_received()),
        ],
    )
    .counter(
        "holdfast_items_published_total",
        "Items accepted by the hub",
        s.published,
    )
    .counter(
        "holdfast_deliveries_total",
        "Items delivered to held connections: queued, or written by the hub itself",
        s.delivered,
    )
    .counter(
        "holdfast_deliveries_written_total",
        "Of the deliveries, those the hub wrote to an idle held stream's, WebSocket's or long-poll's socket itself",
        s.written,
    )
    .counters(
        "holdfast_deliveries_dropped_total",
        "Items not delivered to a held connection, by reason: queue_full (limits.connection_queue), closed (the connection had just left)",
        vec![
            (label("reason", "queue_full"), s.dropped),
            (label("reason", "closed"), s.closed),
        ],
    )
    .live(
        "holdfast_publish_write_seconds",
        "Time from an item reaching its channel to its write, by path: direct (once per batch of sockets the hub wrote itself, measured after the batch), queued (once per publish, until queued to every other connection)",
        app.hub.write_latency(),
    )
    .gauge(
        "holdfast_history_bytes",
        "Bytes held by channel histories",
        s.history_bytes as i64,
    )
    .gauge(
        "holdfast_origin_requests_waiting",
        "Origin requests waiting for a free slot (timeouts.origin_concurrency_per_target)",
        app.origins.waiting() as i64,
    );
    app.origins.metrics(&mut page);
    page.gauge(
        "holdfast_bayeux_sessions",
        "Bayeux sessions (route bayeux=) open now",
        app.bayeux_sessions.len() as i64,
    )
    .counter(
        "holdfast_bayeux_dropped_total",
        "Messages Bayeux sessions dropped because their queue (bayeux.max_queued) was full",
        app.bayeux_dropped
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    page.gauge(
        "holdfast_descriptors_in_use",
        "File descriptors client and origin sockets hold (limits.descriptors)",
        app.descriptors.in_use() as i64,
    )
    .gauge(
        "holdfast_descriptors_budget",
        "File descriptors client and origin sockets may hold together",
        app.descriptors.total() as i64,
    )
    .gauge(
        "holdfast_direct_streams",
        "Held HTTP/1.1 streams written straight to their socket",
        app.direct_streams
            .load(std::sync::atomic::Ordering::Relaxed) as i64,
    )
    .gauge(
        "holdfast_direct_long_polls",
        "Held HTTP/1.1 long-polls waiting outside hyper, their response to be written directly",
        app.direct_long_polls
            .load(std::sync::atomic::Ordering::Relaxed) as i64,
    )
    .gauges(
        "holdfast_build_info",
        "The version and commit this binary was built from",
        vec![(crate::metrics::build_labels(), 1)],
    );
    if let Some(bytes) = crate::metrics::resident_memory_bytes() {
        page.gauge(
            "process_resident_memory_bytes",
            "Resident memory of this process, from /proc/self/statm",
            bytes as i64,
        );
    }
    if let Some(per_ip) = &app.per_ip {
        use crate::limiter::Refusal;
        let refused = [Refusal::Connections, Refusal::Rate]
            .into_iter()
            .map(|why| (label("reason", why.label()), per_ip.refused(why)))
            .collect();
        page.counters(
            "holdfast_connections_refused_total",
            "Client connections closed at accept, by the per-address cap they were over",
            refused,
        )
        .gauge(
            "holdfast_per_ip_addresses",
            "Client addresses the per-address caps are counting",
            per_ip.tracked() as i64,
        );
    }
    app.bus.metrics(&mut page);
    app.webhooks.metrics(&mut page);
    app.zmq_metrics(&mut page);
    app.postgres_metrics(&mut page);
    page
}
