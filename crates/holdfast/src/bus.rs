//! How publishes reach subscribers: straight into this process's hub, or — in cluster mode —
//! through Redis to every instance that has subscribers on the channel.
//!
//! The publish API hands every accepted item to [`Bus::publish`]; nothing else publishes. In
//! local mode that is [`Hub::publish`]. The cluster bus ([`cluster`]) delivers each item exactly
//! once to every instance's hub (the publishing instance included: it gets its own items back
//! from Redis like everyone else), in publish order per channel, and fails the publish — so the
//! API answers 503 — rather than drop it silently. Because every hub sees the same ordered stream
//! of items, duplicate removal and `prev-id` sequencing give the same result on every instance.
//!
//! Held sessions that are behind on a channel with nothing in the local hub's history ask
//! [`Bus::history_after`], which in cluster mode reads the channel's capped history stream in
//! Redis, so a client that reconnects to another instance is caught up without an origin request.

pub mod cluster;
mod history;
mod shard;

use grip::publish::PublishItem;

use crate::config::Config;
use crate::hub::{Delivery, Hub};

pub use cluster::RedisBus;

/// Why a publish could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The cluster engine cannot be reached; nothing was published.
    #[error("cluster bus unavailable: {0}")]
    Unavailable(String),
}

impl BusError {
    /// True when retrying later may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, BusError::Unavailable(_))
    }
}

/// The publish path.
pub enum Bus {
    /// One process: items go straight into the hub.
    Local(Hub),
    /// Cluster mode: items go through Redis to every instance's hub.
    Redis(RedisBus),
}

impl Bus {
    /// A bus that delivers into `hub` only.
    pub fn local(hub: Hub) -> Bus {
        Bus::Local(hub)
    }

    /// The bus `config` asks for: Redis when `cluster.redis` lists servers, else local. Nothing
    /// connects until [`Bus::start`].
    pub fn from_config(config: &Config, hub: Hub) -> Bus {
        if config.cluster.redis.is_empty() {
            Bus::Local(hub)
        } else {
            Bus::Redis(RedisBus::new(config, hub))
        }
    }

    /// Starts the background work of the bus (connections to Redis, subscriptions). The work
    /// stops when the returned handle is dropped.
    pub fn start(&self) -> BusTasks {
        match self {
            Bus::Local(_) => BusTasks(Vec::new()),
            Bus::Redis(bus) => BusTasks(bus.start()),
        }
    }

    /// Publishes items in order; returns how many local subscribers received them now (in
    /// cluster mode, deliveries happen as the items come back from Redis, and 0 is returned).
    pub async fn publish(&self, items: Vec<PublishItem>) -> Result<usize, BusError> {
        let items = with_bayeux_patterns(items);
        match self {
            Bus::Local(hub) => Ok(items
                .into_iter()
                .map(|item| {
                    let channel = item.channel.clone();
                    let receivers = hub.publish(item);
                    tracing::info!(%channel, receivers, "publish");
                    receivers
                })
                .sum()),
            Bus::Redis(bus) => bus.publish(items).await,
        }
    }

    /// Items published on `channel` after the one with id `after`, from history shared across
    /// instances; `None` when there is no such history (local mode: the hub's own history was
    /// already consulted) or it no longer has `after`.
    pub async fn history_after(&self, channel: &str, after: &str) -> Option<Vec<Delivery>> {
        match self {
            Bus::Local(_) => {
                let _ = (channel, after);
                None
            }
            Bus::Redis(bus) => bus.history_after(channel, after).await,
        }
    }

    /// Whether items published on `channel` by any instance reach this instance's hub now.
    /// Always true in local mode; in cluster mode, once Redis confirmed the subscription.
    pub fn is_subscribed(&self, channel: &str) -> bool {
        match self {
            Bus::Local(_) => true,
            Bus::Redis(bus) => bus.is_subscribed(channel),
        }
    }

    /// Whether publishes can be accepted now: always in local mode; in cluster mode when every
    /// Redis server is connected.
    pub fn is_connected(&self) -> bool {
        match self {
            Bus::Local(_) => true,
            Bus::Redis(bus) => bus.is_connected(),
        }
    }

    /// Items received from the cluster bus (Redis) so far; 0 in local mode.
    pub fn items_received(&self) -> u64 {
        match self {
            Bus::Local(_) => 0,
            Bus::Redis(bus) => bus.items_received(),
        }
    }

    /// The Redis servers of the cluster bus and the state of each; none in local mode.
    pub fn servers(&self) -> Vec<RedisServer> {
        match self {
            Bus::Local(_) => Vec::new(),
            Bus::Redis(bus) => bus.servers(),
        }
    }

    /// Writes the bus's metrics for `GET /metrics`; none in local mode.
    pub fn metrics(&self, page: &mut crate::metrics::Page) {
        if let Bus::Redis(bus) = self {
            bus.metrics(page);
        }
    }
}

/// One Redis server of the cluster bus, as the status page shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RedisServer {
    /// Its address, without credentials.
    pub addr: String,
    /// Whether both of its connections are up.
    pub connected: bool,
    /// Channels this instance is subscribed to on it.
    pub subscriptions: usize,
    /// Connections made again after one was lost.
    pub reconnects: u64,
    /// Items received from it.
    pub received: u64,
}

/// The bus's background tasks; dropping the handle stops them.
pub struct BusTasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for BusTasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Items with a `json-object` format on a Bayeux channel (`/a/b`, after any route `prefix=`
/// text before its first `/`) are also published to every pattern that matches it (`/a/*`,
/// `/a/**`, `/**`), so Bayeux sessions subscribe to a pattern as a channel of its own. The
/// copies carry only the `json-object` format and no `prev-id` (a pattern interleaves several
/// channels, so there is no order to keep); their id still drops duplicates per pattern and
/// records history there.
fn with_bayeux_patterns(items: Vec<PublishItem>) -> Vec<PublishItem> {
    if !items.iter().any(|i| i.formats.json_object.is_some()) {
        return items;
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let copies = match (&item.formats.json_object, item.channel.find('/')) {
            (Some(json), Some(at)) => {
                let (prefix, name) = item.channel.split_at(at);
                grip::bayeux::patterns_matching(name)
                    .into_iter()
                    .map(|pattern| PublishItem {
                        channel: format!("{prefix}{pattern}"),
                        id: item.id.clone(),
                        prev_id: None,
                        formats: grip::publish::Formats {
                            json_object: Some(grip::publish::JsonObjectFormat {
                                data: json.data.clone(),
                                channel: Some(json.channel.clone().unwrap_or(name.to_string())),
                            }),
                            ..Default::default()
                        },
                        meta: item.meta.clone(),
                        size: item.size,
                        no_seq: true,
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        out.push(item);
        out.extend(copies);
    }
    out
}
