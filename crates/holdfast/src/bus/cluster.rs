//! The cluster bus: instances share publishes through one or more Redis servers.
//!
//! A publish is written, per Redis server, as one `MULTI`/`EXEC` transaction that for each item
//! appends it to the channel's history stream (items with an `id`) and `PUBLISH`es it, so the
//! history's order is the publish order. Every instance — the publishing one included —
//! `SUBSCRIBE`s only to the channels it has local subscribers for (see [`super::shard`]), and
//! hands what arrives to its hub in the order Redis sends it. The publishing instance does not
//! deliver locally, so nobody gets an item twice.
//!
//! With several servers, a channel lives on the server picked by a stable hash of its name
//! ([`shard_of`]); every instance must list the same servers in the same order. A publish whose
//! channels live on a disconnected server is refused whole, before anything is sent.
//!
//! On the wire an item is Pushpin's publish item JSON ([`PublishItem::to_json`]), so other tools
//! can read the channels, and publish into them with `PUBLISH holdfast:ch:<channel> <item>`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use grip::publish::PublishItem;

use super::history::{self, HistoryLimits};
use super::shard::Shard;
use super::BusError;
use crate::config::{redis_url, Config};
use crate::hub::{Delivery, Hub};
use crate::metrics::Page;

/// How long a history read waits for this instance's subscription to the channel.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(1);

/// Names of the Redis keys and pubsub channels of one deployment.
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    /// The pubsub channel carrying a hub channel's items.
    pub fn pubsub(&self, channel: &str) -> String {
        format!("{}ch:{channel}", self.prefix)
    }

    /// The stream holding a hub channel's recent items.
    pub fn history(&self, channel: &str) -> String {
        format!("{}history:{channel}", self.prefix)
    }

    /// The hub channel a pubsub channel carries, if it is one of ours.
    pub fn channel_of<'a>(&self, pubsub: &'a str) -> Option<&'a str> {
        pubsub
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix("ch:")
    }
}

/// What the shard tasks share: the hub they deliver into and the cluster settings.
pub(super) struct ClusterShared {
    pub hub: Hub,
    pub keys: Keys,
    pub history: HistoryLimits,
    /// How long a channel stays subscribed after its last local subscriber left.
    pub unsubscribe_delay: Duration,
    /// How long a `PING` may go unanswered.
    pub ping_timeout: Duration,
    /// How long any other call may go unanswered (`cluster.command_timeout_secs`).
    pub command_timeout: Duration,
    /// How long connecting to a server may take (`cluster.connect_timeout_secs`).
    pub connect_timeout: Duration,
    /// How many Redis servers channels are spread over.
    pub shards: usize,
}

/// The publish path through Redis.
pub struct RedisBus {
    ctx: Arc<ClusterShared>,
    shards: Arc<[Arc<Shard>]>,
}

impl RedisBus {
    /// A bus over the servers of `config.cluster.redis` (validated), delivering into `hub`.
    /// Nothing connects until [`RedisBus::start`].
    pub fn new(config: &Config, hub: Hub) -> RedisBus {
        let c = &config.cluster;
        // Read again here, as validation read it: the file is not kept in the configuration.
        let ca = c.redis_ca().expect("config was validated");
        let shards: Arc<[Arc<Shard>]> = c
            .redis
            .iter()
            .enumerate()
            .map(|(i, url)| {
                if redis_url::is_insecure(url) {
                    tracing::warn!(url = %redis_url::redact(url),
                        "cluster.redis uses #insecure: the Redis server's certificate and name are not checked");
                }
                let client = redis_url::client(url, ca.as_deref()).expect("config was validated");
                Arc::new(Shard::new(i, client))
            })
            .collect();
        let ctx = Arc::new(ClusterShared {
            hub: hub.clone(),
            keys: Keys {
                prefix: c.prefix.clone(),
            },
            history: HistoryLimits {
                items: config.reliability.history_items,
                max_age: Duration::from_secs(config.reliability.history_max_age_secs),
            },
            unsubscribe_delay: Duration::from_secs(c.unsubscribe_delay_secs),
            ping_timeout: Duration::from_secs(c.ping_timeout_secs),
            command_timeout: c.command_timeout(),
            connect_timeout: c.connect_timeout(),
            shards: shards.len(),
        });
        let dispatch = shards.clone();
        hub.on_interest(Arc::new(move |channel: &str, on: bool| {
            dispatch[shard_of(channel, dispatch.len())].notice(channel, on);
        }));
        RedisBus { ctx, shards }
    }

    /// Spawns one task per Redis server that connects, subscribes, delivers and reconnects.
    pub fn start(&self) -> Vec<tokio::task::JoinHandle<()>> {
        self.shards
            .iter()
            .map(|s| tokio::spawn(s.clone().run(self.ctx.clone())))
            .collect()
    }

    fn shard(&self, channel: &str) -> &Arc<Shard> {
        &self.shards[shard_of(channel, self.shards.len())]
    }

    /// Sends items to Redis in order: one transaction per server, all servers at once. Fails
    /// without sending anything when a server the items need is disconnected.
    pub async fn publish(&self, items: Vec<PublishItem>) -> Result<usize, BusError> {
        let mut batches: Vec<Option<::redis::Pipeline>> =
            (0..self.shards.len()).map(|_| None).collect();
        for item in &items {
            let json = serde_json::to_vec(&item.to_json()).expect("JSON values always serialize");
            let pipe =
                batches[shard_of(&item.channel, self.shards.len())].get_or_insert_with(|| {
                    let mut pipe = ::redis::pipe();
                    pipe.atomic();
                    pipe
                });
            history::add_publish(pipe, &self.ctx.keys, &self.ctx.history, item, &json);
        }
        let mut sends = Vec::new();
        for (shard, pipe) in self.shards.iter().zip(batches) {
            let Some(pipe) = pipe else { continue };
            let Some((generation, conn)) = shard.connection() else {
                return Err(BusError::Unavailable(format!(
                    "{} is not connected; nothing was published",
                    shard.label
                )));
            };
            sends.push(async move {
                let mut conn = conn;
                let result = pipe.exec_async(&mut conn).await;
                (shard, generation, result)
            });
        }
        let several = sends.len() > 1;
        let mut failure = None;
        for (shard, generation, result) in join_all(sends).await {
            if let Err(e) = result {
                shard.command_failed(generation, &e);
                failure.get_or_insert_with(|| self.failed(shard, &e, items.len()));
            }
        }
        if let Some(mut message) = failure {
            if several {
                message.push_str("; items for the other Redis servers may have been published");
            }
            return Err(BusError::Unavailable(message));
        }
        for item in &items {
            tracing::info!(channel = %item.channel, via = "redis", "publish");
        }
        Ok(0)
    }

    /// Why a publish to `shard` failed, in the publisher's words. A call that timed out may
    /// still have been applied: Redis can take the transaction after the client gave up on it.
    fn failed(&self, shard: &Shard, e: &::redis::RedisError, items: usize) -> String {
        if e.is_timeout() {
            let what = if items == 1 { "the item" } else { "the items" };
            format!(
                "{} did not answer within cluster.command_timeout_secs ({} s); {what} may still be delivered",
                shard.label,
                self.ctx.command_timeout.as_secs()
            )
        } else {
            format!("{}: {e}", shard.label)
        }
    }

    /// The items after `after` in the channel's history stream in Redis.
    pub async fn history_after(&self, channel: &str, after: &str) -> Option<Vec<Delivery>> {
        if !self.ctx.history.is_on() {
            return None;
        }
        let shard = self.shard(channel);
        let (generation, mut conn) = shard.connection()?;
        // An item published before Redis confirmed this instance's subscription would reach it
        // neither live nor, if the history were read earlier, from history.
        shard.wait_subscribed(channel, SUBSCRIBE_WAIT).await;
        let keys = [self.ctx.keys.history(channel)];
        let limits = self.ctx.history;
        // On its own task: a held stream's body must be `Sync`, and the client's futures are not.
        let read = tokio::spawn(async move { history::read(&mut conn, &keys, &limits).await });
        let Ok(result) = read.await else {
            return None;
        };
        match result {
            Ok(streams) => {
                let items = streams
                    .first()
                    .and_then(|entries| history::after(entries, after));
                tracing::debug!(channel, after, found = ?items.as_ref().map(Vec::len), "cluster: history read");
                items
            }
            Err(e) => {
                shard.command_failed(generation, &e);
                tracing::info!(channel, shard = %shard.label, error = %e, "cluster: history could not be read");
                None
            }
        }
    }

    /// Whether Redis confirmed this instance's subscription to `channel`.
    pub fn is_subscribed(&self, channel: &str) -> bool {
        self.shard(channel).is_subscribed(channel)
    }

    /// Whether every Redis server is connected.
    pub fn is_connected(&self) -> bool {
        self.shards.iter().all(|s| s.is_connected())
    }

    /// Each Redis server and its state.
    pub fn servers(&self) -> Vec<super::RedisServer> {
        self.shards
            .iter()
            .map(|s| {
                let (subscriptions, reconnects, received) = s.counts();
                super::RedisServer {
                    addr: s.addr.clone(),
                    connected: s.is_connected(),
                    subscriptions,
                    reconnects,
                    received,
                }
            })
            .collect()
    }

    /// Writes its metrics: connection state and ping round trip per server, subscriptions,
    /// reconnects, items received.
    pub fn metrics(&self, page: &mut Page) {
        page.gauge(
            "holdfast_cluster_connected",
            "Whether every Redis server of the cluster bus is connected",
            i64::from(self.is_connected()),
        );
        let labels = |s: &Shard| {
            vec![
                ("shard", s.index.to_string()),
                ("addr", crate::metrics::label_value(&s.addr)),
            ]
        };
        let connected = (self.shards.iter())
            .map(|s| (labels(s), i64::from(s.is_connected())))
            .collect();
        page.gauges(
            "holdfast_cluster_redis_connected",
            "Whether one Redis server of the cluster bus is connected",
            connected,
        );
        let pings = (self.shards.iter())
            .filter_map(|s| Some((labels(s), s.last_ping()?)))
            .collect::<Vec<_>>();
        if !pings.is_empty() {
            page.live(
                "holdfast_cluster_redis_ping_seconds",
                "Round trip of the last PING on one Redis server's subscription connection: how far behind the items it delivers are",
                crate::metrics::FloatGauges(pings),
            );
        }
        let (subs, reconnects, received) = self.shards.iter().fold((0, 0, 0), |acc, s| {
            let (subs, reconnects, received) = s.counts();
            (acc.0 + subs, acc.1 + reconnects, acc.2 + received)
        });
        page.gauge(
            "holdfast_cluster_subscriptions",
            "Channels this instance is subscribed to in Redis",
            subs as i64,
        )
        .counter(
            "holdfast_cluster_reconnects_total",
            "Connections to Redis made again after one was lost",
            reconnects,
        )
        .counter(
            "holdfast_cluster_items_received_total",
            "Items received from Redis and handed to the hub",
            received,
        );
    }

    /// Items received from Redis so far, over every server.
    pub fn items_received(&self) -> u64 {
        self.shards.iter().map(|s| s.counts().2).sum()
    }
}

/// The Redis server (of `n`) a channel lives on: jump consistent hash (Lamping and Veach) of
/// the FNV-1a hash of its name. Stable across processes and versions; adding a server moves
/// only about `1/n` of the channels.
pub(super) fn shard_of(channel: &str, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let mut key = channel.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let (mut b, mut j) = (-1_i64, 0_i64);
    while j < n as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1_u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_of_is_stable_and_spreads() {
        assert_eq!(shard_of("anything", 1), 0);
        // Fixed values: every instance, of every version, must agree.
        let picks: Vec<usize> = ["a", "b", "news", "room-17", ""]
            .iter()
            .map(|c| shard_of(c, 3))
            .collect();
        assert_eq!(picks, [2, 0, 2, 1, 1]);
        let mut counts = [0_usize; 4];
        for i in 0..4000 {
            counts[shard_of(&format!("channel-{i}"), 4)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
        // Going from 3 to 4 servers moves about a quarter of the channels, all to the new one.
        let moved: Vec<usize> = (0..4000)
            .map(|i| format!("channel-{i}"))
            .filter(|c| shard_of(c, 3) != shard_of(c, 4))
            .map(|c| shard_of(&c, 4))
            .collect();
        assert!((800..1200).contains(&moved.len()), "{}", moved.len());
        assert!(moved.iter().all(|&s| s == 3));
    }

    #[test]
    fn keys_round_trip() {
        let keys = Keys {
            prefix: "hf:".into(),
        };
        assert_eq!(keys.pubsub("news"), "hf:ch:news");
        assert_eq!(keys.history("news"), "hf:history:news");
        assert_eq!(keys.channel_of("hf:ch:news"), Some("news"));
        assert_eq!(keys.channel_of("other:ch:news"), None);
    }
}
