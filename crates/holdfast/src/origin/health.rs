//! How each origin target has been answering lately, for the status page: requests and errors
//! in the last minute and in all, the last status and the last error.
//!
//! [`crate::proxy::exchange`], which every origin request goes through, reports each outcome
//! here. An error is a failure to connect, no response in time, a broken exchange, or a `5xx`
//! answer; a client's own failure (its request body broke off) and the descriptor budget running
//! out are not the origin's and are not counted. The table is bounded: at most [`MAX_TARGETS`]
//! targets are kept (targets come from the routes file, so a real configuration stays far below
//! it); outcomes of targets beyond it are counted in [`Health::untracked`] only. Each report
//! takes one `std::sync::Mutex` for a map lookup and a few additions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most targets the table keeps.
pub const MAX_TARGETS: usize = 256;

/// Error texts are cut to this many characters.
const MAX_ERROR_CHARS: usize = 200;

/// "Recent" is counted in two buckets of this length: the current one and the one before.
const BUCKET: Duration = Duration::from_secs(30);

/// The outcome of one origin request, as far as its target's health goes.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// The origin answered with this status.
    Answered(u16),
    /// The origin failed: why.
    Failed(&'a str),
}

/// The health of every target seen.
#[derive(Debug, Default)]
pub struct Health {
    targets: Mutex<HashMap<String, Target>>,
    untracked: AtomicU64,
}

#[derive(Debug)]
struct Target {
    requests: u64,
    errors: u64,
    bucket_start: Instant,
    /// Requests and errors in the current bucket and the one before it.
    current: (u64, u64),
    previous: (u64, u64),
    last_status: Option<u16>,
    last_error: Option<(Instant, String)>,
}

/// One target's health, as the status page shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TargetHealth {
    /// The target's label (`host:port`, with `tls` or `insecure` when set).
    pub target: String,
    /// Requests in the last 30 to 60 seconds (the current bucket and the one before).
    pub recent_requests: u64,
    /// Of those, errors.
    pub recent_errors: u64,
    /// Requests since start.
    pub requests: u64,
    /// Errors since start.
    pub errors: u64,
    /// The status of the last answer, if any.
    pub last_status: Option<u16>,
    /// The last error, cut to 200 characters.
    pub last_error: Option<String>,
    /// How many seconds ago the last error happened.
    pub last_error_secs_ago: Option<u64>,
}

impl Target {
    fn new(now: Instant) -> Target {
        Target {
            requests: 0,
            errors: 0,
            bucket_start: now,
            current: (0, 0),
            previous: (0, 0),
            last_status: None,
            last_error: None,
        }
    }

    /// Moves the buckets on to `now`.
    fn roll(&mut self, now: Instant) {
        let age = now.saturating_duration_since(self.bucket_start);
        if age >= BUCKET * 2 {
            self.previous = (0, 0);
            self.current = (0, 0);
            self.bucket_start = now;
        } else if age >= BUCKET {
            self.previous = self.current;
            self.current = (0, 0);
            self.bucket_start += BUCKET;
        }
    }
}

impl Health {
    /// Records one request to `target` and its outcome.
    pub fn record(&self, target: &str, outcome: Outcome<'_>) {
        self.record_at(target, outcome, Instant::now());
    }

    fn record_at(&self, target: &str, outcome: Outcome<'_>, now: Instant) {
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        if !targets.contains_key(target) {
            if targets.len() >= MAX_TARGETS {
                self.untracked.fetch_add(1, Ordering::Relaxed);
                return;
            }
            targets.insert(target.to_string(), Target::new(now));
        }
        let t = targets.get_mut(target).expect("inserted above");
        t.roll(now);
        t.requests += 1;
        t.current.0 += 1;
        let error = match outcome {
            Outcome::Answered(status) => {
                t.last_status = Some(status);
                (status >= 500).then(|| format!("answered {status}"))
            }
            Outcome::Failed(why) => Some(why.chars().take(MAX_ERROR_CHARS).collect()),
        };
        if let Some(why) = error {
            t.errors += 1;
            t.current.1 += 1;
            t.last_error = Some((now, why));
        }
    }

    /// Every target's health, by label.
    pub fn targets(&self) -> Vec<TargetHealth> {
        self.targets_at(Instant::now())
    }

    fn targets_at(&self, now: Instant) -> Vec<TargetHealth> {
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<TargetHealth> = targets
            .iter_mut()
            .map(|(label, t)| {
                t.roll(now);
                TargetHealth {
                    target: label.clone(),
                    recent_requests: t.current.0 + t.previous.0,
                    recent_errors: t.current.1 + t.previous.1,
                    requests: t.requests,
                    errors: t.errors,
                    last_status: t.last_status,
                    last_error: t.last_error.as_ref().map(|(_, why)| why.clone()),
                    last_error_secs_ago: t
                        .last_error
                        .as_ref()
                        .map(|(at, _)| now.saturating_duration_since(*at).as_secs()),
                }
            })
            .collect();
        out.sort_by(|a, b| a.target.cmp(&b.target));
        out
    }

    /// Requests to targets beyond [`MAX_TARGETS`], not kept in the table.
    pub fn untracked(&self) -> u64 {
        self.untracked.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_answers_and_failures_per_target_and_forgets_old_buckets() {
        let h = Health::default();
        let t0 = Instant::now();
        h.record_at("a:80", Outcome::Answered(200), t0);
        h.record_at("a:80", Outcome::Answered(503), t0);
        h.record_at("b:80", Outcome::Failed(&"x".repeat(500)), t0);
        let now = h.targets_at(t0);
        assert_eq!(now.len(), 2);
        assert_eq!(
            (
                now[0].recent_requests,
                now[0].recent_errors,
                now[0].last_status
            ),
            (2, 1, Some(503))
        );
        assert_eq!(now[0].last_error.as_deref(), Some("answered 503"));
        assert_eq!(now[1].last_error.as_ref().map(String::len), Some(200));
        // After one bucket the counts are still recent; after two more they are not, and the
        // totals and last error stay.
        let later = h.targets_at(t0 + BUCKET + Duration::from_secs(1));
        assert_eq!(later[0].recent_requests, 2);
        let much_later = h.targets_at(t0 + BUCKET * 3 + Duration::from_secs(1));
        assert_eq!(
            (much_later[0].recent_requests, much_later[0].requests),
            (0, 2)
        );
        assert_eq!(much_later[0].last_error_secs_ago, Some(91));
    }

    #[test]
    fn targets_beyond_the_cap_are_only_counted() {
        let h = Health::default();
        let t0 = Instant::now();
        for i in 0..MAX_TARGETS + 3 {
            h.record_at(&format!("t{i}:80"), Outcome::Answered(200), t0);
        }
        assert_eq!(h.targets_at(t0).len(), MAX_TARGETS);
        assert_eq!(h.untracked(), 3);
    }
}
