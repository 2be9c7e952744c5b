//! Pushpin's ZeroMQ sockets (reference §4.4, §4.5, §7), in pure Rust (the `zeromq` crate), so
//! the binary needs no libzmq:
//!
//! - the PULL publish input (`zmq.push_in_spec`) and the SUB publish input
//!   (`zmq.push_in_sub_specs`) — [`input`]: each message is one item, read by the same parser
//!   as the publish API's (`grip::publish::parse_zmq_item`), and handed to the [`Bus`], so in
//!   cluster mode it reaches every instance once. The SUB socket is subscribed to exactly the
//!   channels with local subscribers (and for `subscription_linger` after), so an XPUB
//!   publisher sees where the interest is;
//! - the REP command socket (`zmq.command_spec`) — [`command`]: `publish`, `recover`,
//!   `refresh`, `conncheck` and `get-zmq-uris`, answered as Pushpin answers;
//! - the PUB stats socket (`zmq.stats_spec`) — [`stats`]: `conn`, `sub` and `report` packets.
//!
//! Every bound socket's listener is bound by [`bind`] while the server binds its own (so a busy
//! port stops Holdfast at start, with the field named), and the sockets start with [`start`].
//! Bad input is logged with what was wrong and counted in `GET /metrics`; the socket goes on.
//!
//! [`Bus`]: crate::bus::Bus

mod command;
mod input;
mod stats;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use zeromq::{Listener, Socket as _};

use crate::app::App;
use crate::config::zmq::{Spec, ZmqConfig};
use crate::metrics::Page;

/// A listener bound for one socket, and the URI it answers `get-zmq-uris` with.
struct Bind {
    field: &'static str,
    listener: Listener,
    uri: String,
}

/// The ZeroMQ listeners, bound and not yet serving.
#[derive(Default)]
pub struct Bound {
    push: Option<Bind>,
    /// Bound SUB listeners, or (with `push_in_sub_connect`) nothing here and `sub_connect` set.
    subs: Vec<Bind>,
    sub_connect: Vec<String>,
    command: Option<Bind>,
    stats: Option<Bind>,
}

/// The URIs of the bound sockets, as `get-zmq-uris` gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Uris {
    /// The command socket.
    pub command: Option<String>,
    /// The PULL input.
    pub publish_pull: Option<String>,
    /// The (first) SUB input.
    pub publish_sub: Option<String>,
    /// The stats socket.
    pub stats: Option<String>,
}

impl Bound {
    /// Where the sockets are (a port 0 in a spec is the port bound).
    pub fn uris(&self) -> Uris {
        let uri = |b: &Option<Bind>| b.as_ref().map(|b| b.uri.clone());
        Uris {
            command: uri(&self.command),
            publish_pull: uri(&self.push),
            publish_sub: self
                .subs
                .first()
                .map(|b| b.uri.clone())
                .or_else(|| self.sub_connect.first().cloned()),
            stats: uri(&self.stats),
        }
    }
}

/// Binds the listeners of every configured bound socket (validated configuration).
pub fn bind(config: &ZmqConfig) -> std::io::Result<Bound> {
    let one = |field: &'static str, text: &str| -> std::io::Result<Option<Bind>> {
        if text.is_empty() {
            return Ok(None);
        }
        let spec = Spec::parse(text).map_err(std::io::Error::other)?;
        bind_one(field, &spec)
            .map(Some)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{field}: cannot bind {spec}: {e}")))
    };
    let mut bound = Bound {
        push: one("zmq.push_in_spec", &config.push_in_spec)?,
        command: one("zmq.command_spec", &config.command_spec)?,
        stats: one("zmq.stats_spec", &config.stats_spec)?,
        ..Bound::default()
    };
    if config.push_in_sub_connect {
        bound.sub_connect = config.push_in_sub_specs.clone();
    } else {
        for text in &config.push_in_sub_specs {
            bound.subs.extend(one("zmq.push_in_sub_specs", text)?);
        }
    }
    Ok(bound)
}

fn bind_one(field: &'static str, spec: &Spec) -> std::io::Result<Bind> {
    match spec {
        Spec::Tcp { host, .. } => {
            let addr = spec
                .bind_addr()
                .expect("a tcp spec")
                .map_err(std::io::Error::other)?;
            let listener = std::net::TcpListener::bind(addr)?;
            let port = listener.local_addr()?.port();
            let uri = Spec::Tcp {
                host: host.clone(),
                port,
            }
            .to_string();
            Ok(Bind {
                field,
                listener: listener.into(),
                uri,
            })
        }
        Spec::Ipc(path) => {
            // As Pushpin's runner makes its rundir, where its ipc sockets live.
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            remove_stale_socket(path);
            let listener = std::os::unix::net::UnixListener::bind(path)?;
            Ok(Bind {
                field,
                listener: listener.into(),
                uri: spec.to_string(),
            })
        }
    }
}

/// Removes a Unix socket left by an earlier run, as libzmq does before binding; anything that
/// is not a socket is left alone (the bind then fails and says so).
fn remove_stale_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt as _;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}

/// Counts for `GET /metrics`.
#[derive(Default)]
pub(crate) struct Counters {
    pull_received: AtomicU64,
    sub_received: AtomicU64,
    rejected: AtomicU64,
    dropped: AtomicU64,
    unpublished: AtomicU64,
    commands: AtomicU64,
    commands_failed: AtomicU64,
    stats_sent: AtomicU64,
    stats_dropped: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn write(&self, page: &mut Page) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let received = vec![
            (
                vec![("input", "pull".to_string())],
                get(&self.pull_received),
            ),
            (vec![("input", "sub".to_string())], get(&self.sub_received)),
        ];
        page.counters(
            "holdfast_zmq_items_received_total",
            "Messages received on a ZeroMQ publish input",
            received,
        )
        .counter(
            "holdfast_zmq_items_rejected_total",
            "ZeroMQ input messages that were not a valid publish item",
            get(&self.rejected),
        )
        .counter(
            "holdfast_zmq_items_dropped_total",
            "ZeroMQ input items dropped because zmq.message_hwm items were waiting",
            get(&self.dropped),
        )
        .counter(
            "holdfast_zmq_items_unpublished_total",
            "ZeroMQ input items the bus refused (cluster bus unavailable)",
            get(&self.unpublished),
        )
        .counter(
            "holdfast_zmq_commands_total",
            "Requests answered on the ZeroMQ command socket",
            get(&self.commands),
        )
        .counter(
            "holdfast_zmq_commands_failed_total",
            "Of the commands, those answered with success false",
            get(&self.commands_failed),
        )
        .counter(
            "holdfast_zmq_stats_sent_total",
            "Packets sent on the ZeroMQ stats socket",
            get(&self.stats_sent),
        )
        .counter(
            "holdfast_zmq_stats_dropped_total",
            "Stats packets dropped because zmq.stats_queue packets were waiting",
            get(&self.stats_dropped),
        );
    }
}

/// The running sockets; dropping the handle stops them.
pub struct ZmqTasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for ZmqTasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Starts every socket of `bound`.
pub async fn start(app: Arc<App>, bound: Bound) -> ZmqTasks {
    let uris = bound.uris();
    let counters = Arc::new(Counters::default());
    let mut tasks = Vec::new();
    if !app.config.zmq.is_on() {
        return ZmqTasks(tasks);
    }
    let shown = counters.clone();
    app.set_zmq_metrics(Box::new(move |page| shown.write(page)));
    let feed = input::Feed::start(&app, &counters, &mut tasks);
    if let Some(b) = bound.push {
        let mut socket = zeromq::PullSocket::new();
        if adopt(&mut socket, b).await {
            tasks.push(tokio::spawn(input::run_pull(socket, feed.clone())));
        }
    }
    if !bound.subs.is_empty() || !bound.sub_connect.is_empty() {
        let mut options = zeromq::SocketOptions::default();
        options.connect_timeout(input::CONNECT_TIMEOUT);
        let mut socket = zeromq::SubSocket::with_options(options);
        let mut ok = true;
        for b in bound.subs {
            ok &= adopt(&mut socket, b).await;
        }
        if ok {
            let sub = input::Sub::new(&app, socket, bound.sub_connect, feed.clone());
            tasks.push(tokio::spawn(sub.run()));
        }
    }
    if let Some(b) = bound.command {
        let mut socket = zeromq::RepSocket::new();
        if adopt(&mut socket, b).await {
            let commands = command::Commands::new(app.clone(), uris.clone(), counters.clone());
            tasks.push(tokio::spawn(commands.run(socket)));
        }
    }
    if let Some(b) = bound.stats {
        let mut socket = zeromq::PubSocket::new();
        if adopt(&mut socket, b).await {
            tasks.push(stats::start(app.clone(), socket, counters.clone()));
        }
    }
    ZmqTasks(tasks)
}

/// Hands a bound listener to its socket; false (and an error logged) if that fails.
async fn adopt(socket: &mut impl zeromq::Socket, b: Bind) -> bool {
    match socket.bind_listener(b.listener).await {
        Ok(endpoint) => {
            tracing::info!(field = b.field, %endpoint, "zmq: listening");
            true
        }
        Err(e) => {
            tracing::error!(field = b.field, uri = %b.uri, error = %e, "zmq: cannot listen; the socket is off");
            false
        }
    }
}
