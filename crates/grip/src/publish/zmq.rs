//! Publish items as Pushpin's ZeroMQ inputs carry them (reference §4.4): one item per message,
//! either a raw tnetstring, `T` followed by a tnetstring, or `J` followed by JSON.
//!
//! A tnetstring item is read through the same parser as a JSON one
//! ([`parse_publish_item`](super::parse_publish_item)), after a faithful translation: byte
//! strings become JSON strings, except that `content` and `body` may hold any bytes (tnetstring
//! is binary-safe) and are carried as their base64 `content-bin`/`body-bin` forms when they are
//! not UTF-8. Every other byte string (keys, channel, ids, meta) must be UTF-8, as in JSON.

use base64::Engine as _;
use serde_json::{Map, Value as Json};

use super::{parse_publish_item, PublishError, PublishItem};
use crate::tnetstring::{self, Value as Tnet};

/// Parses one message of the PULL input, or the item part of a SUB input message. `channel`,
/// when given (the SUB message's topic), is the item's channel whatever the item says, as in
/// Pushpin.
///
/// ```
/// use grip::publish::parse_zmq_item;
/// use grip::tnetstring::Value;
///
/// let json = br#"J{"channel": "news", "formats": {"http-stream": {"content": "hi\n"}}}"#;
/// let tnet = Value::map([
///     ("channel", Value::str("news")),
///     ("formats", Value::map([("http-stream", Value::map([("content", Value::str("hi\n"))]))])),
/// ])
/// .to_bytes();
/// let mut prefixed = b"T".to_vec();
/// prefixed.extend(&tnet);
/// for message in [&json[..], &tnet, &prefixed] {
///     let item = parse_zmq_item(message, None).unwrap();
///     assert_eq!(item.channel, "news");
/// }
/// assert_eq!(parse_zmq_item(&prefixed, Some("other")).unwrap().channel, "other");
/// ```
pub fn parse_zmq_item(message: &[u8], channel: Option<&str>) -> Result<PublishItem, PublishError> {
    let mut doc = match message.first() {
        Some(b'J') => serde_json::from_slice(&message[1..]).map_err(|e| {
            PublishError::InvalidFormat(format!("'J' message is not valid JSON: {e}"))
        })?,
        Some(b'T') => tnet_to_json(&parse_tnet(&message[1..])?)?,
        Some(b) if b.is_ascii_digit() => tnet_to_json(&parse_tnet(message)?)?,
        Some(b) => {
            return Err(PublishError::InvalidFormat(format!(
                "message starts with byte 0x{b:02x}: expected a tnetstring, 'T' and a tnetstring, or 'J' and JSON"
            )))
        }
        None => return Err(PublishError::InvalidFormat("message is empty".to_string())),
    };
    if let (Some(channel), Json::Object(obj)) = (channel, &mut doc) {
        obj.insert("channel".into(), channel.into());
    }
    parse_publish_item(&doc)
}

/// Parses a publish item given as a tnetstring value (a command's `publish` arguments).
pub fn parse_tnet_item(item: &Tnet) -> Result<PublishItem, PublishError> {
    parse_publish_item(&tnet_to_json(item)?)
}

fn parse_tnet(data: &[u8]) -> Result<Tnet, PublishError> {
    tnetstring::parse(data).map_err(|e| PublishError::InvalidFormat(e.to_string()))
}

/// The JSON a tnetstring value stands for (see the module docs).
pub fn tnet_to_json(value: &Tnet) -> Result<Json, PublishError> {
    convert(value, "item")
}

fn convert(value: &Tnet, name: &str) -> Result<Json, PublishError> {
    Ok(match value {
        Tnet::Bytes(b) => Json::String(
            std::str::from_utf8(b)
                .map_err(|_| PublishError::InvalidFormat(format!("'{name}' is not valid UTF-8")))?
                .to_string(),
        ),
        Tnet::Int(n) => Json::from(*n),
        Tnet::Float(x) => serde_json::Number::from_f64(*x).map_or(Json::Null, Json::Number),
        Tnet::Bool(b) => Json::Bool(*b),
        Tnet::Null => Json::Null,
        Tnet::List(items) => Json::Array(
            items
                .iter()
                .map(|v| convert(v, name))
                .collect::<Result<_, _>>()?,
        ),
        Tnet::Map(pairs) => {
            let mut out = Map::new();
            for (k, v) in pairs {
                let key = std::str::from_utf8(k).map_err(|_| {
                    PublishError::InvalidFormat(format!(
                        "'{name}' has a key that is not valid UTF-8"
                    ))
                })?;
                match (key, v) {
                    ("content" | "body", Tnet::Bytes(b)) if std::str::from_utf8(b).is_err() => {
                        let encoded = base64::engine::general_purpose::STANDARD.encode(b);
                        out.insert(format!("{key}-bin"), Json::String(encoded));
                    }
                    _ => {
                        out.insert(key.to_string(), convert(v, key)?);
                    }
                }
            }
            Json::Object(out)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::Action;

    fn stream_item(content: &[u8]) -> Tnet {
        Tnet::map([
            ("channel", Tnet::str("c")),
            (
                "formats",
                Tnet::map([(
                    "http-stream",
                    Tnet::map([(
                        "content",
                        Tnet::Bytes(bytes::Bytes::copy_from_slice(content)),
                    )]),
                )]),
            ),
        ])
    }

    #[test]
    fn binary_content_survives() {
        let content = b"\x00\xff\xfe binary";
        for prefix in [&b""[..], b"T"] {
            let mut msg = prefix.to_vec();
            msg.extend(stream_item(content).to_bytes());
            let item = parse_zmq_item(&msg, None).unwrap();
            let s = item.formats.http_stream.unwrap();
            assert_eq!(&s.content[..], content);
        }
    }

    #[test]
    fn every_field_reads_as_from_json() {
        let tnet = Tnet::map([
            ("channel", Tnet::str("room")),
            ("id", Tnet::str("2")),
            ("prev-id", Tnet::str("1")),
            ("no-seq", Tnet::Bool(true)),
            ("size", Tnet::Int(12)),
            ("meta", Tnet::map([("sender", Tnet::str("bob"))])),
            (
                "formats",
                Tnet::map([
                    (
                        "http-response",
                        Tnet::map([
                            ("code", Tnet::Int(201)),
                            ("body", Tnet::str("made\n")),
                            (
                                "headers",
                                Tnet::List(vec![Tnet::List(vec![
                                    Tnet::str("X-A"),
                                    Tnet::str("1"),
                                ])]),
                            ),
                        ]),
                    ),
                    (
                        "ws-message",
                        Tnet::map([("action", Tnet::str("close")), ("code", Tnet::Int(4001))]),
                    ),
                ]),
            ),
        ]);
        let json = serde_json::json!({"channel": "room", "id": "2", "prev-id": "1", "no-seq": true,
            "size": 12, "meta": {"sender": "bob"}, "formats": {
                "http-response": {"code": 201, "body": "made\n", "headers": [["X-A", "1"]]},
                "ws-message": {"action": "close", "code": 4001}}});
        let from_tnet = parse_tnet_item(&tnet).unwrap();
        assert_eq!(from_tnet, parse_publish_item(&json).unwrap());
        assert_eq!(from_tnet.formats.ws_message.unwrap().action, Action::Close);
        let mut msg = b"J".to_vec();
        msg.extend(json.to_string().as_bytes());
        assert_eq!(
            parse_zmq_item(&msg, None).unwrap(),
            parse_tnet_item(&tnet).unwrap()
        );
    }

    #[test]
    fn bad_messages_name_the_problem() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "Invalid format: message is empty"),
            (
                b"{\"channel\":\"c\"}",
                "Invalid format: message starts with byte 0x7b: expected a tnetstring, 'T' and a tnetstring, or 'J' and JSON",
            ),
            (b"Tgarbage", "Invalid format: tnetstring has a bad length prefix at byte 0"),
            (b"J{", "Invalid format: 'J' message is not valid JSON: EOF while parsing an object at line 1 column 1"),
            (b"2:42#", "Invalid format: publish item object is not an object"),
            (
                b"T13:7:channel,0:,}",
                "Invalid format: publish item object contains 'channel' with invalid value ''",
            ),
            (
                b"14:7:channel,1:\xff,}",
                "Invalid format: 'channel' is not valid UTF-8",
            ),
        ];
        for (msg, want) in cases {
            let got = parse_zmq_item(msg, None).unwrap_err().to_string();
            assert_eq!(got, *want, "{}", String::from_utf8_lossy(msg));
        }
    }

    #[test]
    fn the_topic_names_the_channel() {
        let mut msg = b"T".to_vec();
        msg.extend(
            Tnet::map([(
                "formats",
                Tnet::map([("http-stream", Tnet::map([("content", Tnet::str("x"))]))]),
            )])
            .to_bytes(),
        );
        assert_eq!(parse_zmq_item(&msg, Some("t")).unwrap().channel, "t");
        assert!(parse_zmq_item(&msg, None)
            .unwrap_err()
            .to_string()
            .contains("'channel'"));
    }
}
