//! Pushpin's own configuration file, `pushpin.conf`, read as it is and mapped onto [`Config`].
//!
//! `--config FILE` reads a file as Pushpin's when its first section header is `[global]`,
//! `[runner]`, `[proxy]` or `[handler]` ([`is_pushpin_conf`]); Holdfast's TOML uses none of those
//! names, and the file's name does not matter. [`ini`] reads the syntax as Qt's INI reader does,
//! [`settings`] adds the include and the `{libdir}`-style templates as Pushpin's `Settings` does,
//! and this module maps every key onto the native configuration:
//!
//! - A key Holdfast has a feature for sets that field, with Pushpin's default where the key is
//!   absent and Pushpin's default differs from Holdfast's (`x_forwarded_for`,
//!   `x_forwarded_for_trusted`, `set_x_forwarded_protocol`, `id_cache_ttl`). Paths (`routesfile`,
//!   `runner/certs/`, `file:` keys) are relative to the config file's folder.
//! - A key for a feature Holdfast does not have yet has its value checked and gets one warning.
//! - A key that is Pushpin's own plumbing (`rundir`, `services`, ZeroMQ wiring) or that Holdfast
//!   does not know gets one warning.
//! - A value Holdfast cannot accept is an error `FILE:LINE: key: what is wrong`.
//!
//! The field origins are kept in the [`Config`], so that validation errors name the Pushpin key
//! and its line, and so that an unauthenticated publish API on a non-loopback
//! `push_in_http_addr` starts (with a loud warning) instead of being refused: Pushpin has no
//! publish authentication, and Docker setups bind `push_in_http_addr=0.0.0.0`.

pub mod ini;
pub mod settings;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use self::ini::Value;
use self::settings::{Setting, Settings, Warning};
use super::{
    keys, Config, ConfigError, FieldOrigin, ForwardedProto, Source, XffRule, MIN_HEADER_SIZE,
};

/// The sections of a pushpin.conf.
const SECTIONS: [&str; 4] = ["global", "runner", "proxy", "handler"];

/// What reading a pushpin.conf found besides the configuration.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// One line per key Holdfast ignores or changes, and per repeated key or missing include,
    /// each `FILE:LINE: key: …`.
    pub warnings: Vec<String>,
    /// The file `[global] include` named, when it named one (whether or not it exists).
    pub include: Option<PathBuf>,
    /// The folder `{libdir}` stood for.
    pub libdir: PathBuf,
}

/// Whether `text` is Pushpin's pushpin.conf rather than Holdfast's TOML: its first section
/// header is `[global]`, `[runner]`, `[proxy]` or `[handler]`.
pub fn is_pushpin_conf(text: &str) -> bool {
    let first_header = text
        .lines()
        .map(str::trim)
        .find_map(|line| line.strip_prefix('['));
    match first_header {
        Some(rest) if !rest.starts_with('[') => {
            let name = rest.split(']').next().unwrap_or_default().trim();
            SECTIONS.contains(&name)
        }
        _ => false,
    }
}

/// Reads the pushpin.conf at `path`, whose text is `text`, and the file it includes.
pub fn load(path: &Path, text: &str) -> Result<(Config, Report), ConfigError> {
    let settings = Settings::load(path, text)?;
    let mut m = Mapper {
        settings: &settings,
        config: pushpin_defaults(),
        origins: Vec::new(),
        used: HashSet::new(),
        warnings: settings.warnings().to_vec(),
    };
    m.runner()?;
    m.proxy()?;
    m.forwarding()?;
    m.signing()?;
    m.publish_listen()?;
    m.prometheus()?;
    m.zmq()?;
    m.handler()?;
    m.the_rest()?;
    let mut config = m.config;
    config.source = Source::Pushpin(m.origins);
    // In file order: the main file's lines, then the included file's.
    let mut warnings = m.warnings;
    warnings.sort_by_key(|(file, line, _)| (file.as_path() != path, *line));
    Ok((
        config,
        Report {
            warnings: (warnings.into_iter())
                .map(|(file, line, text)| format!("{}:{line}: {text}", file.display()))
                .collect(),
            include: settings.include_path().map(Path::to_path_buf),
            libdir: settings.libdir().to_path_buf(),
        },
    ))
}

/// What a configuration remembers of the pushpin.conf it came from.
impl Config {
    /// Forgets where `field` came from, once a flag has set it.
    pub(super) fn forget_origin(&mut self, field: &str) {
        if let Source::Pushpin(origins) = &mut self.source {
            origins.retain(|o| o.field != field);
        }
    }

    /// The pushpin.conf line `field` got its value from, when it did.
    pub(super) fn pushpin_origin(&self, field: &str) -> Option<&FieldOrigin> {
        match &self.source {
            Source::Pushpin(origins) => origins.iter().find(|o| o.field == field),
            _ => None,
        }
    }

    /// Whether the publish API may listen on a non-loopback address without authentication
    /// because a pushpin.conf put it there: Pushpin has no publish authentication, so its
    /// `push_in_http_addr` keeps its meaning (with a warning) instead of refusing to start.
    pub fn publish_open_by_pushpin(&self) -> bool {
        self.pushpin_origin("server.publish_listen").is_some()
    }

    /// The startup warning for a publish API that anyone who can reach its address may use: a
    /// non-loopback `server.publish_listen` with no authentication, allowed by
    /// `publish.allow_unauthenticated` or by a pushpin.conf (then louder, naming its line).
    /// `None` when the publish API is on loopback or authenticated.
    pub fn open_publish_api_warning(&self) -> Option<String> {
        let listen = self.server.publish_listen;
        if listen.ip().is_loopback() || self.publish.is_authenticated() {
            return None;
        }
        let Some(o) = self.pushpin_origin("server.publish_listen") else {
            return Some(format!(
                "the publish API accepts publishes from anyone who can reach {listen}: it has no \
                 authentication (--publish-allow-unauthenticated)"
            ));
        };
        Some(format!(
            "{}:{}: {}: the publish API listens on {listen} with NO AUTHENTICATION: anyone who \
             can reach that address can publish to every client. Holdfast starts because this \
             is what the pushpin.conf means (Pushpin has no publish authentication), where its \
             own configuration would refuse to. Configure --publish-token, --publish-basic or \
             --publish-jwt-key, or set push_in_http_addr=127.0.0.1 if only this host publishes",
            o.file.display(),
            o.line,
            o.key
        ))
    }
}

/// Holdfast's defaults with Pushpin's where a pushpin.conf without the key means something else:
/// no `X-Forwarded-For` rules (the header passes unchanged), no `X-Forwarded-Proto`, no
/// duplicate-id cache.
fn pushpin_defaults() -> Config {
    let mut config = Config::default();
    config.forwarding.x_forwarded_for = Vec::new();
    config.forwarding.x_forwarded_for_trusted = Vec::new();
    config.forwarding.set_x_forwarded_proto = ForwardedProto::None;
    config.grip.id_cache_ttl_secs = 0;
    config
}

struct Mapper<'a> {
    settings: &'a Settings,
    config: Config,
    origins: Vec<FieldOrigin>,
    used: HashSet<(&'static str, &'static str)>,
    warnings: Vec<Warning>,
}

impl<'a> Mapper<'a> {
    /// The value of `section`/`key`, marked as read.
    fn take(&mut self, section: &'static str, key: &'static str) -> Option<Setting<'a>> {
        self.used.insert((section, key));
        self.settings.get(section, key)
    }

    /// Records that `field` got its value from `s`.
    fn origin(&mut self, field: &'static str, s: &Setting<'_>) {
        self.origins.push(FieldOrigin {
            field,
            file: s.file.to_path_buf(),
            line: s.line,
            key: s.key.to_string(),
        });
    }

    /// Reads `section`/`key` with `parse` and records it as `field`'s origin; a value `parse`
    /// refuses is the error `FILE:LINE: key: …`.
    fn read<T>(
        &mut self,
        section: &'static str,
        key: &'static str,
        field: &'static str,
        parse: impl FnOnce(&Value) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        let Some(s) = self.take(section, key) else {
            return Ok(None);
        };
        let value = parse(&s.value).map_err(|m| s.error(m))?;
        self.origin(field, &s);
        Ok(Some(value))
    }

    fn warn(&mut self, s: &Setting<'_>, message: impl std::fmt::Display) {
        (self.warnings).push((
            s.file.to_path_buf(),
            s.line,
            format!("{}: {message}", s.key),
        ));
    }

    /// `[runner]`: the listeners, the connection and header limits, the log level.
    fn runner(&mut self) -> Result<(), ConfigError> {
        if let Some(listen) = self.read("runner", "http_port", "server.listen", |v| {
            let addrs = listen_addrs(v, 0)?;
            if addrs.is_empty() {
                return Err("no port; Holdfast needs at least one plain HTTP listener".into());
            }
            Ok(addrs)
        })? {
            self.config.server.listen = listen;
        }
        if let Some(s) = self.take("runner", "https_ports") {
            let listen = listen_addrs(&s.value, 1).map_err(|m| s.error(m))?;
            if !listen.is_empty() {
                self.config.tls.listen = listen;
                self.config.tls.certs = Some(self.settings.dir().join("runner/certs"));
                self.origin("tls.listen", &s);
                self.origin("tls.certs", &s);
            }
        }
        if let Some(n) = self.read("runner", "client_maxconn", "limits.max_connections", |v| {
            at_least(v, 1)
        })? {
            self.config.limits.max_connections = n;
        }
        if let Some(s) = self.take("runner", "client_buffer_size") {
            let mut n: usize = at_least(&s.value, 1).map_err(|m| s.error(m))?;
            if n < MIN_HEADER_SIZE {
                self.warn(
                    &s,
                    format_args!(
                        "{n} is below Holdfast's minimum of {MIN_HEADER_SIZE}, which is used \
                         instead (requests with larger headers than Pushpin took are accepted)"
                    ),
                );
                n = MIN_HEADER_SIZE;
            }
            self.config.limits.max_header_size = n;
            self.origin("limits.max_header_size", &s);
        }
        if let Some(s) = self.take("runner", "log_level") {
            let (level, per_service) = log_level(&s.value).map_err(|m| s.error(m))?;
            self.config.log.level = level.to_string();
            self.origin("log.level", &s);
            if !per_service.is_empty() {
                self.warn(
                    &s,
                    format_args!(
                        "the levels of Pushpin's services ({}) are ignored: Holdfast is one \
                         process; --log-level takes a tracing filter (holdfast=debug,hyper=info)",
                        per_service.join(", ")
                    ),
                );
            }
        }
        Ok(())
    }

    /// `[proxy]`: the routes file, debug, CORS, the access log.
    fn proxy(&mut self) -> Result<(), ConfigError> {
        let dir = self.settings.dir().to_path_buf();
        if let Some(routes) = self.read("proxy", "routesfile", "server.routes", |v| {
            match v.one()? {
                "" => Err("empty; remove the line to use the built-in routes (* test)".into()),
                path => Ok(dir.join(path)),
            }
        })? {
            self.config.server.routes = Some(routes);
        }
        if let Some(debug) = self.read("proxy", "debug", "server.debug", boolean)? {
            self.config.server.debug = debug;
        }
        if let Some(aco) = self.read(
            "proxy",
            "auto_cross_origin",
            "server.auto_cross_origin",
            boolean,
        )? {
            self.config.server.auto_cross_origin = aco;
        }
        if let Some(accept) = self.read(
            "proxy",
            "accept_pushpin_route",
            "server.accept_pushpin_route",
            boolean,
        )? {
            self.config.server.accept_pushpin_route = accept;
        }
        if let Some(url) = self.read("proxy", "sockjs_url", "sockjs.url", |v| {
            Ok(v.one()?.to_string())
        })? {
            self.config.sockjs.url = url;
        }
        if let Some(ua) = self.read("proxy", "log_user_agent", "log.user_agent", boolean)? {
            self.config.log.user_agent = ua;
        }
        if let Some(s) = self.take("proxy", "log_from") {
            if !boolean(&s.value).map_err(|m| s.error(m))? {
                self.warn(
                    &s,
                    "false has no effect: Holdfast's access log always has the client's \
                     address (from)",
                );
            }
        }
        Ok(())
    }

    /// `[proxy]`: `X-Forwarded-For` and `X-Forwarded-Proto`.
    fn forwarding(&mut self) -> Result<(), ConfigError> {
        if let Some(accept) = self.read(
            "proxy",
            "accept_x_forwarded_protocol",
            "forwarding.accept_x_forwarded_proto",
            boolean,
        )? {
            self.config.forwarding.accept_x_forwarded_proto = accept;
        }
        if let Some(set) = self.read(
            "proxy",
            "set_x_forwarded_protocol",
            "forwarding.set_x_forwarded_proto",
            |v| match v.one()? {
                "true" => Ok(ForwardedProto::Both),
                "proto-only" => Ok(ForwardedProto::ProtoOnly),
                "false" | "" => Ok(ForwardedProto::None),
                other => Err(format!("{other:?} is not true, proto-only or false")),
            },
        )? {
            self.config.forwarding.set_x_forwarded_proto = set;
        }
        let rules = |v: &Value| {
            let rules: Vec<String> = v.items().iter().map(|s| s.to_string()).collect();
            Ok(pushpin_xff_order(&super::parse_xff_rules(&rules)?))
        };
        if let Some(r) = self.read(
            "proxy",
            "x_forwarded_for",
            "forwarding.x_forwarded_for",
            rules,
        )? {
            self.config.forwarding.x_forwarded_for = r;
        }
        if let Some(r) = self.read(
            "proxy",
            "x_forwarded_for_trusted",
            "forwarding.x_forwarded_for_trusted",
            rules,
        )? {
            self.config.forwarding.x_forwarded_for_trusted = r;
        }
        Ok(())
    }

    /// `[proxy]`: `Grip-Sig` and the upstream key.
    fn signing(&mut self) -> Result<(), ConfigError> {
        let dir = self.settings.dir().to_path_buf();
        if let Some(s) = self.take("proxy", "sig_iss") {
            self.config.grip.sig_iss = s.value.one().map_err(|m| s.error(m))?.to_string();
            self.origin("grip.sig_iss", &s);
            if self.config.grip.sig_iss.is_empty() {
                self.warn(
                    &s,
                    "empty: Pushpin then sends no Grip-Sig; Holdfast signs every request, with an \
                     empty iss",
                );
            }
        }
        if let Some(s) = self.take("proxy", "sig_key") {
            match s.value.one().map_err(|m| s.error(m))? {
                "" => self.warn(
                    &s,
                    "empty: Pushpin then sends no Grip-Sig; Holdfast signs every request, and \
                     keeps its default key (changeme)",
                ),
                key => {
                    self.config.grip.sig_key = keys::resolve(key, &dir);
                    self.origin("grip.sig_key", &s);
                }
            }
        }
        if let Some(key) = self.read("proxy", "upstream_key", "grip.upstream_key", |v| {
            Ok(v.one()?.to_string())
        })? {
            self.config.grip.upstream_key = (!key.is_empty()).then(|| keys::resolve(&key, &dir));
        }
        Ok(())
    }

    /// `[handler] push_in_http_addr` and `push_in_http_port` (plus `[global] port_offset`).
    fn publish_listen(&mut self) -> Result<(), ConfigError> {
        let addr = self.take("handler", "push_in_http_addr");
        let port = self.take("handler", "push_in_http_port");
        let ip = match &addr {
            Some(s) => match s.value.one().map_err(|m| s.error(m))? {
                // Pushpin listens on every address when it has none.
                "" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                text => text
                    .parse()
                    .map_err(|_| s.error(format_args!("{text:?} is not an IP address")))?,
            },
            None if port.is_some() => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            None => return Ok(()),
        };
        let number = match &port {
            Some(s) => {
                let n: u16 = number(&s.value).map_err(|m| s.error(m))?;
                let offset = self.settings.port_offset();
                if n > 0 && offset != 0 {
                    u16::try_from(i64::from(n) + i64::from(offset)).map_err(|_| {
                        s.error(format_args!("{n} plus port_offset {offset} is not a port"))
                    })?
                } else {
                    n
                }
            }
            None => {
                let addr = addr.as_ref().expect("an address or a port");
                self.warn(
                    addr,
                    "without push_in_http_port Pushpin serves no HTTP publish API; Holdfast \
                     serves it on port 5561",
                );
                5561
            }
        };
        self.config.server.publish_listen = SocketAddr::new(ip, number);
        let from = addr.or(port).expect("an address or a port");
        self.origin("server.publish_listen", &from);
        Ok(())
    }

    /// `prometheus_port` and `prometheus_prefix`, in `[proxy]` and in `[handler]` (each of
    /// Pushpin's processes has its own): Holdfast serves its one page on every port given.
    fn prometheus(&mut self) -> Result<(), ConfigError> {
        for section in ["proxy", "handler"] {
            if let Some(s) = self.take(section, "prometheus_port") {
                match s.value.one().map_err(|m| s.error(m))? {
                    "" => {}
                    path if path.starts_with("ipc://") => self.warn(
                        &s,
                        "an ipc:// Prometheus endpoint is not supported; give a port. Ignored",
                    ),
                    _ => {
                        let addrs = listen_addrs(&s.value, 1).map_err(|m| s.error(m))?;
                        let listen = &mut self.config.server.prometheus_listen;
                        for addr in addrs {
                            if !listen.contains(&addr) {
                                listen.push(addr);
                            }
                        }
                        self.origin("server.prometheus_listen", &s);
                    }
                }
            }
            if let Some(prefix) = self.read(
                section,
                "prometheus_prefix",
                "server.prometheus_prefix",
                |v| Ok(v.one()?.to_string()),
            )? {
                self.config.server.prometheus_prefix = prefix;
            }
        }
        Ok(())
    }

    /// The ZeroMQ sockets onto `[zmq]`: each one the file names is on, as in Pushpin (Holdfast's
    /// own default is off). `{rundir}` and `{ipc_prefix}` are already filled in; `port_offset`
    /// is added to `tcp://` ports, as Pushpin adds it.
    fn zmq(&mut self) -> Result<(), ConfigError> {
        let offset = self.settings.port_offset();
        let spec = move |text: &str| -> Result<String, String> {
            if text.is_empty() {
                return Ok(String::new());
            }
            match crate::config::zmq::Spec::parse(text)? {
                crate::config::zmq::Spec::Tcp { host, port } if port > 0 && offset != 0 => {
                    let port =
                        u16::try_from(i64::from(port) + i64::from(offset)).map_err(|_| {
                            format!("{text:?}: port {port} plus port_offset {offset} is not a port")
                        })?;
                    Ok(crate::config::zmq::Spec::Tcp { host, port }.to_string())
                }
                parsed => Ok(parsed.to_string()),
            }
        };
        if let Some(v) = self.read("handler", "push_in_spec", "zmq.push_in_spec", |v| {
            spec(v.one()?)
        })? {
            self.config.zmq.push_in_spec = v;
        }
        for key in ["push_in_sub_specs", "push_in_sub_spec"] {
            if let Some(v) = self.read("handler", key, "zmq.push_in_sub_specs", |v| {
                v.items()
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .map(spec)
                    .collect()
            })? {
                self.config.zmq.push_in_sub_specs = v;
            }
        }
        if let Some(v) = self.read(
            "handler",
            "push_in_sub_connect",
            "zmq.push_in_sub_connect",
            boolean,
        )? {
            self.config.zmq.push_in_sub_connect = v;
        }
        if let Some(v) = self.read("handler", "command_spec", "zmq.command_spec", |v| {
            spec(v.one()?)
        })? {
            self.config.zmq.command_spec = v;
        }
        if let Some(v) = self.read("handler", "stats_spec", "zmq.stats_spec", |v| {
            spec(v.one()?)
        })? {
            self.config.zmq.stats_spec = v;
        }
        if let Some(v) = self.read("handler", "stats_format", "zmq.stats_format", |v| {
            match v.one()? {
                "" | "tnetstring" => Ok(crate::config::zmq::StatsFormat::Tnetstring),
                "json" => Ok(crate::config::zmq::StatsFormat::Json),
                other => Err(format!("{other:?} is not tnetstring or json")),
            }
        })? {
            self.config.zmq.stats_format = v;
        }
        let numbers: [(&'static str, &'static str, &'static str); 7] = [
            (
                "handler",
                "stats_report_interval",
                "zmq.stats_report_interval",
            ),
            ("global", "stats_connection_ttl", "zmq.stats_connection_ttl"),
            (
                "handler",
                "stats_subscription_ttl",
                "zmq.stats_subscription_ttl",
            ),
            ("handler", "subscription_linger", "zmq.subscription_linger"),
            ("handler", "message_rate", "zmq.message_rate"),
            ("handler", "message_hwm", "zmq.message_hwm"),
            (
                "proxy",
                "stats_report_interval",
                "zmq.stats_report_interval",
            ),
        ];
        for (section, key, field) in numbers {
            let Some(n) = self.read(section, key, field, number::<u64>)? else {
                continue;
            };
            let z = &mut self.config.zmq;
            match key {
                "stats_report_interval" => z.stats_report_interval = n,
                "stats_connection_ttl" => z.stats_connection_ttl = n,
                "stats_subscription_ttl" => z.stats_subscription_ttl = n,
                "subscription_linger" => z.subscription_linger = n,
                "message_rate" => z.message_rate = u32::try_from(n).unwrap_or(u32::MAX),
                _ => z.message_hwm = usize::try_from(n).unwrap_or(usize::MAX),
            }
        }
        if let Some(v) = self.read(
            "global",
            "stats_connection_send",
            "zmq.stats_connection_send",
            boolean,
        )? {
            self.config.zmq.stats_connection_send = v;
        }
        Ok(())
    }

    /// `[handler]`: publish limits, sequencing, duplicate ids, channels per connection.
    fn handler(&mut self) -> Result<(), ConfigError> {
        if let Some(n) = self.read(
            "handler",
            "push_in_http_max_body_size",
            "limits.max_publish_body",
            |v| at_least(v, 1),
        )? {
            self.config.limits.max_publish_body = n;
        }
        if let Some(s) = self.take("handler", "push_in_http_max_headers_size") {
            let mut n: usize = at_least(&s.value, 1).map_err(|m| s.error(m))?;
            if n < MIN_HEADER_SIZE {
                self.warn(
                    &s,
                    format_args!("{n} is below Holdfast's minimum of {MIN_HEADER_SIZE}, which is used instead"),
                );
                n = MIN_HEADER_SIZE;
            }
            self.config.publish.max_header_size = Some(n);
            self.origin("publish.max_header_size", &s);
        }
        if let Some(n) = self.read(
            "handler",
            "message_wait",
            "reliability.message_wait_ms",
            number,
        )? {
            self.config.reliability.message_wait_ms = n;
        }
        if let Some(n) = self.read("handler", "id_cache_ttl", "grip.id_cache_ttl_secs", number)? {
            self.config.grip.id_cache_ttl_secs = n;
        }
        if let Some(b) = self.read(
            "handler",
            "update_on_first_subscription",
            "reliability.update_on_first_subscription",
            boolean,
        )? {
            self.config.reliability.update_on_first_subscription = b;
        }
        if let Some(n) = self.read(
            "handler",
            "connection_subscription_max",
            "limits.max_channels_per_connection",
            |v| at_least(v, 1),
        )? {
            self.config.limits.max_channels_per_connection = n;
        }
        Ok(())
    }

    /// Every key not read above: checked and warned about, or (for the include and the
    /// templates' values) silently used.
    fn the_rest(&mut self) -> Result<(), ConfigError> {
        for s in self.settings.all() {
            let known_section = SECTIONS.contains(&s.section);
            if known_section && self.used.iter().any(|&k| k == (s.section, s.key)) {
                continue;
            }
            let message = match known_section.then(|| kind(s.section, s.key)).flatten() {
                Some(Kind::Structure) => continue,
                Some(Kind::Unsupported(check, what)) => {
                    check.run(&s.value).map_err(|m| s.error(m))?;
                    unsupported(s.raw, what)
                }
                Some(Kind::Meaningless(why)) => {
                    format!("means nothing to Holdfast ({why}); ignored")
                }
                None if !known_section => format!(
                    "in {}, which is not a section of Pushpin's; ignored",
                    if s.section.is_empty() {
                        "no section".to_string()
                    } else {
                        format!("[{}]", s.section)
                    }
                ),
                None => "not a Pushpin setting Holdfast knows; ignored".to_string(),
            };
            self.warn(&s, message);
        }
        Ok(())
    }
}

/// The warning for a key Holdfast does not act on yet, set to `raw`.
fn unsupported(raw: &str, what: &str) -> String {
    format!("{raw:?} is recognised but not supported yet: {what}; ignored")
}

/// What Holdfast does with a key the mapping does not read.
enum Kind {
    /// Read for other values: the include and the templates' values.
    Structure,
    /// A Pushpin feature Holdfast does not have yet: the value is checked, then ignored.
    Unsupported(Check, &'static str),
    /// How Pushpin runs its own processes; nothing in Holdfast matches it.
    Meaningless(&'static str),
}

/// How an unsupported key's value is checked.
#[derive(Clone, Copy)]
enum Check {
    Bool,
    Number,
    Text,
    Texts,
    /// A ZeroMQ spec: `tcp://host:port` or `ipc://path`, or nothing.
    Spec,
}

impl Check {
    fn run(self, v: &Value) -> Result<(), String> {
        match self {
            Check::Bool => boolean(v).map(drop),
            Check::Number => match v.one()? {
                "" => Ok(()),
                _ => number::<u64>(v).map(drop),
            },
            Check::Text => v.one().map(drop),
            Check::Texts => Ok(()),
            Check::Spec => zmq_spec(v.one()?),
        }
    }
}

/// The stats socket, for its keys' warnings.
const ZMQ_STATS: &str = "Holdfast's stats socket has no such setting";

/// What a key the mapping does not read is (`None`: not a key Holdfast knows).
fn kind(section: &str, key: &str) -> Option<Kind> {
    use Check::*;
    use Kind::*;
    Some(match (section, key) {
        ("global", "include" | "libdir" | "port_offset" | "ipc_prefix") => Structure,
        ("global" | "runner", "rundir") => Structure,
        ("runner", "services") => Meaningless("Holdfast is one process, not a set of services"),
        ("runner", "logdir") => Meaningless("Holdfast logs to standard output"),
        ("runner", k) if k.ends_with("_bin") => Meaningless("a program Pushpin starts"),
        ("runner", "local_ports") => Unsupported(Texts, "Holdfast has no Unix-socket listener"),
        ("runner", "allow_compression") => Unsupported(
            Bool,
            "Holdfast does not compress WebSocket messages (permessage-deflate)",
        ),
        ("proxy", "orig_headers_need_mark") => Unsupported(
            Texts,
            "Holdfast does not keep marked original headers (route option orig_headers)",
        ),
        ("proxy", "cdn_loop") => Unsupported(Text, "Holdfast does not add a CDN-Loop header"),
        ("proxy", "stats_connections_max_ttl") | ("handler", "message_block_size") => {
            Unsupported(Number, ZMQ_STATS)
        }
        ("handler", "state_spec") => {
            Unsupported(Spec, "Holdfast keeps no state in a ZeroMQ state service")
        }
        ("handler", "share_all") => Unsupported(
            Bool,
            "Holdfast does not share origin requests between clients",
        ),
        ("proxy", "max_open_requests") => Unsupported(
            Number,
            "Holdfast bounds requests by client connections (client_maxconn)",
        ),
        ("proxy", "workers") => Meaningless("Holdfast runs on every core"),
        ("proxy", "updates_check" | "organization_name") => {
            Meaningless("Holdfast has no update check")
        }
        ("proxy" | "handler", "ipc_file_mode") => {
            Meaningless("the permissions of Pushpin's ZeroMQ socket files")
        }
        ("proxy" | "handler", k) if k.ends_with("_spec") || k.ends_with("_specs") => {
            Meaningless("the ZeroMQ wiring between Pushpin's own processes")
        }
        _ => return None,
    })
}

/// Pushpin's `x_forwarded_for` rules in the order Pushpin applies them, whatever the order
/// written: the last `truncate:N` first, then `append` if any rule says so. Holdfast applies its
/// rules in order.
fn pushpin_xff_order(rules: &[XffRule]) -> Vec<String> {
    let truncate = rules.iter().rev().find_map(|r| match r {
        XffRule::Truncate(n) => Some(format!("truncate:{n}")),
        XffRule::Append => None,
    });
    let append = rules
        .contains(&XffRule::Append)
        .then(|| "append".to_string());
    truncate.into_iter().chain(append).collect()
}

/// `true`, `false`, `1`, `0` (any case), or nothing for false. Pushpin reads anything else but
/// `0` and `false` as true, so `no` would mean yes there; here it is an error.
fn boolean(v: &Value) -> Result<bool, String> {
    let text = v.one()?;
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" | "" => Ok(false),
        _ => Err(format!("{text:?} is not true or false")),
    }
}

/// A whole number of 0 or more.
fn number<T: FromStr>(v: &Value) -> Result<T, String> {
    let text = v.one()?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{text:?} is not a whole number of 0 or more"));
    }
    text.parse().map_err(|_| format!("{text} is too large"))
}

/// A whole number of `min` or more.
fn at_least<T: FromStr + PartialOrd + std::fmt::Display>(v: &Value, min: T) -> Result<T, String> {
    let n = number(v)?;
    if n < min {
        return Err(format!("{n} is below the minimum of {min}"));
    }
    Ok(n)
}

/// A list of `[address:]port` (IPv6 in brackets; a port alone listens on every address), each
/// port at least `min_port`.
fn listen_addrs(v: &Value, min_port: u16) -> Result<Vec<SocketAddr>, String> {
    v.items()
        .into_iter()
        .map(|item| {
            let addr = if item.contains(':') {
                item.parse::<SocketAddr>().map_err(|_| {
                    format!("{item:?} is not [address:]port with an IP address (IPv6 in brackets)")
                })?
            } else {
                let port = item
                    .parse()
                    .map_err(|_| format!("{item:?} is not a port number"))?;
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))
            };
            if addr.port() < min_port {
                return Err(format!(
                    "{item:?}: port {} is not allowed here",
                    addr.port()
                ));
            }
            Ok(addr)
        })
        .collect()
}

/// `log_level`: Pushpin's numbers (`0` error … `4` trace), optionally per service
/// (`2,proxy:3`). Returns Holdfast's level and the per-service parts, which it ignores.
fn log_level(v: &Value) -> Result<(&'static str, Vec<String>), String> {
    let level = |n: &str| -> Result<&'static str, String> {
        let n: u32 = n
            .parse()
            .map_err(|_| format!("{n:?} is not a level from 0 (errors) to 4 (trace)"))?;
        Ok(match n {
            0 => "error",
            1 => "warn",
            2 => "info",
            3 => "debug",
            _ => "trace",
        })
    };
    let mut default = "info";
    let mut per_service = Vec::new();
    for part in v.items() {
        match part.split_once(':') {
            Some(("", _)) => return Err(format!("{part:?} has no service name before ':'")),
            Some((_, n)) => {
                level(n)?;
                per_service.push(part.to_string());
            }
            None => default = level(part)?,
        }
    }
    Ok((default, per_service))
}

/// A ZeroMQ spec as Pushpin takes one: `tcp://host:port`, `ipc://path`, or nothing.
fn zmq_spec(spec: &str) -> Result<(), String> {
    if spec.is_empty() {
        return Ok(());
    }
    if let Some(path) = spec.strip_prefix("ipc://") {
        return match path {
            "" => Err(format!("{spec:?} has no path")),
            _ => Ok(()),
        };
    }
    let port_ok = spec
        .strip_prefix("tcp://")
        .and_then(|rest| rest.rsplit_once(':'))
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if port_ok {
        Ok(())
    } else {
        Err(format!("{spec:?} is not tcp://host:port or ipc://path"))
    }
}

#[cfg(test)]
mod tests;
