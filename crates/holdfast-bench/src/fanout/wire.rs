//! What a worker process tells the parent, one JSON object per line on its stdout.
//!
//! A worker prints a [`Report::Progress`] whenever its counters change (at most every
//! [`PROGRESS_EVERY`]), and a single [`Report::Result`] once the parent writes `finish` to its
//! stdin (or closes it, or the worker's deadline passes). Nothing else goes to stdout; diagnostics
//! go to stderr.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How often a worker reports changed counters.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// The line the parent writes to a worker's stdin to ask for its result.
pub const FINISH: &str = "finish";

/// One line of a worker's stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    /// The worker's counters so far.
    Progress(Counters),
    /// The final counters and every latency sample.
    Result(WorkerResult),
}

/// Monotonic per-worker counters, summed over its subscribers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Subscribers whose first connection is established.
    pub connected: u64,
    /// Subscribers that received response headers at least once.
    pub headers: u64,
    /// SSE: subscribers that received the first body bytes; long-poll: subscribers whose first
    /// connection is established (their first request follows at once); WebSocket: subscribers
    /// whose handshake completed.
    pub ready: u64,
    /// Subscribers that gave up after repeated failed attempts.
    pub failed: u64,
    /// SSE streams and WebSockets that ended or broke after being ready.
    pub closed: u64,
    /// Long-poll: new connections opened after the first one closed.
    pub reconnects: u64,
    /// Long-poll: completed responses.
    pub polls: u64,
    /// Stamped messages received, all sequence numbers together.
    pub received: u64,
}

impl Counters {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Counters) {
        self.connected += other.connected;
        self.headers += other.headers;
        self.ready += other.ready;
        self.failed += other.failed;
        self.closed += other.closed;
        self.reconnects += other.reconnects;
        self.polls += other.polls;
        self.received += other.received;
    }
}

/// A worker's final report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerResult {
    /// Final counters.
    pub counters: Counters,
    /// `latencies_us[seq - 1]`: publish → delivery latency of each delivery of message `seq`.
    pub latencies_us: Vec<Vec<u64>>,
    /// Deliveries of a sequence number a subscriber had already received.
    pub duplicates: u64,
    /// Error descriptions and how often each happened.
    pub errors: BTreeMap<String, u64>,
    /// Wall clock of the last stamped delivery, in microseconds since the Unix epoch (0: none).
    #[serde(default)]
    pub last_delivery_us: u64,
    /// Wall clock of the worker's first connection attempt, in microseconds since the Unix
    /// epoch (0: none).
    #[serde(default)]
    pub first_connect_us: u64,
    /// Wall clock when the last of the worker's subscribers became ready (see
    /// [`Counters::ready`]), in microseconds since the Unix epoch (0: none).
    #[serde(default)]
    pub last_ready_us: u64,
    /// The deliveries of `latencies_us` broken down by proxy, in `--proxy` order.
    #[serde(default)]
    pub per_proxy: Vec<ProxyTally>,
}

/// What one worker's subscribers on one proxy received.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyTally {
    /// Subscribers counted as ready (see [`Counters::ready`]).
    pub ready: u64,
    /// `delivered[seq - 1]`: deliveries of message `seq`.
    pub delivered: Vec<u64>,
    /// `last_us[seq - 1]`: the slowest publish → delivery latency of message `seq`.
    pub last_us: Vec<u64>,
}

impl ProxyTally {
    /// An empty tally for `messages` sequence numbers.
    pub fn new(messages: usize) -> ProxyTally {
        ProxyTally {
            ready: 0,
            delivered: vec![0; messages],
            last_us: vec![0; messages],
        }
    }

    /// Counts one delivery of the message in `slot` with latency `us`.
    pub fn record(&mut self, slot: usize, us: u64) {
        if let (Some(d), Some(l)) = (self.delivered.get_mut(slot), self.last_us.get_mut(slot)) {
            *d += 1;
            *l = (*l).max(us);
        }
    }

    /// Adds `other` (another worker's tally for the same proxy) into `self`.
    pub fn add(&mut self, other: &ProxyTally) {
        self.ready += other.ready;
        for (slot, (&d, &l)) in other.delivered.iter().zip(&other.last_us).enumerate() {
            if slot >= self.delivered.len() {
                self.delivered.push(0);
                self.last_us.push(0);
            }
            self.delivered[slot] += d;
            self.last_us[slot] = self.last_us[slot].max(l);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_is_one_json_line() {
        let line = serde_json::to_string(&Report::Progress(Counters {
            ready: 5,
            ..Counters::default()
        }))
        .unwrap();
        assert!(!line.contains('\n'));
        match serde_json::from_str::<Report>(&line).unwrap() {
            Report::Progress(c) => assert_eq!(c.ready, 5),
            Report::Result(_) => panic!("decoded the wrong variant"),
        }
    }

    #[test]
    fn proxy_tallies_add_up() {
        let mut a = ProxyTally::new(2);
        a.ready = 2;
        a.record(0, 500);
        a.record(0, 300);
        a.record(5, 1);
        let mut b = ProxyTally::new(2);
        b.ready = 1;
        b.record(0, 900);
        b.record(1, 100);
        a.add(&b);
        assert_eq!(a.ready, 3);
        assert_eq!(a.delivered, vec![3, 1]);
        assert_eq!(a.last_us, vec![900, 100]);
    }
}
