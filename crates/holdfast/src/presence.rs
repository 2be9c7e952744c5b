//! Presence (`[presence]`, docs/presence.md): which channels someone is watching, told to the
//! backend as events — `channel-occupied` when a channel gains its first subscriber,
//! `channel-vacated` when it has had none for `presence.linger_ms`, and `member-connect` /
//! `member-disconnect` for the users of WebSockets on the channels that opt in — POSTed, signed,
//! to the route's origin and streamed on `GET /presence/events`; and subscriber counts.
//!
//! The hub tells [`Presence`] of a channel's first and last local subscriber through its
//! interest hook (the one the cluster bus and the ZeroMQ SUB input follow), and WebSocket
//! sessions hold a [`MemberGuard`] per channel and user. Both only `try_send` a change into a
//! bounded queue (`QUEUE`); when it is full the change is dropped and a resync is flagged, and
//! the [`tracker`] task then compares what it holds with the hub and the member registry, so no
//! change is lost and the hub never waits. The tracker applies the linger and decides the
//! transitions: alone, from its own state; in cluster mode, on the aggregate in Redis
//! ([`cluster`]), where exactly one instance sees each transition and emits its event.
//!
//! Off (`presence.enabled = false`, the default) nothing is registered with the hub and every
//! method returns at once.

mod cluster;
mod post;
mod stream;
mod tracker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;
use tokio::sync::{broadcast, mpsc, Notify, Semaphore};

use crate::config::routes::{Route, TargetKind};
use crate::config::{Config, PresenceConfig};
use crate::hub::Hub;
use crate::metrics::Page;

pub use stream::events_response;

/// Changes queued for the tracker; past it the tracker resyncs.
const QUEUE: usize = 4096;

/// The tracker's end of the change queue, until [`Presence::start`] takes it.
type Changes = Arc<Mutex<Option<mpsc::Receiver<(Key, bool)>>>>;

/// What presence is tracked for: a channel's occupancy, or one user's membership of a channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// A channel: occupied while it has a subscriber.
    Channel(String),
    /// A user on a channel (per-connection presence).
    Member {
        /// The channel.
        channel: String,
        /// The user id from the connection's `user` meta.
        user: String,
    },
}

impl Key {
    fn channel(&self) -> &str {
        match self {
            Key::Channel(c) | Key::Member { channel: c, .. } => c,
        }
    }
}

/// The kinds of event, as the `type` field names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A channel gained its first subscriber.
    Occupied,
    /// A channel has had no subscriber for the linger.
    Vacated,
    /// A user's first connection joined a member channel.
    MemberConnect,
    /// A user's last connection left a member channel.
    MemberDisconnect,
}

impl Kind {
    const ALL: [Kind; 4] = [
        Kind::Occupied,
        Kind::Vacated,
        Kind::MemberConnect,
        Kind::MemberDisconnect,
    ];

    /// The `type` of the event.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Occupied => "channel-occupied",
            Kind::Vacated => "channel-vacated",
            Kind::MemberConnect => "member-connect",
            Kind::MemberDisconnect => "member-disconnect",
        }
    }

    fn of(key: &Key, on: bool) -> Kind {
        match (key, on) {
            (Key::Channel(_), true) => Kind::Occupied,
            (Key::Channel(_), false) => Kind::Vacated,
            (Key::Member { .. }, true) => Kind::MemberConnect,
            (Key::Member { .. }, false) => Kind::MemberDisconnect,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One event, as JSON: `{"type":…,"channel":…,"user":…,"time":<Unix ms>}` (`user` only on
/// member events).
pub fn event_json(kind: Kind, key: &Key, time_ms: u64) -> String {
    let mut e = json!({ "type": kind.name(), "channel": key.channel(), "time": time_ms });
    if let Key::Member { user, .. } = key {
        e["user"] = json!(user);
    }
    e.to_string()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Counters of `GET /metrics`.
#[derive(Default)]
struct Counters {
    events: [AtomicU64; 4],
    posted: AtomicU64,
    post_failed: AtomicU64,
    post_dropped: AtomicU64,
    untargeted: AtomicU64,
    listeners_dropped: AtomicU64,
}

/// What the handle, the tracker, the poster and the event streams share.
struct Shared {
    config: PresenceConfig,
    hub: Hub,
    /// The origin (`http[s]://host:port`) of the route each channel was first subscribed
    /// through, while it is occupied here; events without a `presence.url` go there.
    origins: Mutex<HashMap<String, String>>,
    /// Users per member channel here, with their connections.
    members: Mutex<HashMap<(String, String), usize>>,
    /// Channels occupied as this instance sees them (held or lingering), for the local
    /// `GET /presence/channels`.
    occupied: Mutex<std::collections::BTreeSet<String>>,
    changes: mpsc::Sender<(Key, bool)>,
    resync: AtomicBool,
    wake: Notify,
    /// Events for `GET /presence/events` listeners (a ring: a slow listener falls behind).
    events: broadcast::Sender<Arc<str>>,
    listeners: Arc<Semaphore>,
    counters: Counters,
    /// The Redis side, in cluster mode.
    cluster: Option<cluster::Cluster>,
}

impl Shared {
    /// A change reported by the hub or a member guard; never waits.
    fn notice(&self, key: Key, on: bool) {
        if self.changes.try_send((key, on)).is_err() {
            self.resync.store(true, Ordering::Release);
            self.wake.notify_one();
        }
    }

    /// Whether `key` is present here now (the truth the tracker's linger checks).
    fn is_present(&self, key: &Key) -> bool {
        match key {
            Key::Channel(c) => self.hub.subscribers(c) > 0,
            Key::Member { channel, user } => self
                .members
                .lock()
                .expect("presence members poisoned")
                .contains_key(&(channel.clone(), user.clone())),
        }
    }

    /// Every key present here now.
    fn present(&self) -> Vec<Key> {
        let mut keys: Vec<Key> = (self.hub.subscribed_channels().into_iter())
            .map(Key::Channel)
            .collect();
        let members = self.members.lock().expect("presence members poisoned");
        keys.extend(members.keys().map(|(channel, user)| Key::Member {
            channel: channel.clone(),
            user: user.clone(),
        }));
        keys
    }

    /// Where events about `channel` are POSTed, if anywhere.
    fn target(&self, channel: &str) -> Option<String> {
        let url = &self.config.url;
        if url.is_empty() {
            return None;
        }
        if !url.starts_with('/') {
            return Some(url.clone());
        }
        let origins = self.origins.lock().expect("presence origins poisoned");
        origins.get(channel).map(|base| format!("{base}{url}"))
    }

    /// Hands an event to this instance's listeners.
    fn broadcast(&self, json: Arc<str>) {
        // No listener is not an error.
        let _ = self.events.send(json);
    }

    fn count(&self, kind: Kind) {
        self.counters.events[kind.index()].fetch_add(1, Ordering::Relaxed);
    }
}

/// Presence tracking, or nothing when `presence.enabled` is off. Cloning shares it.
#[derive(Clone, Default)]
pub struct Presence {
    shared: Option<Arc<Shared>>,
    start: Changes,
}

impl Presence {
    /// Presence over `hub` as `config` says; `instance` names this process in Redis (with a
    /// random part, so a restarted process is a new instance).
    pub fn new(config: &Config, hub: Hub, instance: &str) -> Presence {
        let p = &config.presence;
        if !p.enabled {
            return Presence::default();
        }
        let (changes, rx) = mpsc::channel(QUEUE);
        let cluster = (!config.cluster.redis.is_empty()).then(|| {
            let ca = config.cluster.redis_ca().expect("config was validated");
            let client = crate::config::redis_url::client(&config.cluster.redis[0], ca.as_deref())
                .expect("config was validated");
            let id = format!("{instance}-{:08x}", rand::random::<u32>());
            cluster::Cluster::new(client, &config.cluster, id, p.instance_ttl_secs)
        });
        let shared = Arc::new(Shared {
            config: p.clone(),
            hub: hub.clone(),
            origins: Mutex::default(),
            members: Mutex::default(),
            occupied: Mutex::default(),
            changes,
            resync: AtomicBool::new(false),
            wake: Notify::new(),
            events: broadcast::channel(p.listener_queue).0,
            listeners: Arc::new(Semaphore::new(p.max_listeners)),
            counters: Counters::default(),
            cluster,
        });
        let weak = Arc::downgrade(&shared);
        hub.on_interest(Arc::new(move |channel: &str, on: bool| {
            if let Some(shared) = weak.upgrade() {
                shared.notice(Key::Channel(channel.to_string()), on);
            }
        }));
        Presence {
            shared: Some(shared),
            start: Arc::new(Mutex::new(Some(rx))),
        }
    }

    /// Whether presence is on.
    pub fn is_enabled(&self) -> bool {
        self.shared.is_some()
    }

    /// Whether this instance tracks presence through Redis.
    pub fn is_clustered(&self) -> bool {
        self.shared.as_ref().is_some_and(|s| s.cluster.is_some())
    }

    /// Starts the tracker and the poster (once; later calls do nothing). `sign` signs the
    /// POSTs' `Grip-Sig`; `stopped` ends the tracker, which then leaves Redis.
    pub fn start(
        &self,
        config: &Config,
        stopped: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let Some(shared) = &self.shared else {
            return Vec::new();
        };
        let Some(rx) = self.start.lock().expect("presence start poisoned").take() else {
            return Vec::new();
        };
        let (poster, post_task) = post::Poster::start(config, shared.clone());
        let tracker = tokio::spawn(tracker::run(shared.clone(), rx, poster, stopped));
        let mut tasks = vec![tracker, post_task];
        if shared.cluster.is_some() {
            tasks.push(tokio::spawn(cluster::listen(shared.clone())));
        }
        tasks
    }

    /// The origin (`http[s]://host:port`) events about `route`'s channels go to: its first
    /// origin target, when `presence.url` is a path; `None` otherwise, or when presence is off.
    pub fn origin_of(&self, route: &Route) -> Option<String> {
        let shared = self.shared.as_ref()?;
        if !shared.config.url.starts_with('/') {
            return None;
        }
        let target =
            (route.targets.iter()).find(|t| matches!(t.kind, TargetKind::Origin { .. }))?;
        let scheme = if target.ssl { "https" } else { "http" };
        Some(format!("{scheme}://{}", target.label()))
    }

    /// Remembers the origin of `route` for `channels` that have none yet. Called before a
    /// session subscribes.
    pub fn note_route<'a>(&self, channels: impl IntoIterator<Item = &'a str>, route: &Route) {
        if self.shared.is_none() {
            return;
        }
        if let Some(origin) = self.origin_of(route) {
            self.note_origin(channels, &origin);
        }
    }

    /// Remembers `origin` for `channels` that have none yet.
    pub fn note_origin<'a>(&self, channels: impl IntoIterator<Item = &'a str>, origin: &str) {
        let Some(shared) = &self.shared else { return };
        let mut origins = shared.origins.lock().expect("presence origins poisoned");
        for channel in channels {
            if !origins.contains_key(channel) {
                origins.insert(channel.to_string(), origin.to_string());
            }
        }
    }

    /// Whether a WebSocket on `channel` with a `user` meta value is a member.
    pub fn is_member_channel(&self, channel: &str) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|s| s.config.is_member_channel(channel))
    }

    /// Counts one connection of `user` on `channel` until the guard drops; `None` when presence
    /// is off or the channel has not opted in.
    pub fn member(&self, channel: &str, user: &str) -> Option<MemberGuard> {
        let shared = self.shared.as_ref()?;
        if !shared.config.is_member_channel(channel) {
            return None;
        }
        let key = (channel.to_string(), user.to_string());
        let first = {
            let mut members = shared.members.lock().expect("presence members poisoned");
            let n = members.entry(key.clone()).or_insert(0);
            *n += 1;
            *n == 1
        };
        if first {
            shared.notice(
                Key::Member {
                    channel: key.0.clone(),
                    user: key.1.clone(),
                },
                true,
            );
        }
        Some(MemberGuard {
            shared: shared.clone(),
            key,
        })
    }

    /// The occupied channels with their subscriber counts (cluster-wide in cluster mode),
    /// sorted by name.
    pub async fn channels(&self) -> Result<Vec<(String, u64)>, PresenceError> {
        let shared = self.shared.as_ref().ok_or(PresenceError::Off)?;
        if let Some(cluster) = &shared.cluster {
            return cluster.channels().await;
        }
        let names: Vec<String> = (shared.occupied.lock().expect("presence occupied poisoned"))
            .iter()
            .cloned()
            .collect();
        Ok(names
            .into_iter()
            .map(|c| {
                let n = shared.hub.subscribers(&c) as u64;
                (c, n)
            })
            .collect())
    }

    /// One channel: whether it is occupied, its subscribers and (on member channels) its
    /// members, sorted.
    pub async fn channel(&self, channel: &str) -> Result<ChannelState, PresenceError> {
        let shared = self.shared.as_ref().ok_or(PresenceError::Off)?;
        let member_channel = shared.config.is_member_channel(channel);
        if let Some(cluster) = &shared.cluster {
            return cluster.channel(channel, member_channel).await;
        }
        let occupied =
            (shared.occupied.lock().expect("presence occupied poisoned")).contains(channel);
        let members = member_channel.then(|| {
            let members = shared.members.lock().expect("presence members poisoned");
            let mut users: Vec<String> = members
                .keys()
                .filter(|(c, _)| c == channel)
                .map(|(_, u)| u.clone())
                .collect();
            users.sort();
            users
        });
        Ok(ChannelState {
            occupied,
            subscribers: shared.hub.subscribers(channel) as u64,
            members,
        })
    }

    /// Writes presence's counters into `GET /metrics`; none when off.
    pub fn metrics(&self, page: &mut Page) {
        let Some(shared) = &self.shared else { return };
        let c = &shared.counters;
        page.counters(
            "holdfast_presence_events_total",
            "Presence events this instance emitted, by type",
            Kind::ALL
                .iter()
                .map(|k| {
                    (
                        vec![("type", k.name().to_string())],
                        c.events[k.index()].load(Ordering::Relaxed),
                    )
                })
                .collect(),
        )
        .counters(
            "holdfast_presence_posts_total",
            "Presence events by what became of their POST: ok, failed (error, timeout or a non-2xx answer), dropped (post queue full), untargeted (no URL: presence.url empty, or no origin known for the channel)",
            [
                ("ok", &c.posted),
                ("failed", &c.post_failed),
                ("dropped", &c.post_dropped),
                ("untargeted", &c.untargeted),
            ]
            .into_iter()
            .map(|(r, n)| (vec![("result", r.to_string())], n.load(Ordering::Relaxed)))
            .collect(),
        )
        .counter(
            "holdfast_presence_listeners_dropped_total",
            "GET /presence/events listeners ended because they fell behind by presence.listener_queue events",
            c.listeners_dropped.load(Ordering::Relaxed),
        );
    }

    fn shared(&self) -> Option<&Arc<Shared>> {
        self.shared.as_ref()
    }
}

/// Ends presence's tasks: waits (a few seconds at most) for the tracker, which emits or
/// writes to Redis its departure once shutdown has begun, then for the poster to send what
/// that queued, then stops the rest.
pub async fn stop(tasks: Vec<tokio::task::JoinHandle<()>>) {
    // The tracker first, then the poster: the tracker's end closes the poster's queue.
    for (i, task) in tasks.into_iter().enumerate() {
        if i > 1 {
            task.abort();
            continue;
        }
        let abort = task.abort_handle();
        if tokio::time::timeout(tracker::LEAVE_TIMEOUT * 2, task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

/// One channel as `GET /presence/channels/{channel}` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelState {
    /// Occupied: it has a subscriber, or had one within the linger.
    pub occupied: bool,
    /// Subscribers now (cluster-wide: each instance's count as of its last heartbeat).
    pub subscribers: u64,
    /// Users connected, on a member channel.
    pub members: Option<Vec<String>>,
}

/// Why presence cannot answer.
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    /// `presence.enabled` is off.
    #[error("presence is off (presence.enabled = false)")]
    Off,
    /// Redis cannot be reached.
    #[error("presence: Redis is not reachable: {0}")]
    Unavailable(String),
}

/// One connection of a user on a member channel; dropping it counts the connection out.
pub struct MemberGuard {
    shared: Arc<Shared>,
    key: (String, String),
}

impl MemberGuard {
    /// The channel and user.
    pub fn key(&self) -> (&str, &str) {
        (&self.key.0, &self.key.1)
    }
}

impl Drop for MemberGuard {
    fn drop(&mut self) {
        let last = {
            let mut members = self
                .shared
                .members
                .lock()
                .expect("presence members poisoned");
            match members.get_mut(&self.key) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                _ => {
                    members.remove(&self.key);
                    true
                }
            }
        };
        if last {
            self.shared.notice(
                Key::Member {
                    channel: std::mem::take(&mut self.key.0),
                    user: std::mem::take(&mut self.key.1),
                },
                false,
            );
        }
    }
}
