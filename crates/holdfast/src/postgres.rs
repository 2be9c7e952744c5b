//! PostgreSQL as a publish source (`[[postgres.sources]]`, docs/postgres.md).
//!
//! Each source is one task with one database connection ([`source`]). It `LISTEN`s on its
//! `listen` channels, whose notification payloads are publish items as JSON, and reads its
//! `outbox` table ([`outbox`]), whose rows are publish items with their position kept in the
//! database. Every item goes through `grip::publish::parse_publish_item`, the publish API's
//! parser, and then to [`Bus::publish`], so in cluster mode it reaches every instance once. An
//! item that cannot be used is logged with what was wrong (and the row id), counted, and
//! skipped; the source goes on.
//!
//! The connection is made again whenever it fails (PostgreSQL down at start, restarted, the
//! network cut), after a wait that starts at 250 ms and doubles up to `reconnect_max_ms`. The
//! outbox resumes from its stored position; notifications sent while the connection was down are
//! lost, as `LISTEN` itself loses them.
//!
//! In cluster mode one instance consumes each source: the one holding its Redis lease
//! ([`lease`]); the others wait for the lease and deliver what the consumer publishes through
//! the bus like any other publish.
//!
//! [`Bus::publish`]: crate::bus::Bus::publish

mod lease;
mod outbox;
mod source;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::metrics::Page;

/// The figures of one source, for `GET /metrics`.
#[derive(Default)]
pub(crate) struct Stats {
    /// Notifications received on `listen` channels.
    notifications: AtomicU64,
    /// Reads of the outbox table.
    reads: AtomicU64,
    /// Outbox rows read.
    rows: AtomicU64,
    /// Notifications and rows that were not a valid publish item.
    rejected: AtomicU64,
    /// Notification items the bus refused (cluster bus unavailable), lost.
    unpublished: AtomicU64,
    /// Connection attempts after the first, failed ones included.
    reconnects: AtomicU64,
    /// Whether the connection is up.
    connected: AtomicBool,
    /// Whether this instance consumes the source (always, outside cluster mode, once started).
    consuming: AtomicBool,
    /// The id of the last outbox row acknowledged.
    position: AtomicI64,
}

impl Stats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Writes every source's figures.
fn write_metrics(sources: &[(String, Arc<Stats>)], page: &mut Page) {
    let each = |f: &dyn Fn(&Stats) -> u64| {
        sources
            .iter()
            .map(|(name, s)| (vec![("source", name.clone())], f(s)))
            .collect::<Vec<_>>()
    };
    let gauge = |f: &dyn Fn(&Stats) -> i64| {
        sources
            .iter()
            .map(|(name, s)| (vec![("source", name.clone())], f(s)))
            .collect::<Vec<_>>()
    };
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    page.counters(
        "holdfast_postgres_notifications_total",
        "Notifications received on a PostgreSQL source's listen channels",
        each(&|s| get(&s.notifications)),
    )
    .counters(
        "holdfast_postgres_outbox_reads_total",
        "Reads of a PostgreSQL source's outbox table (one per batch or poll)",
        each(&|s| get(&s.reads)),
    )
    .counters(
        "holdfast_postgres_rows_total",
        "Rows read from a PostgreSQL source's outbox table",
        each(&|s| get(&s.rows)),
    )
    .counters(
        "holdfast_postgres_rejected_total",
        "Notifications and outbox rows that were not a valid publish item, skipped",
        each(&|s| get(&s.rejected)),
    )
    .counters(
        "holdfast_postgres_unpublished_total",
        "Notification items the bus refused (cluster bus unavailable), lost",
        each(&|s| get(&s.unpublished)),
    )
    .counters(
        "holdfast_postgres_reconnects_total",
        "Connection attempts to PostgreSQL after the first, failed ones included",
        each(&|s| get(&s.reconnects)),
    )
    .gauges(
        "holdfast_postgres_connected",
        "1 when the source's PostgreSQL connection is up",
        gauge(&|s| i64::from(s.connected.load(Ordering::Relaxed))),
    )
    .gauges(
        "holdfast_postgres_consuming",
        "1 when this instance consumes the source (in cluster mode: holds its lease)",
        gauge(&|s| i64::from(s.consuming.load(Ordering::Relaxed))),
    )
    .gauges(
        "holdfast_postgres_outbox_position",
        "The id of the last outbox row this instance acknowledged",
        gauge(&|s| s.position.load(Ordering::Relaxed)),
    );
}

/// Waits between reconnection attempts: 250 ms, doubling up to a maximum, each with up to a
/// quarter more of jitter.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(250);

    fn new(max: Duration) -> Backoff {
        Backoff {
            next: Self::FIRST.min(max),
            max,
        }
    }

    /// The next wait.
    fn delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d + crate::retry::jitter(d / 4)
    }

    /// Back to the first wait, after a success.
    fn reset(&mut self) {
        self.next = Self::FIRST.min(self.max);
    }
}

/// The running sources; dropping the handle stops them.
pub struct PostgresTasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for PostgresTasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Starts one task per configured source.
pub fn start(app: Arc<App>) -> PostgresTasks {
    let sources = app.config.postgres.sources.clone();
    if sources.is_empty() {
        return PostgresTasks(Vec::new());
    }
    let mut tasks = Vec::new();
    let mut shown = Vec::new();
    for config in sources {
        let stats = Arc::new(Stats::default());
        shown.push((config.name.clone(), stats.clone()));
        let lease = lease::Lease::for_source(&app.config, &config.name, config.lease_ms);
        let source = source::Source::new(app.clone(), config, stats, lease);
        tasks.push(tokio::spawn(source.run()));
    }
    app.set_postgres_metrics(Box::new(move |page| write_metrics(&shown, page)));
    PostgresTasks(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_maximum_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(1000));
        let bases = [250, 500, 1000, 1000];
        for base in bases {
            let d = b.delay();
            let base = Duration::from_millis(base);
            assert!(d >= base && d <= base + base / 4, "{d:?} for {base:?}");
        }
        b.reset();
        assert!(b.delay() < Duration::from_millis(313));
    }
}
