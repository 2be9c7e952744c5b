//! One shutdown for the whole server: a signal every task can wait on, and a drain that the
//! server waits for, at most the grace period, before it exits.
//!
//! The accept loops, each client connection, and every task that outlives its HTTP connection
//! (an upgraded WebSocket, a held stream written straight to its socket) hold a [`DrainGuard`].
//! [`Shutdown::begin`] raises the signal: the accept loops stop, hyper closes each connection
//! after its in-flight response, WebSockets send their close. Then [`Shutdown::drained`] waits
//! until every guard has been dropped. A guard can be had only while another one still lives, so
//! nothing new can keep a finished server waiting.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// Keeps the server's shutdown waiting (up to the grace period) while it lives.
pub type DrainGuard = mpsc::Sender<()>;

/// The server's shutdown signal and drain.
pub struct Shutdown {
    stop: watch::Sender<bool>,
    /// Set by [`Shutdown::announce`]: shutdown is coming, the server is no longer ready.
    announced: AtomicBool,
    /// The first guard, dropped by [`Shutdown::begin`]; the others are clones of it.
    first: Mutex<Option<DrainGuard>>,
    weak: mpsc::WeakSender<()>,
    drained: tokio::sync::Mutex<mpsc::Receiver<()>>,
}

impl Default for Shutdown {
    fn default() -> Shutdown {
        let (tx, rx) = mpsc::channel(1);
        Shutdown {
            stop: watch::channel(false).0,
            announced: AtomicBool::new(false),
            weak: tx.downgrade(),
            first: Mutex::new(Some(tx)),
            drained: tokio::sync::Mutex::new(rx),
        }
    }
}

impl Shutdown {
    /// A guard that keeps [`Shutdown::drained`] waiting while it lives; `None` once shutdown has
    /// begun and every other guard is gone.
    pub fn guard(&self) -> Option<DrainGuard> {
        self.weak.upgrade()
    }

    /// A receiver of the signal, for a task that waits for shutdown.
    pub fn signal(&self) -> Signal {
        Signal(self.stop.subscribe())
    }

    /// Whether shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Says shutdown is coming (`server.shutdown_delay_secs`) without stopping anything yet.
    pub fn announce(&self) {
        self.announced.store(true, Ordering::Relaxed);
    }

    /// Whether shutdown has been announced or has begun: the server is not ready for new clients.
    pub fn is_announced(&self) -> bool {
        self.announced.load(Ordering::Relaxed) || self.is_stopping()
    }

    /// Raises the signal and lets go of the first guard.
    pub fn begin(&self) {
        self.stop.send_replace(true);
        self.first.lock().expect("shutdown lock poisoned").take();
    }

    /// Waits until every guard is gone, at most `grace`. True when they all went in time.
    pub async fn drained(&self, grace: Duration) -> bool {
        let mut rx = self.drained.lock().await;
        tokio::time::timeout(grace, rx.recv()).await.is_ok()
    }
}

/// Tells a task that shutdown has begun.
#[derive(Clone)]
pub struct Signal(watch::Receiver<bool>);

impl Signal {
    /// Resolves when shutdown begins (at once if it has).
    pub async fn stopped(&mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }

    /// [`Signal::stopped`] as a future that owns the receiver. A connection's loop creates it
    /// once and polls it on every turn, so its waiter is registered once, not once per message;
    /// it must not be polled again once it has resolved.
    pub async fn into_stopped(mut self) {
        self.stopped().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drained_waits_for_every_guard_and_the_signal_reaches_waiters() {
        tokio::time::pause();
        let shutdown = Shutdown::default();
        let guard = shutdown.guard().expect("a guard before shutdown");
        let signal = tokio::spawn(shutdown.signal().into_stopped());
        assert!(!shutdown.is_stopping());
        shutdown.begin();
        signal.await.unwrap();
        assert!(shutdown.is_stopping());
        // A live guard still lends one to a task it starts.
        let second = shutdown.guard().expect("a guard while another lives");
        drop(guard);
        assert!(
            !shutdown.drained(Duration::from_secs(5)).await,
            "one guard is left"
        );
        drop(second);
        assert!(shutdown.drained(Duration::from_secs(5)).await);
        assert!(shutdown.guard().is_none(), "no guard once all are gone");
    }
}
