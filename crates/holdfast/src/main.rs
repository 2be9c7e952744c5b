//! The `holdfast` command: parse flags, load and validate configuration, run the server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use holdfast::config::routes::RouteTable;
use holdfast::config::{
    Config, LogFormat, Overrides, PublishOverrides, PushpinReport, TlsOverrides, REDACTED,
};
use holdfast::Server;

/// A realtime reverse proxy speaking GRIP, drop-in compatible with Pushpin.
#[derive(Debug, Parser)]
#[command(name = "holdfast", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Client listen address (repeatable). Default 0.0.0.0:7999.
    #[arg(long, value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// TLS client listen address (repeatable), serving HTTPS and wss with `--tls-cert`.
    /// Replaces `tls.listen`. Default: none.
    #[arg(long, value_name = "ADDR")]
    tls_listen: Vec<SocketAddr>,
    /// PEM certificate, followed by its chain, for the TLS listeners. Replaces `tls.cert`.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert` (RSA, ECDSA or Ed25519). Replaces `tls.key`.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Certificate folder laid out as Pushpin's `runner/certs/` (`<servername>.crt` and `.key`,
    /// `_.example.com.crt`, `default_<port>.crt`), picked by SNI and reloaded on change.
    /// Replaces `tls.certs`.
    #[arg(long, value_name = "DIR")]
    tls_certs: Option<PathBuf>,
    /// PEM certificate (with its chain) for the publish API, which then speaks HTTPS only.
    /// Replaces `tls.publish_cert`.
    #[arg(long, value_name = "FILE")]
    publish_tls_cert: Option<PathBuf>,
    /// PEM private key of `--publish-tls-cert`. Replaces `tls.publish_key`.
    #[arg(long, value_name = "FILE")]
    publish_tls_key: Option<PathBuf>,
    /// Publish/control API listen address. Default 127.0.0.1:5561.
    #[arg(long, value_name = "ADDR")]
    publish_listen: Option<SocketAddr>,
    /// Routes file in Pushpin's syntax. Default: the built-in `* test`.
    #[arg(long, value_name = "FILE")]
    routes: Option<PathBuf>,
    /// Listen with SO_REUSEPORT, so a new process can take over the ports while this one
    /// drains. Sets `server.reuse_port`.
    #[arg(long)]
    reuse_port: bool,
    /// Configuration file: Holdfast's TOML, or Pushpin's pushpin.conf (told apart by its
    /// first section header).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log level or tracing filter (error, warn, info, debug, trace).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Log format.
    #[arg(long, value_enum)]
    log_format: Option<LogFormatArg>,
    /// Redis server for cluster mode, as `redis://host:port`, or `rediss://host:port` for TLS
    /// (repeatable: channels are spread over several by a stable hash). Replaces
    /// `cluster.redis`. Default: one process, no Redis.
    #[arg(long, value_name = "URL")]
    redis: Vec<String>,
    /// PEM file of the certificate authorities `rediss://` Redis servers are checked against,
    /// instead of the system's roots. Replaces `cluster.redis_ca_file`.
    #[arg(long, value_name = "FILE")]
    redis_ca_file: Option<PathBuf>,
    /// Key a publish API JWT may be signed with (repeatable, for rotation): a secret (HS256) as
    /// `sig_key` takes it (plain, `base64:…`, `file:PATH` holding hex), or `file:PATH` holding a
    /// PEM public key (EC P-256: ES256, RSA: RS256). Replaces `publish.jwt_key`.
    #[arg(long, value_name = "KEY")]
    publish_jwt_key: Vec<String>,
    /// The `iss` a publish API JWT must carry. Default: any.
    #[arg(long, value_name = "ISS")]
    publish_jwt_iss: Option<String>,
    /// Static token accepted as `Authorization: Bearer TOKEN` by the publish API (repeatable).
    /// Replaces `publish.token`.
    #[arg(long, value_name = "TOKEN")]
    publish_token: Vec<String>,
    /// `USER:PASS` accepted as HTTP Basic credentials by the publish API (repeatable). Replaces
    /// `publish.basic`.
    #[arg(long, value_name = "USER:PASS")]
    publish_basic: Vec<String>,
    /// Serve the publish API without authentication on a non-loopback address (refused
    /// otherwise).
    #[arg(long)]
    publish_allow_unauthenticated: bool,
    /// Validate the configuration and routes, print the effective configuration, then exit: 0
    /// if valid, 2 with the first problem.
    #[arg(long)]
    check_config: bool,
}

/// What `holdfast` does besides serving.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Publish one item to a Holdfast (or Pushpin) publish API, as `pushpin-publish` does.
    Publish(Box<holdfast::publisher::PublishArgs>),
    /// Ask a running Holdfast whether it is ready (`GET /readyz`): exit 0 if so, 1 if not.
    /// For container health checks, where there is no curl.
    Health {
        /// The probe to ask.
        #[arg(long, default_value = "http://127.0.0.1:5561/readyz")]
        url: String,
    },
    /// Print the man page (roff) to standard output.
    #[command(hide = true)]
    Manpage,
}

/// The configuration, ready to run.
struct Loaded {
    config: Config,
    routes: RouteTable,
    /// The file the configuration came from, when there is one.
    file: Option<PathBuf>,
    /// Set when the file was Pushpin's pushpin.conf.
    pushpin: Option<PushpinReport>,
}

impl Loaded {
    /// Every startup warning about the configuration, in the order they are logged.
    fn warnings(&self) -> Vec<String> {
        let pushpin = self.pushpin.iter().flat_map(|p| p.warnings.iter().cloned());
        pushpin
            .chain(self.routes.warnings.iter().map(|w| w.to_string()))
            .chain(
                self.routes
                    .default_sig_key_warning(&self.config.grip.sig_key),
            )
            .collect()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Publish(args)) => return publish(args),
        Some(Command::Health { url }) => return health(url),
        Some(Command::Manpage) => return manpage(),
        None => {}
    }
    let loaded = match load(&cli) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("holdfast: {e:#}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        return check_config(&loaded);
    }
    init_tracing(&loaded.config);
    // Before any socket is opened, so the descriptor budget is taken from the raised limit.
    let open_files = holdfast::descriptors::raise_open_file_limit();
    tracing::debug!(?open_files, "open-file limit");
    for w in loaded.warnings() {
        tracing::warn!("{w}");
    }
    if let Some(w) = loaded.config.open_publish_api_warning() {
        tracing::warn!(addr = %loaded.config.server.publish_listen, "{w}");
        if loaded.config.publish_open_by_pushpin() {
            // Also where no log filter can hide it.
            eprintln!("holdfast: WARNING: {w}");
        }
    }
    let Loaded { config, routes, .. } = loaded;
    // Every scheduler tick takes the oldest task from the shared queue before the worker's own.
    // A publish to thousands of long-polls wakes their tasks at once, and most of them overflow
    // into the shared queue; by default the re-polls that the first answers bring back (woken
    // by I/O into the workers' own queues) would run ahead of the answers still waiting there,
    // each with its origin round trip. This way the answers go out first.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .global_queue_interval(1)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("holdfast: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, routes)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("holdfast: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `holdfast publish`: prints the API's answer and exits 0, or the error and exits 1.
fn publish(args: &holdfast::publisher::PublishArgs) -> ExitCode {
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(holdfast::publisher::run(args)));
    match outcome {
        Ok(answer) => {
            println!("{answer}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("holdfast publish: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `holdfast health`: prints the probe's answer; exit 0 on `200`, else 1.
fn health(url: &str) -> ExitCode {
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(holdfast::publisher::probe(url)));
    match outcome {
        Ok(answer) => {
            print!("{answer}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("holdfast health: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `holdfast manpage`: the man page from the same definitions as `--help`.
fn manpage() -> ExitCode {
    use clap::CommandFactory as _;
    let mut out = std::io::stdout().lock();
    match clap_mangen::Man::new(Cli::command()).render(&mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("holdfast manpage: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--check-config`: the warnings on stderr, the effective configuration on stdout.
fn check_config(loaded: &Loaded) -> ExitCode {
    for w in loaded.warnings() {
        eprintln!("holdfast: warning: {w}");
    }
    if let Some(w) = loaded.config.open_publish_api_warning() {
        eprintln!("holdfast: warning: {w}");
    }
    let toml = match loaded.config.to_effective_toml() {
        Ok(toml) => toml,
        Err(e) => {
            eprintln!("holdfast: cannot print the configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let source = match (&loaded.file, &loaded.pushpin) {
        (None, _) => "the defaults".to_string(),
        (Some(file), None) => format!("{} (Holdfast's TOML)", file.display()),
        (Some(file), Some(p)) => match &p.include {
            Some(include) if include.is_file() => format!(
                "{} (Pushpin's pushpin.conf, including {})",
                file.display(),
                include.display()
            ),
            _ => format!("{} (Pushpin's pushpin.conf)", file.display()),
        },
    };
    let count = match loaded.routes.routes.len() {
        1 => "1 route".to_string(),
        n => format!("{n} routes"),
    };
    let routes = match &loaded.config.server.routes {
        Some(path) => format!("{}, {count}", path.display()),
        None => format!("the built-in routes, {count}"),
    };
    println!(
        "# The effective configuration: {source}, then the command line.\n\
         # Routes: {routes}. Secrets are shown as \"{REDACTED}\".\n\n{toml}"
    );
    eprintln!("holdfast: configuration ok ({routes})");
    ExitCode::SUCCESS
}

fn load(cli: &Cli) -> anyhow::Result<Loaded> {
    let (mut config, pushpin) = match &cli.config {
        Some(path) => {
            let loaded = holdfast::config::load(path)?;
            (loaded.config, loaded.pushpin)
        }
        None => (Config::default(), None),
    };
    let origin = cli.config.clone().unwrap_or_else(|| "<defaults>".into());
    config.apply(Overrides {
        listen: cli.listen.clone(),
        publish_listen: cli.publish_listen,
        routes: cli.routes.clone(),
        reuse_port: cli.reuse_port,
        log_level: cli.log_level.clone(),
        log_format: cli.log_format.map(LogFormat::from),
        redis: cli.redis.clone(),
        redis_ca_file: cli.redis_ca_file.clone(),
        publish: PublishOverrides {
            jwt_key: cli.publish_jwt_key.clone(),
            jwt_iss: cli.publish_jwt_iss.clone(),
            token: cli.publish_token.clone(),
            basic: cli.publish_basic.clone(),
            allow_unauthenticated: cli.publish_allow_unauthenticated,
        },
        tls: TlsOverrides {
            listen: cli.tls_listen.clone(),
            cert: cli.tls_cert.clone(),
            key: cli.tls_key.clone(),
            certs: cli.tls_certs.clone(),
            publish_cert: cli.publish_tls_cert.clone(),
            publish_key: cli.publish_tls_key.clone(),
        },
    });
    config.validate(&origin)?;
    // Read here so that a bad certificate or key stops Holdfast with exit code 2, the file named;
    // binding reads them again.
    holdfast::tls::Certificates::load(&config.tls)?;
    holdfast::tls::publish_acceptor(&config.tls)?;
    let routes = match &config.server.routes {
        Some(path) => RouteTable::load(path)?,
        None => RouteTable::builtin(),
    };
    Ok(Loaded {
        config,
        routes,
        file: cli.config.clone(),
        pushpin,
    })
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(config: Config, routes: RouteTable) -> anyhow::Result<()> {
    let server = Server::bind(config, routes)
        .await
        .context("binding listeners")?;
    server.run(shutdown_signal()).await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// `--log-format`: the command line's names for [`LogFormat`], so the config module does not
/// depend on the command-line parser.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(arg: LogFormatArg) -> LogFormat {
        match arg {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}
