//! Channel history shared by the instances: a capped Redis stream per channel.
//!
//! Each published item that has an `id` is appended (`XADD ... MAXLEN ~ <history_items>`) to its
//! channel's stream in the same transaction that publishes it, and the stream's expiry is pushed
//! back to `history_max_age_secs`, so an idle channel's history disappears by itself. Reading
//! takes the newest entries and drops those older than the age limit by Redis's own clock (the
//! entry ids are Redis timestamps), so instance clocks do not matter. An id published twice is
//! stored twice but replayed once.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use grip::publish::PublishItem;
use redis::Value;

use super::cluster::Keys;
use crate::hub::Delivery;

/// How much history the streams keep, from `[reliability]`.
#[derive(Debug, Clone, Copy)]
pub(super) struct HistoryLimits {
    /// `reliability.history_items`.
    pub items: usize,
    /// `reliability.history_max_age_secs`.
    pub max_age: Duration,
}

impl HistoryLimits {
    /// False when history is turned off.
    pub fn is_on(&self) -> bool {
        self.items > 0 && !self.max_age.is_zero()
    }

    /// Entries read at most: `MAXLEN ~` trims whole stream nodes (100 entries by default), so a
    /// stream may hold that many more than `items`.
    fn read_count(&self) -> usize {
        self.items + 128
    }
}

/// Adds to a transaction what publishing `item` (encoded as `json`) takes: the history append
/// and expiry for an item with an id, then the `PUBLISH`.
pub(super) fn add_publish(
    pipe: &mut redis::Pipeline,
    keys: &Keys,
    limits: &HistoryLimits,
    item: &PublishItem,
    json: &[u8],
) {
    if let (Some(id), true) = (&item.id, limits.is_on()) {
        let key = keys.history(&item.channel);
        pipe.cmd("XADD")
            .arg(&key)
            .arg("MAXLEN")
            .arg("~")
            .arg(limits.items)
            .arg("*")
            .arg("id")
            .arg(id)
            .arg("item")
            .arg(json)
            .ignore();
        pipe.cmd("PEXPIRE")
            .arg(&key)
            .arg(limits.max_age.as_millis() as u64)
            .ignore();
    }
    pipe.cmd("PUBLISH")
        .arg(keys.pubsub(&item.channel))
        .arg(json)
        .ignore();
}

/// One history entry: the item's id and its JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub id: String,
    pub item: Vec<u8>,
}

/// Reads the unexpired history of each stream in `keys`, oldest first, in one round trip.
pub(super) async fn read(
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &[String],
    limits: &HistoryLimits,
) -> redis::RedisResult<Vec<Vec<Entry>>> {
    let mut pipe = redis::pipe();
    pipe.cmd("TIME");
    for key in keys {
        pipe.cmd("XREVRANGE")
            .arg(key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(limits.read_count());
    }
    let replies: Vec<Value> = pipe.query_async(conn).await?;
    let (time, streams) = replies.split_first().ok_or_else(|| bad_reply("TIME"))?;
    let now_ms = parse_time(time).ok_or_else(|| bad_reply("TIME"))?;
    let cutoff = now_ms.saturating_sub(limits.max_age.as_millis() as u64);
    streams
        .iter()
        .map(|reply| {
            let mut entries = parse_entries(reply, cutoff).ok_or_else(|| bad_reply("XREVRANGE"))?;
            entries.reverse();
            Ok(entries)
        })
        .collect()
}

fn bad_reply(command: &str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Parse,
        "unexpected reply",
        command.to_string(),
    ))
}

fn text(v: &Value) -> Option<&str> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// `TIME` → milliseconds since the epoch.
fn parse_time(v: &Value) -> Option<u64> {
    let Value::Array(parts) = v else { return None };
    let secs: u64 = text(parts.first()?)?.parse().ok()?;
    let micros: u64 = text(parts.get(1)?)?.parse().ok()?;
    Some(secs * 1000 + micros / 1000)
}

/// `XREVRANGE` entries not older than `cutoff_ms`, newest first. Entries without an `item`
/// field are skipped; a reply of the wrong shape is `None`.
fn parse_entries(v: &Value, cutoff_ms: u64) -> Option<Vec<Entry>> {
    let Value::Array(entries) = v else {
        return None;
    };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(parts) = entry else {
            return None;
        };
        let stream_id = text(parts.first()?)?;
        let ms: u64 = stream_id.split('-').next()?.parse().ok()?;
        if ms < cutoff_ms {
            break;
        }
        let Value::Array(fields) = parts.get(1)? else {
            return None;
        };
        let mut id = None;
        let mut item = None;
        for pair in fields.chunks(2) {
            match (text(&pair[0]), pair.get(1)) {
                (Some("id"), Some(v)) => id = text(v).map(str::to_string),
                (Some("item"), Some(Value::BulkString(b))) => item = Some(b.clone()),
                _ => {}
            }
        }
        if let (Some(id), Some(item)) = (id, item) {
            out.push(Entry { id, item });
        }
    }
    Some(out)
}

/// The items after the one with id `after`, each id once; `None` when `after` is not in the
/// history or an entry cannot be read (the caller then falls back to the origin).
pub(super) fn after(entries: &[Entry], after: &str) -> Option<Vec<Delivery>> {
    let start = entries.iter().position(|e| e.id == after)?;
    let mut seen: HashSet<&str> = entries[..=start].iter().map(|e| e.id.as_str()).collect();
    let mut out = Vec::new();
    for e in &entries[start + 1..] {
        if !seen.insert(&e.id) {
            continue;
        }
        let parsed = serde_json::from_slice(&e.item)
            .map_err(|err| err.to_string())
            .and_then(|v| grip::publish::parse_publish_item(&v).map_err(|err| err.to_string()));
        match parsed {
            Ok(item) => out.push(Arc::new(item)),
            Err(err) => {
                tracing::warn!(id = %e.id, error = %err, "cluster: unreadable history entry");
                return None;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(stream_id: &str, id: &str, content: &str) -> Value {
        let item = format!(
            r#"{{"channel":"c","id":"{id}","formats":{{"http-stream":{{"content":"{content}"}}}}}}"#
        );
        Value::Array(vec![
            bulk(stream_id),
            Value::Array(vec![bulk("id"), bulk(id), bulk("item"), bulk(&item)]),
        ])
    }

    fn contents(items: &[Delivery]) -> Vec<String> {
        items
            .iter()
            .map(|i| {
                let s = i.formats.http_stream.as_ref().unwrap();
                String::from_utf8(s.content.to_vec()).unwrap()
            })
            .collect()
    }

    #[test]
    fn reads_entries_and_drops_expired_ones() {
        let reply = Value::Array(vec![
            entry("3000-0", "c", "C"),
            entry("2000-1", "b", "B"),
            entry("1000-0", "a", "A"),
        ]);
        let all = parse_entries(&reply, 0).unwrap();
        assert_eq!(
            all.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["c", "b", "a"]
        );
        assert_eq!(parse_entries(&reply, 2000).unwrap().len(), 2);
        assert_eq!(parse_entries(&Value::Array(vec![]), 0).unwrap(), vec![]);
        assert_eq!(parse_entries(&Value::Int(1), 0), None);
        assert_eq!(
            parse_time(&Value::Array(vec![bulk("1700000000"), bulk("250000")])),
            Some(1_700_000_000_250)
        );
    }

    #[test]
    fn after_returns_what_follows_each_id_once() {
        let reply = Value::Array(vec![
            entry("5-0", "d", "D"),
            entry("4-0", "b", "B-again"),
            entry("3-0", "c", "C"),
            entry("2-0", "b", "B"),
            entry("1-0", "a", "A"),
        ]);
        let mut entries = parse_entries(&reply, 0).unwrap();
        entries.reverse();
        let cases: [(&str, Option<Vec<&str>>); 4] = [
            ("a", Some(vec!["B", "C", "D"])),
            ("b", Some(vec!["C", "D"])),
            ("d", Some(vec![])),
            ("zz", None),
        ];
        for (from, want) in cases {
            let got = after(&entries, from).map(|items| contents(&items));
            let want = want.map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(got, want, "after {from}");
        }
    }

    #[test]
    fn an_unreadable_entry_fails_the_read() {
        let mut entries = vec![Entry {
            id: "a".into(),
            item: b"{}".to_vec(),
        }];
        entries.push(Entry {
            id: "b".into(),
            item: b"not json".to_vec(),
        });
        assert!(after(&entries, "a").is_none());
    }
}
