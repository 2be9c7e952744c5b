//! The PULL and SUB publish inputs.
//!
//! Both read one item per message with `grip::publish::parse_zmq_item` and hand it to the
//! [`Feed`]: a bounded queue that one task drains into the bus, batching what is waiting into
//! one publish. With `zmq.message_rate` set the task paces items to that rate, and a full queue
//! (`zmq.message_hwm`) drops new items, logged and counted; without it a full queue (1024) makes
//! the sockets wait, so ZeroMQ's own high-water marks apply at the senders.
//!
//! The SUB socket follows the hub: a bounded queue of interest changes feeds
//! [`Wanted`](crate::hub::Wanted), as the cluster bus's Redis subscriptions do, and the socket
//! subscribes to exactly the wanted channels (a channel lingers `zmq.subscription_linger`
//! seconds after its last subscriber left). A SUB message is `[channel, item]`; the channel
//! part names the item's channel.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use grip::publish::PublishItem;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use zeromq::{Socket as _, SocketRecv as _};

use super::Counters;
use crate::app::App;
use crate::hub::Wanted;

/// Items waiting for the bus when `zmq.message_hwm` does not say.
const DEFAULT_QUEUE: usize = 1024;
/// Items handed to the bus in one publish.
const BATCH: usize = 100;
/// Interest changes queued for the SUB task; past it the task resyncs from the hub.
const INTEREST_QUEUE: usize = 4096;
/// How long a connecting SUB socket waits for one publisher before trying the others.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_RETRY: Duration = Duration::from_secs(2);

/// Where the inputs put their items.
#[derive(Clone)]
pub(super) struct Feed {
    tx: mpsc::Sender<PublishItem>,
    drop_when_full: bool,
    counters: Arc<Counters>,
}

impl Feed {
    /// The queue and the task that drains it into the bus.
    pub fn start(
        app: &Arc<App>,
        counters: &Arc<Counters>,
        tasks: &mut Vec<tokio::task::JoinHandle<()>>,
    ) -> Feed {
        let c = &app.config.zmq;
        let paced = c.message_rate > 0;
        let size = if paced && c.message_hwm > 0 {
            c.message_hwm
        } else {
            DEFAULT_QUEUE
        };
        let (tx, rx) = mpsc::channel(size);
        tasks.push(tokio::spawn(drain(app.clone(), rx, counters.clone())));
        Feed {
            tx,
            drop_when_full: paced && c.message_hwm > 0,
            counters: counters.clone(),
        }
    }

    /// Reads one message and queues its item; a bad one is logged and counted.
    async fn take(&self, input: &'static str, message: &[u8], channel: Option<&str>) {
        let item = match grip::publish::parse_zmq_item(message, channel) {
            Ok(item) => item,
            Err(e) => {
                Counters::add(&self.counters.rejected);
                tracing::info!(input, error = %e, "zmq: publish rejected");
                return;
            }
        };
        if !self.drop_when_full {
            let _ = self.tx.send(item).await;
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(item)) = self.tx.try_send(item) {
            Counters::add(&self.counters.dropped);
            tracing::warn!(input, channel = %item.channel, hwm = self.tx.max_capacity(),
                "zmq: exceeded zmq.message_hwm items waiting, dropping item");
        }
    }
}

/// Hands queued items to the bus, batched, at most `zmq.message_rate` a second.
async fn drain(app: Arc<App>, mut rx: mpsc::Receiver<PublishItem>, counters: Arc<Counters>) {
    let rate = app.config.zmq.message_rate;
    let mut pace = (rate > 0).then(|| {
        let mut every = tokio::time::interval(Duration::from_secs(1) / rate);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every
    });
    while let Some(first) = rx.recv().await {
        let mut items = vec![first];
        if let Some(pace) = &mut pace {
            pace.tick().await;
        } else {
            while items.len() < BATCH {
                match rx.try_recv() {
                    Ok(item) => items.push(item),
                    Err(_) => break,
                }
            }
        }
        let count = items.len() as u64;
        app.traffic
            .received(crate::metrics::Input::Zmq, items.len());
        if let Err(e) = app.publish(items).await {
            counters.unpublished.fetch_add(count, Ordering::Relaxed);
            tracing::warn!(error = %e, items = count, "zmq: publish refused, items dropped");
        }
    }
}

/// Receives from the PULL socket until the task is stopped.
pub(super) async fn run_pull(mut socket: zeromq::PullSocket, feed: Feed) {
    loop {
        match socket.recv().await {
            Ok(msg) => {
                Counters::add(&feed.counters.pull_received);
                let frames = msg.into_vec();
                if frames.len() != 1 {
                    Counters::add(&feed.counters.rejected);
                    tracing::info!(
                        parts = frames.len(),
                        "zmq: publish rejected: a PULL message must have one part"
                    );
                    continue;
                }
                feed.take("pull", &frames[0], None).await;
            }
            Err(e) => tracing::debug!(error = %e, "zmq: PULL peer error"),
        }
    }
}

/// The SUB input and the channels it follows.
pub(super) struct Sub {
    app: Arc<App>,
    socket: zeromq::SubSocket,
    feed: Feed,
    /// Publishers still to connect to (`push_in_sub_connect`).
    connect: Vec<String>,
    interest: mpsc::Receiver<(String, bool)>,
    resync: Arc<(AtomicBool, Notify)>,
    wanted: Wanted,
    /// Channels the socket is subscribed to.
    subscribed: HashSet<String>,
}

impl Sub {
    /// Follows the hub's interest from now on.
    pub fn new(app: &Arc<App>, socket: zeromq::SubSocket, connect: Vec<String>, feed: Feed) -> Sub {
        let (tx, interest) = mpsc::channel(INTEREST_QUEUE);
        let resync = Arc::new((AtomicBool::new(false), Notify::new()));
        let flag = resync.clone();
        app.hub
            .on_interest(Arc::new(move |channel: &str, on: bool| {
                if tx.try_send((channel.to_string(), on)).is_err() {
                    flag.0.store(true, Ordering::Release);
                    flag.1.notify_one();
                }
            }));
        let delay = Duration::from_secs(app.config.zmq.subscription_linger);
        Sub {
            app: app.clone(),
            socket,
            feed,
            connect,
            interest,
            resync,
            wanted: Wanted::new(delay),
            subscribed: HashSet::new(),
        }
    }

    /// Subscribes to what the hub has now, then receives and follows interest.
    pub async fn run(mut self) {
        self.wanted.resync(&self.app.hub, |_| true);
        self.sync().await;
        let mut retry = Instant::now();
        loop {
            if !self.connect.is_empty() && Instant::now() >= retry {
                self.connect_pending().await;
                retry = Instant::now() + CONNECT_RETRY;
            }
            let linger = self.wanted.next_deadline();
            let reconnect = (!self.connect.is_empty()).then_some(retry);
            let wake = match (linger, reconnect) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                msg = self.socket.recv() => match msg {
                    Ok(msg) => self.received(msg.into_vec()).await,
                    Err(e) => tracing::debug!(error = %e, "zmq: SUB peer error"),
                },
                event = self.interest.recv() => {
                    let Some((channel, on)) = event else { return };
                    if on {
                        self.wanted.want(channel);
                    } else {
                        let _ = self.wanted.release(&self.app.hub, channel);
                    }
                    self.sync().await;
                }
                () = self.resync.1.notified() => {
                    if self.resync.0.swap(false, Ordering::AcqRel) {
                        while self.interest.try_recv().is_ok() {}
                        tracing::info!("zmq: SUB interest queue overflowed; resyncing with the hub");
                        self.wanted.resync(&self.app.hub, |_| true);
                        self.sync().await;
                    }
                }
                () = sleep_until(wake) => {
                    let _ = self.wanted.expired(&self.app.hub, Instant::now());
                    self.sync().await;
                }
            }
        }
    }

    async fn received(&mut self, frames: Vec<bytes::Bytes>) {
        Counters::add(&self.feed.counters.sub_received);
        let [channel, item] = frames.as_slice() else {
            Counters::add(&self.feed.counters.rejected);
            tracing::info!(
                parts = frames.len(),
                "zmq: publish rejected: a SUB message must have two parts, channel and item"
            );
            return;
        };
        let Ok(channel) = std::str::from_utf8(channel) else {
            Counters::add(&self.feed.counters.rejected);
            tracing::info!("zmq: publish rejected: the SUB message's channel is not UTF-8");
            return;
        };
        // A prefix subscription lets longer topics through; nobody here listens on them.
        if !self.subscribed.contains(channel) {
            tracing::debug!(
                channel,
                "zmq: SUB message for a channel with no subscribers"
            );
            return;
        }
        self.feed.take("sub", item, Some(channel)).await;
    }

    /// Makes the socket's subscriptions match the wanted channels.
    async fn sync(&mut self) {
        let gone: Vec<String> = self
            .subscribed
            .iter()
            .filter(|c| !self.wanted.channels.contains_key(*c))
            .cloned()
            .collect();
        for channel in gone {
            self.subscribed.remove(&channel);
            if let Err(e) = self.socket.unsubscribe(&channel).await {
                tracing::debug!(%channel, error = %e, "zmq: SUB unsubscribe not sent to every publisher");
            }
            tracing::debug!(%channel, "zmq: SUB socket unsubscribed");
        }
        let new: Vec<String> = self
            .wanted
            .channels
            .keys()
            .filter(|c| !self.subscribed.contains(*c))
            .cloned()
            .collect();
        for channel in new {
            if let Err(e) = self.socket.subscribe(&channel).await {
                tracing::debug!(%channel, error = %e, "zmq: SUB subscribe not sent to every publisher");
            }
            tracing::debug!(%channel, "zmq: SUB socket subscribed");
            self.subscribed.insert(channel);
        }
    }

    /// Tries each publisher not yet connected; those that answer are then reconnected by the
    /// socket itself.
    async fn connect_pending(&mut self) {
        let mut left = Vec::new();
        for spec in std::mem::take(&mut self.connect) {
            // Bounded by the socket's connect timeout (`CONNECT_TIMEOUT`).
            match self.socket.connect(&spec).await {
                Ok(()) => tracing::info!(%spec, "zmq: SUB socket connected"),
                Err(e) => {
                    tracing::debug!(%spec, error = %e, "zmq: SUB socket not connected yet; retrying");
                    left.push(spec);
                }
            }
        }
        self.connect = left;
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
