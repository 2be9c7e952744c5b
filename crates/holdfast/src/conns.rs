//! The held connections of this instance, by id: what the ZeroMQ command socket's `conncheck`
//! and `refresh` look up, and what the stats socket's `conn` packets report.
//!
//! A held session (long-poll, stream, WebSocket) registers itself with [`Conns::open`] and stays
//! registered while it holds the returned [`ConnGuard`]. The registry is on only when a ZeroMQ
//! command or stats socket is configured; otherwise `open` returns an inert guard and costs a
//! branch. Entries live in independently locked shards (a `std::sync::Mutex` each, held for a
//! map insert or remove). A listener ([`Conns::on_change`], the stats socket) is told of each
//! open and close; it must return at once (it only `try_send`s into its own bounded queue).
//!
//! Whether or not the registry is on, every guard counts its connection under its
//! [`Transport`] while it lives (one relaxed atomic add at open and one subtract at close, never
//! anything on a publish): [`Conns::held`] is what the status page shows.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::Notify;

const SHARDS: usize = 16;

/// What kind of connection a held session is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnKind {
    /// A held HTTP request (long-poll or stream).
    Http,
    /// A WebSocket (GRIP WebSocket or WebSocket-over-HTTP).
    Ws,
}

impl ConnKind {
    /// Pushpin's name: `http` or `ws`.
    pub fn name(self) -> &'static str {
        match self {
            ConnKind::Http => "http",
            ConnKind::Ws => "ws",
        }
    }
}

pub use crate::metrics::Transport;

/// The kind of connection Pushpin reports for a transport.
fn kind_of(transport: Transport) -> ConnKind {
    match transport {
        Transport::LongPoll | Transport::Stream => ConnKind::Http,
        Transport::WebSocket | Transport::WsOverHttp => ConnKind::Ws,
    }
}

/// Where a client connection comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Client {
    /// The peer's address; `None` where none is known.
    pub peer: Option<IpAddr>,
    /// Whether the client connected over TLS.
    pub tls: bool,
}

/// One registered connection.
#[derive(Debug)]
pub struct ConnInfo {
    /// Its id: a WebSocket-over-HTTP connection's `Connection-Id`, else `<instance>:<n>`.
    pub id: Arc<str>,
    /// HTTP or WebSocket.
    pub kind: ConnKind,
    /// Where it comes from.
    pub client: Client,
    /// The route's explicit `id=`, if it has one.
    pub route: Option<Arc<str>>,
    /// Set for WebSocket-over-HTTP connections: notified, the connection asks its origin for
    /// pending messages.
    pub refresh: Option<Arc<Notify>>,
}

/// An open or a close, as the listener hears it.
#[derive(Debug, Clone)]
pub enum ConnChange {
    /// A connection was registered.
    Open(Arc<ConnInfo>),
    /// The connection with this id left.
    Close(Arc<str>),
}

/// Told of every open and close. Called with no lock held; must return at once.
pub type ChangeFn = Arc<dyn Fn(ConnChange) + Send + Sync>;

type Shard = Mutex<HashMap<Arc<str>, Arc<ConnInfo>>>;

struct Inner {
    shards: Box<[Shard]>,
    hasher: std::collections::hash_map::RandomState,
    next: AtomicU64,
    prefix: String,
    open: AtomicUsize,
    /// The most connections open at once since [`Conns::take_peak`] last asked.
    peak: AtomicUsize,
    listener: OnceLock<ChangeFn>,
}

/// The registry. Cloning shares it.
#[derive(Clone)]
pub struct Conns {
    inner: Option<Arc<Inner>>,
}

/// A registered connection; dropping it unregisters the connection.
#[must_use = "the connection is unregistered when the guard is dropped"]
pub struct ConnGuard {
    held: Option<(Arc<Inner>, Arc<str>)>,
}

impl ConnGuard {
    /// A guard for nothing.
    pub fn none() -> ConnGuard {
        ConnGuard { held: None }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let Some((inner, id)) = self.held.take() else {
            return;
        };
        let removed = inner.shard(&id).lock().expect("conns poisoned").remove(&id);
        if removed.is_some() {
            inner.open.fetch_sub(1, Ordering::Relaxed);
            if let Some(f) = inner.listener.get() {
                f(ConnChange::Close(id));
            }
        }
    }
}

impl Inner {
    fn shard(&self, id: &str) -> &Shard {
        &self.shards[(self.hasher.hash_one(id) as usize) % SHARDS]
    }
}

impl Conns {
    /// A registry that keeps connections when `on`; `prefix` starts generated ids.
    pub fn new(on: bool, prefix: &str) -> Conns {
        Conns {
            inner: on.then(|| {
                Arc::new(Inner {
                    shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
                    hasher: Default::default(),
                    next: AtomicU64::new(0),
                    prefix: prefix.to_string(),
                    open: AtomicUsize::new(0),
                    peak: AtomicUsize::new(0),
                    listener: OnceLock::new(),
                })
            }),
        }
    }

    /// Whether connections are kept.
    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// Registers a held session of `transport` under `id` (a new one is made when `None` or
    /// taken); an inert guard when the registry is off.
    pub fn open(
        &self,
        id: Option<&str>,
        transport: Transport,
        client: Client,
        route: Option<&str>,
        refresh: Option<Arc<Notify>>,
    ) -> ConnGuard {
        let Some(inner) = &self.inner else {
            return ConnGuard::none();
        };
        let kind = kind_of(transport);
        let make = || {
            let n = inner.next.fetch_add(1, Ordering::Relaxed);
            Arc::<str>::from(format!("{}:{n}", inner.prefix))
        };
        let mut id: Arc<str> = id.map_or_else(make, Arc::from);
        let info = loop {
            let mut shard = inner.shard(&id).lock().expect("conns poisoned");
            if shard.contains_key(&id) {
                drop(shard);
                id = make();
                continue;
            }
            let info = Arc::new(ConnInfo {
                id: id.clone(),
                kind,
                client,
                route: route.map(Arc::from),
                refresh,
            });
            shard.insert(id.clone(), info.clone());
            break info;
        };
        let now = inner.open.fetch_add(1, Ordering::Relaxed) + 1;
        inner.peak.fetch_max(now, Ordering::Relaxed);
        if let Some(f) = inner.listener.get() {
            f(ConnChange::Open(info));
        }
        ConnGuard {
            held: Some((inner.clone(), id)),
        }
    }

    /// Sets the one listener for opens and closes. Returns false if one was set already.
    pub fn on_change(&self, f: ChangeFn) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|inner| inner.listener.set(f).is_ok())
    }

    /// The connection with this id, if it is open.
    pub fn get(&self, id: &str) -> Option<Arc<ConnInfo>> {
        let inner = self.inner.as_ref()?;
        inner
            .shard(id)
            .lock()
            .expect("conns poisoned")
            .get(id)
            .cloned()
    }

    /// Every open connection, for refreshing their stats.
    pub fn all(&self) -> Vec<Arc<ConnInfo>> {
        let Some(inner) = &self.inner else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(inner.open.load(Ordering::Relaxed));
        for shard in inner.shards.iter() {
            out.extend(shard.lock().expect("conns poisoned").values().cloned());
        }
        out
    }

    /// Connections open now.
    pub fn count(&self) -> usize {
        self.inner
            .as_ref()
            .map_or(0, |i| i.open.load(Ordering::Relaxed))
    }

    /// The most connections open at once since the last call; starts the next period at the
    /// number open now.
    pub fn take_peak(&self) -> usize {
        let Some(inner) = &self.inner else {
            return 0;
        };
        let now = inner.open.load(Ordering::Relaxed);
        inner.peak.swap(now, Ordering::Relaxed).max(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_while_the_guard_lives() {
        let conns = Conns::new(true, "hf");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        assert!(conns.on_change(Arc::new(move |c| log
            .lock()
            .unwrap()
            .push(format!("{c:?}")))));
        let a = conns.open(None, Transport::Stream, Client::default(), None, None);
        let b = conns.open(
            Some("cid-1"),
            Transport::WsOverHttp,
            Client::default(),
            Some("r"),
            None,
        );
        // An id already open is not shared: the second gets a fresh one.
        let c = conns.open(
            Some("cid-1"),
            Transport::WsOverHttp,
            Client::default(),
            None,
            None,
        );
        assert_eq!(conns.get("cid-1").unwrap().kind, ConnKind::Ws);
        assert_eq!(conns.count(), 3);
        assert_eq!(conns.get("cid-1").unwrap().route.as_deref(), Some("r"));
        assert!(conns.get("hf:0").is_some());
        assert_eq!(conns.all().len(), 3);
        drop((a, b));
        assert!(conns.get("cid-1").is_none());
        assert_eq!(conns.count(), 1);
        assert_eq!(conns.take_peak(), 3);
        assert_eq!(conns.take_peak(), 1);
        drop(c);
        let log = seen.lock().unwrap();
        assert_eq!(log.len(), 6, "{log:?}");
        assert!(log[0].starts_with("Open") && log[5].starts_with("Close"));
    }

    #[test]
    fn off_keeps_nothing() {
        let conns = Conns::new(false, "hf");
        let g = conns.open(
            Some("x"),
            Transport::LongPoll,
            Client::default(),
            None,
            None,
        );
        assert!(conns.get("x").is_none());
        assert_eq!(conns.count(), 0);
        drop(g);
        assert!(!conns.on_change(Arc::new(|_| {})));
    }
}
