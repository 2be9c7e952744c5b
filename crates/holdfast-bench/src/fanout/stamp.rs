//! The content of a benchmark message: its sequence number and publish time.
//!
//! A message carries `seq=N ts=MICROS`, where `MICROS` is the publisher's wall clock in
//! microseconds since the Unix epoch, taken just before the publish request is sent. Publisher
//! and subscribers run on the same machine, so `receive time - ts` is the publish → delivery
//! latency. Sequence numbers start at 1; anything else in a body (the origin's preamble, a
//! timeout body) carries no stamp and is ignored.

use std::time::{SystemTime, UNIX_EPOCH};

/// One message's identity and publish time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Sequence number, from 1.
    pub seq: u64,
    /// Publish time in microseconds since the Unix epoch.
    pub ts_us: u64,
}

impl Stamp {
    /// Stamps message `seq` with the current time.
    pub fn now(seq: u64) -> Stamp {
        Stamp {
            seq,
            ts_us: now_us(),
        }
    }

    /// Renders the stamp as one SSE event (`data: seq=N ts=T` and a blank line).
    pub fn to_sse_event(self) -> String {
        format!("data: seq={} ts={}\n\n", self.seq, self.ts_us)
    }

    /// Renders the stamp as a one-line body for a long-poll response.
    pub fn to_line(self) -> String {
        format!("seq={} ts={}\n", self.seq, self.ts_us)
    }
}

/// The current wall clock in microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Finds every stamp in `text`, one per line at most, in order.
pub fn parse_stamps(text: &str) -> impl Iterator<Item = Stamp> + '_ {
    text.lines().filter_map(parse_line)
}

fn parse_line(line: &str) -> Option<Stamp> {
    let rest = &line[line.find("seq=")? + "seq=".len()..];
    let (seq, rest) = rest.split_once(' ')?;
    let ts = rest.strip_prefix("ts=")?;
    let ts = ts.split(|c: char| !c.is_ascii_digit()).next()?;
    Some(Stamp {
        seq: seq.parse().ok()?,
        ts_us: ts.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_event_round_trips() {
        let s = Stamp {
            seq: 3,
            ts_us: 1_700_000_000_123_456,
        };
        let found: Vec<_> = parse_stamps(&s.to_sse_event()).collect();
        assert_eq!(found, vec![s]);
    }

    #[test]
    fn line_round_trips() {
        let s = Stamp { seq: 12, ts_us: 42 };
        assert_eq!(parse_stamps(&s.to_line()).collect::<Vec<_>>(), vec![s]);
    }

    #[test]
    fn finds_several_events_among_other_lines() {
        let text = ":ok\n\ndata: seq=1 ts=10\n\ndata: seq=2 ts=20\n\n";
        let seqs: Vec<_> = parse_stamps(text).map(|s| s.seq).collect();
        assert_eq!(seqs, vec![1, 2]);
    }

    #[test]
    fn ignores_bodies_without_a_stamp() {
        assert_eq!(parse_stamps("timeout\n").count(), 0);
        assert_eq!(parse_stamps("seq=x ts=1\n").count(), 0);
        assert_eq!(parse_stamps("seq=1\n").count(), 0);
    }
}
