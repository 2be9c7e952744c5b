//! Listeners, the accept loop, the connection cap and the graceful drain.
//!
//! Each listener runs one accept loop. A client connection needs a permit from the shared
//! semaphore (`limits.max_connections`) and a descriptor from the budget client and origin
//! sockets share ([`crate::descriptors`]) before it is accepted, so over either cap new clients
//! wait in the kernel's backlog instead of being accepted and starved; the publish listener
//! takes neither, its connections come out of the reserve. Every connection task holds a clone of
//! a drain sender; shutdown stops the loops, tells holds to finish, asks hyper to close each
//! connection after its in-flight response, and waits — at most the grace period — until every
//! drain sender is gone.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::app::App;
use crate::config::routes::RouteTable;
use crate::config::Config;
use crate::http::Body;

mod direct;

use crate::shutdown::Signal;
use crate::socket::{Cell, ClientSocket, Guards, Shared};

/// A bound, not yet running, Holdfast server.
pub struct Server {
    app: Arc<App>,
    clients: Vec<TcpListener>,
    publish: TcpListener,
    api: Arc<crate::publish::Api>,
}

/// Which service a listener runs.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Client,
    Publish,
}

impl Server {
    /// Binds every listener of `config` (port 0 picks a free port).
    pub async fn bind(config: Config, routes: RouteTable) -> std::io::Result<Server> {
        let mut clients = Vec::new();
        for addr in &config.server.listen {
            clients.push(bind(*addr).await?);
        }
        let publish = bind(config.server.publish_listen).await?;
        let app = App::new(config, routes);
        // The keys were read when the configuration was validated; this reads them again.
        let api = crate::publish::Api::new(app.clone()).map_err(std::io::Error::other)?;
        Ok(Server {
            app,
            clients,
            publish,
            api: Arc::new(api),
        })
    }

    /// The bound client addresses, in configuration order.
    pub fn client_addrs(&self) -> Vec<SocketAddr> {
        self.clients
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The bound publish API address.
    pub fn publish_addr(&self) -> SocketAddr {
        self.publish
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The shared state, for tests and embedding.
    pub fn app(&self) -> Arc<App> {
        self.app.clone()
    }

    /// Serves until `shutdown` completes, then drains within the grace period.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let app = self.app;
        let _watcher = crate::reload::spawn(app.clone());
        let _bus = app.bus.start();
        let sweeper = {
            let hub = app.hub.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(5));
                loop {
                    every.tick().await;
                    hub.sweep();
                }
            })
        };
        let permits = Arc::new(Semaphore::new(app.config.limits.max_connections));
        tracing::info!(
            max_connections = app.config.limits.max_connections,
            descriptors = app.descriptors.total(),
            "connection limits"
        );
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .max_buf_size(app.config.limits.max_header_size);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(app.config.limits.max_header_size as u32);
        let listeners = self
            .clients
            .into_iter()
            .map(|l| (l, Kind::Client))
            .chain(std::iter::once((self.publish, Kind::Publish)));
        let mut loops = Vec::new();
        for (listener, kind) in listeners {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, ?kind, "listening");
            }
            loops.push(tokio::spawn(accept_loop(
                listener,
                kind,
                app.clone(),
                self.api.clone(),
                builder.clone(),
                permits.clone(),
            )));
        }
        shutdown.await;
        let grace = Duration::from_secs(app.config.server.shutdown_grace_secs);
        tracing::info!(grace_secs = grace.as_secs(), "shutting down");
        app.begin_shutdown();
        for l in loops {
            let _ = l.await;
        }
        if !app.shutdown.drained(grace).await {
            tracing::warn!("grace period over, closing remaining connections");
        }
        sweeper.abort();
    }
}

async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket
        .bind(addr)
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    socket.listen(4096)
}

async fn accept_loop(
    listener: TcpListener,
    kind: Kind,
    app: Arc<App>,
    api: Arc<crate::publish::Api>,
    builder: auto::Builder<TokioExecutor>,
    permits: Arc<Semaphore>,
) {
    let Some(drain) = app.shutdown.guard() else {
        return;
    };
    let mut stop = app.shutdown.signal();
    loop {
        let permit = match kind {
            Kind::Client => tokio::select! {
                p = room_for_client(&app, &permits) => Some(p),
                _ = stop.stopped() => return,
            },
            Kind::Publish => None,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors or similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.stopped() => return,
        };
        let permit = match permit {
            // Usually at once; if an origin connection took the free descriptor meanwhile, this
            // client waits with its socket open (the reserve covers it).
            Some(p) => tokio::select! {
                held = app.descriptors.acquire() => Some((p, held)),
                _ = stop.stopped() => return,
            },
            None => None,
        };
        let _ = stream.set_nodelay(true);
        // The socket and what lives as long as it: the connection's permit and descriptor, and
        // the drain guard. A held stream takes them all from hyper ([`direct`]).
        let cell = Cell::new(stream, (permit, drain.clone()));
        tokio::spawn(serve_connection(
            cell,
            peer,
            kind,
            app.clone(),
            api.clone(),
            builder.clone(),
            stop.clone(),
        ));
    }
}

/// Waits for a connection-cap permit and for a free descriptor. The descriptor is left to origin
/// connections while no client arrives; it is taken once one is accepted.
async fn room_for_client(app: &App, permits: &Arc<Semaphore>) -> OwnedSemaphorePermit {
    let p = permits
        .clone()
        .acquire_owned()
        .await
        .expect("semaphore never closed");
    drop(app.descriptors.acquire().await);
    p
}

/// Serves one accepted connection with hyper until it ends, closing it gracefully once shutdown
/// begins; a held stream on it is handed to [`direct::write`].
fn serve_connection(
    cell: Arc<Cell<Guards>>,
    peer: SocketAddr,
    kind: Kind,
    app: Arc<App>,
    api: Arc<crate::publish::Api>,
    builder: auto::Builder<TokioExecutor>,
    mut stop: Signal,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    // An async block, not an `async fn`: an `async fn` moves its arguments into locals and
    // keeps both copies for the life of the connection (about 300 bytes per connection).
    async move {
        let shared = cell.clone();
        let service = service_fn(move |mut req: Request<Incoming>| {
            let app = app.clone();
            let api = api.clone();
            let cell = cell.clone();
            // Only an upgrade can take the socket; other requests skip the extension map.
            if req.headers().contains_key(hyper::header::UPGRADE) {
                req.extensions_mut().insert(ClientSocket(cell.clone()));
            }
            let direct_allowed = direct::request_allows(&req);
            // hyper keeps an allocation the size of this future for the whole life of the
            // connection; boxed, that is a pointer, and the handler's own state is freed as
            // soon as the response head is ready (a held connection can last for hours).
            Box::pin(async move {
                let resp: hyper::Response<Body> = match kind {
                    Kind::Client => crate::route::handle(app.clone(), req, peer).await,
                    Kind::Publish => api.handle(req, peer).await,
                };
                if direct_allowed && direct::eligible(&resp) {
                    if let Some(owned) = cell.take() {
                        // The writer's own future is the task: a wrapping `async` block
                        // would keep its own copy of the moved socket and response.
                        tokio::spawn(direct::write(owned, resp, DirectStreamCount::new(app)));
                        // hyper's attempt to write this finds no socket and ends the
                        // connection, freeing its buffers.
                        return Ok(hyper::Response::new(crate::http::full("")));
                    }
                }
                Ok::<_, Infallible>(resp)
            })
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(Shared(shared)), service)
            .into_owned();
        tokio::pin!(conn);
        let stopping = stop.stopped();
        let result = tokio::select! {
            r = conn.as_mut() => r,
            () = stopping => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %crate::http::error_chain(&*e), "connection ended with error");
        }
    }
}

/// Counts a held stream in `holdfast_direct_streams` for as long as it lives.
struct DirectStreamCount(Arc<App>);

impl DirectStreamCount {
    fn new(app: Arc<App>) -> DirectStreamCount {
        app.direct_streams.fetch_add(1, Ordering::Relaxed);
        DirectStreamCount(app)
    }
}

impl Drop for DirectStreamCount {
    fn drop(&mut self) {
        self.0.direct_streams.fetch_sub(1, Ordering::Relaxed);
    }
}
