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
pub struct Subscription {
    inner: Arc<Inner>,
    id: u64,
    channels: Vec<String>,
}

impl Subscription {
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
            let mut shard = self.inner.shard(name).lock().expect("hub shard poisoned");
            if let Some(ch) = shard.get_mut(name) {
                ch.subscribers.remove(&self.id);
                if ch.subscribers.is_empty() {
                    shard.remove(name);
                }
            }
        }
    }
}

impl Inner {
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
        let mut unique: Vec<String> = Vec::with_capacity(channels.len());
        for name in channels {
            if unique.contains(&name) {
                continue;
            }
            let mut shard = self.inner.shard(&name).lock().expect("hub shard poisoned");
            shard.entry(name.clone()).or_default().subscribers.insert(
                id,
                Subscriber {
                    want,
                    tx: tx.clone(),
                },
            );
            drop(shard);
            unique.push(name);
        }
        let sub = Subscription {
            inner: self.inner.clone(),
            id,
            channels: unique,
        };
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
