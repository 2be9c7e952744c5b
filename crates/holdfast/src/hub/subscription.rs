//! A connection's membership in its channels: what it subscribed to, and what it may ask the
//! hub about those channels while it lives.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Delivery, Inner, Resume, Want};
use crate::sink::Sink;

/// A connection's membership in its channels; dropping it leaves them all.
///
/// It keeps only a weak handle on the connection's queue: once the hub drops its senders
/// (the last channel left, or [`Hub::close_all`](super::Hub::close_all) at shutdown) the receiver sees the end.
pub struct Subscription {
    pub(super) inner: Arc<Inner>,
    pub(super) id: u64,
    pub(super) want: Want,
    pub(super) tx: mpsc::WeakSender<Delivery>,
    pub(super) sink: Option<Arc<Sink>>,
    pub(super) channels: Vec<String>,
}

impl Subscription {
    /// Adds a channel to this connection's subscriptions (WebSocket `subscribe`). Returns false
    /// when it was already subscribed, or the connection's queue is gone.
    pub fn add(&mut self, channel: String) -> bool {
        if self.channels.contains(&channel) {
            return false;
        }
        let Some(tx) = self.tx.upgrade() else {
            return false;
        };
        let mut shard = self
            .inner
            .shard(&channel)
            .lock()
            .expect("hub shard poisoned");
        self.inner.join(
            &mut shard,
            &channel,
            self.id,
            self.want,
            tx,
            self.sink.clone(),
        );
        drop(shard);
        self.channels.push(channel);
        true
    }

    /// Adds a channel as [`Subscription::add`] does, telling what a subscriber that has seen
    /// `prev_id` missed ([`Hub::subscribe_resuming`](super::Hub::subscribe_resuming)). `None`
    /// when it was already subscribed, or the connection's queue is gone.
    pub fn add_resuming(&mut self, channel: String, prev_id: Option<&str>) -> Option<Resume> {
        if self.channels.contains(&channel) {
            return None;
        }
        let tx = self.tx.upgrade()?;
        let resume =
            self.inner
                .join_resuming(&channel, prev_id, self.id, self.want, tx, self.sink.clone());
        self.channels.push(channel);
        Some(resume)
    }

    /// Leaves one channel. Returns false when it was not subscribed.
    pub fn remove(&mut self, channel: &str) -> bool {
        let Some(pos) = self.channels.iter().position(|c| c == channel) else {
            return false;
        };
        self.channels.remove(pos);
        self.inner.leave(channel, self.id);
        true
    }

    /// The connection's id in the hub.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The channels subscribed to.
    pub fn channels(&self) -> &[String] {
        &self.channels
    }

    /// Whether the item with id `id` was published on `channel` no later than the one with id
    /// `position` (both still in history): a session at `position` already has it.
    pub fn is_covered(&self, channel: &str, id: &str, position: &str) -> bool {
        let shard = self
            .inner
            .shard(channel)
            .lock()
            .expect("hub shard poisoned");
        shard
            .get(channel)
            .is_some_and(|ch| ch.is_at_or_before(id, position))
    }

    /// History items on `channel` after id `after` up to and including `upto`; `None` when the
    /// history no longer has `after`. Used to fill a gap a session noticed.
    pub fn history_between(
        &self,
        channel: &str,
        after: &str,
        upto: Option<&str>,
    ) -> Option<Vec<Delivery>> {
        let shard = self
            .inner
            .shard(channel)
            .lock()
            .expect("hub shard poisoned");
        shard.get(channel)?.after(after, upto)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        for name in &self.channels {
            self.inner.leave(name, self.id);
        }
    }
}
