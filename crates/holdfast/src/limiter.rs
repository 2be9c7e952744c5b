//! A token bucket for the origin requests Holdfast makes on held sessions' behalf (retries, next
//! links, hints, recover), so a publish storm or an origin outage cannot become a request storm.
//!
//! Waiters are the sessions themselves, each awaiting its own turn: the queue is bounded by the
//! number of held sessions, and a session that goes away stops waiting.
//!
//! [`PerIp`] caps what one client address may open on the client listeners.

mod per_ip;

pub use per_ip::{PeerGuard, PerIp, Refusal};

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Allows `rate` acquisitions per second, with bursts of up to `rate`.
pub struct RateLimiter {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// A full bucket of `rate` tokens refilled at `rate` per second.
    pub fn new(rate: u32) -> RateLimiter {
        let rate = f64::from(rate.max(1));
        RateLimiter {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// Waits until a token is available and takes it.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut s = self.state.lock().expect("limiter poisoned");
                let now = Instant::now();
                let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
                s.0 = (s.0 + refill).min(self.rate);
                s.1 = now;
                if s.0 >= 1.0 {
                    s.0 -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - s.0) / self.rate)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bursts_then_paces() {
        let limiter = RateLimiter::new(10);
        let start = Instant::now();
        for _ in 0..10 {
            limiter.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "a full bucket is a burst");
        for _ in 0..5 {
            limiter.acquire().await;
        }
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(490) && waited <= Duration::from_millis(600),
            "{waited:?}"
        );
    }
}
