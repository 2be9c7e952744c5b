//! One Redis server of the cluster bus: a multiplexed connection for commands (publishes,
//! history reads), a dedicated pubsub connection, the channels subscribed on it, and the task
//! that keeps them up.
//!
//! The task owns the subscriptions. The hub reports a channel's first and last local subscriber
//! through [`Shard::notice`], which only `try_send`s into a bounded queue
//! (`INTEREST_QUEUE` events); when the queue is full the event is dropped and a full resync is
//! flagged instead — the task then compares its subscriptions with
//! [`Hub::subscribed_channels`](crate::hub::Hub::subscribed_channels) — so no change is lost and
//! the hub never waits. A channel stays subscribed for `cluster.unsubscribe_delay_secs` after its
//! last local subscriber left, so long-polls that re-poll at once do not unsubscribe and
//! resubscribe every round, and the hub's sequencer keeps seeing every item of a busy channel.
//!
//! Invariants:
//! - while the task is connected, Redis has confirmed every channel in `subscribed`, and items
//!   reach the hub in the order Redis sent them (one reader, no reordering);
//! - [`Shard::connection`] is `None` whenever the task is not connected, so publishes fail at
//!   once with 503 instead of waiting; on any connection error (or a `PING` unanswered for
//!   `cluster.ping_timeout_secs`, or another call for `cluster.command_timeout_secs`) the task
//!   drops both connections, reconnects with backoff (100 ms doubling to 2 s, with jitter) and
//!   resubscribes to what the hub needs then;
//! - after (re)subscribing and before taking publishes, the task hands the hub the items of each
//!   subscribed channel that the history stream has after the hub's last id — what others
//!   published while this instance was cut off — and skips them if they also arrive live.
//!
//! The pubsub connection's reader queues what it reads for this task without a bound (inside
//! the Redis client); the task only parses and hands items to the hub, which never waits, so
//! that queue drains as fast as it fills, and Redis itself disconnects a subscriber that falls
//! too far behind (`client-output-buffer-limit pubsub`), which is handled as any other loss.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{FutureExt as _, StreamExt as _};
use redis::aio::{MultiplexedConnection, PubSub, PubSubSink};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::cluster::{shard_of, ClusterShared};
use super::history;
use crate::hub::Wanted;

/// Interest changes queued for the task; past it the shard resyncs from the hub.
const INTEREST_QUEUE: usize = 4096;
const PING_EVERY: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// While Redis stays unreachable, a warning this often (each attempt is logged at debug).
const STILL_DOWN_EVERY: Duration = Duration::from_secs(30);
/// Channels per `SUBSCRIBE`/`UNSUBSCRIBE` command.
const BATCH: usize = 500;
/// Histories read per round trip when catching up after a reconnect.
const CATCH_UP_BATCH: usize = 100;

/// Per channel, ids of items [`Shard::catch_up`] delivered that may also arrive live.
type CaughtUp = HashMap<String, HashSet<String>>;

/// One Redis server and the state of its connections.
pub(super) struct Shard {
    /// Position in `cluster.redis`.
    pub index: usize,
    /// The server's address, without credentials.
    pub addr: String,
    /// `redis shard <index> (<addr>)`, for logs and errors.
    pub label: String,
    client: redis::Client,
    /// The command connection and its generation, while connected.
    conn: Mutex<Option<(u64, MultiplexedConnection)>>,
    generation: AtomicU64,
    connected: AtomicBool,
    /// Set when a command failed in a way that means the connection is gone.
    lost: Notify,
    interest_tx: mpsc::Sender<(String, bool)>,
    interest_rx: Mutex<Option<mpsc::Receiver<(String, bool)>>>,
    resync: AtomicBool,
    wake: Notify,
    /// Hub channels Redis confirmed a subscription to.
    subscribed: Mutex<HashSet<String>>,
    /// Told when subscriptions or the connection state change.
    changed: Notify,
    reconnects: AtomicU64,
    received: AtomicU64,
    /// Round trip of the last PING on the pubsub connection, in microseconds; 0 before one.
    last_ping_us: AtomicU64,
}

impl Shard {
    /// A shard for one server, through `client` (made from a validated URL).
    pub fn new(index: usize, client: redis::Client) -> Shard {
        let addr = client.get_connection_info().addr().to_string();
        let (interest_tx, interest_rx) = mpsc::channel(INTEREST_QUEUE);
        Shard {
            index,
            label: format!("redis shard {index} ({addr})"),
            addr,
            client,
            conn: Mutex::new(None),
            generation: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            lost: Notify::new(),
            interest_tx,
            interest_rx: Mutex::new(Some(interest_rx)),
            resync: AtomicBool::new(false),
            wake: Notify::new(),
            subscribed: Mutex::new(HashSet::new()),
            changed: Notify::new(),
            reconnects: AtomicU64::new(0),
            received: AtomicU64::new(0),
            last_ping_us: AtomicU64::new(0),
        }
    }

    /// Told by the hub (under its lock) that `channel` gained its first local subscriber
    /// (`true`) or lost its last. Never waits: a full queue turns into a resync.
    pub fn notice(&self, channel: &str, on: bool) {
        if self
            .interest_tx
            .try_send((channel.to_string(), on))
            .is_err()
        {
            self.resync.store(true, Ordering::Release);
            self.wake.notify_one();
        }
    }

    /// The command connection, with its generation, while connected.
    pub fn connection(&self) -> Option<(u64, MultiplexedConnection)> {
        self.conn.lock().expect("shard lock poisoned").clone()
    }

    /// Reports a failed command; a connection error makes the task reconnect (once per
    /// connection, however many commands failed on it).
    pub fn command_failed(&self, generation: u64, e: &redis::RedisError) {
        let gone = e.is_io_error()
            || e.is_unrecoverable_error()
            || e.is_timeout()
            || e.is_connection_dropped();
        if gone && generation == self.generation.load(Ordering::Acquire) {
            self.lost.notify_one();
        }
    }

    /// Whether both connections are up.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Whether Redis confirmed the subscription to `channel`.
    pub fn is_subscribed(&self, channel: &str) -> bool {
        self.subscribed
            .lock()
            .expect("shard lock poisoned")
            .contains(channel)
    }

    /// Waits, at most `limit`, until Redis confirmed the subscription to `channel` or the shard
    /// is disconnected.
    pub async fn wait_subscribed(&self, channel: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.is_subscribed(channel) || !self.is_connected() {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return;
            }
        }
    }

    /// Round trip of the last PING on the pubsub connection, in seconds, once there was one.
    pub fn last_ping(&self) -> Option<f64> {
        let us = self.last_ping_us.load(Ordering::Relaxed);
        (us > 0).then(|| us as f64 / 1e6)
    }

    /// Subscriptions, reconnects, items received.
    pub fn counts(&self) -> (usize, u64, u64) {
        (
            self.subscribed.lock().expect("shard lock poisoned").len(),
            self.reconnects.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
        )
    }

    /// Connects, serves, and reconnects after every loss, forever.
    pub async fn run(self: Arc<Self>, ctx: Arc<ClusterShared>) {
        let Some(mut rx) = self.interest_rx.lock().expect("shard lock poisoned").take() else {
            return;
        };
        let mut wanted = Wanted::new(ctx.unsubscribe_delay);
        let mut backoff = BACKOFF_MIN;
        let mut down_since: Option<Instant> = None;
        let mut warned_at: Option<Instant> = None;
        let mut ever_connected = false;
        loop {
            while let Ok((channel, on)) = rx.try_recv() {
                wanted.note(&ctx.hub, channel, on);
            }
            match self.connect(&ctx).await {
                Ok((cmd, pubsub)) => {
                    backoff = BACKOFF_MIN;
                    if ever_connected {
                        self.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    ever_connected = true;
                    let reason = self
                        .serve(&ctx, &mut rx, &mut wanted, cmd, pubsub, down_since.take())
                        .await;
                    self.disconnected();
                    tracing::warn!(shard = %self.label, %reason,
                        "cluster: lost the connection to Redis; publishes to its channels answer 503 until it is back; reconnecting");
                    let now = Instant::now();
                    down_since = Some(now);
                    warned_at = Some(now);
                }
                Err(error) => {
                    let now = Instant::now();
                    let since = *down_since.get_or_insert(now);
                    if warned_at.is_none_or(|t| now - t >= STILL_DOWN_EVERY) {
                        tracing::warn!(shard = %self.label, %error, down_ms = (now - since).as_millis() as u64,
                            "cluster: cannot reach Redis; publishes to its channels answer 503; retrying");
                        warned_at = Some(now);
                    } else {
                        tracing::debug!(shard = %self.label, %error, "cluster: Redis still unreachable");
                    }
                    tokio::time::sleep(backoff + crate::retry::jitter(backoff / 2)).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    async fn connect(
        &self,
        ctx: &ClusterShared,
    ) -> Result<(MultiplexedConnection, PubSub), LinkError> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(ctx.connect_timeout))
            .set_response_timeout(Some(ctx.command_timeout));
        let cmd = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let pubsub = within(ctx.connect_timeout, self.client.get_async_pubsub()).await?;
        Ok((cmd, pubsub))
    }

    fn disconnected(&self) {
        self.connected.store(false, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        *self.conn.lock().expect("shard lock poisoned") = None;
        self.subscribed.lock().expect("shard lock poisoned").clear();
        self.changed.notify_waiters();
    }

    /// Subscribes to what is wanted, then delivers and follows interest until the connection
    /// fails; returns why it ended.
    async fn serve(
        &self,
        ctx: &ClusterShared,
        rx: &mut mpsc::Receiver<(String, bool)>,
        wanted: &mut Wanted,
        mut cmd: MultiplexedConnection,
        pubsub: PubSub,
        down_since: Option<Instant>,
    ) -> LinkError {
        let (mut sink, mut stream) = pubsub.split();
        self.resync.store(false, Ordering::Release);
        wanted.resync(&ctx.hub, |c| shard_of(c, ctx.shards) == self.index);
        if let Err(e) = self.sync(ctx, wanted, &mut sink).await {
            return e;
        }
        let mut caught_up = CaughtUp::default();
        if let Err(e) = self.catch_up(ctx, &mut cmd, &mut caught_up).await {
            return e;
        }
        // A loss reported against an earlier connection is not about this one.
        let _ = self.lost.notified().now_or_never();
        let generation = self.generation.load(Ordering::Acquire);
        *self.conn.lock().expect("shard lock poisoned") = Some((generation, cmd.clone()));
        self.connected.store(true, Ordering::Release);
        self.changed.notify_waiters();
        let subscriptions = self.counts().0;
        match down_since {
            Some(t) => {
                tracing::info!(shard = %self.label, subscriptions, down_ms = t.elapsed().as_millis() as u64,
                "cluster: reconnected to Redis and resubscribed")
            }
            None => {
                tracing::info!(shard = %self.label, subscriptions, "cluster: connected to Redis")
            }
        }
        // The command connection's own response timeout (`command_timeout_secs`, for publishes
        // and history reads) would cut its PING short; a handle of its own, on the same socket,
        // waits the PING deadline instead. The pubsub connection has no response timeout of its
        // own.
        let mut pinger = cmd.clone();
        pinger.set_response_timeout(ctx.ping_timeout);
        let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
        loop {
            let linger = wanted.next_deadline();
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => self.deliver(ctx, &msg, &mut caught_up),
                    None => return LinkError::Closed("the pubsub connection closed"),
                },
                event = rx.recv() => {
                    let Some((channel, on)) = event else {
                        return LinkError::Closed("the bus stopped");
                    };
                    if let Err(e) = self.apply(ctx, wanted, &mut sink, channel, on).await {
                        return e;
                    }
                }
                () = self.wake.notified() => {
                    if self.resync.swap(false, Ordering::AcqRel) {
                        while rx.try_recv().is_ok() {}
                        tracing::info!(shard = %self.label, "cluster: interest queue overflowed; resyncing subscriptions with the hub");
                        wanted.resync(&ctx.hub, |c| shard_of(c, ctx.shards) == self.index);
                        if let Err(e) = self.sync(ctx, wanted, &mut sink).await {
                            return e;
                        }
                    }
                }
                () = self.lost.notified() => return LinkError::Closed("a command failed"),
                () = sleep_until(linger) => {
                    let expired = wanted.expired(&ctx.hub, Instant::now());
                    if let Err(e) = self.unsubscribe(ctx, &mut sink, expired).await {
                        return e;
                    }
                }
                _ = ping.tick() => {
                    let sent = Instant::now();
                    if let Err(e) = within(ctx.ping_timeout, sink.ping::<redis::Value>()).await {
                        return e.during("ping on the pubsub connection");
                    }
                    let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                    self.last_ping_us.store(us.max(1), Ordering::Relaxed);
                    if let Err(e) = within(ctx.ping_timeout, redis::cmd("PING").query_async::<redis::Value>(&mut pinger)).await {
                        return e.during("ping on the command connection");
                    }
                }
            }
        }
    }

    /// After (re)subscribing: hands the hub, in order, the items of each subscribed channel that
    /// were published after the last one it has — what other instances published while this one
    /// was disconnected. Only items with an id are in the history, and only a channel whose last
    /// id is still in it can be caught up.
    async fn catch_up(
        &self,
        ctx: &ClusterShared,
        cmd: &mut MultiplexedConnection,
        caught_up: &mut CaughtUp,
    ) -> Result<(), LinkError> {
        if !ctx.history.is_on() {
            return Ok(());
        }
        let subscribed: Vec<String> = self
            .subscribed
            .lock()
            .expect("shard lock poisoned")
            .iter()
            .cloned()
            .collect();
        let behind: Vec<(String, String)> = subscribed
            .into_iter()
            .filter_map(|c| {
                let last = ctx.hub.last_id(&c)?;
                Some((c, last))
            })
            .collect();
        for batch in behind.chunks(CATCH_UP_BATCH) {
            let keys: Vec<String> = batch.iter().map(|(c, _)| ctx.keys.history(c)).collect();
            let streams = within(ctx.command_timeout, history::read(cmd, &keys, &ctx.history))
                .await
                .map_err(|e| e.during("reading history"))?;
            for ((channel, last), entries) in batch.iter().zip(streams) {
                let Some(items) = history::after(&entries, last) else {
                    tracing::debug!(shard = %self.label, channel, last, "cluster: last id not in history; cannot tell what was missed");
                    continue;
                };
                if items.is_empty() {
                    continue;
                }
                tracing::info!(shard = %self.label, channel, items = items.len(), "cluster: delivering items missed while disconnected");
                let ids = caught_up.entry(channel.clone()).or_default();
                for item in items {
                    if let Some(id) = &item.id {
                        ids.insert(id.clone());
                    }
                    ctx.hub.publish(Arc::unwrap_or_clone(item));
                }
            }
        }
        Ok(())
    }

    /// Hands one message to the hub. An item already handed over by [`Shard::catch_up`] (it was
    /// published after the subscription and before the history was read) is skipped.
    fn deliver(&self, ctx: &ClusterShared, msg: &redis::Msg, caught_up: &mut CaughtUp) {
        let name = msg.get_channel_name();
        let Some(channel) = ctx.keys.channel_of(name) else {
            tracing::debug!(
                pubsub = name,
                "cluster: message on a channel that is not ours"
            );
            return;
        };
        let parsed = serde_json::from_slice(msg.get_payload_bytes())
            .map_err(|e| e.to_string())
            .and_then(|v| grip::publish::parse_publish_item(&v).map_err(|e| e.to_string()));
        let item = match parsed {
            Ok(item) if item.channel == channel => item,
            Ok(item) => {
                tracing::warn!(pubsub = name, item_channel = %item.channel, "cluster: item names another channel than the one it came on; dropped");
                return;
            }
            Err(error) => {
                tracing::warn!(pubsub = name, %error, "cluster: unreadable item from Redis; dropped");
                return;
            }
        };
        if let (Some(id), Some(ids)) = (&item.id, caught_up.get_mut(channel)) {
            if ids.remove(id) {
                return;
            }
            // Past the overlap: everything from here on is new.
            caught_up.remove(channel);
        }
        self.received.fetch_add(1, Ordering::Relaxed);
        let receivers = ctx.hub.publish(item);
        tracing::debug!(channel, receivers, "cluster: delivered");
    }

    /// Follows one interest change.
    async fn apply(
        &self,
        ctx: &ClusterShared,
        wanted: &mut Wanted,
        sink: &mut PubSubSink,
        channel: String,
        on: bool,
    ) -> Result<(), LinkError> {
        if on {
            let new = !self.is_subscribed(&channel);
            wanted.want(channel.clone());
            if new {
                self.subscribe(ctx, sink, vec![channel]).await?;
            }
        } else if let Some(gone) = wanted.release(&ctx.hub, channel) {
            self.unsubscribe(ctx, sink, vec![gone]).await?;
        }
        Ok(())
    }

    /// Makes the subscriptions in Redis match `wanted`.
    async fn sync(
        &self,
        ctx: &ClusterShared,
        wanted: &Wanted,
        sink: &mut PubSubSink,
    ) -> Result<(), LinkError> {
        let (add, drop): (Vec<String>, Vec<String>) = {
            let subscribed = self.subscribed.lock().expect("shard lock poisoned");
            (
                wanted
                    .channels
                    .keys()
                    .filter(|c| !subscribed.contains(*c))
                    .cloned()
                    .collect(),
                subscribed
                    .iter()
                    .filter(|c| !wanted.channels.contains_key(*c))
                    .cloned()
                    .collect(),
            )
        };
        self.subscribe(ctx, sink, add).await?;
        self.unsubscribe(ctx, sink, drop).await
    }

    async fn subscribe(
        &self,
        ctx: &ClusterShared,
        sink: &mut PubSubSink,
        channels: Vec<String>,
    ) -> Result<(), LinkError> {
        for batch in channels.chunks(BATCH) {
            let keys: Vec<String> = batch.iter().map(|c| ctx.keys.pubsub(c)).collect();
            within(ctx.command_timeout, sink.subscribe(&keys))
                .await
                .map_err(|e| e.during("SUBSCRIBE"))?;
            let mut subscribed = self.subscribed.lock().expect("shard lock poisoned");
            subscribed.extend(batch.iter().cloned());
            drop(subscribed);
            self.changed.notify_waiters();
        }
        Ok(())
    }

    async fn unsubscribe(
        &self,
        ctx: &ClusterShared,
        sink: &mut PubSubSink,
        channels: Vec<String>,
    ) -> Result<(), LinkError> {
        for batch in channels.chunks(BATCH) {
            let keys: Vec<String> = batch.iter().map(|c| ctx.keys.pubsub(c)).collect();
            within(ctx.command_timeout, sink.unsubscribe(&keys))
                .await
                .map_err(|e| e.during("UNSUBSCRIBE"))?;
            let mut subscribed = self.subscribed.lock().expect("shard lock poisoned");
            for c in batch {
                subscribed.remove(c);
            }
            drop(subscribed);
            // No longer hearing the channel: its last id would go stale and make the first item
            // after a resubscribe wait for a predecessor this instance will never see.
            for c in batch {
                ctx.hub.forget(c);
            }
        }
        Ok(())
    }
}

/// Waits until `deadline`, or forever when there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Runs a Redis call with a timeout.
async fn within<T>(
    limit: Duration,
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, LinkError> {
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(LinkError::Redis(e)),
        Err(_) => Err(LinkError::Timeout(limit)),
    }
}

/// Why a shard's link to its Redis server failed; any of these drops both connections, and the
/// shard reconnects.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    /// Redis answered with an error, or the connection failed.
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer in time.
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The link ended for a reason of its own.
    #[error("{0}")]
    Closed(&'static str),
    /// One of the above, while doing something worth naming.
    #[error("{0}: {1}")]
    During(&'static str, Box<LinkError>),
}

impl LinkError {
    fn during(self, what: &'static str) -> LinkError {
        LinkError::During(what, Box::new(self))
    }
}
