//! The metrics of `GET /metrics`, in the OpenMetrics text format through the
//! `prometheus-client` crate, and the live instruments the hot paths count into.
//!
//! There is no global registry. The instruments that move with the traffic live in the parts
//! that own them (a [`Histogram`] in the hub, the [`Connections`] gauges in `App`); when the
//! page is scraped, the publish API builds a [`Page`] — a `prometheus-client` registry for that
//! one answer — and every part registers its instruments and its snapshot figures into it.
//!
//! Cost on the hot paths: a connection resolves its gauge (one labelled family lookup) once when
//! it starts holding and keeps the handle; a delivery costs nothing here (the hub counts per
//! fan-out); a [`Histogram`] observation is three relaxed atomic adds, no lock (the crate's own
//! histogram takes a lock per observation, hence this one).
//!
//! Label values are escaped here: `prometheus-client` writes them as given.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The content type of `GET /metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of Pushpin's page (`server.prometheus_listen`), which Pushpin serves in the
/// older Prometheus text format.
pub const PUSHPIN_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// The labels of one sample: names and (escaped) values.
pub type Labels = Vec<(&'static str, String)>;

/// A metrics page being put together for one scrape.
#[derive(Debug, Default)]
pub struct Page {
    registry: Registry,
}

impl Page {
    /// A gauge with one unlabelled sample. `help` has no final full stop (one is added).
    pub fn gauge(&mut self, name: &str, help: &str, value: i64) -> &mut Self {
        self.registry.register(name, help, ConstGauge::new(value));
        self
    }

    /// A counter with one unlabelled sample; `name` is the series name, ending in `_total`.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> &mut Self {
        self.registry
            .register(family_of(name), help, ConstCounter::new(value));
        self
    }

    /// A gauge family, one sample per label set.
    pub fn gauges(&mut self, name: &str, help: &str, samples: Vec<(Labels, i64)>) -> &mut Self {
        let samples = samples.into_iter().map(|(l, v)| (l, Value::Gauge(v)));
        self.registry
            .register(name, help, Samples(samples.collect()));
        self
    }

    /// A counter family, one sample per label set; `name` ends in `_total`.
    pub fn counters(&mut self, name: &str, help: &str, samples: Vec<(Labels, u64)>) -> &mut Self {
        let samples = samples.into_iter().map(|(l, v)| (l, Value::Counter(v)));
        self.registry
            .register(family_of(name), help, Samples(samples.collect()));
        self
    }

    /// A live instrument (a [`Histogram`], a gauge family), shared with the page.
    pub fn live(
        &mut self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) -> &mut Self {
        self.registry.register(name, help, metric);
        self
    }

    /// The page, ended with `# EOF` as OpenMetrics wants.
    pub fn into_text(self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// The families without the `# EOF` line, to follow other text on Pushpin's page.
    pub fn into_text_without_eof(self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode_registry(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// The family name `prometheus-client` wants for a counter: without `_total`, which it adds.
fn family_of(series: &str) -> &str {
    debug_assert!(series.ends_with("_total"), "{series}");
    series.strip_suffix("_total").unwrap_or(series)
}

#[derive(Debug)]
enum Value {
    Gauge(i64),
    Counter(u64),
}

/// A family of snapshot samples, each with its labels.
#[derive(Debug)]
struct Samples(Vec<(Labels, Value)>);

impl EncodeMetric for Samples {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, value) in &self.0 {
            let mut e = encoder.encode_family(labels)?;
            match value {
                Value::Gauge(v) => e.encode_gauge(v)?,
                Value::Counter(v) => e.encode_counter::<NoLabelSet, _, u64>(v, None)?,
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        match self.0.first() {
            Some((_, Value::Counter(_))) => MetricType::Counter,
            _ => MetricType::Gauge,
        }
    }
}

/// A gauge family of fractional values (seconds), one sample per label set.
#[derive(Debug)]
pub struct FloatGauges(pub Vec<(Labels, f64)>);

impl EncodeMetric for FloatGauges {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, value) in &self.0 {
            encoder.encode_family(labels)?.encode_gauge(value)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

/// Escapes a label value as the text format wants: backslash, double quote and newline.
pub fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A latency histogram with fixed buckets, observed with relaxed atomic adds (no lock). Cloning
/// shares it.
#[derive(Debug, Clone)]
pub struct Histogram {
    inner: Arc<HistogramInner>,
}

#[derive(Debug)]
struct HistogramInner {
    /// Upper bounds in seconds, ascending; a last `+Inf` bucket is implied.
    bounds: &'static [f64],
    /// The same bounds in nanoseconds, for the comparison on the hot path.
    bounds_ns: Box<[u64]>,
    /// Observations per bucket (not cumulative), the last one `+Inf`.
    counts: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

/// Buckets for publish → write latency: 100 µs to 5 s.
pub const WRITE_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Buckets for origin request latency: 1 ms to 30 s.
pub const ORIGIN_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Histogram {
    /// A histogram over `bounds` (seconds, ascending).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            inner: Arc::new(HistogramInner {
                bounds,
                bounds_ns: bounds.iter().map(|b| (b * 1e9) as u64).collect(),
                counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                sum_ns: AtomicU64::new(0),
            }),
        }
    }

    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = &self.inner;
        let bucket = i.bounds_ns.iter().position(|&b| ns <= b);
        let bucket = bucket.unwrap_or(i.bounds_ns.len());
        i.counts[bucket].fetch_add(1, Ordering::Relaxed);
        i.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        (self.inner.counts.iter())
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let i = &self.inner;
        let buckets: Vec<(f64, u64)> = (i.bounds.iter().copied())
            .chain(std::iter::once(f64::MAX))
            .zip(i.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|b| b.1).sum();
        let sum = i.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Several histograms of one family told apart by one label, each resolved once.
#[derive(Debug, Clone)]
pub struct Histograms {
    label: &'static str,
    members: Vec<(&'static str, Histogram)>,
}

impl Histograms {
    /// One histogram over `bounds` per value of `label`.
    pub fn new(label: &'static str, values: &[&'static str], bounds: &'static [f64]) -> Self {
        let members = (values.iter())
            .map(|&v| (v, Histogram::new(bounds)))
            .collect();
        Histograms { label, members }
    }

    /// The histogram for one value (one of those given to [`Histograms::new`]).
    pub fn get(&self, value: &str) -> &Histogram {
        let found = self.members.iter().find(|(v, _)| *v == value);
        &found.expect("a value given at construction").1
    }
}

impl EncodeMetric for Histograms {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (value, h) in &self.members {
            let labels = [(self.label, *value)];
            h.encode(encoder.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// How a held client connection talks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A held response (`Grip-Hold: response`).
    LongPoll,
    /// A held stream (`Grip-Hold: stream`, Server-Sent Events among them).
    Stream,
    /// A WebSocket relayed to a WebSocket origin (or the test handler's).
    WebSocket,
    /// A WebSocket whose origin speaks WebSocket-over-HTTP.
    WsOverHttp,
}

impl Transport {
    /// Every transport, in page order.
    pub const ALL: [Transport; 4] = [
        Transport::LongPoll,
        Transport::Stream,
        Transport::WebSocket,
        Transport::WsOverHttp,
    ];

    /// The `transport` label.
    pub fn label(self) -> &'static str {
        match self {
            Transport::LongPoll => "long-poll",
            Transport::Stream => "stream",
            Transport::WebSocket => "websocket",
            Transport::WsOverHttp => "ws-over-http",
        }
    }
}

/// Held client connections by transport and route: `holdfast_connections`.
#[derive(Debug, Clone, Default)]
pub struct Connections {
    family: Family<Labels, Gauge>,
    /// The same per transport, over every route (for [`Connections::of`]).
    totals: Arc<[Gauge; 4]>,
}

/// One held connection, counted until dropped.
#[derive(Debug)]
#[must_use = "the connection is counted while this is held"]
pub struct Held {
    route: Gauge,
    total: Gauge,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.route.dec();
        self.total.dec();
    }
}

impl Connections {
    /// Counts a connection on `route` (its id) until the returned guard drops. One labelled
    /// lookup, here; the guard keeps the resolved gauges.
    pub fn hold(&self, transport: Transport, route: &str) -> Held {
        let labels = vec![
            ("transport", transport.label().to_string()),
            ("route", label_value(route)),
        ];
        let route = self.family.get_or_create(&labels).clone();
        let total = self.totals[transport as usize].clone();
        route.inc();
        total.inc();
        Held { route, total }
    }

    /// Adds the family to `page`.
    pub fn register(&self, page: &mut Page) {
        page.live(
            "holdfast_connections",
            "Client connections held open now (long-polls, streams, WebSockets), by transport and route",
            self.family.clone(),
        );
    }

    /// Connections of one transport now, over every route.
    pub fn of(&self, transport: Transport) -> i64 {
        self.totals[transport as usize].get()
    }
}

/// The running totals behind Pushpin's Prometheus page (`server.prometheus_listen`) and the
/// inputs' counts: client requests, publish items received by input, and connection time.
#[derive(Debug, Default)]
pub struct Traffic {
    requests: AtomicU64,
    received_http: AtomicU64,
    received_zmq: AtomicU64,
    received_postgres: AtomicU64,
    /// Client connection time, in milliseconds summed over connections.
    connected_ms: AtomicU64,
}

/// Where publish items come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// The HTTP publish API.
    Http,
    /// A ZeroMQ publish input or the command socket.
    Zmq,
    /// A PostgreSQL source: notifications and outbox rows.
    Postgres,
}

impl Traffic {
    /// A client request arrived (a WebSocket's opening request among them).
    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` publish items arrived at an input of this instance.
    pub fn received(&self, input: Input, n: usize) {
        let counter = match input {
            Input::Http => &self.received_http,
            Input::Zmq => &self.received_zmq,
            Input::Postgres => &self.received_postgres,
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
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

    /// Publish items received so far at one input.
    pub fn received_at(&self, input: Input) -> u64 {
        match input {
            Input::Http => self.received_http.load(Ordering::Relaxed),
            Input::Zmq => self.received_zmq.load(Ordering::Relaxed),
            Input::Postgres => self.received_postgres.load(Ordering::Relaxed),
        }
    }

    /// Publish items received so far, over the HTTP, ZeroMQ and PostgreSQL inputs.
    pub fn items_received(&self) -> u64 {
        self.received_at(Input::Http)
            + self.received_at(Input::Zmq)
            + self.received_at(Input::Postgres)
    }

    /// Whole minutes of client connection time so far.
    pub fn connection_minutes(&self) -> u64 {
        self.connected_ms.load(Ordering::Relaxed) / 60_000
    }
}

/// Pushpin's page: its metrics in the older text format, as Pushpin writes them (Pushpin's
/// counters do not end in `_total`, which OpenMetrics requires, so this part is not written by
/// `prometheus-client`). Each figure is `(name, type, help, value)`.
pub fn pushpin_text(prefix: &str, figures: &[(&str, &str, &str, u64)]) -> String {
    let mut text = String::new();
    for (name, kind, help, value) in figures {
        let _ = write!(
            text,
            "# HELP {prefix}{name} {help}\n# TYPE {prefix}{name} {kind}\n{prefix}{name} {value}\n"
        );
    }
    text
}

/// The resident set size of this process in bytes, from `/proc/self/statm` (Linux); `None`
/// elsewhere.
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

#[cfg(unix)]
fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

#[cfg(not(unix))]
fn page_size() -> u64 {
    4096
}

/// Version and commit this binary was built from (the commit from `git` at build time, or
/// `HOLDFAST_GIT_COMMIT`; `unknown` when neither was there).
pub fn build_labels() -> Labels {
    vec![
        ("version", env!("CARGO_PKG_VERSION").to_string()),
        ("commit", label_value(env!("HOLDFAST_GIT_COMMIT"))),
    ]
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
        t.received(Input::Http, 4);
        t.received(Input::Zmq, 1);
        assert_eq!((t.requests(), t.items_received()), (1, 5));
    }

    #[test]
    fn families_and_samples_in_the_openmetrics_format() {
        let mut page = Page::default();
        page.gauge("a_channels", "Channels", 3)
            .counter("a_items_total", "Items", 7)
            .gauges(
                "a_up",
                "Up",
                vec![(
                    vec![("shard", "0".into()), ("addr", label_value("h\"1\\"))],
                    1,
                )],
            );
        assert_eq!(
            page.into_text(),
            "# HELP a_channels Channels.\n# TYPE a_channels gauge\na_channels 3\n\
             # HELP a_items Items.\n# TYPE a_items counter\na_items_total 7\n\
             # HELP a_up Up.\n# TYPE a_up gauge\na_up{shard=\"0\",addr=\"h\\\"1\\\\\"} 1\n\
             # EOF\n"
        );
    }

    #[test]
    fn a_histogram_counts_into_its_bucket_and_cumulates() {
        let h = Histogram::new(&[0.001, 0.01]);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(2));
        assert_eq!(h.count(), 3);
        let mut page = Page::default();
        page.live("lat_seconds", "Latency", h);
        let text = page.into_text();
        for line in [
            "lat_seconds_count 3\n",
            "lat_seconds_bucket{le=\"0.001\"} 1\n",
            "lat_seconds_bucket{le=\"0.01\"} 2\n",
            "lat_seconds_bucket{le=\"+Inf\"} 3\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn a_held_connection_counts_until_dropped() {
        let c = Connections::default();
        let a = c.hold(Transport::Stream, "api");
        let b = c.hold(Transport::Stream, "feed");
        let _ws = c.hold(Transport::WebSocket, "api");
        assert_eq!(c.of(Transport::Stream), 2);
        drop(a);
        assert_eq!(c.of(Transport::Stream), 1);
        drop(b);
        assert_eq!(c.of(Transport::Stream), 0);
        assert_eq!(c.of(Transport::WebSocket), 1);
    }
}
