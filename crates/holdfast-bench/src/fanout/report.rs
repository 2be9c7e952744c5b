//! The fan-out report: per-message and overall latency, loss, the same per proxy, subscribe
//! rate, memory per connection and CPU time per phase, printed for people and as one JSON line.
//!
//! This module holds the report's shape, [`Summary`], whose fields are the JSON line's. Below it,
//! `summary` works the figures out from what the driver and the workers measured, and `print`
//! writes them out.

use std::collections::BTreeMap;

use serde::Serialize;

use super::wire::Counters;

mod print;
mod summary;

pub use print::print;
pub use summary::{summarize, Context, Publication};

/// How one published message fared.
#[derive(Debug, Clone, Serialize)]
pub struct MessageStats {
    /// Sequence number.
    pub seq: u64,
    /// Round trip of the publish request, in milliseconds.
    pub publish_ms: f64,
    /// Publish error, if the publish API refused or failed.
    pub publish_error: Option<String>,
    /// Subscribers that received it.
    pub delivered: u64,
    /// Subscribers that did not (of the requested number).
    pub lost: u64,
    /// Median publish → delivery latency, in milliseconds.
    pub p50_ms: Option<f64>,
    /// 90th percentile publish → delivery latency, in milliseconds.
    pub p90_ms: Option<f64>,
    /// 99th percentile publish → delivery latency, in milliseconds.
    pub p99_ms: Option<f64>,
    /// Publish → first delivery, in milliseconds.
    pub first_ms: Option<f64>,
    /// Publish → last delivery, in milliseconds.
    pub last_ms: Option<f64>,
}

/// How the subscribers of one proxy fared.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyStats {
    /// The proxy's address.
    pub proxy: String,
    /// Subscribers sent to it.
    pub subscribers: u64,
    /// Of those, how many were ready (see [`Counters::ready`]).
    pub ready: u64,
    /// Per message: deliveries, losses and the slowest delivery.
    pub per_message: Vec<ProxyMessage>,
}

/// One message on one proxy.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyMessage {
    /// Sequence number.
    pub seq: u64,
    /// Subscribers of this proxy that received it.
    pub delivered: u64,
    /// Subscribers of this proxy that did not.
    pub lost: u64,
    /// Publish → last delivery through this proxy, in milliseconds.
    pub last_ms: Option<f64>,
}

/// Resources one measured process used.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessUsage {
    /// Process id.
    pub pid: u32,
    /// Command name.
    pub name: String,
    /// `proxy` (a `--proxy-pid`: memory counted), `watched` (`--watch-pid`) or `worker` (the
    /// load generator's own worker processes).
    pub role: String,
    /// Resident memory before subscribing, once subscribed and at the end, in KiB.
    pub rss_kib: [Option<u64>; 3],
    /// CPU seconds (user + system) spent while the subscribers subscribed.
    pub cpu_subscribing_secs: Option<f64>,
    /// CPU seconds spent from then until the end of the drain (publishing and delivery).
    pub cpu_messages_secs: Option<f64>,
    /// Of `cpu_subscribing_secs`, system (kernel) time.
    pub system_subscribing_secs: Option<f64>,
    /// Of `cpu_messages_secs`, system (kernel) time.
    pub system_messages_secs: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Free-form label given with `--label`.
    pub label: String,
    /// `sse`, `longpoll`, `longpoll-reliable` or `woh`.
    pub mode: String,
    /// Requested subscribers.
    pub subscribers: u64,
    /// Worker processes.
    pub workers: usize,
    /// Messages published.
    pub messages: usize,
    /// Pause between publishes, in milliseconds.
    pub interval_ms: u64,
    /// How readiness was decided (`metrics` or `settle`).
    pub ready_by: String,
    /// Proxy addresses the subscribers were spread over, round-robin.
    pub proxies: Vec<String>,
    /// `one` (each message posted to the first publish address) or `each` (to all of them).
    pub publish_to: String,
    /// Publish addresses.
    pub publish: Vec<String>,
    /// Subscribers counted as subscribed when publishing started.
    pub subscribed: u64,
    /// Seconds from starting the workers until the readiness signal (`ready_by`) showed every
    /// subscriber, as polled every 50 ms.
    pub subscribe_secs: f64,
    /// SSE and WebSocket, when every subscriber became ready before publishing began: seconds
    /// from the first connection attempt to the last subscriber's first body bytes or completed
    /// handshake, as the clients saw them. (A long-poll subscriber counts as ready once
    /// connected, before its request reaches the origin, so long-poll runs have none.)
    pub ready_secs: Option<f64>,
    /// `subscribers / ready_secs` where there is one, else `subscribed / subscribe_secs`.
    pub subscribe_rate: f64,
    /// False when the readiness signals never stayed still before the subscribe cap (the proxy
    /// kept failing or re-asking): `subscribe_rate` then only says when every subscriber had been
    /// answered once, not that all were subscribed.
    pub settled: bool,
    /// The processes whose memory is summed in the `rss_*` figures, by command name, e.g.
    /// `7 holdfast + 1 redis-server`.
    pub rss_of: String,
    /// Proxy resident memory before subscribing, in KiB (summed over `--proxy-pid`).
    pub rss_before_kib: Option<u64>,
    /// Proxy resident memory once subscribed, in KiB.
    pub rss_subscribed_kib: Option<u64>,
    /// Proxy resident memory after the messages were delivered, in KiB.
    pub rss_after_kib: Option<u64>,
    /// `(rss_subscribed - rss_before) / subscribed`, in bytes.
    pub rss_per_connection_bytes: Option<f64>,
    /// Requests the origin received while the subscribers subscribed (`--origin` only).
    pub origin_requests_subscribing: Option<u64>,
    /// Requests the origin received during the whole run (`--origin` only).
    pub origin_requests_total: Option<u64>,
    /// Per-message figures.
    pub per_message: Vec<MessageStats>,
    /// Per-proxy figures, in `--proxy` order.
    pub per_proxy: Vec<ProxyStats>,
    /// Memory and CPU time of every measured process.
    pub processes: Vec<ProcessUsage>,
    /// Deliveries, all messages together.
    pub delivered: u64,
    /// Missing deliveries, all messages together.
    pub lost: u64,
    /// Median latency over every delivery, in milliseconds.
    pub p50_ms: Option<f64>,
    /// 90th percentile latency over every delivery, in milliseconds.
    pub p90_ms: Option<f64>,
    /// 99th percentile latency over every delivery, in milliseconds.
    pub p99_ms: Option<f64>,
    /// Worst publish → last delivery over the messages, in milliseconds.
    pub max_last_ms: Option<f64>,
    /// Median over the messages of publish → last delivery, in milliseconds (nearest rank, over
    /// the messages delivered at least once).
    pub median_last_ms: Option<f64>,
    /// Deliveries of a message a subscriber had already received.
    pub duplicates: u64,
    /// Seconds from the start of the first publish to the last delivery (any subscriber).
    pub delivery_secs: Option<f64>,
    /// `delivered / delivery_secs`: with one subscriber and `--burst`, the messages per second
    /// that client received.
    pub deliveries_per_sec: Option<f64>,
    /// Workers' final counters, summed.
    pub counters: Counters,
    /// Errors seen by subscribers, by description.
    pub errors: BTreeMap<String, u64>,
}
