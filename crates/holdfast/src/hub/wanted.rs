//! Which channels an engine that follows the hub's interest (the cluster bus's Redis
//! subscriptions, the ZeroMQ SUB input) should be subscribed to: every channel with local
//! subscribers, and for a while after its last one left, so that long-polls that re-poll at once
//! do not unsubscribe and resubscribe every round.
//!
//! The engine hears the hub's [`InterestFn`](super::InterestFn) events through a bounded queue;
//! when the queue overflows it drops the events and calls [`Wanted::resync`], which compares
//! with [`Hub::subscribed_channels`], so no change is lost and the hub never waits.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::Hub;

/// The channels an engine that follows the hub's interest should be subscribed to.
pub struct Wanted {
    delay: Duration,
    /// `None` while the channel has local subscribers; the deadline while it lingers after the
    /// last one left.
    pub channels: HashMap<String, Option<Instant>>,
    /// Lingering channels by deadline. The delay is fixed, so deadlines only grow; an entry whose
    /// channel was wanted again meanwhile is skipped when it comes up.
    expiry: VecDeque<(Instant, String)>,
}

impl Wanted {
    /// Nothing wanted yet; channels linger `delay` after their last subscriber left.
    pub fn new(delay: Duration) -> Wanted {
        Wanted {
            delay,
            channels: HashMap::new(),
            expiry: VecDeque::new(),
        }
    }

    /// `channel` has local subscribers.
    pub fn want(&mut self, channel: String) {
        self.channels.insert(channel, None);
    }

    /// The last local subscriber left `channel`: start its delay, or give it up at once (the
    /// returned channel is to be unsubscribed).
    pub fn release(&mut self, hub: &Hub, channel: String) -> Option<String> {
        if hub.subscribers(&channel) > 0 || !self.channels.contains_key(&channel) {
            return None;
        }
        if self.delay.is_zero() {
            self.channels.remove(&channel);
            return Some(channel);
        }
        // `cluster.unsubscribe_delay_secs` is the operator's: it may be anything.
        let at = crate::deadline::after(self.delay);
        self.channels.insert(channel.clone(), Some(at));
        self.expiry.push_back((at, channel));
        None
    }

    /// Follows an interest change without acting on it (while disconnected).
    pub fn note(&mut self, hub: &Hub, channel: String, on: bool) {
        if on {
            self.want(channel);
        } else {
            let _ = self.release(hub, channel);
        }
    }

    /// Takes the hub's channels (those `mine` accepts) as the truth: those are wanted, and the
    /// other wanted ones start lingering.
    pub fn resync(&mut self, hub: &Hub, mine: impl Fn(&str) -> bool) {
        let now: HashSet<String> = hub
            .subscribed_channels()
            .into_iter()
            .filter(|c| mine(c))
            .collect();
        let idle: Vec<String> = self
            .channels
            .iter()
            .filter(|(c, state)| state.is_none() && !now.contains(*c))
            .map(|(c, _)| c.clone())
            .collect();
        for c in now {
            self.want(c);
        }
        for c in idle {
            let _ = self.release(hub, c);
        }
    }

    /// When the next lingering channel's delay runs out.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.expiry.front().map(|(t, _)| *t)
    }

    /// Channels whose delay ran out with no local subscriber back; they are no longer wanted.
    pub fn expired(&mut self, hub: &Hub, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        while let Some((at, _)) = self.expiry.front() {
            if *at > now {
                break;
            }
            let (at, channel) = self.expiry.pop_front().expect("front exists");
            if self.channels.get(&channel) != Some(&Some(at)) {
                continue;
            }
            if hub.subscribers(&channel) > 0 {
                self.channels.insert(channel, None);
            } else {
                self.channels.remove(&channel);
                out.push(channel);
            }
        }
        out
    }
}
