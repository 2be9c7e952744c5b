//! Delays between attempts, with jitter, for everything that tries again: requests a held
//! session or a WebSocket-over-HTTP connection makes to an origin it cannot reach, and the
//! cluster bus's reconnects to Redis.
//!
//! Jitter spreads the retries of many connections that failed at the same moment; it is random,
//! not derived from the clock, so connections that failed together do not retry together.

use std::time::Duration;

/// Waits before each retry of an origin request that could not reach the origin, as Pushpin's
/// (1, 2, 4, 8 and 16 s), each plus up to a second of [`jitter`].
pub const ORIGIN_RETRIES: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
];

/// A random delay from zero up to `up_to`, in whole milliseconds.
pub fn jitter(up_to: Duration) -> Duration {
    Duration::from_millis(rand::random_range(0..=up_to.as_millis() as u64))
}

/// The delays before each retry of an origin request: [`ORIGIN_RETRIES`], each with less than a
/// second of jitter added.
pub fn origin_retries() -> impl Iterator<Item = Duration> {
    ORIGIN_RETRIES
        .iter()
        .map(|d| *d + jitter(Duration::from_millis(999)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_retries_double_with_under_a_second_of_jitter() {
        let delays: Vec<Duration> = origin_retries().collect();
        assert_eq!(delays.len(), 5);
        for (delay, base) in delays.iter().zip([1, 2, 4, 8, 16]) {
            let base = Duration::from_secs(base);
            assert!(
                *delay >= base && *delay < base + Duration::from_secs(1),
                "{delay:?}"
            );
        }
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        for _ in 0..100 {
            assert!(jitter(Duration::from_millis(5)) <= Duration::from_millis(5));
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }
}
