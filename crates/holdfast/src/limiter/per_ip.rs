//! Optional caps per client address on the client listeners: how many connections one address
//! may hold open (`limits.max_connections_per_ip`), and how many new connections per second it
//! may open (`limits.connection_rate_per_ip`, a token bucket with a burst of the same size).
//!
//! The key is the TCP peer's address (an IPv4-mapped IPv6 address counts as its IPv4 one), not
//! `X-Forwarded-For`: behind a load balancer every client has the balancer's address, and these
//! caps must stay off. A connection over either cap is closed as soon as it is accepted, before
//! any byte is read, and counted in `holdfast_connections_refused_total`.
//!
//! The table has an entry only for an address with an open connection or a bucket that is not
//! full yet; [`PerIp::sweep`] removes the rest, so it is bounded by the open connections plus
//! the addresses that connected within the last second or so.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

/// The per-address caps and the table of addresses they are counting.
pub struct PerIp {
    /// 0: no cap.
    max_connections: u32,
    /// New connections per second; 0: no cap.
    rate: u32,
    table: Mutex<HashMap<IpAddr, Entry>>,
    refused_connections: AtomicU64,
    refused_rate: AtomicU64,
}

struct Entry {
    open: u32,
    /// Tokens in the bucket as of `at`.
    tokens: f64,
    at: Instant,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The address already holds `max_connections_per_ip` connections.
    Connections,
    /// The address opened `connection_rate_per_ip` connections within the last second.
    Rate,
}

impl Refusal {
    /// The `reason` label of `holdfast_connections_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Connections => "max_connections_per_ip",
            Refusal::Rate => "connection_rate_per_ip",
        }
    }
}

/// Counts one open connection of an address until it is dropped.
pub struct PeerGuard {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    /// The caps, or `None` when both are 0 (off), so a connection carries nothing for them.
    pub fn new(max_connections: u32, rate: u32) -> Option<Arc<PerIp>> {
        (max_connections > 0 || rate > 0).then(|| {
            Arc::new(PerIp {
                max_connections,
                rate,
                table: Mutex::new(HashMap::new()),
                refused_connections: AtomicU64::new(0),
                refused_rate: AtomicU64::new(0),
            })
        })
    }

    /// Admits a new connection from `ip`, or says which cap refuses it (and counts that).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Box<PeerGuard>, Refusal> {
        self.admit_at(ip.to_canonical(), Instant::now())
    }

    fn admit_at(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Box<PeerGuard>, Refusal> {
        let rate = f64::from(self.rate);
        let mut table = self.table.lock().expect("per-ip table poisoned");
        let entry = table.entry(ip).or_insert(Entry {
            open: 0,
            tokens: rate,
            at: now,
        });
        let refusal = if self.max_connections > 0 && entry.open >= self.max_connections {
            Some(Refusal::Connections)
        } else if self.rate > 0 {
            entry.tokens = refilled(entry, rate, now);
            entry.at = now;
            if entry.tokens >= 1.0 {
                entry.tokens -= 1.0;
                None
            } else {
                Some(Refusal::Rate)
            }
        } else {
            None
        };
        if let Some(refusal) = refusal {
            let idle = entry.open == 0 && entry.tokens >= rate;
            if idle {
                table.remove(&ip);
            }
            match refusal {
                Refusal::Connections => &self.refused_connections,
                Refusal::Rate => &self.refused_rate,
            }
            .fetch_add(1, Ordering::Relaxed);
            return Err(refusal);
        }
        entry.open += 1;
        Ok(Box::new(PeerGuard {
            table: self.clone(),
            ip,
        }))
    }

    /// Forgets the addresses with no open connection whose bucket has refilled.
    pub fn sweep(&self) {
        let rate = f64::from(self.rate);
        let now = Instant::now();
        let mut table = self.table.lock().expect("per-ip table poisoned");
        table.retain(|_, e| e.open > 0 || refilled(e, rate, now) < rate);
    }

    /// Addresses in the table now.
    pub fn tracked(&self) -> usize {
        self.table.lock().expect("per-ip table poisoned").len()
    }

    /// Connections refused so far, by cap.
    pub fn refused(&self, why: Refusal) -> u64 {
        match why {
            Refusal::Connections => &self.refused_connections,
            Refusal::Rate => &self.refused_rate,
        }
        .load(Ordering::Relaxed)
    }
}

/// The tokens `e`'s bucket holds at `now`, at most `rate`.
fn refilled(e: &Entry, rate: f64, now: Instant) -> f64 {
    (e.tokens + now.saturating_duration_since(e.at).as_secs_f64() * rate).min(rate)
}

impl Drop for PeerGuard {
    fn drop(&mut self) {
        let mut table = self.table.table.lock().expect("per-ip table poisoned");
        if let Some(e) = table.get_mut(&self.ip) {
            e.open = e.open.saturating_sub(1);
            // Without a rate cap an address with nothing open has nothing left to count.
            if e.open == 0 && self.table.rate == 0 {
                table.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn off_when_both_caps_are_zero() {
        assert!(PerIp::new(0, 0).is_none());
    }

    #[test]
    fn connection_cap_counts_open_connections_per_address() {
        let caps = PerIp::new(2, 0).unwrap();
        let a = caps.admit(ip("10.0.0.1")).unwrap();
        let _b = caps.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(caps.admit(ip("10.0.0.1")).err(), Some(Refusal::Connections));
        // The same address mapped into IPv6 is the same client.
        assert_eq!(
            caps.admit(ip("::ffff:10.0.0.1")).err(),
            Some(Refusal::Connections)
        );
        // Another address is not affected.
        let _c = caps.admit(ip("10.0.0.2")).unwrap();
        drop(a);
        let _d = caps.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(caps.refused(Refusal::Connections), 2);
        assert_eq!(caps.refused(Refusal::Rate), 0);
    }

    #[test]
    fn closed_connections_leave_no_entry_without_a_rate_cap() {
        let caps = PerIp::new(1, 0).unwrap();
        drop(caps.admit(ip("10.0.0.1")).unwrap());
        drop(caps.admit(ip("10.0.0.2")).unwrap());
        assert_eq!(caps.tracked(), 0);
    }

    #[test]
    fn rate_cap_allows_a_burst_then_refills() {
        let caps = PerIp::new(0, 3).unwrap();
        let t0 = Instant::now();
        let a = ip("192.0.2.7");
        for _ in 0..3 {
            drop(caps.admit_at(a, t0).unwrap());
        }
        assert_eq!(caps.admit_at(a, t0).err(), Some(Refusal::Rate));
        // A third of a second later, one token is back.
        let later = t0 + Duration::from_millis(340);
        drop(caps.admit_at(a, later).unwrap());
        assert_eq!(caps.admit_at(a, later).err(), Some(Refusal::Rate));
        assert_eq!(caps.refused(Refusal::Rate), 2);
        // Other addresses have their own bucket.
        drop(caps.admit_at(ip("192.0.2.8"), later).unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn sweep_forgets_addresses_whose_bucket_refilled() {
        let caps = PerIp::new(0, 10).unwrap();
        drop(caps.admit(ip("192.0.2.1")).unwrap());
        let open = caps.admit(ip("192.0.2.2")).unwrap();
        caps.sweep();
        assert_eq!(caps.tracked(), 2, "buckets not yet refilled are kept");
        tokio::time::advance(Duration::from_secs(1)).await;
        caps.sweep();
        assert_eq!(
            caps.tracked(),
            1,
            "the address with an open connection stays"
        );
        drop(open);
        caps.sweep();
        assert_eq!(caps.tracked(), 0);
    }
}
