//! Webhook subscribers: URLs registered on a channel through the publish API ([`api`]), each
//! sent every item published on it (docs/webhooks.md).
//!
//! The registry maps channels to subscribers. Each subscriber has a bounded queue
//! (`webhooks.queue`; a full queue drops the new item and counts it) and one task that delivers
//! its items in order ([`deliver`]): at least once, retried with exponential backoff and jitter
//! until `webhooks.max_age_secs` after the publish, through the one [`Outbound`] client and its
//! policy, with at most `webhooks.concurrency_per_host` requests in flight per host. Items are
//! handed over by whoever accepted the publish ([`Webhooks::offer`]), after the bus took them,
//! so in cluster mode an item is delivered by the instance that accepted it, once per
//! subscriber. Registrations are kept in `webhooks.store` ([`store`]) when it is set.

pub mod api;
mod deliver;
mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use grip::publish::PublishItem;
use grip::sig::Signer;
use http::Uri;
use serde::Serialize;
use tokio::sync::{mpsc, Semaphore};

use crate::config::{Config, WebhooksConfig};
use crate::metrics::Page;
use crate::outbound::{Class, Outbound, Policy};

pub use deliver::Outcome;
pub use store::StoreError;

/// Why a registration was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The channel name cannot be subscribed to.
    #[error("'channel': {0}")]
    Channel(String),
    /// The URL cannot be used.
    #[error("'url': {0}")]
    Url(String),
    /// `webhooks.max_subscribers` are registered already.
    #[error("webhooks.max_subscribers ({0}) subscribers are registered already")]
    Full(usize),
    /// The store file could not be written; nothing changed.
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// One item waiting for a subscriber.
struct Job {
    item: Arc<PublishItem>,
    published: Instant,
}

/// A registered subscriber.
struct Entry {
    info: Arc<Subscriber>,
    queue: mpsc::Sender<Job>,
    /// Stops the delivery task when the subscriber is deleted.
    task: tokio::task::AbortHandle,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A subscriber as the API shows it, with its counters.
#[derive(Debug)]
pub struct Subscriber {
    /// Its id, chosen at registration.
    pub id: String,
    /// The channel it is subscribed to.
    pub channel: String,
    /// Where items go.
    pub url: String,
    uri: Uri,
    /// Unix seconds of the registration.
    pub created: u64,
    stats: Stats,
}

#[derive(Debug, Default)]
struct Stats {
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    given_up: AtomicU64,
    queued: AtomicU64,
    last_success: AtomicU64,
    last_error: Mutex<Option<LastError>>,
}

/// The last failed attempt of a subscriber.
#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    /// Unix seconds of the attempt.
    pub at: u64,
    /// What went wrong.
    pub message: String,
}

/// A subscriber's registration and counters, as `GET /webhooks/{id}` answers.
#[derive(Debug, Serialize)]
pub struct View {
    id: String,
    channel: String,
    url: String,
    created: u64,
    queued: u64,
    delivered: u64,
    failed_attempts: u64,
    dropped: u64,
    given_up: u64,
    last_success: Option<u64>,
    last_error: Option<LastError>,
}

impl Subscriber {
    /// The registration and counters now.
    pub fn view(&self) -> View {
        let s = &self.stats;
        let last_success = s.last_success.load(Ordering::Relaxed);
        View {
            id: self.id.clone(),
            channel: self.channel.clone(),
            url: self.url.clone(),
            created: self.created,
            queued: s.queued.load(Ordering::Relaxed),
            delivered: s.delivered.load(Ordering::Relaxed),
            failed_attempts: s.failed.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            given_up: s.given_up.load(Ordering::Relaxed),
            last_success: (last_success > 0).then_some(last_success),
            last_error: s.last_error.lock().expect("webhook stats poisoned").clone(),
        }
    }
}

#[derive(Default)]
struct Registry {
    by_id: HashMap<String, Entry>,
    by_channel: HashMap<String, Vec<String>>,
}

/// Shared by every delivery task.
struct Shared {
    config: WebhooksConfig,
    outbound: Outbound,
    signer: Signer,
    /// One semaphore per `host:port`, made on first use and kept: hosts come from
    /// registrations, which are bounded by `webhooks.max_subscribers`.
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
    outcomes: [AtomicU64; Outcome::ALL.len()],
    dropped: AtomicU64,
    given_up: AtomicU64,
    latency: crate::metrics::Histogram,
}

/// Where registrations are kept.
enum Backend {
    /// Nowhere: they live in memory.
    Memory,
    /// The JSON file `webhooks.store`.
    File(std::path::PathBuf),
    /// Redis, in cluster mode, shared by every instance.
    Redis(Arc<store::RedisStore>),
}

/// The webhook subscribers of this instance.
pub struct Webhooks {
    registry: Arc<Mutex<Registry>>,
    /// Serialises registrations and deletions with their store writes, and with the rereading
    /// of Redis, so that a registration read before it was written cannot undo it.
    changes: Arc<tokio::sync::Mutex<()>>,
    shared: Arc<Shared>,
    policy: Policy,
    backend: Backend,
    /// Rereads the registrations in Redis when another instance changed them.
    refresh: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for Webhooks {
    fn drop(&mut self) {
        if let Some(task) = self
            .refresh
            .lock()
            .expect("webhook refresh poisoned")
            .take()
        {
            task.abort();
        }
    }
}

/// Bounds of the delivery latency histogram, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Webhooks {
    /// The subscribers `config` asks for: none yet; [`Webhooks::start`] loads the store.
    /// `config` was validated, so its keys and allow list read. Policy refusals are counted in
    /// `refused`.
    pub fn new(config: &Config, refused: crate::outbound::Refusals) -> Webhooks {
        let key = if config.webhooks.sig_key.is_empty() {
            &config.grip.sig_key
        } else {
            &config.webhooks.sig_key
        };
        let signer = crate::config::keys::signer(key).expect("config was validated");
        let backend = match (config.cluster.redis.first(), &config.webhooks.store) {
            (Some(url), _) => {
                let ca = config.cluster.redis_ca().expect("config was validated");
                let client = crate::config::redis_url::client(url, ca.as_deref())
                    .expect("config was validated");
                let addr = crate::config::redis_url::redact(url);
                Backend::Redis(Arc::new(store::RedisStore::new(
                    client,
                    addr,
                    &config.cluster,
                )))
            }
            (None, Some(path)) => Backend::File(path.clone()),
            (None, None) => Backend::Memory,
        };
        Webhooks {
            registry: Arc::default(),
            changes: Arc::default(),
            backend,
            refresh: Mutex::default(),
            policy: Policy::new(config.outbound.allow_nets().unwrap_or_default()),
            shared: Arc::new(Shared {
                config: config.webhooks.clone(),
                outbound: Outbound::new(&config.outbound, refused),
                signer,
                hosts: Mutex::default(),
                outcomes: Default::default(),
                dropped: AtomicU64::new(0),
                given_up: AtomicU64::new(0),
                latency: crate::metrics::Histogram::new(LATENCY_BUCKETS),
            }),
        }
    }

    /// Loads the registrations of `webhooks.store` and starts their delivery tasks; a store
    /// that cannot be read is the error, naming the file. In cluster mode, starts the task that
    /// reads them from Redis now and again whenever another instance changed them.
    pub fn start(&self) -> Result<usize, StoreError> {
        match &self.backend {
            Backend::Memory => Ok(0),
            Backend::File(path) => {
                let saved = store::load(path)?;
                let count = saved.len();
                reconcile(&self.shared, &self.registry, saved);
                tracing::info!(subscribers = count, store = %path.display(), "webhook subscribers loaded");
                Ok(count)
            }
            Backend::Redis(redis) => {
                let task = tokio::spawn(follow_redis(
                    redis.clone(),
                    self.shared.clone(),
                    self.registry.clone(),
                    self.changes.clone(),
                ));
                *self.refresh.lock().expect("webhook refresh poisoned") = Some(task.abort_handle());
                Ok(0)
            }
        }
    }

    /// Registers `url` on `channel`. The same pair registered twice is one subscriber: the
    /// second call returns the first and `false`.
    pub async fn create(
        &self,
        channel: &str,
        url: &str,
    ) -> Result<(Arc<Subscriber>, bool), WebhookError> {
        grip::channel::check_channel_name(channel)
            .map_err(|e| WebhookError::Channel(e.to_string()))?;
        if channel.is_empty() {
            return Err(WebhookError::Channel("is empty".to_string()));
        }
        let uri = self.check_url(url)?;
        let _change = self.changes.lock().await;
        {
            let registry = self.registry.lock().expect("webhook registry poisoned");
            let found = registry.by_channel.get(channel).and_then(|ids| {
                ids.iter()
                    .map(|id| &registry.by_id[id].info)
                    .find(|s| s.url == url)
                    .cloned()
            });
            if let Some(found) = found {
                return Ok((found, false));
            }
            if registry.by_id.len() >= self.shared.config.max_subscribers {
                return Err(WebhookError::Full(self.shared.config.max_subscribers));
            }
        }
        let saved = store::Saved {
            id: format!("{:016x}", rand::random::<u64>()),
            channel: channel.to_string(),
            url: url.to_string(),
            created: unix_now(),
        };
        match &self.backend {
            Backend::Memory => {}
            Backend::File(path) => {
                let mut all = self.saved();
                all.push(saved.clone());
                store::save(path, &all)?;
            }
            Backend::Redis(redis) => redis.add(&saved).await?,
        }
        let mut registry = self.registry.lock().expect("webhook registry poisoned");
        let info = insert(&self.shared, &mut registry, saved, uri);
        tracing::info!(id = %info.id, %channel, %url, "webhook subscriber registered");
        Ok((info, true))
    }

    /// A URL a subscriber may have: `http` or `https`, with a host, and not an address the
    /// outbound policy refuses (names are resolved and checked at each delivery).
    fn check_url(&self, url: &str) -> Result<Uri, WebhookError> {
        let bad = |why: &str| WebhookError::Url(format!("{url:?} {why}"));
        let uri: Uri = url
            .parse()
            .map_err(|e| bad(&format!("is not a URL: {e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(bad("is not an http or https URL"));
        }
        let Some(host) = uri.host().filter(|h| !h.is_empty()) else {
            return Err(bad("has no host"));
        };
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(bad(
                "has user credentials, which a registration does not take: they would show in every listing and log",
            ));
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse() {
            if let Err(class) = self.policy.check(ip) {
                return Err(bad(&refused_words(class)));
            }
        }
        Ok(uri)
    }

    fn saved(&self) -> Vec<store::Saved> {
        let registry = self.registry.lock().expect("webhook registry poisoned");
        let mut saved: Vec<store::Saved> = (registry.by_id.values())
            .map(|e| store::Saved {
                id: e.info.id.clone(),
                channel: e.info.channel.clone(),
                url: e.info.url.clone(),
                created: e.info.created,
            })
            .collect();
        saved.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        saved
    }

    /// Deletes the subscriber `id`, dropping what waits in its queue; `false` when there is
    /// none.
    pub async fn delete(&self, id: &str) -> Result<bool, WebhookError> {
        let _change = self.changes.lock().await;
        match &self.backend {
            Backend::Memory => {}
            Backend::File(path) => {
                let saved = self.saved();
                if !saved.iter().any(|s| s.id == id) {
                    return Ok(false);
                }
                let kept: Vec<_> = saved.into_iter().filter(|s| s.id != id).collect();
                store::save(path, &kept)?;
            }
            // Another instance may have made it, and this one not have read it yet.
            Backend::Redis(redis) => {
                if !redis.remove(id).await? {
                    return Ok(false);
                }
            }
        }
        let mut registry = self.registry.lock().expect("webhook registry poisoned");
        let Some(entry) = remove(&mut registry, id) else {
            return Ok(!matches!(self.backend, Backend::Memory));
        };
        tracing::info!(%id, channel = %entry.info.channel, url = %entry.info.url, "webhook subscriber deleted");
        Ok(true)
    }

    /// The subscriber `id`.
    pub fn get(&self, id: &str) -> Option<Arc<Subscriber>> {
        let registry = self.registry.lock().expect("webhook registry poisoned");
        registry.by_id.get(id).map(|e| e.info.clone())
    }

    /// The subscribers of `channel`, or every subscriber, oldest first.
    pub fn list(&self, channel: Option<&str>) -> Vec<Arc<Subscriber>> {
        let registry = self.registry.lock().expect("webhook registry poisoned");
        let mut out: Vec<Arc<Subscriber>> = match channel {
            Some(c) => (registry.by_channel.get(c).into_iter().flatten())
                .map(|id| registry.by_id[id].info.clone())
                .collect(),
            None => registry.by_id.values().map(|e| e.info.clone()).collect(),
        };
        out.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        out
    }

    /// The items of `items` that some subscriber waits for, to [`offer`](Self::offer) once the
    /// bus has taken them. Cheap when no channel has subscribers.
    pub fn wanted(&self, items: &[PublishItem]) -> Vec<Arc<PublishItem>> {
        let registry = self.registry.lock().expect("webhook registry poisoned");
        if registry.by_channel.is_empty() {
            return Vec::new();
        }
        (items.iter())
            .filter(|i| registry.by_channel.contains_key(&i.channel))
            .map(|i| Arc::new(i.clone()))
            .collect()
    }

    /// Queues each item for every subscriber of its channel; a full queue drops the item for
    /// that subscriber and counts it.
    pub fn offer(&self, items: Vec<Arc<PublishItem>>) {
        let published = Instant::now();
        let registry = self.registry.lock().expect("webhook registry poisoned");
        for item in items {
            for id in registry.by_channel.get(&item.channel).into_iter().flatten() {
                let entry = &registry.by_id[id];
                let job = Job {
                    item: item.clone(),
                    published,
                };
                // Counted before the send, so the task never sees a job it cannot uncount.
                entry.info.stats.queued.fetch_add(1, Ordering::Relaxed);
                if entry.queue.try_send(job).is_err() {
                    entry.info.stats.queued.fetch_sub(1, Ordering::Relaxed);
                    entry.info.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%id, channel = %item.channel, "webhook queue full, item dropped");
                }
            }
        }
    }

    /// Adds the webhook figures to `page`.
    pub fn metrics(&self, page: &mut Page) {
        let s = &self.shared;
        let (subscribers, queued) = {
            let registry = self.registry.lock().expect("webhook registry poisoned");
            let queued: u64 = (registry.by_id.values())
                .map(|e| e.info.stats.queued.load(Ordering::Relaxed))
                .sum();
            (registry.by_id.len(), queued)
        };
        let outcomes = (Outcome::ALL.iter().zip(&s.outcomes))
            .map(|(o, n)| {
                (
                    vec![("outcome", o.label().to_string())],
                    n.load(Ordering::Relaxed),
                )
            })
            .collect();
        page.gauge(
            "holdfast_webhook_subscribers",
            "Webhook subscribers registered",
            subscribers as i64,
        )
        .gauge(
            "holdfast_webhook_queued",
            "Items waiting in webhook subscribers' queues",
            queued as i64,
        )
        .counters(
            "holdfast_webhook_deliveries_total",
            "Webhook delivery attempts by outcome: delivered (2xx), http_error (4xx, 5xx), redirect (3xx, not followed), refused (outbound policy), timeout, too_large (response body), failed (no response)",
            outcomes,
        )
        .counter(
            "holdfast_webhook_dropped_total",
            "Items not queued for a webhook subscriber because its queue (webhooks.queue) was full",
            s.dropped.load(Ordering::Relaxed),
        )
        .counter(
            "holdfast_webhook_given_up_total",
            "Items whose delivery was given up: past webhooks.max_age_secs, or refused for good",
            s.given_up.load(Ordering::Relaxed),
        )
        .live(
            "holdfast_webhook_delivery_seconds",
            "Time from an item's publish to its successful delivery, retries included",
            s.latency.clone(),
        );
        s.outbound.metrics(page);
    }
}

/// Adds a registration to `registry` and starts its delivery task.
fn insert(
    shared: &Arc<Shared>,
    registry: &mut Registry,
    saved: store::Saved,
    uri: Uri,
) -> Arc<Subscriber> {
    let info = Arc::new(Subscriber {
        id: saved.id.clone(),
        channel: saved.channel.clone(),
        url: saved.url,
        uri,
        created: saved.created,
        stats: Stats::default(),
    });
    let (tx, rx) = mpsc::channel(shared.config.queue);
    let task = tokio::spawn(deliver::run(shared.clone(), info.clone(), rx));
    registry
        .by_channel
        .entry(saved.channel)
        .or_default()
        .push(saved.id.clone());
    registry.by_id.insert(
        saved.id,
        Entry {
            info: info.clone(),
            queue: tx,
            task: task.abort_handle(),
        },
    );
    info
}

/// Takes `id` out of `registry`; dropping the entry stops its task.
fn remove(registry: &mut Registry, id: &str) -> Option<Entry> {
    let entry = registry.by_id.remove(id)?;
    let channel = &entry.info.channel;
    if let Some(ids) = registry.by_channel.get_mut(channel) {
        ids.retain(|i| i != id);
        if ids.is_empty() {
            registry.by_channel.remove(channel);
        }
    }
    Some(entry)
}

/// Makes `registry` hold exactly `saved`: new registrations start, missing ones stop, the
/// others keep their queues and counters.
fn reconcile(shared: &Arc<Shared>, registry: &Mutex<Registry>, saved: Vec<store::Saved>) {
    let mut registry = registry.lock().expect("webhook registry poisoned");
    let keep: std::collections::HashSet<&str> = saved.iter().map(|s| s.id.as_str()).collect();
    let gone: Vec<String> = (registry.by_id.keys())
        .filter(|id| !keep.contains(id.as_str()))
        .cloned()
        .collect();
    for id in gone {
        remove(&mut registry, &id);
    }
    for s in saved {
        if registry.by_id.contains_key(&s.id) {
            continue;
        }
        match s.url.parse::<Uri>() {
            Ok(uri) => {
                insert(shared, &mut registry, s, uri);
            }
            Err(_) => {
                tracing::warn!(id = %s.id, url = %s.url, "webhook registration: URL unreadable, skipped")
            }
        }
    }
}

/// Cluster mode: reads the registrations from Redis at start and whenever the change counter
/// moved, every `webhooks.cluster_refresh_ms`; an unreachable Redis is logged once per outage.
async fn follow_redis(
    redis: Arc<store::RedisStore>,
    shared: Arc<Shared>,
    registry: Arc<Mutex<Registry>>,
    changes: Arc<tokio::sync::Mutex<()>>,
) {
    let mut seen: Option<u64> = None;
    let mut failing = false;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(
        shared.config.cluster_refresh_ms,
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let _change = changes.lock().await;
        let read = async {
            let version = redis.version().await?;
            if seen == Some(version) {
                return Ok(None);
            }
            Ok::<_, StoreError>(Some((version, redis.load().await?)))
        };
        match read.await {
            Ok(None) => {}
            Ok(Some((version, saved))) => {
                if seen.is_none() {
                    tracing::info!(
                        subscribers = saved.len(),
                        "webhook subscribers loaded from Redis"
                    );
                }
                reconcile(&shared, &registry, saved);
                seen = Some(version);
                failing = false;
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "webhook registrations cannot be read; the last ones read stay in force");
            }
            Err(e) => tracing::debug!(error = %e, "webhook registrations still cannot be read"),
        }
    }
}

fn refused_words(class: Class) -> String {
    format!(
        "is a {} address, which outbound.allow does not list",
        class.label()
    )
}
