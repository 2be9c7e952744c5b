//! Deadlines from durations someone else chose: an origin's timeouts and keep-alive intervals, a
//! configured delay. `Instant + Duration` panics when the sum is past what the clock can hold
//! ("overflow when adding duration to instant"), so every such deadline is made here, where the
//! duration saturates at [`FAR`] instead.
//!
//! The GRIP parsers already refuse timeouts over `grip::instruct::MAX_TIMEOUT_SECS`; this is the
//! second wall, for values that come from elsewhere and for the sums made later (the next
//! keep-alive after the last write).

use std::time::Duration;

use tokio::time::Instant;

/// About 30 years: later than anything a deadline is for, and addable to any instant the clock
/// gives on every platform Holdfast runs on.
pub const FAR: Duration = Duration::from_secs(30 * 365 * 86_400);

/// `at` plus `after`, with `after` saturating at [`FAR`].
pub fn later(at: Instant, after: Duration) -> Instant {
    at + after.min(FAR)
}

/// Now plus `after`, with `after` saturating at [`FAR`].
pub fn after(after: Duration) -> Instant {
    later(Instant::now(), after)
}

/// Now plus `secs` seconds, with the duration saturating at [`FAR`].
pub fn after_secs(secs: u64) -> Instant {
    after(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_saturate_instead_of_panicking() {
        let now = Instant::now();
        let cases = [
            (Duration::ZERO, Duration::ZERO),
            (Duration::from_secs(55), Duration::from_secs(55)),
            (FAR, FAR),
            (FAR + Duration::from_secs(1), FAR),
            (Duration::from_secs(u64::MAX), FAR),
            (Duration::MAX, FAR),
        ];
        for (after, want) in cases {
            assert_eq!(later(now, after) - now, want, "after {after:?}");
        }
        assert!(after_secs(u64::MAX) >= now + FAR);
    }
}
