//! `GET /presence/events`: the events as Server-Sent Events, `event: <type>` and
//! `data: <event JSON>`, from the moment the stream opens (in cluster mode, every instance's
//! events, through Redis). At most `presence.max_listeners` at once; a listener that falls
//! `presence.listener_queue` events behind gets `event: dropped` with the reason, and its
//! stream ends. Every stream ends when shutdown begins.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body::Frame;
use http_body_util::StreamBody;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, OwnedSemaphorePermit};

use super::{Presence, Shared};
use crate::http::{boxed, text_response, Body};

/// A comment this often keeps idle streams (and the proxies between) open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

struct Listener {
    rx: broadcast::Receiver<Arc<str>>,
    shared: Arc<Shared>,
    keep_alive: tokio::time::Interval,
    stopped: Pin<Box<dyn Future<Output = ()> + Send + Sync>>,
    first: bool,
    done: bool,
    _permit: OwnedSemaphorePermit,
}

impl Listener {
    async fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        if std::mem::take(&mut self.first) {
            return Some(Bytes::from_static(b"retry: 5000\n: presence events\n\n"));
        }
        tokio::select! {
            _ = &mut self.stopped => None,
            _ = self.keep_alive.tick() => Some(Bytes::from_static(b": keep-alive\n\n")),
            got = self.rx.recv() => match got {
                Ok(json) => {
                    let kind = serde_json::from_str::<serde_json::Value>(&json)
                        .ok()
                        .and_then(|v| v["type"].as_str().map(str::to_string))
                        .unwrap_or_else(|| "presence".to_string());
                    Some(Bytes::from(format!("event: {kind}\ndata: {json}\n\n")))
                }
                Err(RecvError::Lagged(n)) => {
                    self.done = true;
                    (self.shared.counters.listeners_dropped).fetch_add(1, Ordering::Relaxed);
                    let max = self.shared.config.listener_queue;
                    tracing::info!(missed = n, max, "presence listener dropped: it fell behind");
                    let reason = format!(
                        "this listener fell behind by more than presence.listener_queue ({max}) events and missed {n}; read GET /presence/channels and reconnect"
                    );
                    Some(Bytes::from(format!(
                        "event: dropped\ndata: {}\n\n",
                        serde_json::json!({ "reason": reason })
                    )))
                }
                Err(RecvError::Closed) => None,
            },
        }
    }
}

/// Answers `GET /presence/events`; `stopped` is the shutdown signal.
pub fn events_response(
    presence: &Presence,
    stopped: impl Future<Output = ()> + Send + Sync + 'static,
) -> Response<Body> {
    let Some(shared) = presence.shared() else {
        return text_response(
            StatusCode::NOT_FOUND,
            "Presence is off (presence.enabled = false).\n",
        );
    };
    let Ok(permit) = shared.listeners.clone().try_acquire_owned() else {
        let mut resp = text_response(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "Too many presence event streams open (presence.max_listeners = {}).\n",
                shared.config.max_listeners
            ),
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return resp;
    };
    let start = tokio::time::Instant::now() + KEEP_ALIVE;
    let listener = Listener {
        rx: shared.events.subscribe(),
        shared: shared.clone(),
        keep_alive: tokio::time::interval_at(start, KEEP_ALIVE),
        stopped: Box::pin(stopped),
        first: true,
        done: false,
        _permit: permit,
    };
    let events = futures_util::stream::unfold(listener, |mut l| async move {
        let chunk = l.next().await?;
        Some((Ok::<_, Infallible>(Frame::data(chunk)), l))
    });
    let mut resp = Response::new(boxed(StreamBody::new(events)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
