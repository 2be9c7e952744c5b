//! `[outbound]` and `[webhooks]`: requests Holdfast makes to URLs it did not take from the
//! routes file (docs/webhooks.md), and the webhook subscribers that make them.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[outbound]`: the policy every request to a URL not from the routes file goes through.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundConfig {
    /// Addresses or CIDR networks (`127.0.0.0/8`, `::1`, `10.0.0.0/8`) that may be reached even
    /// though they are loopback, private, link-local, multicast or unspecified. Empty (default):
    /// none of those.
    pub allow: Vec<String>,
    /// Bytes of a response body read before the request is failed. Default 65536.
    pub max_response_size: usize,
    /// Seconds to connect (per address). Default 5.
    pub connect_timeout_secs: u64,
    /// Seconds a whole request may take: connect, send, response head and body. Default 30.
    pub timeout_secs: u64,
    /// Idle keep-alive connections kept per host. Default 32.
    pub idle_per_host: usize,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            max_response_size: 64 * 1024,
            connect_timeout_secs: 5,
            timeout_secs: 30,
            idle_per_host: 32,
        }
    }
}

impl OutboundConfig {
    /// The `allow` list, parsed; the first entry that is not an address or network is the error.
    pub fn allow_nets(&self) -> Result<Vec<Net>, String> {
        self.allow.iter().map(|s| s.parse()).collect()
    }

    /// `connect_timeout_secs` as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    /// `timeout_secs` as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        self.allow_nets().map_err(|e| ("outbound.allow", e))?;
        for (field, n) in [
            ("outbound.max_response_size", self.max_response_size as u64),
            ("outbound.connect_timeout_secs", self.connect_timeout_secs),
            ("outbound.timeout_secs", self.timeout_secs),
        ] {
            if n == 0 {
                return Err((field, "must be at least 1".to_string()));
            }
        }
        Ok(())
    }
}

/// An address network: an address and how many leading bits must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    /// Whether `ip` is in this network (an IPv4 network never holds an IPv6 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Net {
    type Err = String;

    fn from_str(s: &str) -> Result<Net, String> {
        let bad = |why: &str| format!("{s:?}: {why}");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| bad("expected an IP address or a CIDR network such as 10.0.0.0/8"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| bad(&format!("the prefix length must be 0 to {max}")))?,
        };
        Ok(Net { addr, prefix })
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// `[webhooks]`: URL subscribers of channels, registered through the publish API.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// JSON file the registrations are kept in, so they survive a restart (written to a
    /// temporary file and renamed). Relative to the config file's folder. Unset (default):
    /// registrations live in memory only. Not used in cluster mode, where they are kept in
    /// Redis.
    pub store: Option<PathBuf>,
    /// Key every delivery's `Holdfast-Signature` token is signed with, in `grip.sig_key`'s
    /// forms. Empty (default): `grip.sig_key`.
    pub sig_key: String,
    /// The `iss` claim of the signature token. Default `holdfast`.
    pub sig_iss: String,
    /// Seconds a signature token is valid for. Default 300.
    pub sig_ttl_secs: u64,
    /// Items waiting per subscriber; past it new items are dropped and counted. Default 1000.
    pub queue: usize,
    /// Deliveries in flight to one host (`host:port`) at once, over all its subscribers.
    /// Default 8.
    pub concurrency_per_host: usize,
    /// Milliseconds before the first retry of a failed delivery; each further retry waits
    /// twice as long, up to `retry_max_ms`, plus up to half again of jitter. Default 1000.
    pub retry_min_ms: u64,
    /// Longest wait between retries, in milliseconds. Default 60000.
    pub retry_max_ms: u64,
    /// Seconds after an item was published that its delivery is given up (logged and counted).
    /// Default 3600.
    pub max_age_secs: u64,
    /// Subscribers that may be registered at once. Default 10000.
    pub max_subscribers: usize,
    /// Cluster mode: milliseconds between checks of whether another instance changed the
    /// registrations kept in Redis (one `GET`; the registrations are read again only when they
    /// changed). Default 1000.
    pub cluster_refresh_ms: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            store: None,
            sig_key: String::new(),
            sig_iss: "holdfast".to_string(),
            sig_ttl_secs: 300,
            queue: 1000,
            concurrency_per_host: 8,
            retry_min_ms: 1000,
            retry_max_ms: 60_000,
            max_age_secs: 3600,
            max_subscribers: 10_000,
            cluster_refresh_ms: 1000,
        }
    }
}

impl WebhooksConfig {
    pub(super) fn resolve_paths(&mut self, dir: &Path) {
        if let Some(store) = &self.store {
            if store.is_relative() {
                self.store = Some(dir.join(store));
            }
        }
        if !self.sig_key.is_empty() {
            self.sig_key = super::keys::resolve(&self.sig_key, dir);
        }
    }

    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        if !self.sig_key.is_empty() {
            super::keys::signer(&self.sig_key).map_err(|e| ("webhooks.sig_key", e))?;
        }
        for (field, n) in [
            ("webhooks.sig_ttl_secs", self.sig_ttl_secs),
            ("webhooks.queue", self.queue as u64),
            (
                "webhooks.concurrency_per_host",
                self.concurrency_per_host as u64,
            ),
            ("webhooks.retry_min_ms", self.retry_min_ms),
            ("webhooks.max_age_secs", self.max_age_secs),
            ("webhooks.max_subscribers", self.max_subscribers as u64),
            ("webhooks.cluster_refresh_ms", self.cluster_refresh_ms),
        ] {
            if n == 0 {
                return Err((field, "must be at least 1".to_string()));
            }
        }
        if self.retry_max_ms < self.retry_min_ms {
            return Err((
                "webhooks.retry_max_ms",
                format!(
                    "{} is below webhooks.retry_min_ms ({})",
                    self.retry_max_ms, self.retry_min_ms
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nets_parse_and_contain() {
        let net: Net = "127.0.0.0/8".parse().unwrap();
        assert!(net.contains("127.9.9.9".parse().unwrap()));
        assert!(!net.contains("128.0.0.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        let one: Net = "::1".parse().unwrap();
        assert_eq!(one.to_string(), "::1/128");
        assert!(one.contains("::1".parse().unwrap()));
        let all: Net = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let ula: Net = "fc00::/7".parse().unwrap();
        assert!(ula.contains("fd12::1".parse().unwrap()));
        assert!(!ula.contains("fe80::1".parse().unwrap()));
        for (bad, why) in [
            ("localhost", "\"localhost\": expected an IP address"),
            (
                "10.0.0.0/33",
                "\"10.0.0.0/33\": the prefix length must be 0 to 32",
            ),
            ("::/x", "\"::/x\": the prefix length must be 0 to 128"),
        ] {
            let err = bad.parse::<Net>().unwrap_err();
            assert!(err.starts_with(why), "{err}");
        }
    }
}
