//! The Prometheus text exposition of `GET /metrics`: one writer that every module reporting
//! metrics fills in (the hub's counters, the descriptor budget, the cluster bus), so the format is
//! written once. There is no global registry: the publish API asks each part for its figures when
//! it is scraped.

use std::fmt::{Display, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A metrics page being written, in the Prometheus text format (version 0.0.4).
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

/// The content type of the page.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

impl Exposition {
    /// A gauge with one unlabelled sample.
    pub fn gauge(&mut self, name: &str, help: &str, value: impl Display) -> &mut Self {
        self.family(name, "gauge", help).sample(name, &[], value)
    }

    /// A counter with one unlabelled sample (`name` ends in `_total`).
    pub fn counter(&mut self, name: &str, help: &str, value: impl Display) -> &mut Self {
        self.family(name, "counter", help).sample(name, &[], value)
    }

    /// The `# HELP` and `# TYPE` lines of a family whose samples follow.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = write!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        self
    }

    /// One sample line, with `labels` (values escaped).
    pub fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: impl Display,
    ) -> &mut Self {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", label_value(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
        self
    }

    /// The page.
    pub fn into_text(self) -> String {
        self.text
    }
}

/// The running totals behind Pushpin's Prometheus page (`server.prometheus_listen`), kept as
/// the traffic passes: client requests, publish items received, and connection time.
#[derive(Debug, Default)]
pub struct Traffic {
    requests: AtomicU64,
    received: AtomicU64,
    /// Client connection time, in milliseconds summed over connections.
    connected_ms: AtomicU64,
}

impl Traffic {
    /// A client request arrived (a WebSocket's opening request among them).
    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` publish items arrived at an input of this instance (HTTP or ZeroMQ).
    pub fn received(&self, n: usize) {
        self.received.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// `connections` client connections were open for `period`.
    pub fn connected(&self, connections: usize, period: Duration) {
        let ms = (connections as u64).saturating_mul(period.as_millis() as u64);
        self.connected_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Client requests so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Publish items received so far.
    pub fn items_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Whole minutes of client connection time so far.
    pub fn connection_minutes(&self) -> u64 {
        self.connected_ms.load(Ordering::Relaxed) / 60_000
    }
}

/// Escapes a label value: backslash, double quote and newline.
fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_time_adds_up_to_whole_minutes() {
        let t = Traffic::default();
        t.connected(3, Duration::from_secs(15));
        assert_eq!(t.connection_minutes(), 0);
        t.connected(6, Duration::from_secs(5));
        assert_eq!(t.connection_minutes(), 1);
        t.request();
        t.received(4);
        assert_eq!((t.requests(), t.items_received()), (1, 4));
    }

    #[test]
    fn families_and_samples_in_the_text_format() {
        let mut page = Exposition::default();
        page.gauge("a_channels", "Channels.", 3)
            .counter("a_items_total", "Items.", 7u64)
            .family("a_up", "gauge", "Up.")
            .sample("a_up", &[("shard", "0"), ("addr", "h\"1\\")], 1);
        assert_eq!(
            page.into_text(),
            "# HELP a_channels Channels.\n# TYPE a_channels gauge\na_channels 3\n\
             # HELP a_items_total Items.\n# TYPE a_items_total counter\na_items_total 7\n\
             # HELP a_up Up.\n# TYPE a_up gauge\na_up{shard=\"0\",addr=\"h\\\"1\\\\\"} 1\n"
        );
    }
}
