//! Configuration: the file (Holdfast's TOML or Pushpin's pushpin.conf), command-line overrides,
//! and validation.
//!
//! Loading happens in three steps, each owned here: parse the file into [`Config`] ([`load`]
//! picks the format by the file's syntax: TOML, every section `deny_unknown_fields` so a typo is
//! an error with its line, or Pushpin's INI, mapped by [`pushpin`]), apply command-line flags on
//! top ([`Overrides`]), then [`Config::validate`] returns the first problem, at the line of the
//! value that caused it. Defaults follow Pushpin's where the reference gives one. The routes file
//! has its own parser in [`routes`]. [`Config::to_effective_toml`] prints the result.

mod effective;
pub mod keys;
pub mod outbound;
pub mod postgres;
pub mod presence;
pub mod publish;
pub mod pushpin;
pub mod redis_url;
pub mod routes;
pub mod tls;
pub mod zmq;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use effective::REDACTED;
pub use outbound::{OutboundConfig, WebhooksConfig};
pub use postgres::PostgresConfig;
pub use presence::PresenceConfig;
pub use publish::{PublishConfig, PublishOverrides};
pub use pushpin::{is_pushpin_conf, Report as PushpinReport};
pub use tls::{TlsConfig, TlsOverrides};
pub use zmq::ZmqConfig;

/// Everything Holdfast reads from its configuration file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listeners, routes file and shutdown.
    pub server: ServerConfig,
    /// Size and count limits.
    pub limits: LimitsConfig,
    /// Timeouts towards clients, origins and publishers.
    pub timeouts: TimeoutsConfig,
    /// X-Forwarded-For / X-Forwarded-Proto policy.
    pub forwarding: ForwardingConfig,
    /// GRIP settings: request signing and hold behaviour.
    pub grip: GripConfig,
    /// WebSocket limits: message sizes, close handshakes, WebSocket-over-HTTP buffers.
    pub websocket: WebSocketConfig,
    /// SockJS endpoints (route option `sockjs=`): the iframe page's script, heartbeats,
    /// session timeouts and queues.
    pub sockjs: SockJsConfig,
    /// Bayeux endpoints (route option `bayeux=`): advice, sessions and their queues.
    pub bayeux: BayeuxConfig,
    /// Sequencing, history and origin updates of held sessions.
    pub reliability: ReliabilityConfig,
    /// Sharing publishes between several Holdfast instances through Redis.
    pub cluster: ClusterConfig,
    /// Authentication and input limits of the publish API.
    pub publish: PublishConfig,
    /// TLS termination on client listeners.
    pub tls: TlsConfig,
    /// Pushpin's ZeroMQ sockets: publish inputs, command socket, stats socket.
    pub zmq: ZmqConfig,
    /// Channel state events, subscriber counts and members.
    pub presence: PresenceConfig,
    /// PostgreSQL publish sources: `LISTEN`/`NOTIFY` channels and outbox tables.
    pub postgres: PostgresConfig,
    /// Logging.
    pub log: LogConfig,
    /// The policy for requests to URLs not from the routes file (webhook deliveries).
    pub outbound: OutboundConfig,
    /// Webhook subscribers: delivery, retries, signing, where registrations are kept.
    pub webhooks: WebhooksConfig,
    /// Where the values came from, to point validation errors at a line.
    #[serde(skip)]
    source: Source,
}

/// Where a configuration's values came from.
#[derive(Debug, Clone, Default)]
enum Source {
    /// Defaults and flags only.
    #[default]
    Defaults,
    /// Holdfast's TOML: its text, searched for a field's line.
    Toml(String),
    /// Pushpin's pushpin.conf: the fields it set, each with its file, line and key.
    Pushpin(Vec<FieldOrigin>),
}

/// The pushpin.conf line a field got its value from.
#[derive(Debug, Clone)]
struct FieldOrigin {
    /// The field, as `section.field`.
    field: &'static str,
    /// The file (the pushpin.conf, or the file it includes).
    file: PathBuf,
    /// 1-based line.
    line: usize,
    /// Pushpin's key.
    key: String,
}

/// The smallest `limits.max_header_size` (hyper's smallest read buffer).
pub const MIN_HEADER_SIZE: usize = 8192;
/// HTTP/2's largest flow-control window (RFC 9113 §6.9.1); hyper panics on a larger one.
pub const MAX_HTTP2_WINDOW: u32 = (1 << 31) - 1;

/// A configuration file as read, in the format its syntax shows.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Set when the file is Pushpin's pushpin.conf: its warnings and the values kept for
    /// features not wired yet.
    pub pushpin: Option<PushpinReport>,
}

/// Reads the configuration file at `path`: Pushpin's pushpin.conf when its first section header
/// is `[global]`, `[runner]`, `[proxy]` or `[handler]` ([`is_pushpin_conf`]), Holdfast's TOML
/// otherwise. Relative paths inside it are resolved against its folder.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if is_pushpin_conf(&text) {
        let (config, report) = pushpin::load(path, &text)?;
        return Ok(Loaded {
            config,
            pushpin: Some(report),
        });
    }
    Ok(Loaded {
        config: Config::from_toml(path, text)?,
        pushpin: None,
    })
}

/// `[server]`: where Holdfast listens and what it routes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Client listeners (HTTP and WebSocket). Pushpin's `http_port`, default `0.0.0.0:7999`.
    pub listen: Vec<SocketAddr>,
    /// The private publish/control API. Pushpin's `push_in_http_addr:push_in_http_port`,
    /// default `127.0.0.1:5561`.
    pub publish_listen: SocketAddr,
    /// Routes file in Pushpin's syntax, relative to the config file's folder. Unset: the built-in
    /// routes `* test`.
    pub routes: Option<PathBuf>,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT. Default 10.
    pub shutdown_grace_secs: u64,
    /// Seconds between SIGTERM/SIGINT and the start of the drain, during which `GET /readyz`
    /// answers `503` while every listener keeps serving, so a load balancer can stop sending new
    /// clients before the listeners close. Default 0.
    pub shutdown_delay_secs: u64,
    /// Listeners serving Pushpin's five Prometheus metrics (`request_received`,
    /// `connection_connected`, `connection_minute`, `message_received`, `message_sent`) at any
    /// path, without authentication. Pushpin's `prometheus_port` (every address). Default none.
    pub prometheus_listen: Vec<SocketAddr>,
    /// Put before those five names. Pushpin's `prometheus_prefix`, default empty.
    pub prometheus_prefix: String,
    /// Show error details to clients on every route (Pushpin's `[proxy] debug`). Default false.
    pub debug: bool,
    /// Cross-origin support on every route, as the route option `aco` gives one route: CORS
    /// headers on HTTP responses and JSON-P for `GET` requests with a callback. Pushpin's
    /// `[proxy] auto_cross_origin`. Default false.
    pub auto_cross_origin: bool,
    /// Let a client pick its route by id with a `Pushpin-Route: <id>` request header (the
    /// header is then never passed to origins). Pushpin's `[proxy] accept_pushpin_route`.
    /// Default false.
    pub accept_pushpin_route: bool,
    /// Open every TCP listener with `SO_REUSEPORT`, so a new process with the same
    /// configuration can listen beside this one and take over while it drains (see
    /// docs/deployment.md, "Zero-downtime restart"). Default false.
    pub reuse_port: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 7999))],
            publish_listen: SocketAddr::from(([127, 0, 0, 1], 5561)),
            routes: None,
            shutdown_grace_secs: 10,
            shutdown_delay_secs: 0,
            prometheus_listen: Vec::new(),
            prometheus_prefix: String::new(),
            debug: false,
            auto_cross_origin: false,
            reuse_port: false,
            accept_pushpin_route: false,
        }
    }
}

/// `[limits]`: every bound Holdfast enforces on clients, origins and publishers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Concurrent client connections; further connections wait in the kernel's accept backlog.
    /// Pushpin's `client_maxconn`, default 50000.
    pub max_connections: usize,
    /// Bytes of request line plus headers a client may send (Pushpin's `client_buffer_size`,
    /// default 8192; hyper needs at least 8192). Over it the client gets `431` and the
    /// connection is closed. Over HTTP/2 it bounds the header list.
    pub max_header_size: usize,
    /// Header fields one HTTP/1.1 request may have. Over it the client gets `431` and the
    /// connection is closed. Default 100 (hyper's, as Apache's `LimitRequestFields`); above 100
    /// each request's header index is allocated on the heap instead of the stack.
    pub max_headers: usize,
    /// Bytes of an origin response Holdfast buffers to read GRIP instructions, and of a request
    /// body kept for retries. Pushpin's `MAX_ACCEPT_RESPONSE_BODY`, default 100000.
    pub max_accept_body: usize,
    /// Bytes of a publish request body. Pushpin's `push_in_http_max_body_size`, default 1000000.
    pub max_publish_body: usize,
    /// Distinct channels one connection may be in (an instruction's channels and the target's
    /// `sub=` channels together). An instruction asking for more is refused with `502`, a
    /// WebSocket `subscribe` past it closes the connection with 1011. Pushpin's
    /// `connection_subscription_max`, default 20 (Pushpin ignores the extra channels instead).
    pub max_channels_per_connection: usize,
    /// Published items queued per held connection while it is slow to read; when full the newest
    /// item is dropped and counted. Pushpin's per-session queue, default 100.
    pub connection_queue: usize,
    /// File descriptors client and origin sockets may hold together; 0 (the default) means the
    /// process's open-file limit minus `reserved_descriptors`. Over it new clients wait in the
    /// accept backlog and new origin connections fail with `503`.
    pub descriptors: usize,
    /// Descriptors kept out of that budget for Redis and files opened at run time. Default 512.
    pub reserved_descriptors: usize,
    /// Concurrent connections to the publish API. They have their own share of the open-file
    /// limit, apart from the client and origin budget (`descriptors`) and from
    /// `reserved_descriptors`, so neither side can use up the other's. Over it new publish
    /// connections wait in the accept backlog. Default 1024.
    pub max_publish_connections: usize,
    /// Connections one client address may hold open on the client listeners; a further one is
    /// closed as soon as it is accepted. The address is the TCP peer's, so leave this off behind
    /// a load balancer. 0 (the default) turns it off.
    pub max_connections_per_ip: u32,
    /// New connections per second one client address may open on the client listeners, with
    /// bursts of the same size; a further one is closed as soon as it is accepted. 0 (the
    /// default) turns it off.
    pub connection_rate_per_ip: u32,
    /// Streams one HTTP/2 connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS);
    /// a held stream counts until it ends. Default 200 (hyper's).
    pub http2_max_concurrent_streams: u32,
    /// Bytes of request body an HTTP/2 client may send on one stream before Holdfast reads it
    /// (the initial stream window). Default 1 MiB (hyper's); at most 2^31 - 1.
    pub http2_stream_window: u32,
    /// The same over a whole HTTP/2 connection (the initial connection window). Default 1 MiB
    /// (hyper's); at most 2^31 - 1.
    pub http2_connection_window: u32,
    /// Bytes hyper buffers per HTTP/2 stream for a client that is slow to read, before it stops
    /// taking more from Holdfast. Default 409600 (hyper's 400 KiB); at most 2^31 - 1.
    pub http2_max_send_buffer: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 50_000,
            max_header_size: 8192,
            max_headers: 100,
            max_accept_body: 100_000,
            max_publish_body: 1_000_000,
            max_channels_per_connection: 20,
            connection_queue: 100,
            descriptors: 0,
            reserved_descriptors: 512,
            max_publish_connections: 1024,
            max_connections_per_ip: 0,
            connection_rate_per_ip: 0,
            http2_max_concurrent_streams: 200,
            http2_stream_window: 1024 * 1024,
            http2_connection_window: 1024 * 1024,
            http2_max_send_buffer: 400 * 1024,
        }
    }
}

/// `[timeouts]`: how long Holdfast waits for clients, origins and publishers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// Seconds from a client connection's accept until its first request's head (request line
    /// and headers) has arrived, and from the end of one response until the next request's head
    /// has arrived on an HTTP/1.1 keep-alive connection. Over it the connection is closed
    /// without a response. nginx's `client_header_timeout`, HAProxy's `timeout http-request`.
    /// Default 10.
    pub client_header_secs: u64,
    /// Seconds a client's request body may send nothing while Holdfast waits for it; over it
    /// the origin request is aborted and the client gets `408`. nginx's `client_body_timeout`.
    /// 0 turns it off. Default 30.
    pub client_body_idle_secs: u64,
    /// Seconds an origin's response body may send nothing while Holdfast waits for it: a
    /// relayed body, a GRIP answer's body, a next link's body. Over it the origin connection is
    /// closed; a relayed body is cut (the client sees it end early), a GRIP answer gets `504`.
    /// A held stream's wait for publishes is not an origin read and has no such limit. nginx's
    /// `proxy_read_timeout`. 0 turns it off. Default 60.
    pub origin_body_idle_secs: u64,
    /// Seconds a publish API connection may stay idle: from its accept until its first
    /// request's head, and between requests. Over it the connection is closed. Default 60.
    pub publish_idle_secs: u64,
    /// Seconds to open a TCP (and TLS) connection to one target before trying the next. Default 5.
    pub origin_connect_secs: u64,
    /// Seconds to wait for an origin's response headers; over it the client gets `504`. Default 60.
    pub origin_response_secs: u64,
    /// Seconds an idle pooled origin connection is kept. Default 90.
    pub origin_idle_secs: u64,
    /// Idle keep-alive connections kept per origin target; past it a finished connection is
    /// closed instead of pooled. Default 256.
    pub origin_idle_per_target: usize,
    /// Requests in flight per origin target; more wait for a free slot, in arrival order, within
    /// `origin_response_secs`. Keeps a burst of requests (thousands of long-polls re-polling at
    /// once) on pooled connections instead of opening one connection each. Default 256.
    pub origin_concurrency_per_target: usize,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        Self {
            client_header_secs: 10,
            client_body_idle_secs: 30,
            origin_body_idle_secs: 60,
            publish_idle_secs: 60,
            origin_connect_secs: 5,
            origin_response_secs: 60,
            origin_idle_secs: 90,
            origin_idle_per_target: 256,
            origin_concurrency_per_target: 256,
        }
    }
}

impl TimeoutsConfig {
    /// The client header timeout as a duration.
    pub fn client_header(&self) -> Duration {
        Duration::from_secs(self.client_header_secs)
    }
    /// The client request body idle timeout; `None` when turned off.
    pub fn client_body_idle(&self) -> Option<Duration> {
        (self.client_body_idle_secs > 0).then(|| Duration::from_secs(self.client_body_idle_secs))
    }
    /// The origin response body idle timeout; `None` when turned off.
    pub fn origin_body_idle(&self) -> Option<Duration> {
        (self.origin_body_idle_secs > 0).then(|| Duration::from_secs(self.origin_body_idle_secs))
    }
    /// The publish connection idle timeout as a duration.
    pub fn publish_idle(&self) -> Duration {
        Duration::from_secs(self.publish_idle_secs)
    }
    /// The connect timeout as a duration.
    pub fn origin_connect(&self) -> Duration {
        Duration::from_secs(self.origin_connect_secs)
    }
    /// The response timeout as a duration.
    pub fn origin_response(&self) -> Duration {
        Duration::from_secs(self.origin_response_secs)
    }
}

/// `[forwarding]`: what Holdfast tells origins about the client.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardingConfig {
    /// Rules applied to `X-Forwarded-For`, in order: `"truncate:N"` keeps only the last N existing
    /// values, `"append"` appends the client's address. Default `["append"]` (Pushpin's default is
    /// empty, which passes the header through unchanged: set `[]` for that).
    pub x_forwarded_for: Vec<String>,
    /// The same rules for requests from an upstream GRIP proxy (`grip.upstream_key`), whose
    /// `X-Forwarded-For` can be believed. Pushpin's `x_forwarded_for_trusted`. Default
    /// `["append"]`, as `x_forwarded_for` (Pushpin's default is empty).
    pub x_forwarded_for_trusted: Vec<String>,
    /// `X-Forwarded-Proto` on requests that arrived over TLS: `"proto-only"` (default, as Pushpin)
    /// sets `X-Forwarded-Proto`, `"both"` also sets the legacy `X-Forwarded-Protocol`, `"none"`
    /// sets neither. Values a client sent are always removed.
    pub set_x_forwarded_proto: ForwardedProto,
    /// Treat a request as TLS when the client says `X-Forwarded-Proto: https` (for a TLS
    /// terminator in front of Holdfast). Pushpin's `accept_x_forwarded_protocol`, default false.
    pub accept_x_forwarded_proto: bool,
}

impl Default for ForwardingConfig {
    fn default() -> Self {
        Self {
            x_forwarded_for: vec!["append".to_string()],
            x_forwarded_for_trusted: vec!["append".to_string()],
            set_x_forwarded_proto: ForwardedProto::ProtoOnly,
            accept_x_forwarded_proto: false,
        }
    }
}

/// Which `X-Forwarded-Proto` headers Holdfast sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedProto {
    /// `X-Forwarded-Proto` only.
    ProtoOnly,
    /// `X-Forwarded-Proto` and `X-Forwarded-Protocol`.
    Both,
    /// Neither.
    None,
}

/// One parsed `x_forwarded_for` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XffRule {
    /// Keep only the last N values the client sent.
    Truncate(usize),
    /// Append the client's address.
    Append,
}

/// Pushpin's default `sig_key`, kept for compatibility. A `Grip-Sig` signed with it proves
/// nothing, so Holdfast warns at start when a route signs with it.
pub const DEFAULT_SIG_KEY: &str = "changeme";

/// `[grip]`: request signing and hold behaviour.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GripConfig {
    /// `iss` claim of the `Grip-Sig` JWT sent to origins. Pushpin's `sig_iss`, default `pushpin`
    /// (GRIP libraries check it).
    pub sig_iss: String,
    /// Key of the `Grip-Sig` JWT. A secret signs HS256: a plain string, `base64:<data>`, or
    /// `file:<path>` holding it hex-encoded. A PEM private key signs ES256 (EC P-256) or RS256
    /// (RSA): `file:<path>` (as Pushpin 1.38+), or inline, or `base64:` of the PEM text.
    /// Relative paths are relative to the config file's folder. Pushpin's `sig_key`, default
    /// `changeme` ([`DEFAULT_SIG_KEY`]), which is warned about at start.
    pub sig_key: String,
    /// Seconds a duplicate item id on a channel is remembered and dropped. Pushpin's
    /// `id_cache_ttl`, default 60; 0 turns duplicate detection off.
    pub id_cache_ttl_secs: u64,
    /// Key that marks a request as coming from an upstream GRIP proxy (Fastly Fanout, another
    /// Pushpin or Holdfast in front): a request whose `Grip-Sig` verifies with it (and has not
    /// expired) keeps its `Grip-*` headers, gets no `Grip-Sig` of Holdfast's, and the origin's
    /// GRIP answer is passed to the upstream proxy instead of acted on. In `sig_key`'s forms: a
    /// secret (HS256), or a PEM public key (ES256, RS256). Unset (default): every client's
    /// `Grip-*` headers are removed. Pushpin's `upstream_key`.
    pub upstream_key: Option<String>,
}

impl Default for GripConfig {
    fn default() -> Self {
        Self {
            sig_iss: "pushpin".to_string(),
            sig_key: DEFAULT_SIG_KEY.to_string(),
            id_cache_ttl_secs: 60,
            upstream_key: None,
        }
    }
}

/// `[reliability]`: ordering of published items, per-channel history, and the origin requests
/// Holdfast makes on a held session's behalf.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReliabilityConfig {
    /// Milliseconds an item whose `prev-id` is not the channel's last id waits for its
    /// predecessor before it is delivered anyway. Pushpin's `message_wait`, default 5000.
    pub message_wait_ms: u64,
    /// Items per channel waiting for a predecessor; when full, the oldest is delivered at once.
    /// Pushpin's limit, default 100.
    pub max_pending_per_channel: usize,
    /// Published items with an `id` kept per channel, so a client that resumes from a `prev-id`
    /// is caught up without an origin request. 0 turns history off. Default 64.
    pub history_items: usize,
    /// Seconds an item stays in a channel's history. Default 300.
    pub history_max_age_secs: u64,
    /// Bytes of content all histories together may hold; past it the oldest items of the
    /// channel being published to, then of its shard, are evicted first. Default 64 MiB.
    pub history_max_bytes: usize,
    /// About a second after a channel's first subscription, update its sessions once from the
    /// origin (closes the race between an origin rendering and the hold subscribing). Pushpin's
    /// `update_on_first_subscription`, default true.
    pub update_on_first_subscription: bool,
    /// Origin requests per second all held sessions together may make (retries, next links,
    /// hints, recover); further requests wait their turn. Default 500.
    pub session_requests_per_sec: u32,
}

impl Default for ReliabilityConfig {
    fn default() -> Self {
        Self {
            message_wait_ms: 5000,
            max_pending_per_channel: 100,
            history_items: 64,
            history_max_age_secs: 300,
            history_max_bytes: 64 * 1024 * 1024,
            update_on_first_subscription: true,
            session_requests_per_sec: 500,
        }
    }
}

/// `[cluster]`: several Holdfast instances sharing publishes through Redis. Off (one process, no
/// dependencies) unless `redis` lists a server.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Redis servers, as `redis://[[user]:password@]host[:port][/db]`, `rediss://…` (TLS) or
    /// `unix:///path/to/socket` URLs (`valkey://` and `valkeys://` too). Empty (default):
    /// cluster mode is off. With several, channels are spread over them by a stable hash of the
    /// channel name, so every instance must list the same servers in the same order. `--redis`
    /// (repeatable) replaces this list.
    pub redis: Vec<String>,
    /// PEM file of the certificate authorities `rediss://` servers are checked against, instead
    /// of the system's roots (for a private CA). Relative to the config file's folder.
    /// `--redis-ca-file`.
    pub redis_ca_file: Option<PathBuf>,
    /// Prefix of every Redis key and pubsub channel Holdfast uses (`<prefix>ch:<channel>`,
    /// `<prefix>history:<channel>`), so several deployments can share one Redis. Default
    /// `holdfast:`.
    pub prefix: String,
    /// Seconds an instance stays subscribed to a channel in Redis after its last local
    /// subscriber left, so clients that come straight back (long-polls re-polling) find it
    /// subscribed. 0 unsubscribes at once. Default 60.
    pub unsubscribe_delay_secs: u64,
    /// Seconds a `PING` to Redis may go unanswered before the connection is treated as lost
    /// (pings go every 5 s). Long enough that a busy instance — 15,000 clients disconnecting at
    /// once — does not mistake its own delay for Redis's. Default 10.
    pub ping_timeout_secs: u64,
    /// Seconds any other Redis call — a publish, a history read, a `SUBSCRIBE`, a presence or
    /// webhook-registry command — may go unanswered. Past it a publish answers `503` (Redis may
    /// still apply it) and the connection is treated as lost. Default 2.
    pub command_timeout_secs: u64,
    /// Seconds connecting to a Redis server (TCP, TLS and the handshake) may take. Default 2.
    pub connect_timeout_secs: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis: Vec::new(),
            redis_ca_file: None,
            prefix: "holdfast:".to_string(),
            unsubscribe_delay_secs: 60,
            ping_timeout_secs: 10,
            command_timeout_secs: 2,
            connect_timeout_secs: 2,
        }
    }
}

impl ClusterConfig {
    /// `command_timeout_secs` as a duration.
    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.command_timeout_secs)
    }

    /// `connect_timeout_secs` as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    /// The certificates of `redis_ca_file`, when one is set.
    pub fn redis_ca(&self) -> Result<Option<Vec<u8>>, String> {
        self.redis_ca_file
            .as_deref()
            .map(redis_url::read_ca)
            .transpose()
    }
}

/// `[websocket]`: limits of WebSocket connections (pass-through, GRIP WebSocket and
/// WebSocket-over-HTTP).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Bytes of one WebSocket message (all its fragments together) from a client or an origin.
    /// A longer message closes that connection with 1009. Default 1048576 (1 MiB).
    pub max_message_size: usize,
    /// Bytes each WebSocket reads from its socket at a time; the buffer is allocated per side of
    /// every connection, so it trades memory for read throughput. Default 1024.
    pub read_buffer_size: usize,
    /// Seconds a close handshake may take before the connection is dropped. Default 5.
    pub close_timeout_secs: u64,
    /// WebSocket-over-HTTP: bytes of client messages waiting for the origin to accept them; over
    /// it the connection is closed with 1011. Pushpin's 200000.
    pub over_http_max_pending: usize,
    /// WebSocket-over-HTTP: bytes of an origin's response body; a longer one closes the
    /// connection with 1011. Pushpin's 1000000.
    pub over_http_max_response_body: usize,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            max_message_size: 1_048_576,
            read_buffer_size: 1024,
            close_timeout_secs: 5,
            over_http_max_pending: 200_000,
            over_http_max_response_body: 1_000_000,
        }
    }
}

impl WebSocketConfig {
    /// The close handshake timeout as a duration.
    pub fn close_timeout(&self) -> Duration {
        Duration::from_secs(self.close_timeout_secs)
    }
}

/// `[sockjs]`: SockJS sessions (route option `sockjs=`, see docs/sockjs.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SockJsConfig {
    /// The sockjs-client script that `<prefix>/iframe.html` loads (Pushpin's `[proxy]
    /// sockjs_url`). Default Pushpin's: sockjs-client 0.3.4 from jsDelivr.
    pub url: String,
    /// Seconds without a frame after which a receiving client gets the heartbeat `h`: a
    /// WebSocket or a stream, or a poll that has waited that long. Default 25 (Pushpin's).
    pub heartbeat_secs: u64,
    /// Seconds a session with no client request in progress waits for the next before it
    /// ends (the client is gone); also how long a closed session keeps answering its close
    /// frame. Default 5 (Pushpin's).
    pub disconnect_secs: u64,
    /// Bytes of messages each session holds in each direction: messages for the client that no
    /// request has taken yet, and the client's messages not yet written towards the origin.
    /// When full, the session stops reading that side (backpressure). Default 200000 (Pushpin's).
    pub max_queued: usize,
    /// Bytes one xhr-streaming or eventsource response carries before it ends, so that the
    /// client opens the next and the browser frees the last. Default 131072.
    pub streaming_limit: usize,
    /// SockJS sessions over HTTP transports open at once; a new one past it gets `503`.
    /// Default 10000.
    pub max_sessions: usize,
}

impl Default for SockJsConfig {
    fn default() -> Self {
        Self {
            url: DEFAULT_SOCKJS_URL.to_string(),
            heartbeat_secs: 25,
            disconnect_secs: 5,
            max_queued: 200_000,
            streaming_limit: 131_072,
            max_sessions: 10_000,
        }
    }
}

/// `[bayeux]`: Bayeux sessions (route option `bayeux=`, see docs/bayeux.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BayeuxConfig {
    /// Seconds a `/meta/connect` is held when nothing is queued for its client: the `timeout`
    /// of the advice. Default 30.
    pub timeout_secs: u64,
    /// Milliseconds a client waits between a `/meta/connect`'s answer and the next: the
    /// `interval` of the advice. Default 0.
    pub interval_ms: u64,
    /// Seconds a session lives without a `/meta/connect` beyond `timeout_secs` (a client
    /// between two polls, or reconnecting); then it ends and its client id is unknown.
    /// Default 30.
    pub session_grace_secs: u64,
    /// Bayeux sessions at once; a handshake past it is refused (`503::Too many sessions`).
    /// Default 100000.
    pub max_sessions: usize,
    /// Messages one session holds for its client until the next `/meta/connect` takes them;
    /// when full, the oldest is dropped and counted. Default 1000.
    pub max_queued: usize,
    /// Bytes of one request body or WebSocket frame of Bayeux messages; larger is a `400`
    /// (a close with 1009 on a WebSocket). Default 1048576.
    pub max_request_bytes: usize,
}

impl Default for BayeuxConfig {
    fn default() -> Self {
        Self {
            timeout_secs: 30,
            interval_ms: 0,
            session_grace_secs: 30,
            max_sessions: 100_000,
            max_queued: 1000,
            max_request_bytes: 1 << 20,
        }
    }
}

/// Pushpin's default `sockjs_url`.
pub const DEFAULT_SOCKJS_URL: &str = "http://cdn.jsdelivr.net/sockjs/0.3.4/sockjs.min.js";

/// `[log]`: what Holdfast logs and how.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `error`, `warn`, `info` (default), `debug`, `trace`, or any `tracing` filter directive.
    pub level: String,
    /// `text` (default) or `json`, one object per line.
    pub format: LogFormat,
    /// The share of requests written to the access log, from `0.0` (none) to `1.0` (every
    /// request, the default); a route's `access_log=` option overrides it. A `5xx` answer is
    /// always written unless the share is `0`.
    pub access_sample: f64,
    /// Add the request's `User-Agent` to each access-log line (`user_agent`). Pushpin's
    /// `[proxy] log_user_agent`. Default false.
    pub user_agent: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_string(),
            format: LogFormat::Text,
            access_sample: 1.0,
            user_agent: false,
        }
    }
}

impl LogConfig {
    /// `access_sample` in parts per million, as [`crate::config::routes::RouteOptions::access_log`].
    pub fn access_sample_ppm(&self) -> u32 {
        (self.access_sample.clamp(0.0, 1.0) * 1_000_000.0).round() as u32
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A configuration problem, naming the file and, where known, the line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML did not parse or has an unknown or mistyped field.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("{path}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        /// The file (or `<defaults>`).
        path: PathBuf,
        /// 1-based line of the field, when it came from the file.
        line: Option<usize>,
        /// What is wrong, naming the field and value.
        message: String,
    },
    /// The routes file has a problem.
    #[error(transparent)]
    Routes(#[from] routes::RoutesError),
}

/// Command-line values that override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`, repeatable; replaces `server.listen` when given.
    pub listen: Vec<SocketAddr>,
    /// `--publish-listen`.
    pub publish_listen: Option<SocketAddr>,
    /// `--routes`.
    pub routes: Option<PathBuf>,
    /// `--reuse-port`: sets `server.reuse_port`.
    pub reuse_port: bool,
    /// `--log-level`.
    pub log_level: Option<String>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
    /// `--redis`, repeatable; replaces `cluster.redis` when given.
    pub redis: Vec<String>,
    /// `--redis-ca-file`.
    pub redis_ca_file: Option<PathBuf>,
    /// The `--publish-*` authentication flags.
    pub publish: PublishOverrides,
    /// The `--tls-*` flags.
    pub tls: TlsOverrides,
}

impl Config {
    /// Reads and parses a TOML file. Relative paths inside it are resolved against its folder.
    /// [`load`] reads Pushpin's pushpin.conf too.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(path, text)
    }

    fn from_toml(path: &Path, text: String) -> Result<Config, ConfigError> {
        let mut config = Config::parse(&text, path)?;
        config.source = Source::Toml(text);
        let dir = path.parent().unwrap_or(Path::new("."));
        if let Some(routes) = &config.server.routes {
            if routes.is_relative() {
                config.server.routes = Some(dir.join(routes));
            }
        }
        if let Some(ca) = &config.cluster.redis_ca_file {
            if ca.is_relative() {
                config.cluster.redis_ca_file = Some(dir.join(ca));
            }
        }
        config.grip.sig_key = keys::resolve(&config.grip.sig_key, dir);
        if let Some(key) = &config.grip.upstream_key {
            config.grip.upstream_key = Some(keys::resolve(key, dir));
        }
        config.publish.resolve_paths(dir);
        config.tls.resolve_paths(dir);
        config.webhooks.resolve_paths(dir);
        config.presence.resolve_paths(dir);
        Ok(config)
    }

    /// Parses TOML text; `path` only labels errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(1);
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                message: e.message().to_string(),
            }
        })
    }

    /// Applies command-line flags on top of the file's values. A field a flag sets no longer
    /// counts as coming from a pushpin.conf.
    pub fn apply(&mut self, overrides: Overrides) {
        if !overrides.listen.is_empty() {
            self.server.listen = overrides.listen;
            self.forget_origin("server.listen");
        }
        if let Some(addr) = overrides.publish_listen {
            self.server.publish_listen = addr;
            self.forget_origin("server.publish_listen");
        }
        if overrides.reuse_port {
            self.server.reuse_port = true;
        }
        if let Some(routes) = overrides.routes {
            self.server.routes = Some(routes);
            self.forget_origin("server.routes");
        }
        if let Some(level) = overrides.log_level {
            self.log.level = level;
            self.forget_origin("log.level");
        }
        if !overrides.tls.listen.is_empty() {
            self.forget_origin("tls.listen");
        }
        if overrides.tls.certs.is_some() {
            self.forget_origin("tls.certs");
        }
        if let Some(format) = overrides.log_format {
            self.log.format = format;
        }
        if !overrides.redis.is_empty() {
            self.cluster.redis = overrides.redis;
        }
        if let Some(ca) = overrides.redis_ca_file {
            self.cluster.redis_ca_file = Some(ca);
        }
        self.publish.apply(overrides.publish);
        self.tls.apply(overrides.tls);
    }

    /// Returns the first problem with the values, naming the field (and its line, when the value
    /// came from a file: for a pushpin.conf, the file, line and Pushpin key). `origin` labels
    /// the error otherwise.
    pub fn validate(&self, origin: &Path) -> Result<(), ConfigError> {
        self.check().map_err(|(field, message)| {
            if let Some(o) = self.pushpin_origin(field) {
                return ConfigError::Invalid {
                    path: o.file.clone(),
                    line: Some(o.line),
                    message: format!("{}: {message}", o.key),
                };
            }
            let line = match &self.source {
                Source::Toml(text) => line_of(text, field),
                _ => None,
            };
            ConfigError::Invalid {
                path: origin.to_path_buf(),
                line,
                message: format!("{field}: {message}"),
            }
        })
    }

    fn check(&self) -> Result<(), (&'static str, String)> {
        let fail = |field, message: &str| Err((field, message.to_string()));
        if self.server.listen.is_empty() {
            return fail("server.listen", "at least one address is needed");
        }
        for (field, size) in [
            ("limits.max_header_size", Some(self.limits.max_header_size)),
            ("publish.max_header_size", self.publish.max_header_size),
        ] {
            if let Some(size) = size.filter(|&n| n < MIN_HEADER_SIZE) {
                return Err((
                    field,
                    format!("{size} is below the minimum of {MIN_HEADER_SIZE}"),
                ));
            }
        }
        let prefix = &self.server.prometheus_prefix;
        let name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
        if !prefix.chars().all(name_char) || prefix.starts_with(|c: char| c.is_ascii_digit()) {
            return Err((
                "server.prometheus_prefix",
                format!("{prefix:?}: a metric name prefix has only letters, digits, '_' and ':', and does not start with a digit"),
            ));
        }
        if self.websocket.read_buffer_size < 512 {
            return fail("websocket.read_buffer_size", "must be at least 512");
        }
        let l = &self.limits;
        let t = &self.timeouts;
        let counts = [
            ("limits.max_connections", l.max_connections as u64),
            ("limits.max_headers", l.max_headers as u64),
            (
                "limits.http2_max_concurrent_streams",
                u64::from(l.http2_max_concurrent_streams),
            ),
            (
                "limits.http2_stream_window",
                u64::from(l.http2_stream_window),
            ),
            (
                "limits.http2_connection_window",
                u64::from(l.http2_connection_window),
            ),
            (
                "limits.http2_max_send_buffer",
                u64::from(l.http2_max_send_buffer),
            ),
            (
                "limits.max_publish_connections",
                l.max_publish_connections as u64,
            ),
            ("limits.connection_queue", l.connection_queue as u64),
            (
                "limits.max_channels_per_connection",
                l.max_channels_per_connection as u64,
            ),
            (
                "reliability.session_requests_per_sec",
                u64::from(self.reliability.session_requests_per_sec),
            ),
            (
                "reliability.max_pending_per_channel",
                self.reliability.max_pending_per_channel as u64,
            ),
            (
                "websocket.max_message_size",
                self.websocket.max_message_size as u64,
            ),
            (
                "websocket.over_http_max_pending",
                self.websocket.over_http_max_pending as u64,
            ),
            ("cluster.ping_timeout_secs", self.cluster.ping_timeout_secs),
            (
                "cluster.command_timeout_secs",
                self.cluster.command_timeout_secs,
            ),
            (
                "cluster.connect_timeout_secs",
                self.cluster.connect_timeout_secs,
            ),
            ("sockjs.heartbeat_secs", self.sockjs.heartbeat_secs),
            ("sockjs.disconnect_secs", self.sockjs.disconnect_secs),
            ("sockjs.max_queued", self.sockjs.max_queued as u64),
            ("sockjs.streaming_limit", self.sockjs.streaming_limit as u64),
            ("sockjs.max_sessions", self.sockjs.max_sessions as u64),
            ("bayeux.timeout_secs", self.bayeux.timeout_secs),
            ("bayeux.session_grace_secs", self.bayeux.session_grace_secs),
            ("bayeux.max_sessions", self.bayeux.max_sessions as u64),
            ("bayeux.max_queued", self.bayeux.max_queued as u64),
            (
                "bayeux.max_request_bytes",
                self.bayeux.max_request_bytes as u64,
            ),
            (
                "timeouts.origin_concurrency_per_target",
                t.origin_concurrency_per_target as u64,
            ),
            ("timeouts.origin_connect_secs", t.origin_connect_secs),
            ("timeouts.origin_response_secs", t.origin_response_secs),
            ("timeouts.client_header_secs", t.client_header_secs),
            ("timeouts.publish_idle_secs", t.publish_idle_secs),
        ];
        if let Some((field, _)) = counts.iter().find(|(_, n)| *n == 0) {
            return fail(field, "must be at least 1");
        }
        for (field, n) in [
            ("limits.http2_stream_window", l.http2_stream_window),
            ("limits.http2_connection_window", l.http2_connection_window),
            ("limits.http2_max_send_buffer", l.http2_max_send_buffer),
        ] {
            if n > MAX_HTTP2_WINDOW {
                return Err((
                    field,
                    format!("{n} is above HTTP/2's largest window, {MAX_HTTP2_WINDOW}"),
                ));
            }
        }
        if let Some(c) = self
            .sockjs
            .url
            .chars()
            .find(|c| matches!(c, '"' | '<' | '>' | '&') || c.is_control())
        {
            return Err((
                "sockjs.url",
                format!(
                    "{:?} has {c:?}, which cannot stand in the iframe page's script src",
                    self.sockjs.url
                ),
            ));
        }
        let ca = self
            .cluster
            .redis_ca()
            .map_err(|e| ("cluster.redis_ca_file", e))?;
        if ca.is_some() && !self.cluster.redis.iter().any(|u| redis_url::is_tls(u)) {
            return fail(
                "cluster.redis_ca_file",
                "is set but no cluster.redis URL uses TLS (rediss:// or valkeys://)",
            );
        }
        for (i, url) in self.cluster.redis.iter().enumerate() {
            redis_url::check(url, ca.as_deref()).map_err(|e| ("cluster.redis", e))?;
            if self.cluster.redis[..i].contains(url) {
                return Err((
                    "cluster.redis",
                    format!("{:?} is listed twice", redis_url::redact(url)),
                ));
            }
        }
        self.xff_rules()
            .map_err(|e| ("forwarding.x_forwarded_for", e))?;
        keys::signer(&self.grip.sig_key).map_err(|e| ("grip.sig_key", e))?;
        self.upstream_verifier()
            .map_err(|e| ("grip.upstream_key", e))?;
        self.xff_trusted_rules()
            .map_err(|e| ("forwarding.x_forwarded_for_trusted", e))?;
        self.publish
            .check(self.server.publish_listen, self.publish_open_by_pushpin())?;
        self.tls.check()?;
        self.zmq.check(self.publish.allow_unauthenticated)?;
        self.outbound.check()?;
        self.webhooks.check()?;
        self.presence.check()?;
        self.postgres.check()?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| ("log.level", format!("{:?}: {e}", self.log.level)))?;
        if !(0.0..=1.0).contains(&self.log.access_sample) {
            return Err((
                "log.access_sample",
                format!(
                    "{}: expected a share from 0.0 (no access log) to 1.0 (every request)",
                    self.log.access_sample
                ),
            ));
        }
        Ok(())
    }

    /// The `forwarding.x_forwarded_for` rules, parsed.
    pub fn xff_rules(&self) -> Result<Vec<XffRule>, String> {
        parse_xff_rules(&self.forwarding.x_forwarded_for)
    }

    /// The `forwarding.x_forwarded_for_trusted` rules, parsed.
    pub fn xff_trusted_rules(&self) -> Result<Vec<XffRule>, String> {
        parse_xff_rules(&self.forwarding.x_forwarded_for_trusted)
    }

    /// The key of `grip.upstream_key`, read, when one is set.
    pub fn upstream_verifier(&self) -> Result<Option<grip::sig::Verifier>, String> {
        self.grip
            .upstream_key
            .as_deref()
            .map(keys::verifier)
            .transpose()
    }
}

fn parse_xff_rules(rules: &[String]) -> Result<Vec<XffRule>, String> {
    rules
        .iter()
        .map(|rule| match rule.split_once(':') {
            None if rule == "append" => Ok(XffRule::Append),
            Some(("truncate", n)) => n
                .parse()
                .map(XffRule::Truncate)
                .map_err(|_| format!("{rule:?}: truncate needs a number")),
            _ => Err(format!(
                "unknown rule {rule:?} (expected \"append\" or \"truncate:N\")"
            )),
        })
        .collect()
}

/// The line of `section.key` in TOML text, found by scanning section headers and keys.
fn line_of(text: &str, field: &str) -> Option<usize> {
    let (section, key) = field.split_once('.')?;
    let mut current = "";
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim();
        } else if current == section {
            let Some(rest) = line.strip_prefix(key) else {
                continue;
            };
            if rest.trim_start().starts_with('=') {
                return Some(i + 1);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
