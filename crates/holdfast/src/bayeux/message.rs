//! Bayeux messages on the wire: a batch (a JSON array of message objects, or one object) in,
//! replies and events out. Replies copy the request's `id`, `channel` and `clientId` and say
//! `successful`; a failed one carries `error` as `code:args:text` (Bayeux 1.0 §3.4.?), e.g.
//! `402:abc:Unknown client`.

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::config::BayeuxConfig;
use crate::hub::Delivery;

/// One message of a batch.
pub type Message = Map<String, Value>;

/// The connection types this endpoint serves, in the order handshakes list them.
pub const CONNECTION_TYPES: [&str; 4] = [
    "long-polling",
    "cross-origin-long-polling",
    "callback-polling",
    "websocket",
];

/// Parses a batch: a JSON array of objects, or one object. The error names what is wrong.
pub fn parse_batch(body: &[u8]) -> Result<Vec<Message>, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("messages are not JSON: {e}"))?;
    let items = match value {
        Value::Array(items) => items,
        one @ Value::Object(_) => vec![one],
        _ => return Err("expected a JSON array of message objects".to_string()),
    };
    if items.is_empty() {
        return Err("the array of messages is empty".to_string());
    }
    items
        .into_iter()
        .enumerate()
        .map(|(n, m)| match m {
            Value::Object(m) => Ok(m),
            other => Err(format!(
                "message {} is not an object: {}",
                n + 1,
                type_name(&other)
            )),
        })
        .collect()
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The string field `key` of `m`, if it is one.
pub fn str_field<'m>(m: &'m Message, key: &str) -> Option<&'m str> {
    m.get(key).and_then(Value::as_str)
}

/// The successful reply to `m`, on `m`'s channel.
pub fn reply(m: &Message) -> Message {
    let mut r = Map::new();
    for key in ["id", "channel", "clientId"] {
        if let Some(v) = m.get(key).filter(|v| v.is_string()) {
            r.insert(key.to_string(), v.clone());
        }
    }
    r.insert("successful".into(), true.into());
    r
}

/// The failed reply to `m`: `error` is `code:args:text`.
pub fn error(m: &Message, code: u16, args: &str, text: &str) -> Message {
    let mut r = reply(m);
    r.insert("successful".into(), false.into());
    r.insert("error".into(), format!("{code}:{args}:{text}").into());
    r
}

/// The advice of a successful handshake or connect: retry, with the configured interval and
/// timeout (in milliseconds).
pub fn advice(c: &BayeuxConfig) -> Value {
    serde_json::json!({
        "reconnect": "retry",
        "interval": c.interval_ms,
        "timeout": c.timeout_secs.saturating_mul(1000),
    })
}

/// The advice that sends a client back to the handshake (an unknown or ended session).
pub fn advice_handshake(c: &BayeuxConfig) -> Value {
    serde_json::json!({"reconnect": "handshake", "interval": c.interval_ms})
}

/// A reply as bytes.
pub fn to_bytes(m: &Message) -> Bytes {
    Bytes::from(serde_json::to_vec(m).expect("a JSON map serializes"))
}

/// Joins messages (each a JSON object's text) into a JSON array.
pub fn batch(items: &[Bytes]) -> Bytes {
    let len = items.iter().map(Bytes::len).sum::<usize>() + items.len() + 2;
    let mut out = Vec::with_capacity(len);
    out.push(b'[');
    for (n, m) in items.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(m);
    }
    out.push(b']');
    Bytes::from(out)
}

/// The event a Bayeux subscriber gets for `item` (`None` without a `json-object` format):
/// `{"channel": …, "data": …, "id": …}`. The channel is the one the item was published on,
/// without the route's channel `prefix`; `id` is the item's, when it has one.
pub fn event(item: &Delivery, prefix: &str) -> Option<Bytes> {
    let json = item.formats.json_object.as_ref()?;
    let channel = match &json.channel {
        Some(c) => c.as_str(),
        None => item.channel.strip_prefix(prefix).unwrap_or(&item.channel),
    };
    let channel = serde_json::to_string(channel).expect("a string serializes");
    let mut out = Vec::with_capacity(json.data.len() + channel.len() + 32);
    out.extend_from_slice(b"{\"channel\":");
    out.extend_from_slice(channel.as_bytes());
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(&json.data);
    if let Some(id) = &item.id {
        out.extend_from_slice(b",\"id\":");
        out.extend_from_slice(serde_json::to_string(id).expect("a string").as_bytes());
    }
    out.push(b'}');
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches() {
        assert_eq!(parse_batch(br#"{"channel":"/a"}"#).unwrap().len(), 1);
        assert_eq!(parse_batch(br#"[{"a":1},{"b":2}]"#).unwrap().len(), 2);
        for (body, want) in [
            (&b"[{"[..], "messages are not JSON"),
            (b"3", "expected a JSON array of message objects"),
            (b"[]", "the array of messages is empty"),
            (br#"[{}, "x"]"#, "message 2 is not an object: a string"),
        ] {
            let e = parse_batch(body).unwrap_err();
            assert!(e.starts_with(want), "{e}");
        }
    }

    #[test]
    fn replies() {
        let m = parse_batch(br#"{"id":"7","channel":"/meta/connect","clientId":"c","x":1}"#)
            .unwrap()
            .remove(0);
        assert_eq!(
            serde_json::to_string(&error(&m, 402, "c", "Unknown client")).unwrap(),
            r#"{"channel":"/meta/connect","clientId":"c","error":"402:c:Unknown client","id":"7","successful":false}"#
        );
        let items = [Bytes::from_static(b"{}"), Bytes::from_static(b"[1]")];
        assert_eq!(&batch(&items)[..], b"[{},[1]]");
        assert_eq!(&batch(&[])[..], b"[]");
    }
}
