//! The hub: which held connections listen on which channel, and fan-out of published items.
//!
//! Channels live in `SHARDS` independently locked maps (a `std::sync::Mutex` each: critical
//! sections are a map lookup plus non-blocking sends, never an `.await`). A publish takes one
//! shard lock and `try_send`s an `Arc` of the item — serialized once, shared by every recipient —
//! into each subscriber's bounded queue; the connection tasks that own the queues do the writes,
//! on whichever core the runtime gives them, so fan-out uses every core.
//!
//! Invariants: a channel exists only while it has a subscriber (the last [`Subscription`] to
//! leave removes it); a [`Subscription`] removes itself from every channel when dropped, which
//! happens whichever side closes the connection; per channel, items reach each subscriber in
//! publish order. Overflow policy: when a subscriber's queue (`limits.connection_queue`, default
//! 100) is full the new item is dropped for that subscriber and counted in
//! [`HubStats::dropped`].

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use grip::publish::PublishItem;
use tokio::sync::mpsc;

use crate::config::Config;

const SHARDS: usize = 64;

/// What the hub hands a subscriber: the published item, shared.
pub type Delivery = Arc<PublishItem>;

/// Which publish format a subscriber consumes; items without it are not sent to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Long-poll holds: `http-response`.
    HttpResponse,
    /// Stream holds: `http-stream`.
    HttpStream,
    /// WebSockets: `ws-message`.
    WsMessage,
}

impl Want {
    fn accepts(self, item: &PublishItem) -> bool {
        match self {
            Want::HttpResponse => item.formats.http_response.is_some(),
            Want::HttpStream => item.formats.http_stream.is_some(),
            Want::WsMessage => item.formats.ws_message.is_some(),
        }
    }
}

struct Subscriber {
    want: Want,
    tx: mpsc::Sender<Delivery>,
}

#[derive(Default)]
struct Channel {
    subscribers: HashMap<u64, Subscriber>,
}

struct Inner {
    shards: Box<[Mutex<HashMap<String, Channel>>]>,
    hasher: std::collections::hash_map::RandomState,
    next_id: AtomicU64,
    queue_len: usize,
    dropped: AtomicU64,
    delivered: AtomicU64,
    published: AtomicU64,
    seen_ids: Mutex<SeenIds>,
}

/// The channel registry. Cloning shares it.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

/// Counters and gauges of the hub.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Channels with at least one subscriber.
    pub channels: usize,
    /// Channel subscriptions (a connection on two channels counts twice).
    pub subscriptions: usize,
    /// Items accepted for publishing (after duplicate removal).
    pub published: u64,
    /// Items put into a subscriber's queue.
    pub delivered: u64,
    /// Items dropped because a subscriber's queue was full.
    pub dropped: u64,
}

/// A connection's membership in its channels; dropping it leaves them all.
///
/// It keeps only a weak handle on the connection's queue: once the hub drops its senders
/// (the last channel left, or [`Hub::close_all`] at shutdown) the receiver sees the end.
pub struct Subscription {
    inner: Arc<Inner>,
    id: u64,
    want: Want,
    tx: mpsc::WeakSender<Delivery>,
    channels: Vec<String>,
}

impl Subscription {
    /// Adds a channel to this connection's subscriptions (WebSocket `subscribe`). Returns false
    /// when it was already subscribed, or the connection's queue is gone.
    pub fn add(&mut self, channel: String) -> bool {
        if self.channels.contains(&channel) {
            return false;
        }
        let Some(tx) = self.tx.upgrade() else {
            return false;
        };
        self.inner.insert(&channel, self.id, self.want, tx);
        self.channels.push(channel);
        true
    }

    /// Leaves one channel. Returns false when it was not subscribed.
    pub fn remove(&mut self, channel: &str) -> bool {
        let Some(pos) = self.channels.iter().position(|c| c == channel) else {
            return false;
        };
        self.channels.remove(pos);
        self.inner.leave(channel, self.id);
        true
    }

    /// The connection's id in the hub.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The channels subscribed to.
    pub fn channels(&self) -> &[String] {
        &self.channels
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        for name in &self.channels {
            self.inner.leave(name, self.id);
        }
    }
}

impl Inner {
    fn insert(&self, channel: &str, id: u64, want: Want, tx: mpsc::Sender<Delivery>) {
        let mut shard = self.shard(channel).lock().expect("hub shard poisoned");
        shard
            .entry(channel.to_string())
            .or_default()
            .subscribers
            .insert(id, Subscriber { want, tx });
    }

    fn leave(&self, channel: &str, id: u64) {
        let mut shard = self.shard(channel).lock().expect("hub shard poisoned");
        if let Some(ch) = shard.get_mut(channel) {
            ch.subscribers.remove(&id);
            if ch.subscribers.is_empty() {
                shard.remove(channel);
            }
        }
    }

    fn shard(&self, channel: &str) -> &Mutex<HashMap<String, Channel>> {
        &self.shards[(self.hasher.hash_one(channel) as usize) % SHARDS]
    }
}

impl Hub {
    /// An empty hub sized by the configuration.
    pub fn new(config: &Config) -> Hub {
        Hub {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
                hasher: Default::default(),
                next_id: AtomicU64::new(1),
                queue_len: config.limits.connection_queue,
                dropped: AtomicU64::new(0),
                delivered: AtomicU64::new(0),
                published: AtomicU64::new(0),
                seen_ids: Mutex::new(SeenIds::new(Duration::from_secs(
                    config.grip.id_cache_ttl_secs,
                ))),
            }),
        }
    }

    /// Subscribes one connection to `channels` (duplicates ignored). Items arrive on the returned
    /// queue until the [`Subscription`] is dropped.
    pub fn subscribe(
        &self,
        channels: Vec<String>,
        want: Want,
    ) -> (Subscription, mpsc::Receiver<Delivery>) {
        let (tx, rx) = mpsc::channel(self.inner.queue_len);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut sub = Subscription {
            inner: self.inner.clone(),
            id,
            want,
            tx: tx.downgrade(),
            channels: Vec::with_capacity(channels.len()),
        };
        for name in channels {
            if !sub.channels.contains(&name) {
                self.inner.insert(&name, id, want, tx.clone());
                sub.channels.push(name);
            }
        }
        (sub, rx)
    }

    /// Publishes one item to its channel's subscribers; returns how many received it. An item
    /// whose id was already published on the channel within the id cache TTL is dropped.
    pub fn publish(&self, item: PublishItem) -> usize {
        if let Some(id) = &item.id {
            let mut seen = self.inner.seen_ids.lock().expect("id cache poisoned");
            if !seen.insert(&item.channel, id) {
                tracing::debug!(channel = %item.channel, id = %id, "duplicate item id, dropped");
                return 0;
            }
        }
        self.inner.published.fetch_add(1, Ordering::Relaxed);
        let item = Arc::new(item);
        let shard = self
            .inner
            .shard(&item.channel)
            .lock()
            .expect("hub shard poisoned");
        let Some(channel) = shard.get(&item.channel) else {
            return 0;
        };
        let mut sent = 0usize;
        let mut dropped = 0u64;
        for (id, sub) in &channel.subscribers {
            if !sub.want.accepts(&item) {
                continue;
            }
            match sub.tx.try_send(item.clone()) {
                Ok(()) => sent += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    dropped += 1;
                    tracing::debug!(channel = %item.channel, subscriber = id, "publish queue at max, dropping");
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        drop(shard);
        self.inner
            .delivered
            .fetch_add(sent as u64, Ordering::Relaxed);
        self.inner.dropped.fetch_add(dropped, Ordering::Relaxed);
        tracing::debug!(channel = %item.channel, receivers = sent, "publish");
        sent
    }

    /// Subscribers currently on `channel`.
    pub fn subscribers(&self, channel: &str) -> usize {
        let shard = self
            .inner
            .shard(channel)
            .lock()
            .expect("hub shard poisoned");
        shard.get(channel).map_or(0, |c| c.subscribers.len())
    }

    /// A snapshot of the hub's counters.
    pub fn stats(&self) -> HubStats {
        let mut stats = HubStats {
            published: self.inner.published.load(Ordering::Relaxed),
            delivered: self.inner.delivered.load(Ordering::Relaxed),
            dropped: self.inner.dropped.load(Ordering::Relaxed),
            ..HubStats::default()
        };
        for shard in self.inner.shards.iter() {
            let shard = shard.lock().expect("hub shard poisoned");
            stats.channels += shard.len();
            stats.subscriptions += shard.values().map(|c| c.subscribers.len()).sum::<usize>();
        }
        stats
    }

    /// Closes every subscriber's queue (at shutdown): held connections see the end of their
    /// queue and finish. Subscriptions are still removed by their owners.
    pub fn close_all(&self) {
        for shard in self.inner.shards.iter() {
            shard.lock().expect("hub shard poisoned").clear();
        }
    }
}

/// Item ids recently published per channel, for duplicate removal. Bounded: past
/// `MAX_SEEN_IDS` entries the oldest is forgotten early.
struct SeenIds {
    ttl: Duration,
    set: HashMap<(String, String), Instant>,
    order: VecDeque<((String, String), Instant)>,
}

const MAX_SEEN_IDS: usize = 100_000;

impl SeenIds {
    fn new(ttl: Duration) -> SeenIds {
        SeenIds {
            ttl,
            set: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Records the id; false when it was already seen within the TTL.
    fn insert(&mut self, channel: &str, id: &str) -> bool {
        if self.ttl.is_zero() {
            return true;
        }
        let now = Instant::now();
        while let Some((key, at)) = self.order.front() {
            if now.duration_since(*at) < self.ttl && self.order.len() < MAX_SEEN_IDS {
                break;
            }
            if self.set.get(key) == Some(at) {
                self.set.remove(key);
            }
            self.order.pop_front();
        }
        let key = (channel.to_string(), id.to_string());
        if self.set.contains_key(&key) {
            return false;
        }
        self.set.insert(key.clone(), now);
        self.order.push_back((key, now));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(channel: &str, id: Option<&str>) -> PublishItem {
        let body = serde_json::json!({"items": [{"channel": channel, "id": id,
            "formats": {"http-stream": {"content": "x"}}}]});
        let mut items = grip::publish::parse_publish_body(body.to_string().as_bytes()).unwrap();
        items.remove(0)
    }

    fn hub(queue: usize) -> Hub {
        let mut config = Config::default();
        config.limits.connection_queue = queue;
        Hub::new(&config)
    }

    #[test]
    fn channels_come_and_go_with_their_subscribers() {
        let hub = hub(10);
        let (mut a, mut rx_a) =
            hub.subscribe(vec!["x".into(), "y".into(), "x".into()], Want::HttpStream);
        assert_eq!(a.channels(), ["x", "y"]);
        let (b, _rx_b) = hub.subscribe(vec!["x".into()], Want::HttpStream);
        assert_eq!(hub.stats().channels, 2);
        assert_eq!(hub.stats().subscriptions, 3);
        assert_eq!(hub.publish(item("x", None)), 2);
        assert!(rx_a.try_recv().is_ok());
        assert!(a.remove("y"));
        assert!(!a.remove("y"));
        assert_eq!(hub.subscribers("y"), 0);
        assert!(a.add("z".into()));
        assert_eq!(hub.publish(item("z", None)), 1);
        drop(b);
        drop(a);
        assert_eq!(hub.stats().channels, 0);
        // With every channel left, the queue ends.
        assert!(rx_a.try_recv().is_ok());
        assert!(matches!(
            rx_a.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
    }

    #[test]
    fn full_queues_drop_the_newest_item_and_count_it() {
        let hub = hub(2);
        let (_sub, mut rx) = hub.subscribe(vec!["q".into()], Want::HttpStream);
        for _ in 0..5 {
            hub.publish(item("q", None));
        }
        let stats = hub.stats();
        assert_eq!((stats.delivered, stats.dropped), (2, 3));
        assert!(rx.try_recv().is_ok() && rx.try_recv().is_ok() && rx.try_recv().is_err());
    }

    #[test]
    fn only_subscribers_wanting_the_format_receive_it() {
        let hub = hub(10);
        let (_s, _r) = hub.subscribe(vec!["f".into()], Want::HttpResponse);
        let (_w, mut ws) = hub.subscribe(vec!["f".into()], Want::WsMessage);
        assert_eq!(hub.publish(item("f", None)), 0);
        assert!(ws.try_recv().is_err());
    }

    #[test]
    fn duplicate_ids_are_dropped_per_channel() {
        let hub = hub(10);
        let (_s, mut rx) = hub.subscribe(vec!["d".into(), "e".into()], Want::HttpStream);
        assert_eq!(hub.publish(item("d", Some("1"))), 1);
        assert_eq!(hub.publish(item("d", Some("1"))), 0);
        assert_eq!(hub.publish(item("e", Some("1"))), 1);
        assert_eq!(hub.publish(item("d", None)), 1);
        assert_eq!(std::iter::from_fn(|| rx.try_recv().ok()).count(), 3);
    }

    #[test]
    fn close_all_ends_every_queue() {
        let hub = hub(10);
        let (_s, mut rx) = hub.subscribe(vec!["c".into()], Want::HttpStream);
        hub.close_all();
        assert!(matches!(
            rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
    }
}
