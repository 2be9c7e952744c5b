//! The client events of one WebSocket-over-HTTP connection that the origin has not accepted yet.
//!
//! Events wait in order; [`Outbox::offer`] hands all of them to one request (only the first,
//! for a target with `one_event`), and
//! [`Outbox::settle`] applies the origin's `Content-Bytes-Accepted`: message content beyond the
//! accepted count — and every event after it — goes back to the front, to be offered again with
//! `Content-Bytes-Replayed`. Bounded: [`Outbox::push`] refuses an event that would take the
//! content waiting (queued and offered) over the limit.

use std::collections::VecDeque;

use grip::wsevents::{Event, EventKind};

/// Client events waiting for the origin.
pub struct Outbox {
    queue: VecDeque<Event>,
    offered: Vec<Event>,
    waiting: usize,
    replayed: usize,
    limit: usize,
    /// `one_event`: one event per request.
    one_event: bool,
}

/// Whether `Content-Bytes-Accepted` counts this event's content.
fn is_message(kind: EventKind) -> bool {
    matches!(kind, EventKind::Text | EventKind::Binary)
}

impl Outbox {
    /// An empty outbox holding at most `limit` bytes of content; `one_event`: each request
    /// carries at most one event (target param `one_event`).
    pub fn new(limit: usize, one_event: bool) -> Outbox {
        Outbox {
            queue: VecDeque::new(),
            offered: Vec::new(),
            waiting: 0,
            replayed: 0,
            limit,
            one_event,
        }
    }

    /// Queues an event; `Err` with the bytes that would be waiting when over the limit.
    pub fn push(&mut self, event: Event) -> Result<(), usize> {
        let waiting = self.waiting + event.content.len();
        if waiting > self.limit {
            return Err(waiting);
        }
        self.waiting = waiting;
        self.queue.push_back(event);
        Ok(())
    }

    /// Whether nothing is queued (offered events do not count).
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Takes everything queued (the first event, with `one_event`) for one request; also returns
    /// how many of its content bytes were offered before (`Content-Bytes-Replayed`).
    pub fn offer(&mut self) -> (Vec<Event>, usize) {
        let n = if self.one_event {
            self.queue.len().min(1)
        } else {
            self.queue.len()
        };
        self.offered = self.queue.drain(..n).collect();
        (self.offered.clone(), std::mem::take(&mut self.replayed))
    }

    /// Applies the origin's answer to the offered events: `accepted` message bytes (`None`:
    /// all of them).
    pub fn settle(&mut self, accepted: Option<usize>) {
        let offered = std::mem::take(&mut self.offered);
        let mut left = accepted.unwrap_or(usize::MAX);
        let mut back: Vec<Event> = Vec::new();
        for event in offered {
            if !back.is_empty() {
                back.push(event);
            } else if is_message(event.kind) {
                let len = event.content.len();
                if len <= left {
                    left -= len;
                    self.waiting -= len;
                } else {
                    self.waiting -= left;
                    let rest = event.content.slice(left..);
                    left = 0;
                    back.push(Event::with_content(event.kind, rest));
                }
            } else {
                self.waiting -= event.content.len();
            }
        }
        self.replayed = back
            .iter()
            .filter(|e| is_message(e.kind))
            .map(|e| e.content.len())
            .sum();
        for event in back.into_iter().rev() {
            self.queue.push_front(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Event {
        Event::with_content(EventKind::Text, s.to_string())
    }

    fn names(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| {
                format!(
                    "{} {}",
                    e.kind.as_str(),
                    String::from_utf8_lossy(&e.content)
                )
            })
            .collect()
    }

    #[test]
    fn accepted_bytes_decide_what_is_offered_again() {
        let cases: &[(Option<usize>, &[&str], usize)] = &[
            (None, &[], 0),
            (Some(10), &[], 0),
            (Some(5), &["TEXT world", "CLOSE "], 5),
            (Some(7), &["TEXT rld", "CLOSE "], 3),
            (Some(0), &["TEXT hello", "TEXT world", "CLOSE "], 10),
        ];
        for (accepted, want, replayed) in cases {
            let mut out = Outbox::new(100, false);
            out.push(text("hello")).unwrap();
            out.push(text("world")).unwrap();
            out.push(Event::new(EventKind::Close)).unwrap();
            let (offered, r) = out.offer();
            assert_eq!((offered.len(), r), (3, 0));
            assert!(out.is_empty());
            out.settle(*accepted);
            let (again, r) = out.offer();
            assert_eq!(names(&again), *want, "{accepted:?}");
            assert_eq!(r, *replayed, "{accepted:?}");
        }
    }

    #[test]
    fn one_event_offers_events_one_at_a_time() {
        let mut out = Outbox::new(100, true);
        out.push(text("hello")).unwrap();
        out.push(text("world")).unwrap();
        out.push(Event::new(EventKind::Close)).unwrap();
        let mut seen = Vec::new();
        while !out.is_empty() {
            let (offered, _) = out.offer();
            assert_eq!(offered.len(), 1);
            seen.extend(names(&offered));
            out.settle(None);
        }
        assert_eq!(seen, ["TEXT hello", "TEXT world", "CLOSE "]);
        // A partly accepted message comes back first, alone.
        out.push(text("abcdef")).unwrap();
        out.push(text("next")).unwrap();
        let _ = out.offer();
        out.settle(Some(2));
        let (again, replayed) = out.offer();
        assert_eq!(
            (names(&again), replayed),
            (vec!["TEXT cdef".to_string()], 4)
        );
    }

    #[test]
    fn the_limit_counts_offered_content_until_accepted() {
        let mut out = Outbox::new(10, false);
        out.push(text("12345678")).unwrap();
        let _ = out.offer();
        assert_eq!(out.push(text("abc")), Err(11));
        out.settle(Some(4));
        out.push(text("abcdef")).unwrap();
        assert_eq!(out.push(text("x")), Err(11));
        let (offered, replayed) = out.offer();
        assert_eq!(names(&offered), ["TEXT 5678", "TEXT abcdef"]);
        assert_eq!(replayed, 4);
        out.settle(None);
        out.push(text("0123456789")).unwrap();
    }
}
