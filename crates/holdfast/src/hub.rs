//! The hub: which held connections listen on which channel, the per-channel sequencer and
//! history, and fan-out of published items.
//!
//! Channels live in `SHARDS` independently locked maps (a `std::sync::Mutex` each: critical
//! sections are a map lookup plus non-blocking sends and reservations, never an `.await`). A
//! publish takes one shard lock and `try_send`s an `Arc` of the item — parsed once, shared by
//! every recipient — into each subscriber's bounded queue; the connection tasks that own the
//! queues do the writes (or fan-out tasks, for idle held streams: below), on whichever core the
//! runtime gives them, so fan-out uses every core.
//!
//! Invariants:
//! - per channel, items reach each subscriber in publish order, and an item whose `prev-id` is
//!   not the channel's last id waits (at most `reliability.message_wait_ms`, at most
//!   `max_pending_per_channel` items) for its predecessor;
//! - subscribing and reading history happen under the same lock ([`Hub::subscribe_resuming`]),
//!   so an item is either replayed from history or queued live, never both and never neither;
//! - a [`Subscription`] removes itself from every channel when dropped, whichever side closed the
//!   connection; a channel with no subscribers, nothing pending, no history and no subscriber in
//!   the last minute is removed by the next [`Hub::sweep`].
//!
//! Held HTTP/1.1 streams and WebSocket-over-HTTP connections take a shortcut ([`Sink`]): a
//! plain `http-stream` chunk (no id or `prev-id`, no filters), or a plain `ws-message` text or
//! binary frame (no filters), for a connection whose session is idle is written to its socket by
//! fan-out tasks, a batch of connections each, spread over the runtime's workers, instead of
//! being queued and written by the connection's own task. The sink's lock keeps each
//! connection's bytes in publish order.
//!
//! Overflow policy: when a subscriber's queue (`limits.connection_queue`, default 100) is full the
//! new item is dropped for that subscriber and counted in [`HubStats::dropped`]; the session sees
//! the gap through `prev-id` and catches up from history or the origin.

mod channel;
mod fanout;
mod filter;
mod seen;
mod subscription;
#[cfg(test)]
mod tests;
mod wanted;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use grip::publish::{
    Action, Formats, HttpResponseFormat, HttpStreamFormat, PublishItem, ResponseBody,
};
use tokio::sync::mpsc;

use crate::sink::Sink;
pub use channel::Resume;
use channel::{Channel, Limits, Pending, Subscriber};
pub use filter::{filter_delivery, FilterScope};
use seen::SeenIds;
pub use subscription::Subscription;
pub use wanted::Wanted;

const SHARDS: usize = 64;

/// How long a channel's state stays after its last subscriber left: a long-poll that re-polls
/// within it is not a first subscription.
const LINGER: Duration = Duration::from_secs(60);

/// What the hub is sized by. [`crate::app`] builds it from the configuration.
#[derive(Debug, Clone)]
pub struct HubLimits {
    /// Items one subscriber's queue holds (`limits.connection_queue`).
    pub connection_queue: usize,
    /// Items of history kept per channel (`reliability.history_items`); 0 keeps none.
    pub history_items: usize,
    /// How long an item stays in history (`reliability.history_max_age_secs`).
    pub history_age: Duration,
    /// Bytes all histories hold together (`reliability.history_max_bytes`).
    pub history_max_bytes: usize,
    /// Items that wait for their predecessor, per channel (`reliability.max_pending_per_channel`).
    pub max_pending: usize,
    /// How long such an item waits (`reliability.message_wait_ms`).
    pub message_wait: Duration,
    /// Hint a channel's first HTTP subscriber to update itself after this long
    /// (`reliability.update_on_first_subscription`).
    pub first_subscription_update: Option<Duration>,
    /// How long a published id is remembered to drop duplicates (`grip.id_cache_ttl_secs`).
    pub id_cache_ttl: Duration,
    /// Other instances publish to the same channels (cluster mode): a `prev-id` on a channel
    /// with no known last id may be behind.
    pub shared: bool,
}

/// What the hub hands a subscriber: the published item, shared.
pub type Delivery = Arc<PublishItem>;

/// Which publish format a subscriber consumes; items without it are not sent to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Want {
    /// Long-poll holds: `http-response`.
    HttpResponse,
    /// Stream holds: `http-stream`.
    HttpStream,
    /// WebSockets: `ws-message`.
    WsMessage,
    /// Bayeux sessions: `json-object`.
    Bayeux,
}

impl Want {
    fn accepts(self, item: &PublishItem) -> bool {
        match self {
            Want::HttpResponse => item.formats.http_response.is_some(),
            Want::HttpStream => item.formats.http_stream.is_some(),
            Want::WsMessage => item.formats.ws_message.is_some(),
            Want::Bayeux => item.formats.json_object.is_some(),
        }
    }

    fn is_http(self) -> bool {
        matches!(self, Want::HttpResponse | Want::HttpStream)
    }

    fn index(self) -> usize {
        match self {
            Want::HttpResponse => 0,
            Want::HttpStream => 1,
            Want::WsMessage => 2,
            Want::Bayeux => 3,
        }
    }

    /// Pushpin's name for the mode: `response`, `stream` or `ws`; `bayeux`, which Pushpin
    /// does not have.
    pub fn mode_name(self) -> &'static str {
        match self {
            Want::HttpResponse => "response",
            Want::HttpStream => "stream",
            Want::WsMessage => "ws",
            Want::Bayeux => "bayeux",
        }
    }
}

type Shard = Mutex<HashMap<String, Channel>>;

/// Told when a channel gains its first local subscriber (`true`) or loses its last (`false`).
/// Called under the channel's shard lock: it must return at once and must not call the hub.
pub type InterestFn = Arc<dyn Fn(&str, bool) + Send + Sync>;

/// Told when a channel gains its first subscriber of one mode (`true`) or loses its last.
/// Called under the channel's shard lock, as [`InterestFn`].
pub type ModeFn = Arc<dyn Fn(&str, Want, bool) + Send + Sync>;

/// Who is told about interest changes. Listeners are added at start; the lock is read only on
/// a channel's (or mode's) first or last subscriber, never on a publish.
#[derive(Default)]
struct Listeners {
    channel: Vec<InterestFn>,
    mode: Vec<ModeFn>,
}

struct Inner {
    shards: Box<[Shard]>,
    hasher: std::collections::hash_map::RandomState,
    next_id: AtomicU64,
    queue_len: usize,
    limits: Limits,
    first_subscription_update: Option<Duration>,
    history_max_bytes: usize,
    history_bytes: AtomicUsize,
    dropped: AtomicU64,
    /// Deliveries not made because the subscriber's queue had closed (its connection left).
    closed: AtomicU64,
    /// Publish → write latency, by path: `direct` (written by the fan-out), `queued`.
    write_latency: crate::metrics::Histograms,
    delivered: AtomicU64,
    written: AtomicU64,
    published: AtomicU64,
    responses: AtomicU64,
    seen_ids: Mutex<SeenIds>,
    listeners: std::sync::RwLock<Listeners>,
    /// A `prev-id` on a channel with no known last id may be behind (cluster mode).
    unknown_is_stale: bool,
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
    /// Channels the hub keeps state for (subscribers, history, pending items, or a recent
    /// subscriber).
    pub channel_states: usize,
    /// Channel subscriptions (a connection on two channels counts twice).
    pub subscriptions: usize,
    /// Items accepted for publishing (after duplicate removal).
    pub published: u64,
    /// Items put into a subscriber's queue, or written to its socket by the fan-out.
    pub delivered: u64,
    /// Items dropped because a subscriber's queue was full.
    pub dropped: u64,
    /// Items not delivered because the subscriber's connection had just left.
    pub closed: u64,
    /// Of the delivered, those the fan-out wrote to a held stream's socket itself.
    pub written: u64,
    /// Of the delivered, those to long-polls (`http-response`).
    pub responses: u64,
    /// Bytes held by channel histories.
    pub history_bytes: usize,
}

/// What [`Hub::overview`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overview {
    /// The counters and gauges of [`Hub::stats`], from the same pass.
    pub stats: HubStats,
    /// Subscriptions of long-polls (`http-response`).
    pub long_polls: usize,
    /// Subscriptions of held streams (`http-stream`).
    pub streams: usize,
    /// Subscriptions of WebSockets, WebSocket-over-HTTP included (`ws-message`).
    pub websockets: usize,
    /// Subscriptions of Bayeux sessions (`json-object`).
    pub bayeux: usize,
    /// The channels with the most subscribers, most first (ties by name), with their counts.
    pub busiest: Vec<(String, usize)>,
}

impl Inner {
    fn shard(&self, channel: &str) -> &Shard {
        &self.shards[(self.hasher.hash_one(channel) as usize) % SHARDS]
    }

    /// Adds a subscriber under the shard lock; schedules the first-subscriber update when the
    /// channel had no recent subscriber.
    fn join(
        self: &Arc<Self>,
        shard: &mut HashMap<String, Channel>,
        channel: &str,
        id: u64,
        want: Want,
        tx: mpsc::Sender<Delivery>,
        sink: Option<Arc<Sink>>,
    ) {
        let now = Instant::now();
        let ch = shard.entry(channel.to_string()).or_default();
        let was_empty = ch.subscribers.is_empty();
        let first = was_empty && ch.linger_until.is_none_or(|t| t <= now);
        ch.subscribers.insert(id, Subscriber { want, tx, sink });
        ch.modes[want.index()] += 1;
        let first_of_mode = ch.modes[want.index()] == 1;
        if was_empty || first_of_mode {
            let listeners = self.listeners.read().expect("hub listeners poisoned");
            if was_empty {
                listeners.channel.iter().for_each(|f| f(channel, true));
            }
            if first_of_mode {
                listeners.mode.iter().for_each(|f| f(channel, want, true));
            }
        }
        ch.linger_until = None;
        if first && want.is_http() {
            if let Some(delay) = self.first_subscription_update {
                self.schedule(delay, channel.to_string(), |hub, channel| {
                    hub.hint_channel(&channel);
                });
            }
        }
    }

    /// Joins `channel` under its shard lock, reading what a subscriber that has seen `prev_id`
    /// missed under the same lock.
    fn join_resuming(
        self: &Arc<Self>,
        channel: &str,
        prev_id: Option<&str>,
        id: u64,
        want: Want,
        tx: mpsc::Sender<Delivery>,
        sink: Option<Arc<Sink>>,
    ) -> Resume {
        let mut shard = self.shard(channel).lock().expect("hub shard poisoned");
        let resume = match shard.get(channel) {
            Some(ch) if ch.last_id.is_some() => ch.resume(prev_id),
            // In a cluster another instance may have published what the client missed.
            _ if prev_id.is_some() && self.unknown_is_stale => Resume::Stale { last_id: None },
            _ => Resume::Live,
        };
        self.join(&mut shard, channel, id, want, tx, sink);
        resume
    }

    fn leave(&self, channel: &str, id: u64) {
        let mut shard = self.shard(channel).lock().expect("hub shard poisoned");
        if let Some(ch) = shard.get_mut(channel) {
            let Some(gone) = ch.subscribers.remove(&id) else {
                return;
            };
            let mode = &mut ch.modes[gone.want.index()];
            *mode = mode.saturating_sub(1);
            let last_of_mode = *mode == 0;
            if last_of_mode || ch.subscribers.is_empty() {
                let listeners = self.listeners.read().expect("hub listeners poisoned");
                if last_of_mode {
                    listeners
                        .mode
                        .iter()
                        .for_each(|f| f(channel, gone.want, false));
                }
                if ch.subscribers.is_empty() {
                    listeners.channel.iter().for_each(|f| f(channel, false));
                }
            }
            if ch.subscribers.is_empty() {
                // Long-polls re-poll at once: a quick return is not a first subscription. The
                // entry stays (history, last id, linger) until a sweep finds it idle.
                ch.linger_until = Some(Instant::now() + self.limits.linger);
            }
        }
    }

    /// Runs `f` on the hub after `delay`, if the hub still exists and a runtime is running.
    fn schedule(self: &Arc<Self>, delay: Duration, channel: String, f: fn(&Hub, String)) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak: Weak<Inner> = Arc::downgrade(self);
        rt.spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(inner) = weak.upgrade() {
                f(&Hub { inner }, channel);
            }
        });
    }
}

impl Hub {
    /// An empty hub sized by `limits`.
    pub fn new(limits: HubLimits) -> Hub {
        Hub {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
                hasher: Default::default(),
                next_id: AtomicU64::new(1),
                queue_len: limits.connection_queue,
                limits: Limits {
                    history_items: limits.history_items,
                    history_age: limits.history_age,
                    max_pending: limits.max_pending,
                    message_wait: limits.message_wait,
                    linger: LINGER,
                },
                first_subscription_update: limits.first_subscription_update,
                history_max_bytes: limits.history_max_bytes,
                history_bytes: AtomicUsize::new(0),
                dropped: AtomicU64::new(0),
                closed: AtomicU64::new(0),
                write_latency: crate::metrics::Histograms::new(
                    "path",
                    &["direct", "queued"],
                    crate::metrics::WRITE_BUCKETS,
                ),
                delivered: AtomicU64::new(0),
                written: AtomicU64::new(0),
                published: AtomicU64::new(0),
                responses: AtomicU64::new(0),
                seen_ids: Mutex::new(SeenIds::new(limits.id_cache_ttl)),
                listeners: Default::default(),
                unknown_is_stale: limits.shared,
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
        let (sub, rx, _) =
            self.subscribe_resuming(channels.into_iter().map(|c| (c, None)).collect(), want);
        (sub, rx)
    }

    /// Subscribes to channels, each with the `prev-id` the client has seen, and tells for each
    /// whether anything was missed ([`Resume`], in the order of the unique channels). History is
    /// read under the same lock that registers the subscriber.
    pub fn subscribe_resuming(
        &self,
        channels: Vec<(String, Option<String>)>,
        want: Want,
    ) -> (Subscription, mpsc::Receiver<Delivery>, Vec<Resume>) {
        self.subscribe_with(channels, want, None)
    }

    /// [`Hub::subscribe_resuming`] for a held stream whose plain chunks the fan-out may write to
    /// `sink` itself while the session is idle.
    pub fn subscribe_stream(
        &self,
        channels: Vec<(String, Option<String>)>,
        sink: Arc<Sink>,
    ) -> (Subscription, mpsc::Receiver<Delivery>, Vec<Resume>) {
        self.subscribe_with(channels, Want::HttpStream, Some(sink))
    }

    /// [`Hub::subscribe_resuming`] for a held long-poll whose answer the fan-out may write to
    /// `sink` itself while the hold is idle ([`Sink::answering`]).
    pub fn subscribe_response(
        &self,
        channels: Vec<(String, Option<String>)>,
        sink: Option<Arc<Sink>>,
    ) -> (Subscription, mpsc::Receiver<Delivery>, Vec<Resume>) {
        self.subscribe_with(channels, Want::HttpResponse, sink)
    }

    /// [`Hub::subscribe`] for a WebSocket whose plain messages the fan-out may write to `sink`
    /// itself while the session is idle.
    pub fn subscribe_websocket(
        &self,
        channels: Vec<String>,
        sink: Arc<Sink>,
    ) -> (Subscription, mpsc::Receiver<Delivery>) {
        let channels = channels.into_iter().map(|c| (c, None)).collect();
        let (sub, rx, _) = self.subscribe_with(channels, Want::WsMessage, Some(sink));
        (sub, rx)
    }

    fn subscribe_with(
        &self,
        channels: Vec<(String, Option<String>)>,
        want: Want,
        sink: Option<Arc<Sink>>,
    ) -> (Subscription, mpsc::Receiver<Delivery>, Vec<Resume>) {
        let (tx, rx) = mpsc::channel(self.inner.queue_len);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut sub = Subscription {
            inner: self.inner.clone(),
            id,
            want,
            tx: tx.downgrade(),
            sink,
            channels: Vec::with_capacity(channels.len()),
        };
        let mut resumes = Vec::with_capacity(channels.len());
        for (name, prev_id) in channels {
            if sub.channels.contains(&name) {
                continue;
            }
            let resume = self.inner.join_resuming(
                &name,
                prev_id.as_deref(),
                id,
                want,
                tx.clone(),
                sub.sink.clone(),
            );
            resumes.push(resume);
            sub.channels.push(name);
        }
        (sub, rx, resumes)
    }

    /// Publishes one item; returns how many subscribers received it now. An item whose id was
    /// already published on the channel within the id cache TTL is dropped; one whose `prev-id`
    /// is not the channel's last id waits for its predecessor (see the module docs).
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
        // Borrowed from the item, which outlives every use below, rather than copied.
        let name = item.channel.as_str();
        let inner = &self.inner;
        let mut shard = inner.shard(name).lock().expect("hub shard poisoned");
        if !shard.contains_key(name) {
            if inner.limits.history_items == 0 {
                return 0;
            }
            shard.insert(name.to_string(), Channel::default());
        }
        let ch = shard.get_mut(name).expect("present");
        if ch.must_wait(&item) {
            let mut sent = 0;
            if ch.pending.len() >= inner.limits.max_pending {
                let oldest = ch.pending.pop_front().expect("pending is full");
                sent += inner.deliver(&mut shard, name, &oldest.item);
                sent += inner.release_ready(&mut shard, name);
            }
            // `reliability.message_wait_ms` is the operator's: it may be anything.
            let deadline = crate::deadline::after(inner.limits.message_wait);
            if let Some(ch) = shard.get_mut(name) {
                ch.pending.push_back(Pending {
                    item: Arc::clone(&item),
                    deadline,
                });
            }
            drop(shard);
            inner.schedule(
                inner.limits.message_wait,
                name.to_string(),
                |hub, channel| {
                    hub.flush_expired(&channel);
                },
            );
            return sent;
        }
        let mut sent = inner.deliver(&mut shard, name, &item);
        sent += inner.release_ready(&mut shard, name);
        sent
    }

    /// Delivers, in arrival order, the items on `channel` that waited past their deadline.
    fn flush_expired(&self, channel: &str) {
        let inner = &self.inner;
        let mut shard = inner.shard(channel).lock().expect("hub shard poisoned");
        let now = tokio::time::Instant::now();
        loop {
            let expired = shard.get_mut(channel).and_then(|ch| {
                if ch.pending.front().is_some_and(|p| p.deadline <= now) {
                    ch.pending.pop_front()
                } else {
                    None
                }
            });
            let Some(p) = expired else { break };
            tracing::debug!(channel, id = ?p.item.id, "predecessor did not arrive in time, delivering");
            inner.deliver(&mut shard, channel, &p.item);
            inner.release_ready(&mut shard, channel);
        }
    }

    /// Sends a `hint` to the HTTP sessions on `channel`: each updates itself from the origin.
    pub fn hint_channel(&self, channel: &str) -> usize {
        let shard = self
            .inner
            .shard(channel)
            .lock()
            .expect("hub shard poisoned");
        let Some(ch) = shard.get(channel) else {
            return 0;
        };
        let hint = hint_item(channel);
        let http: Vec<_> = ch
            .subscribers
            .values()
            .filter(|s| s.want.is_http())
            .map(|s| s.tx.clone())
            .collect();
        drop(shard);
        http.iter()
            .filter(|tx| tx.try_send(hint.clone()).is_ok())
            .count()
    }

    /// `POST /recover`: forgets every channel's last id (releasing items that waited for a
    /// predecessor) and hints every HTTP session to update itself from the origin.
    pub fn recover(&self) -> usize {
        let mut names = Vec::new();
        for shard in self.inner.shards.iter() {
            let mut shard = shard.lock().expect("hub shard poisoned");
            let keys: Vec<String> = shard.keys().cloned().collect();
            for name in keys {
                if let Some(ch) = shard.get_mut(&name) {
                    ch.last_id = None;
                }
                while let Some(p) = shard.get_mut(&name).and_then(|c| c.pending.pop_front()) {
                    self.inner.deliver(&mut shard, &name, &p.item);
                }
                if let Some(ch) = shard.get_mut(&name) {
                    ch.last_id = None;
                }
                names.push(name);
            }
        }
        names.iter().map(|n| self.hint_channel(n)).sum()
    }

    /// Drops expired history and removes idle channels. Run periodically by the server.
    pub fn sweep(&self) {
        self.sweep_at(Instant::now());
    }

    fn sweep_at(&self, now: Instant) {
        for shard in self.inner.shards.iter() {
            let mut shard = shard.lock().expect("hub shard poisoned");
            let mut freed = 0;
            shard.retain(|_, ch| {
                freed += ch.expire(&self.inner.limits, now);
                !ch.is_idle(now)
            });
            self.inner.history_bytes.fetch_sub(freed, Ordering::Relaxed);
        }
    }

    /// Adds a listener for channels gaining their first local subscriber or losing their last
    /// (the cluster bus, the ZeroMQ SUB input). It hears only changes after it is added.
    pub fn on_interest(&self, f: InterestFn) {
        let mut l = self
            .inner
            .listeners
            .write()
            .expect("hub listeners poisoned");
        l.channel.push(f);
    }

    /// Adds a listener for channels gaining their first subscriber of a mode or losing their
    /// last (the ZeroMQ stats socket's `sub` packets).
    pub fn on_mode_interest(&self, f: ModeFn) {
        let mut l = self
            .inner
            .listeners
            .write()
            .expect("hub listeners poisoned");
        l.mode.push(f);
    }

    /// Subscribers of one mode on `channel` now.
    pub fn mode_subscribers(&self, channel: &str, want: Want) -> usize {
        let shard = self
            .inner
            .shard(channel)
            .lock()
            .expect("hub shard poisoned");
        shard
            .get(channel)
            .map_or(0, |c| c.modes[want.index()] as usize)
    }

    /// Channels with at least one subscriber of some mode now, with the modes.
    pub fn subscribed_modes(&self) -> Vec<(String, Want)> {
        let mut out = Vec::new();
        for shard in self.inner.shards.iter() {
            let shard = shard.lock().expect("hub shard poisoned");
            for (name, ch) in shard.iter() {
                for want in [
                    Want::HttpResponse,
                    Want::HttpStream,
                    Want::WsMessage,
                    Want::Bayeux,
                ] {
                    if ch.modes[want.index()] > 0 {
                        out.push((name.clone(), want));
                    }
                }
            }
        }
        out
    }

    /// Channels that have at least one local subscriber now (to resubscribe after a reconnect).
    pub fn subscribed_channels(&self) -> Vec<String> {
        let mut out = Vec::new();
        for shard in self.inner.shards.iter() {
            let shard = shard.lock().expect("hub shard poisoned");
            out.extend(
                shard
                    .iter()
                    .filter(|(_, c)| !c.subscribers.is_empty())
                    .map(|(k, _)| k.clone()),
            );
        }
        out
    }

    /// Forgets a channel's last id and releases its waiting items (the cluster bus stopped
    /// hearing it).
    pub fn forget(&self, channel: &str) {
        let mut shard = self
            .inner
            .shard(channel)
            .lock()
            .expect("hub shard poisoned");
        while let Some(p) = shard.get_mut(channel).and_then(|c| c.pending.pop_front()) {
            self.inner.deliver(&mut shard, channel, &p.item);
        }
        if let Some(ch) = shard.get_mut(channel) {
            ch.last_id = None;
        }
    }

    /// The channel's last published id, if known.
    pub fn last_id(&self, channel: &str) -> Option<String> {
        let shard = self
            .inner
            .shard(channel)
            .lock()
            .expect("hub shard poisoned");
        shard.get(channel)?.last_id.clone()
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
        let mut stats = self.counters();
        for shard in self.inner.shards.iter() {
            let shard = shard.lock().expect("hub shard poisoned");
            stats.channel_states += shard.len();
            stats.channels += shard.values().filter(|c| !c.subscribers.is_empty()).count();
            stats.subscriptions += shard.values().map(|c| c.subscribers.len()).sum::<usize>();
        }
        stats
    }

    /// The publish → write latency histograms, by `path` (`direct`, `queued`).
    pub fn write_latency(&self) -> crate::metrics::Histograms {
        self.inner.write_latency.clone()
    }

    /// The running counters, with the gauges that need a pass over the shards left at 0.
    fn counters(&self) -> HubStats {
        HubStats {
            published: self.inner.published.load(Ordering::Relaxed),
            delivered: self.inner.delivered.load(Ordering::Relaxed),
            dropped: self.inner.dropped.load(Ordering::Relaxed),
            closed: self.inner.closed.load(Ordering::Relaxed),
            written: self.inner.written.load(Ordering::Relaxed),
            responses: self.inner.responses.load(Ordering::Relaxed),
            history_bytes: self.inner.history_bytes.load(Ordering::Relaxed),
            ..HubStats::default()
        }
    }

    /// Subscriptions by mode and the `top` channels with the most subscribers, for the status
    /// page. One pass over the shards, each locked in turn only for a walk over its own
    /// channels (no allocation but the at most `top` names kept): the cost of [`Hub::stats`].
    pub fn overview(&self, top: usize) -> Overview {
        let mut stats = self.counters();
        let mut by_mode = [0usize; 4];
        // The best `top` so far, as a min-heap on (subscribers, name) so the least is evicted.
        let mut best: BinaryHeap<Reverse<(usize, String)>> = BinaryHeap::with_capacity(top + 1);
        for shard in self.inner.shards.iter() {
            let shard = shard.lock().expect("hub shard poisoned");
            stats.channel_states += shard.len();
            for (name, ch) in shard.iter() {
                for (sum, n) in by_mode.iter_mut().zip(ch.modes) {
                    *sum += n as usize;
                }
                let n = ch.subscribers.len();
                if n == 0 {
                    continue;
                }
                stats.channels += 1;
                stats.subscriptions += n;
                if top == 0 {
                    continue;
                }
                let beats =
                    best.len() < top || best.peek().is_some_and(|Reverse((least, _))| n > *least);
                if beats {
                    best.push(Reverse((n, name.clone())));
                    if best.len() > top {
                        best.pop();
                    }
                }
            }
        }
        let mut busiest: Vec<(String, usize)> = best
            .into_iter()
            .map(|Reverse((n, name))| (name, n))
            .collect();
        busiest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Overview {
            stats,
            long_polls: by_mode[Want::HttpResponse.index()],
            streams: by_mode[Want::HttpStream.index()],
            websockets: by_mode[Want::WsMessage.index()],
            bayeux: by_mode[Want::Bayeux.index()],
            busiest,
        }
    }

    /// Closes every subscriber's queue (at shutdown): held connections see the end of their
    /// queue and finish. Subscriptions are still removed by their owners.
    pub fn close_all(&self) {
        for shard in self.inner.shards.iter() {
            for ch in shard.lock().expect("hub shard poisoned").values_mut() {
                ch.subscribers.clear();
                ch.modes = [0; 4];
            }
        }
    }
}

/// The item a hint to HTTP sessions carries: no content, `action: hint` in both HTTP formats.
fn hint_item(channel: &str) -> Delivery {
    Arc::new(PublishItem {
        channel: channel.to_string(),
        id: None,
        prev_id: None,
        formats: Formats {
            http_response: Some(HttpResponseFormat {
                action: Action::Hint,
                code: 200,
                reason: None,
                headers: Vec::new(),
                body: ResponseBody::Empty,
                content_filters: None,
            }),
            http_stream: Some(HttpStreamFormat {
                action: Action::Hint,
                content: Bytes::new(),
                content_filters: None,
            }),
            ws_message: None,
            json_object: None,
            http_request: None,
        },
        meta: BTreeMap::new(),
        size: None,
        no_seq: true,
    })
}
