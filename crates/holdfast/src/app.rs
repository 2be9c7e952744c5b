//! The state every connection shares: configuration, the live route table, origin clients, the
//! hub and the shutdown signal.

use std::any::Any;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::header::{HeaderMap, HeaderValue};

use crate::config::routes::{Route, RouteTable, RoutesError};
use crate::config::{Config, XffRule};
use crate::descriptors::Descriptors;
use crate::hub::{Hub, HubLimits};
use crate::origin::OriginClients;
use crate::shutdown::Shutdown;

/// Shared server state. Cheap to reach from every task through an `Arc`.
pub struct App {
    /// The validated configuration.
    pub config: Config,
    /// Parsed `forwarding.x_forwarded_for` rules.
    pub xff: Vec<XffRule>,
    /// Parsed `forwarding.x_forwarded_for_trusted` rules, for an upstream GRIP proxy's requests.
    pub xff_trusted: Vec<XffRule>,
    /// `grip.upstream_key`, read.
    upstream: Option<grip::sig::Verifier>,
    /// The route table in force.
    pub routes: Routes,
    /// Pooled origin clients.
    pub origins: OriginClients,
    /// The file-descriptor budget client and origin sockets share.
    pub descriptors: Descriptors,
    /// Channel registry and fan-out.
    pub hub: Hub,
    /// The held connections by id (on when a ZeroMQ command or stats socket is configured).
    pub conns: crate::conns::Conns,
    /// This instance's name in ZeroMQ stats packets (`from`): `holdfast_<pid>`.
    pub instance: String,
    /// How publishes reach the hub (local, or through the cluster engine).
    pub bus: crate::bus::Bus,
    /// Channel state events, counts and members (`[presence]`; inert when off).
    pub presence: crate::presence::Presence,
    /// Paces origin requests made on held sessions' behalf.
    pub session_requests: crate::limiter::RateLimiter,
    /// Held HTTP/1.1 streams written straight to their socket now (`server::direct`).
    pub direct_streams: std::sync::atomic::AtomicUsize,
    /// Held long-polls waiting with their socket out of hyper's hands now (`server::direct`).
    pub direct_long_polls: std::sync::atomic::AtomicUsize,
    /// The per-address connection caps, when either is on.
    pub per_ip: Option<Arc<crate::limiter::PerIp>>,
    /// The client connection cap (`limits.max_connections`): a permit per open connection.
    pub client_permits: Arc<tokio::sync::Semaphore>,
    /// Client permits taken by accept loops for a connection not accepted yet.
    pub accepting: std::sync::atomic::AtomicUsize,
    /// Requests, publish items and connection time, for Pushpin's Prometheus page.
    pub traffic: crate::metrics::Traffic,
    /// Held client connections by transport and route.
    pub connections: crate::metrics::Connections,
    signatures: Mutex<Vec<CachedSig>>,
    /// Writes the ZeroMQ sockets' counters into `GET /metrics`, once they run.
    zmq_metrics: std::sync::OnceLock<MetricsFn>,
    postgres_metrics: std::sync::OnceLock<MetricsFn>,
    /// SockJS sessions over HTTP transports, which outlive each of their requests.
    pub sockjs_sessions: SessionTable,
    /// Bayeux sessions by client id, which outlive each of their requests.
    pub bayeux_sessions: SessionTable,
    /// Messages Bayeux sessions dropped because their queue (`bayeux.max_queued`) was full.
    pub bayeux_dropped: std::sync::atomic::AtomicU64,
    /// The shutdown signal and drain every task listens to.
    pub shutdown: Shutdown,
    /// Webhook subscribers: registrations and their delivery.
    pub webhooks: crate::webhook::Webhooks,
}

/// Writes some part's figures into `GET /metrics`.
pub type MetricsFn = Box<dyn Fn(&mut crate::metrics::Page) + Send + Sync>;

struct CachedSig {
    iss: String,
    key: String,
    token: HeaderValue,
    made: Instant,
}

/// A `Grip-Sig` is valid for an hour; a cached one is reused for a minute.
const SIG_TTL_SECS: u64 = 3600;
const SIG_REUSE: Duration = Duration::from_secs(60);

impl App {
    /// Builds the state from a validated config and its route table.
    pub fn new(config: Config, routes: RouteTable) -> Arc<App> {
        let xff = config.xff_rules().expect("config was validated");
        let xff_trusted = config.xff_trusted_rules().expect("config was validated");
        let upstream = config.upstream_verifier().expect("config was validated");
        let descriptors = Descriptors::from_limits(&config.limits);
        let refused = crate::outbound::Refusals::default();
        let origins =
            OriginClients::new(&config.timeouts, &descriptors, &config.outbound, &refused);
        let hub = Hub::new(HubLimits::from(&config));
        let instance = format!("holdfast_{}", std::process::id());
        let zmq = &config.zmq;
        let conns = crate::conns::Conns::new(
            !(zmq.command_spec.is_empty() && zmq.stats_spec.is_empty()),
            &instance,
        );
        let presence = crate::presence::Presence::new(&config, hub.clone(), &instance);
        Arc::new(App {
            conns,
            presence,
            instance,
            xff,
            xff_trusted,
            upstream,
            routes: Routes::new(routes, config.server.routes.clone()),
            origins,
            descriptors,
            bus: crate::bus::Bus::from_config(&config, hub.clone()),
            hub,
            session_requests: crate::limiter::RateLimiter::new(
                config.reliability.session_requests_per_sec,
            ),
            direct_streams: std::sync::atomic::AtomicUsize::new(0),
            direct_long_polls: std::sync::atomic::AtomicUsize::new(0),
            per_ip: crate::limiter::PerIp::new(
                config.limits.max_connections_per_ip,
                config.limits.connection_rate_per_ip,
            ),
            client_permits: Arc::new(tokio::sync::Semaphore::new(config.limits.max_connections)),
            accepting: std::sync::atomic::AtomicUsize::new(0),
            traffic: crate::metrics::Traffic::default(),
            connections: crate::metrics::Connections::default(),
            sockjs_sessions: SessionTable::new(config.sockjs.max_sessions),
            bayeux_sessions: SessionTable::new(config.bayeux.max_sessions),
            bayeux_dropped: Default::default(),
            webhooks: crate::webhook::Webhooks::new(&config, refused),
            config,
            signatures: Mutex::new(Vec::new()),
            zmq_metrics: std::sync::OnceLock::new(),
            postgres_metrics: std::sync::OnceLock::new(),
            shutdown: Shutdown::default(),
        })
    }

    /// Publishes `items` through the bus and, once it took them, queues them for the
    /// channels' webhook subscribers. Every publish input goes through here, so in cluster
    /// mode the instance that accepted an item is the one that delivers it to webhooks.
    pub async fn publish(
        &self,
        items: Vec<grip::publish::PublishItem>,
    ) -> Result<usize, crate::bus::BusError> {
        let hooked = self.webhooks.wanted(&items);
        let receivers = self.bus.publish(items).await?;
        if !hooked.is_empty() {
            self.webhooks.offer(hooked);
        }
        Ok(receivers)
    }

    /// Writes a one-screen summary of this instance's state to the log (target
    /// `holdfast::state`, message `state`): what `SIGUSR1` asks for.
    pub fn log_state(&self) {
        let s = self.hub.stats();
        let routes = self.routes.current();
        tracing::info!(
            target: "holdfast::state",
            instance = %self.instance,
            client_connections = self.client_connections(),
            max_connections = self.config.limits.max_connections,
            direct_streams = self.direct_streams.load(std::sync::atomic::Ordering::Relaxed),
            direct_long_polls = self.direct_long_polls.load(std::sync::atomic::Ordering::Relaxed),
            channels = s.channels,
            subscriptions = s.subscriptions,
            items_published = s.published,
            deliveries = s.delivered,
            deliveries_dropped = s.dropped,
            history_bytes = s.history_bytes,
            requests = self.traffic.requests(),
            items_received = self.traffic.items_received(),
            descriptors_in_use = self.descriptors.in_use(),
            descriptors_budget = self.descriptors.total(),
            origin_requests_waiting = self.origins.waiting(),
            routes = routes.routes.len(),
            cluster = !matches!(self.bus, crate::bus::Bus::Local(_)),
            bus_connected = self.bus.is_connected(),
            draining = self.shutdown.is_stopping(),
            "state"
        );
    }

    /// Client connections open now.
    pub fn client_connections(&self) -> usize {
        let taken = self.config.limits.max_connections - self.client_permits.available_permits();
        taken.saturating_sub(self.accepting.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Pushpin's five metrics (`server.prometheus_listen`), named with
    /// `server.prometheus_prefix` and described as Pushpin describes them.
    pub fn pushpin_metrics(&self) -> String {
        let prefix = &self.config.server.prometheus_prefix;
        let figures: [(&str, &str, &str, u64); 5] = [
            (
                "request_received",
                "counter",
                "Number of requests received",
                self.traffic.requests(),
            ),
            (
                "connection_connected",
                "gauge",
                "Number of concurrent connections",
                self.client_connections() as u64,
            ),
            (
                "connection_minute",
                "counter",
                "Number of minutes clients have been connected",
                self.traffic.connection_minutes(),
            ),
            (
                "message_received",
                "counter",
                "Number of messages received by the publish API",
                self.traffic.items_received(),
            ),
            (
                "message_sent",
                "counter",
                "Number of messages sent to clients",
                self.hub.stats().delivered,
            ),
        ];
        crate::metrics::pushpin_text(prefix, &figures)
    }

    /// Adds `Grip-Sig` and `Grip-Feature` to a request for the origin.
    pub fn grip_headers(&self, route: &Route, headers: &mut HeaderMap) {
        let iss = route
            .options
            .sig_iss
            .as_deref()
            .unwrap_or(&self.config.grip.sig_iss);
        let key = route
            .options
            .sig_key
            .as_deref()
            .unwrap_or(&self.config.grip.sig_key);
        if let Some(token) = self.signature(iss, key) {
            headers.insert("grip-sig", token);
        }
        headers.insert(
            "grip-feature",
            HeaderValue::from_static(grip::sig::GRIP_FEATURES),
        );
    }

    /// Whether a request comes from an upstream GRIP proxy: `grip.upstream_key` is set and the
    /// request's `Grip-Sig` verifies with it and has not expired. As in Pushpin, the issuer is
    /// not checked.
    pub fn is_trusted_upstream(&self, headers: &HeaderMap) -> bool {
        let (Some(key), Some(sig)) = (&self.upstream, headers.get("grip-sig")) else {
            return false;
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match sig.to_str().map(|token| key.verify(token, now)) {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "Grip-Sig does not verify with grip.upstream_key; client not trusted");
                false
            }
            Err(_) => {
                tracing::debug!("Grip-Sig is not text; client not trusted");
                false
            }
        }
    }

    fn signature(&self, iss: &str, key: &str) -> Option<HeaderValue> {
        let mut cache = self.signatures.lock().expect("signature cache poisoned");
        if let Some(c) = cache.iter().find(|c| c.iss == iss && c.key == key) {
            if c.made.elapsed() < SIG_REUSE {
                return Some(c.token.clone());
            }
        }
        // Every key was read once at start (a route's when its routes file was loaded); a key file
        // that has gone or changed since is read again here.
        let signer = match crate::config::keys::signer(key) {
            Ok(signer) => signer,
            Err(e) => {
                tracing::warn!(error = %e, "sig_key is unusable; no Grip-Sig sent");
                return None;
            }
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let token = signer.sign(iss, now, SIG_TTL_SECS).ok()?;
        let token = HeaderValue::from_str(&token).ok()?;
        cache.retain(|c| !(c.iss == iss && c.key == key));
        if cache.len() >= 64 {
            cache.remove(0);
        }
        cache.push(CachedSig {
            iss: iss.to_string(),
            key: key.to_string(),
            token: token.clone(),
            made: Instant::now(),
        });
        Some(token)
    }

    /// Sets what writes the ZeroMQ sockets' figures (once; later calls are ignored).
    pub fn set_zmq_metrics(&self, f: MetricsFn) {
        let _ = self.zmq_metrics.set(f);
    }

    /// Writes the ZeroMQ sockets' figures, when they run.
    pub fn zmq_metrics(&self, page: &mut crate::metrics::Page) {
        if let Some(f) = self.zmq_metrics.get() {
            f(page);
        }
    }

    /// Sets what writes the PostgreSQL sources' figures (once; later calls are ignored).
    pub fn set_postgres_metrics(&self, f: MetricsFn) {
        let _ = self.postgres_metrics.set(f);
    }

    /// Writes the PostgreSQL sources' figures, when there are sources.
    pub fn postgres_metrics(&self, page: &mut crate::metrics::Page) {
        if let Some(f) = self.postgres_metrics.get() {
            f(page);
        }
    }

    /// Begins the shutdown: raises the signal every task waits on (accept loops, connections,
    /// WebSockets) and closes every subscriber's queue, so held sessions end.
    pub fn begin_shutdown(&self) {
        self.shutdown.begin();
        self.hub.close_all();
    }
}

impl From<&Config> for HubLimits {
    fn from(config: &Config) -> HubLimits {
        let r = &config.reliability;
        HubLimits {
            connection_queue: config.limits.connection_queue,
            history_items: r.history_items,
            history_age: Duration::from_secs(r.history_max_age_secs),
            history_max_bytes: r.history_max_bytes,
            max_pending: r.max_pending_per_channel,
            message_wait: Duration::from_millis(r.message_wait_ms),
            first_subscription_update: r
                .update_on_first_subscription
                .then_some(Duration::from_secs(1)),
            id_cache_ttl: Duration::from_secs(config.grip.id_cache_ttl_secs),
            // Cluster mode is the configuration's to say; the hub only learns what follows.
            shared: !config.cluster.redis.is_empty(),
        }
    }
}

/// The route table in force, swapped whole on reload so a request sees one consistent table.
pub struct Routes {
    current: RwLock<Arc<RouteTable>>,
    path: Option<PathBuf>,
}

impl Routes {
    fn new(table: RouteTable, path: Option<PathBuf>) -> Routes {
        Routes {
            current: RwLock::new(Arc::new(table)),
            path,
        }
    }

    /// The table in force.
    pub fn current(&self) -> Arc<RouteTable> {
        self.current.read().expect("routes lock poisoned").clone()
    }

    /// The routes file, if one is configured.
    pub fn path(&self) -> Option<&PathBuf> {
        self.path.as_ref()
    }

    /// Re-reads the routes file. On error the old table stays in force.
    pub fn reload(&self) -> Result<usize, RoutesError> {
        let Some(path) = &self.path else {
            return Ok(self.current().routes.len());
        };
        let table = RouteTable::load(path)?;
        for w in &table.warnings {
            tracing::warn!("{w}");
        }
        let n = table.routes.len();
        *self.current.write().expect("routes lock poisoned") = Arc::new(table);
        Ok(n)
    }
}

/// Sessions that outlive the requests that reach them (SockJS over HTTP), by key, at most
/// `max` at once. Each entry is its owner's handle, type-erased so that this floor needs no type
/// from the floor that owns it; [`SessionTable::get`] gives it back typed.
pub struct SessionTable {
    map: Mutex<HashMap<String, Arc<dyn Any + Send + Sync>>>,
    max: usize,
}

/// Why [`SessionTable::insert`] did not insert.
#[derive(Debug, PartialEq, Eq)]
pub enum InsertError {
    /// A session with that key exists.
    Taken,
    /// The table holds `max` sessions.
    Full(usize),
}

impl SessionTable {
    /// An empty table for at most `max` sessions.
    pub fn new(max: usize) -> SessionTable {
        SessionTable {
            map: Mutex::new(HashMap::new()),
            max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<dyn Any + Send + Sync>>> {
        // Every critical section leaves the map consistent.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session under `key`, if there is one of type `T`.
    pub fn get<T: Any + Send + Sync>(&self, key: &str) -> Option<Arc<T>> {
        let found = self.lock().get(key).cloned()?;
        found.downcast::<T>().ok()
    }

    /// Adds `session` under `key`, unless the key is taken or the table is full.
    pub fn insert<T: Any + Send + Sync>(
        &self,
        key: String,
        session: Arc<T>,
    ) -> Result<(), InsertError> {
        let mut map = self.lock();
        if map.contains_key(&key) {
            return Err(InsertError::Taken);
        }
        if map.len() >= self.max {
            return Err(InsertError::Full(self.max));
        }
        map.insert(key, session);
        Ok(())
    }

    /// Removes the entry under `key` if it is `session` (and not a later one under the same key).
    pub fn remove<T: Any + Send + Sync>(&self, key: &str, session: &Arc<T>) {
        let mut map = self.lock();
        let same = map
            .get(key)
            .is_some_and(|s| std::ptr::addr_eq(Arc::as_ptr(s), Arc::as_ptr(session)));
        if same {
            map.remove(key);
        }
    }

    /// How many sessions there are.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
