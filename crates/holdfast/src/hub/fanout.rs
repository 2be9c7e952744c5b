//! Fan-out: recording an item on its channel and handing it to every subscriber — queued, or
//! written to an idle connection's socket by the fan-out itself ([`crate::sink`]) — then
//! releasing the items that waited for it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::{Channel, Delivery, Inner, Want};
use crate::metrics::Histogram;
use crate::sink::{plain_answer, plain_chunk, plain_ws_frame, Offer, Payload, PlainAnswer, Sink};

/// Streams one fan-out task writes to: small enough that a task does not hold its worker long.
const WRITE_BATCH: usize = 256;

/// Reserved connections few enough to write inline, without a task. A connection waits for its
/// reserved write before it writes anything else, and a spawned task may wait in the run queue
/// behind the publisher itself: one subscriber taking messages back to back then stalled long
/// enough for its queue to overflow.
const INLINE_WRITES: usize = 16;

impl Inner {
    /// Records and fans out one item on a channel whose lock is held.
    pub(super) fn deliver(
        &self,
        shard: &mut HashMap<String, Channel>,
        name: &str,
        item: &Delivery,
    ) -> usize {
        let now = Instant::now();
        let Some(ch) = shard.get_mut(name) else {
            return 0;
        };
        let added = ch.record(item, &self.limits, now);
        let sent = self.fan_out(ch, item, now);
        if added > 0 {
            let total = self.history_bytes.fetch_add(added, Ordering::Relaxed) + added;
            if total > self.history_max_bytes {
                self.trim_history(shard, name);
            }
        }
        sent
    }

    /// Hands `item` to every subscriber of `ch`. `start` is when the item reached its channel:
    /// the publish → write histograms measure from there, once per write batch (see
    /// [`crate::metrics`]), never per delivery.
    fn fan_out(&self, ch: &Channel, item: &Delivery, start: Instant) -> usize {
        let mut sent = 0usize;
        let mut dropped = 0u64;
        let mut closed = 0u64;
        let direct_latency = self.write_latency.get("direct");
        // Encoded once for every connection the fan-out writes to itself: the chunk for held
        // streams, the frame for WebSockets; each with the connections reserved for it. A
        // long-poll's answer is made only once some hold is reserved for it (`answers`).
        let mut direct = [
            (
                plain_chunk(item).map(|c| Payload::Bytes(crate::sink::chunk(c))),
                Vec::new(),
            ),
            (plain_ws_frame(item).map(Payload::Bytes), Vec::new()),
        ];
        let answer = plain_answer(item);
        let mut answers = Vec::new();
        let mut written = 0u64;
        let mut responses = 0u64;
        for (id, sub) in &ch.subscribers {
            if !sub.want.accepts(item) {
                continue;
            }
            let queue = || sub.tx.try_send(item.clone());
            let queued = match &sub.sink {
                Some(sink) if sub.want == Want::HttpResponse => {
                    match sink.offer(answer.is_some(), queue) {
                        Offer::Reserved => {
                            // All written at the end (see `write_batch`).
                            answers.push(sink.clone());
                            responses += 1;
                            sent += 1;
                            continue;
                        }
                        Offer::Queued(r) => r,
                    }
                }
                Some(sink) => {
                    let (bytes, batch) = &mut direct[usize::from(sub.want == Want::WsMessage)];
                    match sink.offer(bytes.is_some(), queue) {
                        Offer::Reserved => {
                            batch.push(sink.clone());
                            if let Some(bytes) =
                                bytes.as_ref().filter(|_| batch.len() == WRITE_BATCH)
                            {
                                let batch = std::mem::take(batch);
                                written += write_batch(batch, bytes, start, direct_latency);
                            }
                            sent += 1;
                            continue;
                        }
                        Offer::Queued(r) => r,
                    }
                }
                None => queue(),
            };
            match queued {
                Ok(()) => {
                    sent += 1;
                    responses += u64::from(sub.want == Want::HttpResponse);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    dropped += 1;
                    tracing::debug!(channel = %item.channel, subscriber = id, "publish queue at max, dropping");
                }
                Err(mpsc::error::TrySendError::Closed(_)) => closed += 1,
            }
        }
        for (bytes, batch) in direct {
            if let Some(bytes) = bytes.as_ref().filter(|_| !batch.is_empty()) {
                written += write_batch(batch, bytes, start, direct_latency);
            }
        }
        if let Some((status, body)) = answer.filter(|_| !answers.is_empty()) {
            // One batch per worker (see `write_batch`).
            let answer = Payload::Answer(Arc::new(PlainAnswer::new(status, body)));
            let workers =
                tokio::runtime::Handle::try_current().map_or(1, |rt| rt.metrics().num_workers());
            let part = answers.len().div_ceil(workers).max(INLINE_WRITES + 1);
            while answers.len() > part {
                let rest = answers.split_off(part);
                written += write_batch(answers, &answer, start, direct_latency);
                answers = rest;
            }
            written += write_batch(answers, &answer, start, direct_latency);
        }
        // Queued deliveries are written by their connections' tasks: the histogram gets the
        // time until the last of them was queued, once per publish.
        if sent as u64 > written {
            self.write_latency.get("queued").observe(start.elapsed());
        }
        self.delivered.fetch_add(sent as u64, Ordering::Relaxed);
        if responses > 0 {
            self.responses.fetch_add(responses, Ordering::Relaxed);
        }
        self.written.fetch_add(written, Ordering::Relaxed);
        self.dropped.fetch_add(dropped, Ordering::Relaxed);
        if closed > 0 {
            self.closed.fetch_add(closed, Ordering::Relaxed);
        }
        sent
    }

    /// Over the history budget: evict the oldest items of this channel, then of the shard.
    fn trim_history(&self, shard: &mut HashMap<String, Channel>, name: &str) {
        let over =
            |inner: &Inner| inner.history_bytes.load(Ordering::Relaxed) > inner.history_max_bytes;
        while over(self) {
            let freed = match shard.get_mut(name) {
                Some(ch) if ch.history_bytes > 0 => ch.evict_oldest(),
                _ => {
                    let oldest = shard
                        .iter()
                        .filter_map(|(k, c)| c.oldest_at().map(|t| (t, k.clone())))
                        .min();
                    match oldest.and_then(|(_, k)| shard.get_mut(&k)) {
                        Some(ch) => ch.evict_oldest(),
                        None => break,
                    }
                }
            };
            if freed == 0 {
                break;
            }
            self.history_bytes.fetch_sub(freed, Ordering::Relaxed);
        }
    }

    /// Delivers pending items whose predecessor is now the last id, repeatedly.
    pub(super) fn release_ready(&self, shard: &mut HashMap<String, Channel>, name: &str) -> usize {
        let mut sent = 0;
        loop {
            let next = shard.get_mut(name).and_then(|ch| {
                let pos = ch
                    .pending
                    .iter()
                    .position(|p| p.item.prev_id.is_some() && p.item.prev_id == ch.last_id)?;
                ch.pending.remove(pos)
            });
            match next {
                Some(p) => sent += self.deliver(shard, name, &p.item),
                None => return sent,
            }
        }
    }
}

/// Writes `payload` to the reserved connections of `batch`; returns how many. A batch of at most
/// [`INLINE_WRITES`] is written at once, by the publishing task (outside a runtime, any batch
/// is); a bigger one by a new task, so that big fan-outs spread over the workers. Once the batch
/// is written, `latency` gets one observation: the time since `start`.
///
/// A fan-out's long-poll answers are split into one batch per worker, however many, and the
/// holds of a batch are woken only once all its answers are written: a woken hold reads its
/// client's re-poll and sends it to the origin, far more work than the answer, and the answers
/// not yet written would wait behind it (see docs/performance.md).
fn write_batch(
    batch: Vec<Arc<Sink>>,
    payload: &Payload,
    start: Instant,
    latency: &Histogram,
) -> u64 {
    let n = batch.len() as u64;
    let payload = payload.clone();
    let latency = latency.clone();
    let write = move || {
        let now = tokio::time::Instant::now();
        for sink in &batch {
            sink.write_reserved(&payload, now);
        }
        latency.observe(start.elapsed());
        if let Payload::Answer(_) = payload {
            for sink in &batch {
                sink.answered_wake();
            }
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(rt) if n as usize > INLINE_WRITES => drop(rt.spawn(async move { write() })),
        _ => write(),
    }
    n
}
