//! Listeners, the accept loop, the connection cap and the graceful drain.
//!
//! Each listener runs one accept loop. A client connection needs a permit from the shared
//! semaphore (`limits.max_connections`) and a descriptor from the budget client and origin
//! sockets share ([`crate::descriptors`]) before it is accepted, so over either cap new clients
//! wait in the kernel's backlog instead of being accepted and starved; a publish connection
//! needs a descriptor of the publish API's own share (`limits.max_publish_connections`), so
//! neither listener can starve the other. Every connection task holds a clone of a drain
//! sender; shutdown stops the loops, tells holds to finish, asks hyper to close each connection
//! after its in-flight response, and waits — at most the grace period — until every drain
//! sender is gone.
//!
//! A connection's first request head must be in within the header timeout of its accept
//! (`timeouts.client_header_secs`, `timeouts.publish_idle_secs` on the publish listener), else
//! the connection is closed: [`first_request`] watches that, and its timer is gone as soon as the
//! first request reaches the service. hyper's own HTTP/1.1 header timer, set to the same value,
//! covers the requests after it; it cannot cover the first, because it starts only once
//! hyper-util has told HTTP/1.1 from HTTP/2 by the first bytes, and HTTP/2 has none.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
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
use crate::http::{Body, BoxError};

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
        let timeouts = &app.config.timeouts;
        tracing::info!(
            max_connections = app.config.limits.max_connections,
            descriptors = app.descriptors.total(),
            max_publish_connections = app.descriptors.publish_total(),
            client_header_secs = timeouts.client_header_secs,
            client_body_idle_secs = timeouts.client_body_idle_secs,
            origin_body_idle_secs = timeouts.origin_body_idle_secs,
            publish_idle_secs = timeouts.publish_idle_secs,
            "connection limits"
        );
        let client_builder = builder(&app.config, timeouts.client_header());
        let publish_builder = builder(&app.config, timeouts.publish_idle());
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
            let builder = match kind {
                Kind::Client => client_builder.clone(),
                Kind::Publish => publish_builder.clone(),
            };
            loops.push(tokio::spawn(accept_loop(
                listener,
                kind,
                app.clone(),
                self.api.clone(),
                builder,
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

/// The header field count hyper allows when not told otherwise.
const HYPER_MAX_HEADERS: usize = 100;

/// hyper's connection settings: the header limits, and `head_timeout` for the request heads
/// after a connection's first (HTTP/1.1 keep-alive).
fn builder(config: &Config, head_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let limits = &config.limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .max_buf_size(limits.max_header_size);
    // hyper's own limit is 100, and unset it parses every head with a header index built on the
    // stack in one go; only another value is handed to it.
    if limits.max_headers != HYPER_MAX_HEADERS {
        builder.http1().max_headers(limits.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_size).unwrap_or(u32::MAX));
    builder
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
        // A client waits for room under the connection cap and in the budget; a publisher for
        // a descriptor of the publish share, which it keeps.
        let (permit, publish_held) = match kind {
            Kind::Client => tokio::select! {
                p = room_for_client(&app, &permits) => (Some(p), None),
                _ = stop.stopped() => return,
            },
            Kind::Publish => tokio::select! {
                held = app.descriptors.acquire_publish() => (None, Some(held)),
                _ = stop.stopped() => return,
            },
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
        let held = match publish_held {
            Some(held) => held,
            // Usually at once; if an origin connection took the free descriptor meanwhile, this
            // client waits with its socket open (the reserve covers it).
            None => tokio::select! {
                held = app.descriptors.acquire() => held,
                _ = stop.stopped() => return,
            },
        };
        let _ = stream.set_nodelay(true);
        // The socket and what lives as long as it: the connection's permit and descriptor, and
        // the drain guard. A held stream takes them all from hyper ([`direct`]).
        let cell = Cell::new(stream, (permit, held, drain.clone()));
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
/// begins; a held stream on it is handed to [`direct::write`]. A connection whose first request
/// head is not in within the header timeout is closed without a response.
// Not an `async fn` on purpose: see the comment in the body.
#[allow(clippy::manual_async_fn)]
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
        let head_timeout = match kind {
            Kind::Client => app.config.timeouts.client_header(),
            Kind::Publish => app.config.timeouts.publish_idle(),
        };
        let shared = cell.clone();
        let service = service_fn(move |req| respond(req, &cell, &app, &api, kind, peer));
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(Shared(shared.clone())), service)
            .into_owned();
        tokio::pin!(conn);
        // Boxed: its timer is needed once, at the start, and the task of a connection that then
        // holds a long-poll for minutes should not keep room for it.
        let first = Box::pin(first_request(
            conn.as_mut(),
            shared,
            &mut stop,
            head_timeout,
        ));
        let stopping = match first.await {
            First::Ended(result) => return ended(peer, result),
            First::Silent => {
                tracing::debug!(%peer, ?kind, "no request head within the header timeout; connection closed");
                return;
            }
            First::Stopping => true,
            First::Requested => false,
        };
        let result = if stopping {
            conn.as_mut().graceful_shutdown();
            conn.await
        } else {
            tokio::select! {
                r = conn.as_mut() => r,
                () = stop.stopped() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        };
        ended(peer, result);
    }
}

/// Answers one request of a connection: routes a client's, or hands a publisher's to the publish
/// API; a held stream's response takes the socket from hyper and is written by
/// [`direct::write`].
fn respond(
    mut req: Request<Incoming>,
    cell: &Arc<Cell<Guards>>,
    app: &Arc<App>,
    api: &Arc<crate::publish::Api>,
    kind: Kind,
    peer: SocketAddr,
) -> Pin<Box<impl std::future::Future<Output = Result<hyper::Response<Body>, Infallible>> + Send>> {
    let (app, api, cell) = (app.clone(), api.clone(), cell.clone());
    // Called as hyper hands the head on, within its poll of the connection.
    cell.mark_requested();
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
}

/// Logs how a connection ended, when it was not cleanly.
fn ended(peer: SocketAddr, result: Result<(), BoxError>) {
    if let Err(e) = result {
        tracing::debug!(%peer, error = %crate::http::error_chain(&*e), "connection ended with error");
    }
}

/// What happened first on a new connection.
enum First {
    /// The connection ended (the client left, or sent something hyper refused).
    Ended(Result<(), BoxError>),
    /// A request reached the service: the header timeout is over for this connection.
    Requested,
    /// No request head within the header timeout.
    Silent,
    /// Shutdown began.
    Stopping,
}

/// Drives `conn` until its first request reaches the service (which marks `cell`), it ends,
/// shutdown begins, or `within` passes. The timer lives only as long as this call.
async fn first_request<C>(
    mut conn: Pin<&mut C>,
    cell: Arc<Cell<Guards>>,
    stop: &mut Signal,
    within: Duration,
) -> First
where
    C: Future<Output = Result<(), BoxError>>,
{
    let stopping = stop.stopped();
    let deadline = tokio::time::sleep(within);
    tokio::pin!(stopping, deadline);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = conn.as_mut().poll(cx) {
            return Poll::Ready(First::Ended(result));
        }
        // The service is called inside the poll above, for HTTP/1.1 and HTTP/2 alike.
        if cell.was_requested() {
            return Poll::Ready(First::Requested);
        }
        if stopping.as_mut().poll(cx).is_ready() {
            return Poll::Ready(First::Stopping);
        }
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(First::Silent);
        }
        Poll::Pending
    })
    .await
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
