//! Who holds the floor server's streams and how a published chunk reaches all of them.
//!
//! Two strategies, chosen with `--fanout`, so the faster one can be measured and kept:
//!
//! - [`Fanout::Shards`]: every held stream is split; its write half is dealt round-robin to one
//!   of `--shards` shard tasks, which the multi-thread runtime spreads over its threads, and its
//!   read half stays with the connection's task, which only waits for the client to close. A
//!   publish is handed to every shard over its bounded queue ([`SHARD_QUEUE`] operations; a full
//!   queue makes the publish request wait). A shard drains the chunks queued behind the first one
//!   into one buffer, then writes that buffer to each of its streams with a single non-blocking
//!   `try_write`: no task wake-up, no copy per stream. A stream whose socket cannot take the
//!   whole buffer at once moves, for good, to a task of its own fed by a queue of [`LAG_QUEUE`]
//!   chunks; when that queue is full, or a write stalls for [`WRITE_TIMEOUT`], the stream is
//!   closed.
//! - [`Fanout::Broadcast`]: one task per stream, each receiving the chunks from a
//!   `tokio::sync::broadcast` channel of [`LAG_QUEUE`] chunks and writing them itself; a stream
//!   that falls further behind, or whose write stalls for [`WRITE_TIMEOUT`], is closed.
//!
//! - [`Fanout::Channels`]: the many-channels benchmark's floor. A subscriber for `/sub/NAME` is
//!   held on channel NAME (any other path on the empty channel), and an item goes only to the
//!   streams of its channel. Each channel keeps its streams' write halves in a map split over
//!   [`CHANNEL_LOCKS`] locks; the publish request writes the item's chunk to them itself with
//!   `try_write`, under that lock, with the shard strategy's policy for a stream that cannot
//!   take it at once (a task of its own, then closed when [`LAG_QUEUE`] is full or a write
//!   stalls).
//!
//! Whatever the strategy, a stream counts in [`Hub::held`] from once it is registered to receive
//! chunks (its join queued to its shard, its broadcast receiver created, or its write half in its
//! channel's list) until its client closes or a write fails, so any publish made after the count
//! includes a stream reaches that stream.

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use clap::ValueEnum;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc};

/// Operations queued per shard.
pub const SHARD_QUEUE: usize = 1024;
/// Chunks a lagging stream may have queued before it is closed.
pub const LAG_QUEUE: usize = 64;
/// A write to one stream that takes longer than this closes it.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often shards drop the streams whose clients have closed, between publishes.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Most queued operations a shard takes in one go.
const DRAIN_MAX: usize = 64;

/// How a published chunk reaches the held streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Fanout {
    /// Write halves partitioned over shard tasks, written with `try_write`.
    Shards,
    /// A task per stream, fed by a broadcast channel.
    Broadcast,
    /// A list of streams per channel, written with `try_write` by the publish request itself.
    Channels,
}

/// Locks the channel map of [`Fanout::Channels`] is split over, by a hash of the channel name.
const CHANNEL_LOCKS: usize = 64;

/// The held streams.
pub struct Hub {
    /// Signed: a shard may uncount a stream whose write failed before its task has counted it.
    held: Arc<AtomicI64>,
    kind: Kind,
}

enum Kind {
    Shards {
        shards: Vec<mpsc::Sender<Op>>,
        next: AtomicUsize,
    },
    Broadcast(broadcast::Sender<Bytes>),
    Channels(Vec<Mutex<HashMap<String, Vec<Held>>>>),
}

impl Hub {
    /// A hub with the given strategy; `shards` tasks are spawned on the current runtime for
    /// [`Fanout::Shards`].
    pub fn new(fanout: Fanout, shards: usize) -> Hub {
        let held = Arc::new(AtomicI64::new(0));
        let kind = match fanout {
            Fanout::Shards => Kind::Shards {
                shards: (0..shards.max(1))
                    .map(|_| {
                        let (tx, rx) = mpsc::channel(SHARD_QUEUE);
                        tokio::spawn(run_shard(rx, Arc::clone(&held)));
                        tx
                    })
                    .collect(),
                next: AtomicUsize::new(0),
            },
            Fanout::Broadcast => Kind::Broadcast(broadcast::channel(LAG_QUEUE).0),
            Fanout::Channels => Kind::Channels(
                (0..CHANNEL_LOCKS)
                    .map(|_| Mutex::new(HashMap::new()))
                    .collect(),
            ),
        };
        Hub { held, kind }
    }

    /// Streams currently held.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed).max(0) as u64
    }

    /// Holds `stream` (its response head already written) until its client closes it or a
    /// write to it fails. `channel` matters only to [`Fanout::Channels`].
    pub async fn hold(&self, stream: TcpStream, channel: &str) {
        match &self.kind {
            Kind::Shards { shards, next } => {
                let (read, write) = stream.into_split();
                let presence = Arc::new(Presence::default());
                let shard = &shards[next.fetch_add(1, Ordering::Relaxed) % shards.len()];
                let held = Held {
                    sink: Sink::Direct(write),
                    presence: Arc::clone(&presence),
                };
                if shard.send(Op::Join(held)).await.is_err() {
                    return;
                }
                self.held.fetch_add(1, Ordering::Relaxed);
                wait_for_close(read).await;
                presence.leave(&self.held);
            }
            Kind::Broadcast(tx) => {
                let rx = tx.subscribe();
                self.held.fetch_add(1, Ordering::Relaxed);
                let (read, write) = stream.into_split();
                hold_broadcast(read, write, rx).await;
                self.held.fetch_sub(1, Ordering::Relaxed);
            }
            Kind::Channels(locks) => {
                let (read, write) = stream.into_split();
                let presence = Arc::new(Presence::default());
                let held = Held {
                    sink: Sink::Direct(write),
                    presence: Arc::clone(&presence),
                };
                lock_of(locks, channel)
                    .entry(channel.to_string())
                    .or_default()
                    .push(held);
                self.held.fetch_add(1, Ordering::Relaxed);
                wait_for_close(read).await;
                presence.leave(&self.held);
                // Out of the list now, not at the channel's next publish, which may never come:
                // the write half would keep the socket open until then.
                let mut map = lock_of(locks, channel);
                if let Some(streams) = map.get_mut(channel) {
                    streams.retain(|s| !s.presence.is_gone());
                    if streams.is_empty() {
                        map.remove(channel);
                    }
                }
            }
        }
    }

    /// Whether publishes are per channel ([`Fanout::Channels`]).
    pub fn by_channel(&self) -> bool {
        matches!(self.kind, Kind::Channels(_))
    }

    /// Sends `chunk` to every stream held on `channel`: written at once, in this call, under the
    /// channel's lock ([`Fanout::Channels`]; the other strategies send it to every stream).
    pub async fn publish_to(&self, channel: &str, chunk: Bytes) {
        let Kind::Channels(locks) = &self.kind else {
            return self.publish(chunk).await;
        };
        if chunk.is_empty() {
            return;
        }
        let mut map = lock_of(locks, channel);
        if let Some(streams) = map.get_mut(channel) {
            deliver(streams, &chunk, &self.held);
            if streams.is_empty() {
                map.remove(channel);
            }
        }
    }

    /// Sends `chunk` to every held stream.
    pub async fn publish(&self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        match &self.kind {
            Kind::Shards { shards, .. } => {
                for shard in shards {
                    // A shard only stops with the runtime.
                    let _ = shard.send(Op::Publish(chunk.clone())).await;
                }
            }
            Kind::Broadcast(tx) => {
                // No receivers is not an error: nobody is subscribed.
                let _ = tx.send(chunk);
            }
            Kind::Channels(locks) => {
                for lock in locks {
                    let mut map = lock.lock().expect("floor channel lock poisoned");
                    for streams in map.values_mut() {
                        deliver(streams, &chunk, &self.held);
                    }
                    map.retain(|_, streams| !streams.is_empty());
                }
            }
        }
    }
}

/// The lock of `channel`'s part of the map.
fn lock_of<'a>(
    locks: &'a [Mutex<HashMap<String, Vec<Held>>>],
    channel: &str,
) -> std::sync::MutexGuard<'a, HashMap<String, Vec<Held>>> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    channel.hash(&mut hasher);
    // The remainder is below `locks.len()`, so it fits a usize.
    let i = (hasher.finish() % locks.len() as u64) as usize;
    locks[i].lock().expect("floor channel lock poisoned")
}

/// Whether a sharded stream is still counted; whoever sees it end first uncounts it.
#[derive(Default)]
struct Presence {
    gone: AtomicBool,
}

impl Presence {
    fn leave(&self, held: &AtomicI64) {
        if !self.gone.swap(true, Ordering::Relaxed) {
            held.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }
}

enum Op {
    Join(Held),
    Publish(Bytes),
}

/// One stream as a shard holds it.
struct Held {
    sink: Sink,
    presence: Arc<Presence>,
}

enum Sink {
    /// Written by the shard itself.
    Direct(OwnedWriteHalf),
    /// Fell behind once; written by its own task.
    Lagging(mpsc::Sender<Bytes>),
}

impl Held {
    /// Offers `chunk`; false if the stream must be dropped.
    fn offer(&mut self, chunk: &Bytes, held: &Arc<AtomicI64>) -> bool {
        let rest = match &self.sink {
            Sink::Lagging(tx) => return tx.try_send(chunk.clone()).is_ok(),
            Sink::Direct(write) => match write.try_write(chunk) {
                Ok(n) if n == chunk.len() => return true,
                Ok(n) => chunk.slice(n..),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => chunk.clone(),
                Err(_) => return false,
            },
        };
        let (tx, rx) = mpsc::channel(LAG_QUEUE);
        if let Sink::Direct(write) = std::mem::replace(&mut self.sink, Sink::Lagging(tx)) {
            let presence = Arc::clone(&self.presence);
            let held = Arc::clone(held);
            tokio::spawn(async move {
                write_lagging(write, rest, rx).await;
                presence.leave(&held);
            });
        }
        true
    }
}

/// Writes `first`, then every chunk queued for a stream that fell behind, until the shard drops
/// it or a write fails or stalls.
async fn write_lagging(mut write: OwnedWriteHalf, first: Bytes, mut rx: mpsc::Receiver<Bytes>) {
    if !write_timed(&mut write, &first).await {
        return;
    }
    while let Some(chunk) = rx.recv().await {
        if !write_timed(&mut write, &chunk).await {
            return;
        }
    }
}

async fn write_timed(write: &mut (impl AsyncWrite + Unpin), chunk: &[u8]) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, write.write_all(chunk)).await,
        Ok(Ok(()))
    )
}

/// Returns when the client closes its side (whatever it sends after the request is ignored).
async fn wait_for_close(mut read: impl AsyncRead + Unpin) {
    let mut buf = [0u8; 64];
    while matches!(read.read(&mut buf).await, Ok(n) if n > 0) {}
}

async fn run_shard(mut ops: mpsc::Receiver<Op>, held: Arc<AtomicI64>) {
    let mut streams: Vec<Held> = Vec::new();
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    // An operation taken from the queue but not yet applied (a join found while draining).
    let mut next: Option<Op> = None;
    loop {
        let op = match next.take() {
            Some(op) => op,
            None => tokio::select! {
                op = ops.recv() => match op {
                    Some(op) => op,
                    None => return,
                },
                _ = sweep.tick() => {
                    streams.retain(|s| !s.presence.is_gone());
                    continue;
                }
            },
        };
        match op {
            Op::Join(h) => streams.push(h),
            Op::Publish(first) => {
                // Chunks queued behind this one go out in the same write, up to the next join
                // (which must not receive what was published before it).
                let mut buf: Option<BytesMut> = None;
                for _ in 0..DRAIN_MAX {
                    match ops.try_recv() {
                        Ok(Op::Publish(more)) => buf
                            .get_or_insert_with(|| BytesMut::from(&first[..]))
                            .extend_from_slice(&more),
                        Ok(join) => {
                            next = Some(join);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let chunk = buf.map_or(first, BytesMut::freeze);
                deliver(&mut streams, &chunk, &held);
            }
        }
    }
}

/// Offers `chunk` to every stream of a shard, dropping those that have gone.
fn deliver(streams: &mut Vec<Held>, chunk: &Bytes, held: &Arc<AtomicI64>) {
    let mut i = 0;
    while i < streams.len() {
        let s = &mut streams[i];
        if !s.presence.is_gone() && s.offer(chunk, held) {
            i += 1;
        } else {
            s.presence.leave(held);
            streams.swap_remove(i);
        }
    }
}

/// A stream of the broadcast strategy, until its client closes, a write fails or stalls, or it
/// falls more than [`LAG_QUEUE`] chunks behind.
async fn hold_broadcast(
    mut read: OwnedReadHalf,
    mut write: OwnedWriteHalf,
    mut rx: broadcast::Receiver<Bytes>,
) {
    let mut buf = [0u8; 64];
    loop {
        tokio::select! {
            chunk = rx.recv() => match chunk {
                Ok(chunk) => {
                    if !write_timed(&mut write, &chunk).await {
                        return;
                    }
                }
                Err(_) => return,
            },
            n = read.read(&mut buf) => {
                if !matches!(n, Ok(n) if n > 0) {
                    return;
                }
            }
        }
    }
}
