//! `[zmq]`: Pushpin's ZeroMQ sockets — the PULL and SUB publish inputs, the REP command socket
//! and the PUB stats socket. Every socket is off unless its spec is set.
//!
//! Field names and value syntax are Pushpin's `[handler]` keys (reference §6.1): a spec is
//! `tcp://<address>:<port>` or `ipc://<path>`, and a list of specs may be written as one
//! comma-separated string, as in `pushpin.conf`, or as a TOML array.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

/// `[zmq]`: the ZeroMQ sockets (docs/zeromq.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ZmqConfig {
    /// PULL publish input, bound: one item per message (tnetstring, `T` + tnetstring or `J` +
    /// JSON). Pushpin's default is `tcp://127.0.0.1:5560`; empty (the default here) is off.
    pub push_in_spec: String,
    /// SUB publish inputs: `[channel, item]` messages; the socket subscribes to exactly the
    /// channels that have local subscribers. Bound, unless `push_in_sub_connect`. Pushpin's
    /// default is `tcp://127.0.0.1:5562`; empty (the default here) is off.
    #[serde(deserialize_with = "spec_list")]
    pub push_in_sub_specs: Vec<String>,
    /// Connect the SUB socket to `push_in_sub_specs` (publishers' PUB or XPUB sockets)
    /// instead of binding them. Default false.
    pub push_in_sub_connect: bool,
    /// REP command socket, bound: `publish`, `recover`, `refresh`, `conncheck`,
    /// `get-zmq-uris`. Pushpin's default is `tcp://127.0.0.1:5563`; empty (the default here) is
    /// off.
    pub command_spec: String,
    /// PUB stats socket, bound: `conn`, `sub` and `report` packets. Pushpin's default is
    /// `ipc://{rundir}/pushpin-stats`; empty (the default here) is off.
    pub stats_spec: String,
    /// Encoding of stats packets: `tnetstring` (default) or `json`.
    pub stats_format: StatsFormat,
    /// Seconds between `report` packets; 0 sends none. Default 10.
    pub stats_report_interval: u64,
    /// Send a `conn` packet for each held connection. Default true (Pushpin's `[global]
    /// stats_connection_send`).
    pub stats_connection_send: bool,
    /// Seconds a `conn` packet is valid for; each open connection's is sent again before then.
    /// Default 120 (Pushpin's `[global] stats_connection_ttl`).
    pub stats_connection_ttl: u64,
    /// Seconds a `sub` packet is valid for; each subscribed channel's is sent again before then.
    /// Default 60.
    pub stats_subscription_ttl: u64,
    /// Seconds a channel's `response` mode still counts as subscribed after its last long-poll
    /// left (they re-poll at once), before its removal packet. Default 60.
    pub subscription_linger: u64,
    /// Stats packets waiting to be sent; when full, new packets are dropped and counted
    /// (`holdfast_zmq_stats_dropped_total`), so a slow stats subscriber never slows fan-out.
    /// Default 10000.
    pub stats_queue: usize,
    /// Items per second the ZeroMQ inputs hand to the hub; 0 (the default) is unlimited.
    /// Pushpin's default is 2500 deliveries per second.
    pub message_rate: u32,
    /// Items the ZeroMQ inputs hold while `message_rate` paces them; past it new items are
    /// dropped, logged and counted. 0 (the default) holds 1024 and then stops reading from the
    /// sockets (their senders queue or drop by their own high-water marks) instead of dropping.
    /// Pushpin's default is 25000.
    pub message_hwm: usize,
}

impl Default for ZmqConfig {
    fn default() -> Self {
        Self {
            push_in_spec: String::new(),
            push_in_sub_specs: Vec::new(),
            push_in_sub_connect: false,
            command_spec: String::new(),
            stats_spec: String::new(),
            stats_format: StatsFormat::Tnetstring,
            stats_report_interval: 10,
            stats_connection_send: true,
            stats_connection_ttl: 120,
            stats_subscription_ttl: 60,
            subscription_linger: 60,
            stats_queue: 10_000,
            message_rate: 0,
            message_hwm: 0,
        }
    }
}

/// How stats packets are encoded after their type: `T` + tnetstring or `J` + JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StatsFormat {
    /// `T` followed by a tnetstring.
    Tnetstring,
    /// `J` followed by JSON.
    Json,
}

/// Where a socket binds or connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// `tcp://host:port`; `*` is every interface.
    Tcp {
        /// The address or name, as written (`*` for every interface).
        host: String,
        /// The port; 0 binds a free one.
        port: u16,
    },
    /// `ipc://path`: a Unix socket.
    Ipc(PathBuf),
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Spec::Tcp { host, port } if host.contains(':') => write!(f, "tcp://[{host}]:{port}"),
            Spec::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Spec::Ipc(path) => write!(f, "ipc://{}", path.display()),
        }
    }
}

impl Spec {
    /// Parses `tcp://host:port` or `ipc://path`.
    pub fn parse(spec: &str) -> Result<Spec, String> {
        if let Some(path) = spec.strip_prefix("ipc://") {
            if path.is_empty() || path == "*" {
                return Err(format!("{spec:?}: an ipc:// spec needs a socket path"));
            }
            return Ok(Spec::Ipc(PathBuf::from(path)));
        }
        let Some(rest) = spec.strip_prefix("tcp://") else {
            return Err(format!(
                "{spec:?} is not a ZeroMQ spec (tcp://host:port or ipc://path)"
            ));
        };
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("{spec:?}: a tcp:// spec needs a port (tcp://host:port)"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{spec:?}: {port:?} is not a port number"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(format!("{spec:?}: a tcp:// spec needs a host"));
        }
        Ok(Spec::Tcp {
            host: host.to_string(),
            port,
        })
    }

    /// The address a `tcp://` spec binds: an IP address, or `*` for every interface.
    pub fn bind_addr(&self) -> Option<Result<SocketAddr, String>> {
        let Spec::Tcp { host, port } = self else {
            return None;
        };
        let ip = if host == "*" {
            Ok(IpAddr::from([0, 0, 0, 0]))
        } else {
            host.parse::<IpAddr>().map_err(|_| {
                format!("{self}: a bound socket needs an IP address or *, not {host:?}")
            })
        };
        Some(ip.map(|ip| SocketAddr::new(ip, *port)))
    }
}

impl ZmqConfig {
    /// Whether any socket is configured.
    pub fn is_on(&self) -> bool {
        !(self.push_in_spec.is_empty()
            && self.push_in_sub_specs.is_empty()
            && self.command_spec.is_empty()
            && self.stats_spec.is_empty())
    }

    /// The first problem with the values. ZeroMQ sockets have no authentication, so a
    /// `tcp://` socket bound to an address other than loopback needs `allow_unauthenticated`
    /// (`publish.allow_unauthenticated`).
    pub(super) fn check(&self, allow_unauthenticated: bool) -> Result<(), (&'static str, String)> {
        let mut binds: Vec<(&'static str, &str)> = vec![
            ("zmq.push_in_spec", &self.push_in_spec),
            ("zmq.command_spec", &self.command_spec),
            ("zmq.stats_spec", &self.stats_spec),
        ];
        if !self.push_in_sub_connect {
            binds.extend(
                self.push_in_sub_specs
                    .iter()
                    .map(|s| ("zmq.push_in_sub_specs", s.as_str())),
            );
        }
        let mut seen: Vec<Spec> = Vec::new();
        for (field, text) in binds.into_iter().filter(|(_, t)| !t.is_empty()) {
            let spec = Spec::parse(text).map_err(|e| (field, e))?;
            if let Some(addr) = spec.bind_addr() {
                let addr = addr.map_err(|e| (field, e))?;
                if !addr.ip().is_loopback() && !allow_unauthenticated {
                    return Err((
                        field,
                        format!(
                            "{spec} is not a loopback address and ZeroMQ sockets have no authentication: bind it to 127.0.0.1, or set publish.allow_unauthenticated"
                        ),
                    ));
                }
            }
            if seen.contains(&spec) && !matches!(&spec, Spec::Tcp { port: 0, .. }) {
                return Err((field, format!("{spec} is bound by another zmq socket")));
            }
            seen.push(spec);
        }
        if self.push_in_sub_connect {
            for text in &self.push_in_sub_specs {
                Spec::parse(text).map_err(|e| ("zmq.push_in_sub_specs", e))?;
            }
        }
        let counts = [
            ("zmq.stats_connection_ttl", self.stats_connection_ttl),
            ("zmq.stats_subscription_ttl", self.stats_subscription_ttl),
            ("zmq.stats_queue", self.stats_queue as u64),
        ];
        if let Some((field, _)) = counts.iter().find(|(_, n)| *n == 0) {
            return Err((field, "must be at least 1".to_string()));
        }
        if self.message_hwm > 0 && self.message_rate == 0 {
            return Err((
                "zmq.message_hwm",
                "only applies with zmq.message_rate set: without a rate nothing waits".to_string(),
            ));
        }
        Ok(())
    }
}

/// A list of specs: a TOML array, or one string with commas between specs (Pushpin's syntax).
fn spec_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        OneOrMany::Many(v) => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!(
            Spec::parse("tcp://127.0.0.1:5560").unwrap(),
            Spec::Tcp {
                host: "127.0.0.1".into(),
                port: 5560
            }
        );
        assert_eq!(
            Spec::parse("tcp://[::1]:5560").unwrap().to_string(),
            "tcp://[::1]:5560"
        );
        assert_eq!(
            Spec::parse("ipc:///run/stats").unwrap(),
            Spec::Ipc("/run/stats".into())
        );
        let star = Spec::parse("tcp://*:5562").unwrap();
        assert_eq!(
            star.bind_addr().unwrap().unwrap().to_string(),
            "0.0.0.0:5562"
        );
        for (bad, why) in [
            ("udp://x:1", "is not a ZeroMQ spec"),
            ("tcp://127.0.0.1", "needs a port"),
            ("tcp://127.0.0.1:http", "is not a port number"),
            ("tcp://:5560", "needs a host"),
            ("ipc://", "needs a socket path"),
            ("ipc://*", "needs a socket path"),
        ] {
            let e = Spec::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let named = Spec::parse("tcp://localhost:1").unwrap();
        assert!(named
            .bind_addr()
            .unwrap()
            .unwrap_err()
            .contains("IP address"));
    }

    #[test]
    fn lists_are_comma_strings_or_arrays() {
        let c: ZmqConfig =
            toml::from_str(r#"push_in_sub_specs = "tcp://127.0.0.1:1, tcp://127.0.0.1:2""#)
                .unwrap();
        assert_eq!(
            c.push_in_sub_specs,
            ["tcp://127.0.0.1:1", "tcp://127.0.0.1:2"]
        );
        let c: ZmqConfig =
            toml::from_str(r#"push_in_sub_specs = ["ipc:///a", "ipc:///b"]"#).unwrap();
        assert_eq!(c.push_in_sub_specs, ["ipc:///a", "ipc:///b"]);
    }

    #[test]
    fn checks_name_the_field() {
        let check = |toml_text: &str, open: bool| {
            let c: ZmqConfig = toml::from_str(toml_text).unwrap();
            c.check(open)
        };
        assert!(check(r#"push_in_spec = "tcp://127.0.0.1:5560""#, false).is_ok());
        let (field, e) = check(r#"command_spec = "tcp://0.0.0.0:5563""#, false).unwrap_err();
        assert_eq!(field, "zmq.command_spec");
        assert!(e.contains("publish.allow_unauthenticated"), "{e}");
        assert!(check(r#"command_spec = "tcp://0.0.0.0:5563""#, true).is_ok());
        // A connecting SUB socket reaches out to publishers anywhere.
        assert!(check(
            "push_in_sub_specs = \"tcp://10.0.0.5:5562\"\npush_in_sub_connect = true",
            false
        )
        .is_ok());
        let (field, _) = check(
            "push_in_spec = \"tcp://127.0.0.1:5560\"\ncommand_spec = \"tcp://127.0.0.1:5560\"",
            false,
        )
        .unwrap_err();
        assert_eq!(field, "zmq.command_spec");
        let (field, _) = check("stats_queue = 0", false).unwrap_err();
        assert_eq!(field, "zmq.stats_queue");
        let (field, _) = check("message_hwm = 10", false).unwrap_err();
        assert_eq!(field, "zmq.message_hwm");
        assert!(toml::from_str::<ZmqConfig>(r#"stats_format = "xml""#).is_err());
    }
}
