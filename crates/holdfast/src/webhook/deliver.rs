//! One subscriber's delivery task: takes its items in order, sends each as a signed request,
//! and retries a failed one with exponential backoff and jitter until it is delivered, refused
//! for good, or older than `webhooks.max_age_secs`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde::Serialize;
use tokio::sync::{mpsc, Semaphore};

use super::{unix_now, Job, LastError, Shared, Subscriber};
use crate::outbound::OutboundError;

/// How one delivery attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A `2xx` answer.
    Delivered,
    /// A `4xx` or `5xx` answer.
    HttpError,
    /// A `3xx` answer, which is not followed.
    Redirect,
    /// The outbound policy refused every address of the host.
    Refused,
    /// No complete answer within `outbound.timeout_secs`.
    Timeout,
    /// The answer's body was over `outbound.max_response_size`.
    TooLarge,
    /// No answer: the connection failed or broke off, or the request could not be made.
    Failed,
}

impl Outcome {
    /// Every outcome, in the order of their counters.
    pub const ALL: [Outcome; 7] = [
        Outcome::Delivered,
        Outcome::HttpError,
        Outcome::Redirect,
        Outcome::Refused,
        Outcome::Timeout,
        Outcome::TooLarge,
        Outcome::Failed,
    ];

    /// The `outcome` label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::HttpError => "http_error",
            Outcome::Redirect => "redirect",
            Outcome::Refused => "refused",
            Outcome::Timeout => "timeout",
            Outcome::TooLarge => "too_large",
            Outcome::Failed => "failed",
        }
    }

    fn index(self) -> usize {
        Outcome::ALL.iter().position(|o| *o == self).unwrap_or(0)
    }
}

/// Headers Holdfast sets itself, or that describe one connection: an `http-request` format's
/// value for them is not used.
const OWN_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
];

/// The claims of the `Holdfast-Signature` token.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: u64,
    exp: u64,
    /// The subscriber's id.
    sub: &'a str,
    channel: &'a str,
    /// The `Holdfast-Delivery` id, the same on every attempt of one item.
    delivery: &'a str,
    /// Hex SHA-256 of the request body.
    body_sha256: String,
}

/// The request an item becomes, less what changes per attempt.
struct Prepared {
    method: Method,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    body_sha256: String,
}

/// Delivers `sub`'s items until its queue closes or the task is aborted.
pub(super) async fn run(shared: Arc<Shared>, sub: Arc<Subscriber>, mut rx: mpsc::Receiver<Job>) {
    let host = sub
        .uri
        .authority()
        .map(|a| a.as_str().to_ascii_lowercase())
        .unwrap_or_default();
    let slots = {
        let mut hosts = shared.hosts.lock().expect("webhook hosts poisoned");
        let per_host = shared.config.concurrency_per_host;
        hosts
            .entry(host)
            .or_insert_with(|| Arc::new(Semaphore::new(per_host)))
            .clone()
    };
    while let Some(job) = rx.recv().await {
        deliver(&shared, &sub, &slots, &job).await;
        sub.stats.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn deliver(shared: &Shared, sub: &Subscriber, slots: &Semaphore, job: &Job) {
    let delivery = format!("{:032x}", rand::random::<u128>());
    let prepared = match prepare(job) {
        Ok(p) => p,
        Err(message) => return give_up(shared, sub, job, &message),
    };
    let max_age = Duration::from_secs(shared.config.max_age_secs);
    for attempt in 1u32.. {
        let (outcome, status, message) = {
            let _slot = slots
                .acquire()
                .await
                .expect("host semaphores are never closed");
            attempt_once(shared, sub, job, &prepared, &delivery, attempt).await
        };
        shared.outcomes[outcome.index()].fetch_add(1, Ordering::Relaxed);
        let stats = &sub.stats;
        if outcome == Outcome::Delivered {
            stats.delivered.fetch_add(1, Ordering::Relaxed);
            stats.last_success.store(unix_now(), Ordering::Relaxed);
            shared.latency.observe(job.published.elapsed());
            return;
        }
        stats.failed.fetch_add(1, Ordering::Relaxed);
        *stats.last_error.lock().expect("webhook stats poisoned") = Some(LastError {
            at: unix_now(),
            message: message.clone(),
        });
        tracing::debug!(id = %sub.id, attempt, outcome = outcome.label(), error = %message, "webhook delivery failed");
        if !retryable(outcome, status) {
            return give_up(shared, sub, job, &message);
        }
        let delay = backoff(shared, attempt);
        if job.published.elapsed() + delay >= max_age {
            let why = format!(
                "older than webhooks.max_age_secs ({} s) after {attempt} attempts; last: {message}",
                max_age.as_secs()
            );
            return give_up(shared, sub, job, &why);
        }
        tokio::time::sleep(delay).await;
    }
}

/// Whether trying again may help: no answer, a timeout, `408`, `429` or a `5xx`.
fn retryable(outcome: Outcome, status: Option<StatusCode>) -> bool {
    match outcome {
        Outcome::Failed | Outcome::Timeout => true,
        Outcome::HttpError => matches!(status.map(|s| s.as_u16()), Some(408 | 429 | 500..=599)),
        _ => false,
    }
}

/// The wait before retry `attempt + 1`: `retry_min_ms` doubled per attempt up to
/// `retry_max_ms`, plus up to half of it again at random.
fn backoff(shared: &Shared, attempt: u32) -> Duration {
    let c = &shared.config;
    let base = c
        .retry_min_ms
        .saturating_mul(1u64 << (attempt - 1).min(32))
        .min(c.retry_max_ms);
    let base = Duration::from_millis(base);
    base + crate::retry::jitter(base / 2)
}

fn give_up(shared: &Shared, sub: &Subscriber, job: &Job, why: &str) {
    sub.stats.given_up.fetch_add(1, Ordering::Relaxed);
    shared.given_up.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(
        id = %sub.id,
        channel = %sub.channel,
        url = %sub.url,
        item = job.item.id.as_deref().unwrap_or(""),
        "webhook delivery given up: {why}"
    );
}

fn prepare(job: &Job) -> Result<Prepared, String> {
    let item = &job.item;
    let (method, mut headers, body) = match &item.formats.http_request {
        Some(r) => {
            let method = Method::from_bytes(r.method.as_bytes())
                .map_err(|_| format!("'http-request' method {:?} is not a method", r.method))?;
            let mut headers = Vec::new();
            for (name, value) in &r.headers {
                let lower = name.to_ascii_lowercase();
                if OWN_HEADERS.contains(&lower.as_str()) || lower.starts_with("holdfast-") {
                    continue;
                }
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("'http-request' header name {name:?} is not valid"))?;
                let value = HeaderValue::from_str(value).map_err(|_| {
                    format!("'http-request' header {name} has a value that is not valid")
                })?;
                headers.push((name, value));
            }
            (method, headers, r.body.clone())
        }
        None => {
            let body = serde_json::to_vec(&item.to_json()).expect("an item serializes");
            let json = HeaderValue::from_static("application/json");
            (
                Method::POST,
                vec![(header::CONTENT_TYPE, json)],
                Bytes::from(body),
            )
        }
    };
    headers.push((
        header::USER_AGENT,
        HeaderValue::from_static(concat!("holdfast/", env!("CARGO_PKG_VERSION"))),
    ));
    let digest = ring::digest::digest(&ring::digest::SHA256, &body);
    let body_sha256 = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Prepared {
        method,
        headers,
        body,
        body_sha256,
    })
}

async fn attempt_once(
    shared: &Shared,
    sub: &Subscriber,
    job: &Job,
    prepared: &Prepared,
    delivery: &str,
    attempt: u32,
) -> (Outcome, Option<StatusCode>, String) {
    let now = unix_now();
    let claims = Claims {
        iss: &shared.config.sig_iss,
        iat: now,
        exp: now + shared.config.sig_ttl_secs,
        sub: &sub.id,
        channel: &sub.channel,
        delivery,
        body_sha256: prepared.body_sha256.clone(),
    };
    let token = match shared.signer.sign_claims(&claims) {
        Ok(t) => t,
        Err(e) => {
            return (
                Outcome::Failed,
                None,
                format!("cannot sign the request: {e}"),
            )
        }
    };
    let mut req = Request::builder()
        .method(prepared.method.clone())
        .uri(sub.uri.clone());
    for (name, value) in &prepared.headers {
        req = req.header(name, value);
    }
    let own = [
        ("holdfast-signature", token),
        ("holdfast-webhook-id", sub.id.clone()),
        ("holdfast-delivery", delivery.to_string()),
        ("holdfast-attempt", attempt.to_string()),
        ("holdfast-channel", sub.channel.clone()),
    ];
    for (name, value) in own {
        req = req.header(name, value);
    }
    if let Some(id) = &job.item.id {
        req = req.header("holdfast-item-id", id.as_str());
    }
    let req = match req.body(Full::new(prepared.body.clone())) {
        Ok(r) => r,
        Err(e) => {
            return (
                Outcome::Failed,
                None,
                format!("cannot make the request: {e}"),
            )
        }
    };
    let reply = match shared.outbound.send(req).await {
        Ok(reply) => reply,
        Err(e) => {
            let outcome = match &e {
                OutboundError::Refused(_) => Outcome::Refused,
                OutboundError::Timeout(_) => Outcome::Timeout,
                OutboundError::TooLarge(_) => Outcome::TooLarge,
                OutboundError::Failed(_) => Outcome::Failed,
            };
            return (outcome, None, e.to_string());
        }
    };
    let status = reply.status;
    let (outcome, message) = if status.is_success() {
        (Outcome::Delivered, String::new())
    } else if status.is_redirection() {
        let message = format!("{status} (redirects are not followed)");
        (Outcome::Redirect, message)
    } else if status.is_client_error() || status.is_server_error() {
        (Outcome::HttpError, status.to_string())
    } else {
        (Outcome::Failed, format!("unexpected status {status}"))
    };
    (outcome, Some(status), message)
}
