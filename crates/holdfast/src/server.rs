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
//! first request reaches the service. On a TLS listener ([`crate::tls`]) the handshake comes
//! first, within the same deadline; a held HTTP/1.1 stream then takes the TLS session from hyper
//! as it takes a TCP socket ([`direct`]), while WebSockets over TLS stay on hyper's upgraded
//! connection, and its requests are routed as `ssl=yes` and forwarded with
//! `X-Forwarded-Proto: https`. The publish listener takes the same path when it has a
//! certificate (`[tls] publish_cert`). hyper's own HTTP/1.1 header timer, set to the same value,
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

use http::HeaderValue;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::app::App;
use crate::config::routes::RouteTable;
use crate::config::Config;
use crate::http::{Body, BoxError};

mod direct;

use crate::shutdown::Signal;
use crate::sink::{HeldAnswer, Wire};
use crate::socket::{Cell, ClientSocket, Guards, Shared};

/// A bound, not yet running, Holdfast server.
pub struct Server {
    app: Arc<App>,
    clients: Vec<TcpListener>,
    /// TLS listeners, each with its own acceptor (for its `default_<port>` certificate).
    tls_clients: Vec<(TcpListener, TlsAcceptor)>,
    certs: Option<Arc<crate::tls::Certificates>>,
    publish: TcpListener,
    /// The publish listener's TLS, when it has a certificate, and that certificate's files.
    publish_tls: Option<(TlsAcceptor, Arc<crate::tls::pair::PairFiles>)>,
    /// Pushpin's Prometheus page (`server.prometheus_listen`).
    prometheus: Vec<TcpListener>,
    api: Arc<crate::publish::Api>,
    zmq: crate::zmq::Bound,
}

/// Which service a listener runs.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Client,
    Publish,
    Prometheus,
}

impl Server {
    /// Binds every listener of `config` (port 0 picks a free port).
    pub async fn bind(config: Config, routes: RouteTable) -> std::io::Result<Server> {
        let mut clients = Vec::new();
        for addr in &config.server.listen {
            clients.push(bind(*addr, config.server.reuse_port).await?);
        }
        let certs = crate::tls::Certificates::load(&config.tls).map_err(std::io::Error::other)?;
        let mut tls_clients = Vec::new();
        if let Some(certs) = &certs {
            for addr in &config.tls.listen {
                let listener = bind(*addr, config.server.reuse_port).await?;
                let port = listener.local_addr()?.port();
                let acceptor = certs.acceptor(port).map_err(std::io::Error::other)?;
                tls_clients.push((listener, acceptor));
            }
        }
        let publish = bind(config.server.publish_listen, config.server.reuse_port).await?;
        let publish_tls =
            crate::tls::publish_acceptor(&config.tls).map_err(std::io::Error::other)?;
        let zmq = crate::zmq::bind(&config.zmq)?;
        let mut prometheus = Vec::new();
        for addr in &config.server.prometheus_listen {
            prometheus.push(bind(*addr, config.server.reuse_port).await?);
        }
        let app = App::new(config, routes);
        // A store that cannot be read stops the start, naming the file: serving without the
        // registrations would silently stop every delivery.
        app.webhooks
            .start()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        // The keys were read when the configuration was validated; this reads them again.
        let api = crate::publish::Api::new(app.clone()).map_err(std::io::Error::other)?;
        Ok(Server {
            app,
            clients,
            tls_clients,
            certs,
            publish,
            publish_tls,
            prometheus,
            api: Arc::new(api),
            zmq,
        })
    }

    /// The bound client addresses, in configuration order.
    pub fn client_addrs(&self) -> Vec<SocketAddr> {
        self.clients
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The bound TLS client addresses, in configuration order.
    pub fn tls_addrs(&self) -> Vec<SocketAddr> {
        self.tls_clients
            .iter()
            .filter_map(|(l, _)| l.local_addr().ok())
            .collect()
    }

    /// The bound publish API address.
    pub fn publish_addr(&self) -> SocketAddr {
        self.publish
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The bound addresses of Pushpin's Prometheus page, in configuration order.
    pub fn prometheus_addrs(&self) -> Vec<SocketAddr> {
        self.prometheus
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Where the ZeroMQ sockets are bound (a port 0 in a spec is the port bound).
    pub fn zmq_uris(&self) -> crate::zmq::Uris {
        self.zmq.uris()
    }

    /// The shared state, for tests and embedding.
    pub fn app(&self) -> Arc<App> {
        self.app.clone()
    }

    /// Serves until `shutdown` completes, then drains within the grace period.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let app = self.app;
        let _watcher = crate::reload::spawn(app.clone());
        let publish_pair = self.publish_tls.as_ref().map(|(_, pair)| pair.clone());
        let _cert_watchers = crate::reload::spawn_certs(self.certs.clone(), publish_pair);
        let _bus = app.bus.start();
        let presence = app
            .presence
            .start(&app.config, app.shutdown.signal().into_stopped());
        on_sigusr1(app.clone());
        let _zmq = crate::zmq::start(app.clone(), self.zmq).await;
        let _postgres = crate::postgres::start(app.clone());
        let sweeper = {
            let hub = app.hub.clone();
            let app = app.clone();
            let per_ip = app.per_ip.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(5));
                let mut last = Instant::now();
                loop {
                    every.tick().await;
                    // Connection time, as the connections open at each tick times the time since
                    // the last one.
                    let now = Instant::now();
                    (app.traffic).connected(app.client_connections(), now - last);
                    last = now;
                    hub.sweep();
                    if let Some(per_ip) = &per_ip {
                        per_ip.sweep();
                    }
                }
            })
        };
        let permits = app.client_permits.clone();
        let timeouts = &app.config.timeouts;
        tracing::info!(
            max_connections = app.config.limits.max_connections,
            descriptors = app.descriptors.total(),
            max_publish_connections = app.descriptors.publish_total(),
            client_header_secs = timeouts.client_header_secs,
            client_body_idle_secs = timeouts.client_body_idle_secs,
            origin_body_idle_secs = timeouts.origin_body_idle_secs,
            publish_idle_secs = timeouts.publish_idle_secs,
            max_connections_per_ip = app.config.limits.max_connections_per_ip,
            connection_rate_per_ip = app.config.limits.connection_rate_per_ip,
            "connection limits"
        );
        let limits = &app.config.limits;
        let client_builder = builder(
            &app.config,
            timeouts.client_header(),
            limits.max_header_size,
        );
        let publish_head = (app.config.publish.max_header_size).unwrap_or(limits.max_header_size);
        let publish_builder = builder(&app.config, timeouts.publish_idle(), publish_head);
        let listeners = (self.clients.into_iter().map(|l| (l, Kind::Client, None)))
            .chain((self.tls_clients.into_iter()).map(|(l, a)| (l, Kind::Client, Some(a))))
            .chain(std::iter::once((
                self.publish,
                Kind::Publish,
                self.publish_tls.map(|(acceptor, _)| acceptor),
            )))
            .chain((self.prometheus.into_iter()).map(|l| (l, Kind::Prometheus, None)));
        let mut loops = Vec::new();
        for (listener, kind, tls) in listeners {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, ?kind, tls = tls.is_some(), "listening");
            }
            let builder = match kind {
                Kind::Client => client_builder.clone(),
                Kind::Publish | Kind::Prometheus => publish_builder.clone(),
            };
            loops.push(tokio::spawn(accept_loop(
                listener,
                kind,
                tls,
                app.clone(),
                self.api.clone(),
                builder,
                permits.clone(),
            )));
        }
        shutdown.await;
        let delay = Duration::from_secs(app.config.server.shutdown_delay_secs);
        if !delay.is_zero() {
            tracing::info!(
                delay_secs = delay.as_secs(),
                "shutdown announced: /readyz answers 503, the listeners serve until the delay is over"
            );
            app.shutdown.announce();
            tokio::time::sleep(delay).await;
        }
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
        crate::presence::stop(presence).await;
    }
}

/// The header field count hyper allows when not told otherwise.
const HYPER_MAX_HEADERS: usize = 100;

/// hyper's connection settings: the header limits, `head_timeout` for the request heads after a
/// connection's first (HTTP/1.1 keep-alive), and HTTP/2's stream count, windows and send buffer.
fn builder(
    config: &Config,
    head_timeout: Duration,
    max_header_size: usize,
) -> auto::Builder<TokioExecutor> {
    let limits = &config.limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper adds this to the clock unchecked; a larger one would panic.
        .header_read_timeout(head_timeout.min(crate::deadline::FAR))
        .max_buf_size(max_header_size);
    // hyper's own limit is 100, and unset it parses every head with a header index built on the
    // stack in one go; only another value is handed to it.
    if limits.max_headers != HYPER_MAX_HEADERS {
        builder.http1().max_headers(limits.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(max_header_size).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .initial_stream_window_size(limits.http2_stream_window)
        .initial_connection_window_size(limits.http2_connection_window)
        .max_send_buf_size(limits.http2_max_send_buffer as usize);
    builder
}

async fn bind(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    #[cfg(not(unix))]
    let _ = reuse_port;
    socket
        .bind(addr)
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    socket.listen(4096)
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    listener: TcpListener,
    kind: Kind,
    tls: Option<TlsAcceptor>,
    app: Arc<App>,
    api: Arc<crate::publish::Api>,
    builder: auto::Builder<TokioExecutor>,
    permits: Arc<Semaphore>,
) {
    // Shared by the listener's connections: a held long-poll keeps a handle on it, to serve its
    // connection again once answered.
    let builder = Arc::new(builder);
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
            Kind::Publish | Kind::Prometheus => tokio::select! {
                held = app.descriptors.acquire_publish() => (None, Some(held)),
                _ = stop.stopped() => return,
            },
        };
        // A client's permit waits for the accept; once accepted, it stands for the connection.
        let _accepting = permit.as_ref().map(|_| Accepting::new(&app));
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
        let peer_guard = match (kind, &app.per_ip) {
            (Kind::Client, Some(per_ip)) => match per_ip.admit(peer.ip()) {
                Ok(guard) => Some(guard),
                Err(why) => {
                    tracing::debug!(%peer, cap = why.label(), "connection refused: over the per-address cap");
                    continue;
                }
            },
            _ => None,
        };
        let _ = stream.set_nodelay(true);
        // What lives as long as the socket: the connection's permit and descriptor, the drain
        // guard and the per-address count. A held stream takes them all from hyper ([`direct`]).
        let guards = (permit, held, drain.clone(), peer_guard);
        drop(_accepting);
        let conn = Conn {
            peer,
            kind,
            app: app.clone(),
            api: api.clone(),
            builder: builder.clone(),
            stop: stop.clone(),
            // The header timeout runs from here, the handshake included.
            deadline: crate::deadline::after(head_timeout(&app, kind)),
        };
        match &tls {
            Some(acceptor) => {
                tokio::spawn(serve_tls(acceptor.clone(), stream, guards, conn));
            }
            None => {
                tokio::spawn(serve_connection(Cell::new(stream, guards), conn));
            }
        }
    }
}

/// Logs [`App::log_state`] at every `SIGUSR1`. Installed before the listeners are announced:
/// until it is, a SIGUSR1 would end the process (its default action).
fn on_sigusr1(app: Arc<App>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
            tracing::warn!("cannot listen for SIGUSR1; no state summary on request");
            return;
        };
        tokio::spawn(async move {
            while usr1.recv().await.is_some() {
                app.log_state();
            }
        });
    }
    #[cfg(not(unix))]
    drop(app);
}

/// Counts a client permit that is taken but not yet a connection's, so that
/// [`App::client_connections`] counts connections only.
struct Accepting<'a>(&'a App);

impl<'a> Accepting<'a> {
    fn new(app: &'a App) -> Self {
        app.accepting.fetch_add(1, Ordering::Relaxed);
        Accepting(app)
    }
}

impl Drop for Accepting<'_> {
    fn drop(&mut self) {
        self.0.accepting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The header timeout of a listener's connections.
fn head_timeout(app: &App, kind: Kind) -> Duration {
    match kind {
        Kind::Client => app.config.timeouts.client_header(),
        Kind::Publish | Kind::Prometheus => app.config.timeouts.publish_idle(),
    }
}

/// What serving an accepted connection needs besides its socket.
struct Conn {
    peer: SocketAddr,
    kind: Kind,
    app: Arc<App>,
    api: Arc<crate::publish::Api>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    stop: Signal,
    /// When the first request head must have arrived.
    deadline: Instant,
}

impl Conn {
    /// What serving a connection again, after a response written without hyper, needs; whoever
    /// writes that response sets `deadline` anew once it is written.
    fn again(
        peer: SocketAddr,
        kind: Kind,
        app: &Arc<App>,
        api: &Arc<crate::publish::Api>,
        builder: &Arc<auto::Builder<TokioExecutor>>,
    ) -> Conn {
        Conn {
            peer,
            kind,
            app: app.clone(),
            api: api.clone(),
            builder: builder.clone(),
            stop: app.shutdown.signal(),
            deadline: crate::deadline::after(head_timeout(app, kind)),
        }
    }
}

/// What a client connection runs over: the TCP socket, or a TLS session on it. Either can be
/// taken from hyper by a held stream ([`direct`]), as a [`Wire`].
trait Transport: AsyncRead + AsyncWrite + Unpin + Send + Into<Wire> + 'static {
    /// Requests on it arrived over TLS (routing's `ssl`, `X-Forwarded-Proto`).
    const TLS: bool;

    /// The cell of a plain TCP socket, which a WebSocket may take from hyper after its upgrade;
    /// `None` over TLS, whose WebSockets stay on hyper's upgraded connection.
    fn plain(cell: &Arc<Cell<Guards, Self>>) -> Option<&Arc<Cell<Guards>>>
    where
        Self: Sized;
}

impl Transport for TcpStream {
    const TLS: bool = false;

    fn plain(cell: &Arc<Cell<Guards, Self>>) -> Option<&Arc<Cell<Guards>>> {
        Some(cell)
    }
}

impl Transport for TlsStream<TcpStream> {
    const TLS: bool = true;

    fn plain(_: &Arc<Cell<Guards, Self>>) -> Option<&Arc<Cell<Guards>>> {
        None
    }
}

/// Completes the TLS handshake within the header timeout, then serves the connection. A client
/// that fails the handshake or does not finish it in time is dropped.
// Not an `async fn`, for the reason in `serve_connection`.
#[allow(clippy::manual_async_fn)]
fn serve_tls(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    guards: Guards,
    mut conn: Conn,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        let handshake = tokio::time::timeout_at(conn.deadline, acceptor.accept(stream));
        let stream = tokio::select! {
            r = handshake => match r {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %conn.peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = %conn.peer, "no TLS handshake within the header timeout; connection closed");
                    return;
                }
            },
            () = conn.stop.stopped() => return,
        };
        serve_connection(Cell::new(stream, guards), conn).await;
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
fn serve_connection<S: Transport>(
    cell: Arc<Cell<Guards, S>>,
    conn: Conn,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    // An async block, not an `async fn`: an `async fn` moves its arguments into locals and
    // keeps both copies for the life of the connection (about 300 bytes per connection).
    async move {
        let Conn {
            peer,
            kind,
            app,
            api,
            builder,
            mut stop,
            deadline,
        } = conn;
        let shared = cell.clone();
        let again = builder.clone();
        let service = service_fn(move |req| respond(req, &cell, &app, &api, &again, kind, peer));
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(Shared(shared.clone())), service)
            .into_owned();
        tokio::pin!(conn);
        // Boxed: its timer is needed once, at the start, and the task of a connection that then
        // holds a long-poll for minutes should not keep room for it.
        let first = Box::pin(first_request(conn.as_mut(), shared, &mut stop, deadline));
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
/// [`direct::write`], and so does a held long-poll's, by [`direct::answer_later`].
fn respond<S: Transport>(
    mut req: Request<Incoming>,
    cell: &Arc<Cell<Guards, S>>,
    app: &Arc<App>,
    api: &Arc<crate::publish::Api>,
    builder: &Arc<auto::Builder<TokioExecutor>>,
    kind: Kind,
    peer: SocketAddr,
) -> Pin<Box<impl std::future::Future<Output = Result<hyper::Response<Body>, Infallible>> + Send>> {
    // Called as hyper hands the head on, within its poll of the connection.
    cell.mark_requested();
    let (app, api) = (app.clone(), api.clone());
    let mut later = None;
    let mut can_defer = false;
    if let Some(plain) = S::plain(cell) {
        // Only an upgrade can take the socket; other requests skip the extension map.
        if req.headers().contains_key(hyper::header::UPGRADE) {
            req.extensions_mut().insert(ClientSocket(plain.clone()));
        } else if matches!(kind, Kind::Client) && direct::request_allows(&req) {
            // A long-poll held on this request may leave hyper while it waits.
            can_defer = true;
            later = Some((plain.clone(), direct::keeps_alive(&req), builder.clone()));
        }
    }
    let cell = direct::request_allows(&req).then(|| cell.clone());
    // hyper keeps an allocation the size of this future for the whole life of the
    // connection; boxed, that is a pointer, and the handler's own state is freed as
    // soon as the response head is ready (a held connection can last for hours).
    Box::pin(async move {
        let resp: hyper::Response<Body> = match kind {
            Kind::Client => crate::route::handle(app.clone(), req, peer, S::TLS, can_defer).await,
            Kind::Publish => api.handle(req, peer).await,
            Kind::Prometheus => prometheus_page(&app, &api, &req),
        };
        if let Some(deferred) = crate::http::Deferred::of(&resp) {
            let Some(held) = deferred.take() else {
                return Ok(hyper::Response::new(crate::http::full("")));
            };
            // Only a request with `can_defer` gets a deferred answer, and only on a plain socket.
            if let Some((plain, keep_alive, builder)) = later {
                if let Some(owned) = plain.take() {
                    let (stream, guards) = owned.into_parts();
                    let conn = Conn::again(peer, kind, &app, &api, &builder);
                    let sink = resp.extensions().get::<HeldAnswer>().map(|a| a.0.clone());
                    tokio::spawn(direct::answer_later(
                        stream, guards, held, keep_alive, conn, sink,
                    ));
                    // As for a held stream: hyper finds no socket and ends the connection.
                    return Ok(hyper::Response::new(crate::http::full("")));
                }
                // The socket is gone (a client that left): nothing to answer.
                return Ok(hyper::Response::new(crate::http::full("")));
            }
            return Ok(held.await);
        }
        if direct::eligible(&resp) {
            if let Some(owned) = cell.as_ref().and_then(|c| c.take()) {
                let (stream, guards) = owned.into_parts();
                let count = DirectStreamCount::new(app);
                // The writer's own future is the task: a wrapping `async` block
                // would keep its own copy of the moved socket and response.
                tokio::spawn(direct::write(stream.into(), guards, resp, count));
                // hyper's attempt to write this finds no socket and ends the
                // connection, freeing its buffers.
                return Ok(hyper::Response::new(crate::http::full("")));
            }
        }
        Ok::<_, Infallible>(resp)
    })
}

/// Pushpin's Prometheus page, at any path: Pushpin's five metrics, then Holdfast's own (those of
/// `GET /metrics`). `GET` or `HEAD`, without authentication, as Pushpin serves it; `405` for
/// other methods.
fn prometheus_page(
    app: &App,
    api: &crate::publish::Api,
    req: &Request<Incoming>,
) -> hyper::Response<Body> {
    use hyper::{header, Method, StatusCode};
    let (status, body) = match *req.method() {
        Method::GET | Method::HEAD => {
            let mut text = app.pushpin_metrics();
            text.push_str(&api.metrics_page().into_text_without_eof());
            (StatusCode::OK, text)
        }
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed: the metrics page takes GET or HEAD.\n".to_string(),
        ),
    };
    let mut resp = hyper::Response::new(crate::http::full(body));
    *resp.status_mut() = status;
    let content_type = match status {
        StatusCode::OK => crate::metrics::PUSHPIN_CONTENT_TYPE,
        _ => "text/plain",
    };
    (resp.headers_mut()).insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        (resp.headers_mut()).insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    resp
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
/// shutdown begins, or `deadline` passes. The timer lives only as long as this call.
async fn first_request<C, S>(
    mut conn: Pin<&mut C>,
    cell: Arc<Cell<Guards, S>>,
    stop: &mut Signal,
    deadline: Instant,
) -> First
where
    C: Future<Output = Result<(), BoxError>>,
{
    let stopping = stop.stopped();
    let deadline = tokio::time::sleep_until(deadline);
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
