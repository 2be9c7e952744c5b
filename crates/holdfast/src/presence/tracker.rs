//! The tracker task: follows what is present here (channels with a subscriber, users on member
//! channels), applies the linger, and turns transitions into events.
//!
//! Alone, a key's transitions are this instance's: present (not held before) is an
//! `occupied`/`member-connect`; absent for the whole linger is a `vacated`/`member-disconnect`.
//! In cluster mode the same local transitions are written to Redis ([`super::cluster`]), and
//! the event is emitted by the instance whose write made the aggregate go from nobody to
//! somebody or back — exactly one per transition, cluster-wide. A heartbeat a second keeps this
//! instance alive there, writes its subscriber counts and vacates the keys of instances whose
//! heartbeat stopped `presence.instance_ttl_secs` ago.
//!
//! Invariants: `held` has every key present here, and the keys that left less than the linger
//! ago; while connected to Redis, `registered` is what Redis holds for this instance, and equals
//! `held` after each step. A Redis failure clears `registered`; the next heartbeat reconnects
//! and makes Redis agree with `held` again, emitting whatever transitions that makes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::cluster::{Heartbeat, Hold};
use super::post::Poster;
use super::{event_json, now_ms, Key, Kind, Shared};

/// How often the cluster heartbeat runs (and a lost Redis connection is tried again).
pub(super) const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long leaving Redis at shutdown may take.
pub(super) const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

/// A key held here.
struct Held {
    /// `None` while present; the deadline while it lingers.
    linger: Option<Instant>,
    /// Where its events go, fixed when it became present.
    url: Option<String>,
}

struct Tracker {
    shared: Arc<Shared>,
    poster: Poster,
    linger: Duration,
    held: HashMap<Key, Held>,
    /// Lingering keys by deadline; the linger is fixed, so deadlines only grow. An entry whose
    /// key came back meanwhile is skipped when it comes up.
    expiry: VecDeque<(Instant, Key)>,
    /// Cluster mode: what Redis holds for this instance, while connected (`None`: not).
    registered: Option<HashSet<Key>>,
    /// Cluster mode: the subscriber counts last written, per channel.
    counts: HashMap<String, u64>,
}

/// Runs until `stopped`, then leaves Redis (cluster mode).
pub(super) async fn run(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<(Key, bool)>,
    poster: Poster,
    stopped: impl std::future::Future<Output = ()> + Send,
) {
    let mut t = Tracker {
        linger: Duration::from_millis(shared.config.linger_ms),
        shared,
        poster,
        held: HashMap::new(),
        expiry: VecDeque::new(),
        registered: None,
        counts: HashMap::new(),
    };
    let clustered = t.shared.cluster.is_some();
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stopped);
    // Channels subscribed before the tracker ran.
    t.resync().await;
    loop {
        let next = t.expiry.front().map(|(at, _)| *at);
        tokio::select! {
            biased;
            _ = &mut stopped => break,
            _ = t.shared.wake.notified() => {
                if t.shared.resync.swap(false, Ordering::AcqRel) {
                    // What is queued is older than the hub's state now.
                    while rx.try_recv().is_ok() {}
                    t.resync().await;
                }
            }
            change = rx.recv() => match change {
                Some((key, true)) => t.present(key).await,
                Some((key, false)) => t.absent(key).await,
                None => break,
            },
            _ = sleep_until(next), if next.is_some() => t.expire().await,
            _ = heartbeat.tick(), if clustered => t.heartbeat().await,
        }
    }
    let _ = tokio::time::timeout(LEAVE_TIMEOUT, t.leave()).await;
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

impl Tracker {
    /// `key` is present here.
    async fn present(&mut self, key: Key) {
        if let Some(held) = self.held.get_mut(&key) {
            held.linger = None;
            return;
        }
        let url = self.shared.target(key.channel());
        if let Key::Channel(c) = &key {
            (self
                .shared
                .occupied
                .lock()
                .expect("presence occupied poisoned"))
            .insert(c.clone());
        }
        self.held.insert(
            key.clone(),
            Held {
                linger: None,
                url: url.clone(),
            },
        );
        self.went(key, true, url).await;
    }

    /// `key` may have left (the hub's last subscriber, a member's last connection).
    async fn absent(&mut self, key: Key) {
        if self.shared.is_present(&key) {
            return;
        }
        let Some(held) = self.held.get_mut(&key) else {
            return;
        };
        if held.linger.is_some() {
            return;
        }
        if self.linger.is_zero() {
            self.gone(key).await;
            return;
        }
        let at = crate::deadline::after(self.linger);
        held.linger = Some(at);
        self.expiry.push_back((at, key));
    }

    /// Keys whose linger ran out with nobody back are gone.
    async fn expire(&mut self) {
        let now = Instant::now();
        while let Some((at, _)) = self.expiry.front() {
            if *at > now {
                break;
            }
            let (at, key) = self.expiry.pop_front().expect("front exists");
            if self.held.get(&key).and_then(|h| h.linger) != Some(at) {
                continue;
            }
            if self.shared.is_present(&key) {
                if let Some(h) = self.held.get_mut(&key) {
                    h.linger = None;
                }
            } else {
                self.gone(key).await;
            }
        }
    }

    async fn gone(&mut self, key: Key) {
        let Some(held) = self.held.remove(&key) else {
            return;
        };
        if let Key::Channel(c) = &key {
            (self
                .shared
                .occupied
                .lock()
                .expect("presence occupied poisoned"))
            .remove(c);
            (self
                .shared
                .origins
                .lock()
                .expect("presence origins poisoned"))
            .remove(c);
            self.counts.remove(c);
        }
        self.went(key, false, held.url).await;
    }

    /// Takes what is present now as the truth: new keys become present, held keys not
    /// present start their linger.
    async fn resync(&mut self) {
        let now: HashSet<Key> = self.shared.present().into_iter().collect();
        let missing: Vec<Key> = (self.held.iter())
            .filter(|(k, h)| h.linger.is_none() && !now.contains(*k))
            .map(|(k, _)| k.clone())
            .collect();
        for key in now {
            self.present(key).await;
        }
        for key in missing {
            self.absent(key).await;
        }
    }

    /// A local transition: an event at once, or (cluster mode) one if Redis says it was the
    /// aggregate's.
    async fn went(&mut self, key: Key, on: bool, url: Option<String>) {
        let Some(cluster) = &self.shared.cluster else {
            self.emit(&key, on, url).await;
            return;
        };
        let Some(registered) = &mut self.registered else {
            // Disconnected: the next heartbeat's sync writes it.
            return;
        };
        let result = if on {
            registered.insert(key.clone());
            match cluster.hold(&key, url.as_deref()).await {
                Ok(Hold::Made) => Ok(Some(url)),
                Ok(Hold::Joined) => Ok(None),
                Ok(Hold::Forgotten) => {
                    // Expired in Redis meanwhile: the next heartbeat registers everything.
                    self.registered = None;
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        } else {
            registered.remove(&key);
            cluster.release(&key).await
        };
        match result {
            Ok(Some(url)) => self.emit(&key, on, url).await,
            Ok(None) => {}
            Err(e) => self.lost(e),
        }
    }

    /// Emits one event: to the listeners (in cluster mode through Redis, so every instance's
    /// listeners see it) and to the poster.
    async fn emit(&mut self, key: &Key, on: bool, url: Option<String>) {
        let kind = Kind::of(key, on);
        let json: Arc<str> = event_json(kind, key, now_ms()).into();
        self.shared.count(kind);
        tracing::debug!(event = %json, "presence event");
        match &self.shared.cluster {
            Some(cluster) => {
                if let Err(e) = cluster.announce(&json).await {
                    self.lost(e);
                }
            }
            None => self.shared.broadcast(json.clone()),
        }
        self.poster.send(url, json);
    }

    fn lost(&mut self, e: redis::RedisError) {
        if self.registered.take().is_some() {
            tracing::warn!(error = %e, "presence: Redis connection lost; trying again every second");
        }
        if let Some(cluster) = &self.shared.cluster {
            cluster.disconnect();
        }
    }

    /// Cluster mode: keeps this instance alive in Redis, writes counts, vacates dead
    /// instances' keys; reconnects and syncs when not connected or forgotten.
    async fn heartbeat(&mut self) {
        let Some(cluster) = self.shared.cluster.clone() else {
            return;
        };
        if self.registered.is_none() {
            if let Err(e) = cluster.connect().await {
                tracing::debug!(error = %e, "presence: Redis still unreachable");
                return;
            }
        }
        let counts: Vec<(String, u64)> = (self.held.keys())
            .filter_map(|k| match k {
                Key::Channel(c) => {
                    let n = self.shared.hub.subscribers(c) as u64;
                    (self.counts.get(c) != Some(&n)).then(|| (c.clone(), n))
                }
                Key::Member { .. } => None,
            })
            .collect();
        let beat = match cluster.heartbeat(&counts).await {
            Ok(beat) => beat,
            Err(e) => return self.lost(e),
        };
        let Heartbeat { known, vacated } = beat;
        for (c, n) in counts {
            self.counts.insert(c, n);
        }
        for (key, url) in vacated {
            self.emit(&key, false, url).await;
        }
        if !known || self.registered.is_none() {
            if self.registered.is_some() {
                tracing::warn!(
                    "presence: this instance had expired in Redis (no heartbeat for presence.instance_ttl_secs); registering its channels again"
                );
            }
            self.counts.clear();
            if let Err(e) = self.sync(&cluster).await {
                self.lost(e);
            }
        }
    }

    /// Makes Redis hold exactly `held` for this instance, emitting the transitions that makes.
    async fn sync(&mut self, cluster: &super::cluster::Cluster) -> redis::RedisResult<()> {
        let there = cluster.registered().await?;
        self.registered = Some(there.iter().cloned().collect());
        for key in there {
            if !self.held.contains_key(&key) {
                self.went(key, false, None).await;
            }
        }
        let here: Vec<(Key, Option<String>)> = (self.held.iter())
            .map(|(k, h)| (k.clone(), h.url.clone()))
            .collect();
        for (key, url) in here {
            let known = self.registered.as_ref().is_some_and(|r| r.contains(&key));
            if !known && self.registered.is_some() {
                self.went(key, true, url).await;
            }
        }
        Ok(())
    }

    /// Shutdown: alone, every held key is gone (its event emitted); in cluster mode every key
    /// is released (the last instance on a channel emits its event) and the instance leaves
    /// the instance list.
    async fn leave(&mut self) {
        let Some(cluster) = self.shared.cluster.clone() else {
            let keys: Vec<Key> = self.held.keys().cloned().collect();
            for key in keys {
                self.gone(key).await;
            }
            return;
        };
        let keys: Vec<Key> = self.held.keys().cloned().collect();
        for key in keys {
            if self.registered.is_none() {
                return;
            }
            self.held.remove(&key);
            // Redis keeps the URL the event goes to.
            self.went(key, false, None).await;
        }
        if self.registered.is_some() {
            let _ = cluster.forget_instance().await;
        }
    }
}
