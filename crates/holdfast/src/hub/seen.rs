//! Item ids recently published per channel, for duplicate removal.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Most ids remembered; past it the oldest is forgotten early.
const MAX_SEEN_IDS: usize = 100_000;

/// Recently seen `(channel, id)` pairs with a TTL. Bounded by [`MAX_SEEN_IDS`].
pub(super) struct SeenIds {
    ttl: Duration,
    set: HashMap<(String, String), Instant>,
    order: VecDeque<((String, String), Instant)>,
}

impl SeenIds {
    pub fn new(ttl: Duration) -> SeenIds {
        SeenIds {
            ttl,
            set: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Records the id; false when it was already seen within the TTL.
    pub fn insert(&mut self, channel: &str, id: &str) -> bool {
        if self.ttl.is_zero() {
            return true;
        }
        let now = Instant::now();
        while let Some((key, at)) = self.order.front() {
            if now.duration_since(*at) < self.ttl && self.order.len() < MAX_SEEN_IDS {
                break;
            }
            if self.set.get(key) == Some(at) {
                self.set.remove(key);
            }
            self.order.pop_front();
        }
        let key = (channel.to_string(), id.to_string());
        if self.set.contains_key(&key) {
            return false;
        }
        self.set.insert(key.clone(), now);
        self.order.push_back((key, now));
        true
    }
}
