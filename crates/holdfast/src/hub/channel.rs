//! One channel's state: its subscribers, the sequencer (last id and items waiting for their
//! predecessor) and its history of recent items.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{Delivery, Want};

/// How much state channels keep, from `[reliability]`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub history_items: usize,
    pub history_age: Duration,
    pub max_pending: usize,
    pub message_wait: Duration,
    pub linger: Duration,
}

pub(super) struct Subscriber {
    pub want: Want,
    pub tx: mpsc::Sender<Delivery>,
    /// A held stream's socket, for plain chunks the fan-out writes itself.
    pub sink: Option<std::sync::Arc<super::Sink>>,
}

struct Stored {
    item: Delivery,
    at: Instant,
    bytes: usize,
}

pub(super) struct Pending {
    pub item: Delivery,
    /// On tokio's clock, so a paused test clock drives it.
    pub deadline: tokio::time::Instant,
}

/// Where a subscription that names a `prev-id` stands against the channel.
#[derive(Debug, Clone)]
pub enum Resume {
    /// Nothing was missed (no `prev-id`, the channel has no known last id, or `prev-id` is it).
    Live,
    /// These items, from history, were published after `prev-id`, oldest first.
    Replay(Vec<Delivery>),
    /// Items may have been missed that local history cannot supply.
    Stale {
        /// The channel's last published id, when known here.
        last_id: Option<String>,
    },
}

#[derive(Default)]
pub(super) struct Channel {
    pub subscribers: HashMap<u64, Subscriber>,
    /// Subscribers per mode ([`Want::index`]), for the per-mode interest listeners.
    pub modes: [u32; 4],
    pub last_id: Option<String>,
    pub pending: VecDeque<Pending>,
    history: VecDeque<Stored>,
    pub history_bytes: usize,
    /// Until when the channel counts as recently subscribed (for first-subscriber updates).
    pub linger_until: Option<Instant>,
}

impl Channel {
    /// True when nothing is left worth keeping.
    pub fn is_idle(&self, now: Instant) -> bool {
        self.subscribers.is_empty()
            && self.pending.is_empty()
            && self.history.is_empty()
            && self.linger_until.is_none_or(|t| t <= now)
    }

    /// Whether an item must wait for its predecessor.
    pub fn must_wait(&self, item: &grip::publish::PublishItem) -> bool {
        !item.no_seq
            && item.prev_id.is_some()
            && self.last_id.is_some()
            && item.prev_id != self.last_id
    }

    /// Records a delivered item: last id and history. Returns the history bytes added.
    pub fn record(&mut self, item: &Delivery, limits: &Limits, now: Instant) -> usize {
        let Some(id) = &item.id else {
            return 0;
        };
        self.last_id = Some(id.clone());
        if limits.history_items == 0 {
            return 0;
        }
        let bytes = item_bytes(item);
        self.history.push_back(Stored {
            item: item.clone(),
            at: now,
            bytes,
        });
        self.history_bytes += bytes;
        let mut freed = 0;
        while self.history.len() > limits.history_items {
            freed += self.evict_oldest();
        }
        bytes.saturating_sub(freed)
    }

    /// Drops the oldest history item; returns its bytes.
    pub fn evict_oldest(&mut self) -> usize {
        match self.history.pop_front() {
            Some(s) => {
                self.history_bytes -= s.bytes;
                s.bytes
            }
            None => 0,
        }
    }

    /// When the oldest history item was stored.
    pub fn oldest_at(&self) -> Option<Instant> {
        self.history.front().map(|s| s.at)
    }

    /// Drops history older than the limit; returns the bytes freed.
    pub fn expire(&mut self, limits: &Limits, now: Instant) -> usize {
        let mut freed = 0;
        while self
            .history
            .front()
            .is_some_and(|s| now.duration_since(s.at) >= limits.history_age)
        {
            freed += self.evict_oldest();
        }
        freed
    }

    /// Where a subscriber resuming from `prev_id` stands.
    pub fn resume(&self, prev_id: Option<&str>) -> Resume {
        let (Some(prev), Some(last)) = (prev_id, self.last_id.as_deref()) else {
            return Resume::Live;
        };
        if prev == last {
            return Resume::Live;
        }
        match self.after(prev, None) {
            Some(items) => Resume::Replay(items),
            None => Resume::Stale {
                last_id: Some(last.to_string()),
            },
        }
    }

    /// Whether `id` comes no later than `position` in history (both present).
    pub fn is_at_or_before(&self, id: &str, position: &str) -> bool {
        let index = |want: &str| {
            self.history
                .iter()
                .position(|s| s.item.id.as_deref() == Some(want))
        };
        matches!((index(id), index(position)), (Some(a), Some(b)) if a <= b)
    }

    /// Items after the one with id `after`, up to and including the one with id `upto` (or to
    /// the end). `None` when `after` is not in history.
    pub fn after(&self, after: &str, upto: Option<&str>) -> Option<Vec<Delivery>> {
        let start = self
            .history
            .iter()
            .position(|s| s.item.id.as_deref() == Some(after))?;
        let mut out = Vec::new();
        for s in self.history.iter().skip(start + 1) {
            out.push(s.item.clone());
            if upto.is_some() && s.item.id.as_deref() == upto {
                break;
            }
        }
        Some(out)
    }
}

/// The content bytes an item holds, for the history's memory bound.
fn item_bytes(item: &grip::publish::PublishItem) -> usize {
    let f = &item.formats;
    let body = match f.http_response.as_ref().map(|r| &r.body) {
        Some(grip::publish::ResponseBody::Bytes(b)) => b.len(),
        _ => 0,
    };
    let stream = f.http_stream.as_ref().map_or(0, |s| s.content.len());
    let ws = f.ws_message.as_ref().map_or(0, |w| w.content.len());
    // Fixed part: the item, its id and channel strings.
    256 + item.channel.len() + body + stream + ws
}
