//! The PUB stats socket (reference §4.8, §7): each packet is one message, `<type> T<tnetstring>`
//! or `<type> J<json>` (`zmq.stats_format`), with Pushpin's fields (captured from Pushpin 1.36):
//!
//! - `conn` `{from, id, type: http|ws, peer-address, ssl?, route?, ttl}` when a held connection
//!   opens, again every `stats_connection_ttl / 2` seconds while it stays, and
//!   `{from, id, unavailable: true}` when it closes (`stats_connection_send`);
//! - `sub` `{from, mode: response|stream|ws, channel, subscribers, ttl}` when a channel gets its
//!   first subscriber of a mode, again every `stats_subscription_ttl / 2` seconds, and
//!   `{from, mode, channel, unavailable: true}` when the last leaves — for `response` only after
//!   `subscription_linger` seconds without a long-poll coming back, as Pushpin;
//! - `report` `{from, connections, minutes, received, sent, http-response-sent, duration}` every
//!   `stats_report_interval` seconds: the most connections open at once, connection-minutes
//!   (sampled every second), items published, items delivered, of which to long-polls, and the
//!   milliseconds the report covers. Pushpin's byte and message counters are not kept.
//!
//! The hub and the connection registry only `try_send` into a bounded queue
//! (`zmq.stats_queue`): a slow subscriber never slows fan-out. When the queue is full a packet
//! is dropped and counted (`holdfast_zmq_stats_dropped_total`); a dropped `sub` change makes
//! the task resync with the hub, and a dropped `conn` is corrected by the next refresh (an open)
//! or by its `ttl` running out (a close).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use grip::tnetstring::Value;
use tokio::sync::{mpsc, Notify};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use zeromq::SocketSend as _;

use super::Counters;
use crate::app::App;
use crate::config::zmq::StatsFormat;
use crate::conns::{ConnChange, ConnInfo};
use crate::hub::{HubStats, Want};

enum Event {
    Conn(ConnChange),
    Sub(String, Want, bool),
}

/// Starts the stats task: it hears the hub and the connection registry from now on.
pub(super) fn start(
    app: Arc<App>,
    socket: zeromq::PubSocket,
    counters: Arc<Counters>,
) -> tokio::task::JoinHandle<()> {
    let c = &app.config.zmq;
    let (tx, rx) = mpsc::channel(c.stats_queue);
    let resync = Arc::new((AtomicBool::new(false), Notify::new()));
    if c.stats_connection_send {
        let (tx, counters) = (tx.clone(), counters.clone());
        app.conns.on_change(Arc::new(move |change| {
            if tx.try_send(Event::Conn(change)).is_err() {
                Counters::add(&counters.stats_dropped);
            }
        }));
    }
    {
        let (flag, counters) = (resync.clone(), counters.clone());
        app.hub
            .on_mode_interest(Arc::new(move |channel: &str, want: Want, on: bool| {
                if tx
                    .try_send(Event::Sub(channel.to_string(), want, on))
                    .is_err()
                {
                    Counters::add(&counters.stats_dropped);
                    flag.0.store(true, Ordering::Release);
                    flag.1.notify_one();
                }
            }));
    }
    let stats = Stats {
        last: app.hub.stats(),
        last_report: Instant::now(),
        conn_seconds: 0,
        subs: HashMap::new(),
        app,
        socket,
        counters,
    };
    tokio::spawn(stats.run(rx, resync))
}

/// A channel subscribed in one mode, and when its removal is due if it is lingering.
type Subs = HashMap<(String, Want), Option<Instant>>;

struct Stats {
    app: Arc<App>,
    socket: zeromq::PubSocket,
    counters: Arc<Counters>,
    subs: Subs,
    last: HubStats,
    last_report: Instant,
    conn_seconds: u64,
}

fn every(secs: u64) -> Interval {
    let period = Duration::from_secs(secs.max(1));
    let mut i = tokio::time::interval_at(Instant::now() + period, period);
    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
    i
}

impl Stats {
    async fn run(mut self, mut rx: mpsc::Receiver<Event>, resync: Arc<(AtomicBool, Notify)>) {
        let c = self.app.config.zmq.clone();
        let mut conn_refresh = every(c.stats_connection_ttl / 2);
        let mut sub_refresh = every(c.stats_subscription_ttl / 2);
        let mut report = every(c.stats_report_interval);
        let mut sample = every(1);
        self.resync();
        loop {
            let linger = self.subs.values().flatten().min().copied();
            tokio::select! {
                event = rx.recv() => match event {
                    Some(Event::Conn(ConnChange::Open(info))) => self.conn(&info).await,
                    Some(Event::Conn(ConnChange::Close(id))) => {
                        let fields = vec![("id", Value::str(&id)), ("unavailable", Value::Bool(true))];
                        self.send("conn", fields).await;
                    }
                    Some(Event::Sub(channel, want, on)) => self.sub_changed(channel, want, on).await,
                    None => return,
                },
                () = resync.1.notified() => {
                    if resync.0.swap(false, Ordering::AcqRel) {
                        self.resync();
                    }
                }
                _ = conn_refresh.tick(), if c.stats_connection_send => {
                    for info in self.app.conns.all() {
                        self.conn(&info).await;
                    }
                }
                _ = sub_refresh.tick() => {
                    let subs: Vec<(String, Want)> = self.subs.keys().cloned().collect();
                    for (channel, want) in subs {
                        self.sub(&channel, want).await;
                    }
                }
                () = sleep_until(linger) => self.expire_lingering().await,
                _ = report.tick(), if c.stats_report_interval > 0 => self.report().await,
                _ = sample.tick(), if c.stats_report_interval > 0 => {
                    self.conn_seconds += self.app.conns.count() as u64;
                }
            }
        }
    }

    /// Takes the hub's subscribed modes as the truth: new ones are announced, and those gone
    /// start their removal as if their last subscriber had just left.
    fn resync(&mut self) {
        let now: Vec<(String, Want)> = self.app.hub.subscribed_modes();
        for key in &now {
            self.subs.insert(key.clone(), None);
        }
        let linger = self.linger();
        for (key, due) in self.subs.iter_mut() {
            if due.is_none() && !now.contains(key) {
                let wait = if key.1 == Want::HttpResponse {
                    linger
                } else {
                    Duration::ZERO
                };
                *due = Some(crate::deadline::after(wait));
            }
        }
    }

    fn linger(&self) -> Duration {
        Duration::from_secs(self.app.config.zmq.subscription_linger)
    }

    async fn sub_changed(&mut self, channel: String, want: Want, on: bool) {
        let key = (channel, want);
        if on {
            let was_lingering = self.subs.insert(key.clone(), None).is_some();
            if !was_lingering {
                self.sub(&key.0, want).await;
            }
            return;
        }
        if want == Want::HttpResponse && !self.linger().is_zero() {
            let at = crate::deadline::after(self.linger());
            if let Some(due) = self.subs.get_mut(&key) {
                *due = Some(at);
            }
            return;
        }
        if self.subs.remove(&key).is_some() {
            self.sub_gone(&key.0, want).await;
        }
    }

    async fn expire_lingering(&mut self) {
        let now = Instant::now();
        let due: Vec<(String, Want)> = self
            .subs
            .iter()
            .filter(|(_, d)| d.is_some_and(|d| d <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for (channel, want) in due {
            if self.app.hub.mode_subscribers(&channel, want) > 0 {
                self.subs.insert((channel, want), None);
            } else {
                self.subs.remove(&(channel.clone(), want));
                self.sub_gone(&channel, want).await;
            }
        }
    }

    async fn conn(&mut self, info: &ConnInfo) {
        let mut fields = vec![
            ("id", Value::str(&info.id)),
            ("type", Value::str(info.kind.name())),
        ];
        if let Some(peer) = info.client.peer {
            fields.push(("peer-address", Value::str(&peer.to_string())));
        }
        if info.client.tls {
            fields.push(("ssl", Value::Bool(true)));
        }
        if let Some(route) = &info.route {
            fields.push(("route", Value::str(route)));
        }
        let ttl = self.app.config.zmq.stats_connection_ttl;
        fields.push(("ttl", Value::Int(ttl as i64)));
        self.send("conn", fields).await;
    }

    async fn sub(&mut self, channel: &str, want: Want) {
        let subscribers = self.app.hub.mode_subscribers(channel, want);
        let ttl = self.app.config.zmq.stats_subscription_ttl;
        let fields = vec![
            ("mode", Value::str(want.mode_name())),
            ("channel", Value::str(channel)),
            ("subscribers", Value::Int(subscribers as i64)),
            ("ttl", Value::Int(ttl as i64)),
        ];
        self.send("sub", fields).await;
    }

    async fn sub_gone(&mut self, channel: &str, want: Want) {
        let fields = vec![
            ("mode", Value::str(want.mode_name())),
            ("channel", Value::str(channel)),
            ("unavailable", Value::Bool(true)),
        ];
        self.send("sub", fields).await;
    }

    async fn report(&mut self) {
        let now = Instant::now();
        let stats = self.app.hub.stats();
        let delta = |a: u64, b: u64| Value::Int(a.saturating_sub(b) as i64);
        let minutes = self.conn_seconds / 60;
        self.conn_seconds %= 60;
        let fields = vec![
            ("connections", Value::Int(self.app.conns.take_peak() as i64)),
            ("minutes", Value::Int(minutes as i64)),
            ("received", delta(stats.published, self.last.published)),
            ("sent", delta(stats.delivered, self.last.delivered)),
            (
                "http-response-sent",
                delta(stats.responses, self.last.responses),
            ),
            (
                "duration",
                Value::Int((now - self.last_report).as_millis() as i64),
            ),
        ];
        self.last = stats;
        self.last_report = now;
        self.send("report", fields).await;
    }

    /// Sends one packet: `<type> ` and the fields, `from` first.
    async fn send(&mut self, kind: &str, fields: Vec<(&str, Value)>) {
        let mut all = Vec::with_capacity(fields.len() + 1);
        all.push(("from", Value::str(&self.app.instance)));
        all.extend(fields);
        let packet = encode(kind, self.app.config.zmq.stats_format, all);
        match self.socket.send(Bytes::from(packet).into()).await {
            Ok(()) => Counters::add(&self.counters.stats_sent),
            Err(e) => tracing::debug!(error = %e, "zmq: stats packet not sent"),
        }
    }
}

/// `<kind> T<tnetstring>` or `<kind> J<json>`.
fn encode(kind: &str, format: StatsFormat, fields: Vec<(&str, Value)>) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(kind.as_bytes());
    out.push(b' ');
    match format {
        StatsFormat::Tnetstring => {
            out.push(b'T');
            Value::map(fields).encode(&mut out);
        }
        StatsFormat::Json => {
            out.push(b'J');
            let map: serde_json::Map<String, serde_json::Value> = fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), to_json(v)))
                .collect();
            out.extend(serde_json::to_vec(&map).expect("JSON values always serialize"));
        }
    }
    out
}

/// A stats field as JSON: the fields are text, integers and booleans.
fn to_json(v: Value) -> serde_json::Value {
    match v {
        Value::Bytes(b) => String::from_utf8_lossy(&b).into_owned().into(),
        Value::Int(n) => n.into(),
        Value::Bool(b) => b.into(),
        other => grip::publish::tnet_to_json(&other).unwrap_or(serde_json::Value::Null),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_encode_as_pushpin_reads_them() {
        let fields = || {
            vec![
                ("from", Value::str("holdfast_1")),
                ("id", Value::str("c1")),
                ("unavailable", Value::Bool(true)),
                ("ttl", Value::Int(120)),
            ]
        };
        let t = encode("conn", StatsFormat::Tnetstring, fields());
        let (kind, body) = t.split_at(5);
        assert_eq!(kind, b"conn ");
        assert_eq!(body[0], b'T');
        let v = grip::tnetstring::parse(&body[1..]).unwrap();
        assert_eq!(v.get("unavailable"), Some(&Value::Bool(true)));
        assert_eq!(v.get("ttl"), Some(&Value::Int(120)));
        let j = encode("conn", StatsFormat::Json, fields());
        assert_eq!(
            std::str::from_utf8(&j).unwrap(),
            r#"conn J{"from":"holdfast_1","id":"c1","ttl":120,"unavailable":true}"#
        );
    }
}
