//! Typed netstrings, the encoding of Pushpin's ZeroMQ messages: publish items on the PULL and
//! SUB inputs (`T` + tnetstring), command requests and replies, and stats packets.
//!
//! A value is `<length>:<payload><type>`, where the length is the payload's byte count in
//! decimal and the type is one character: `,` bytes, `#` integer, `^` float, `!` boolean
//! (`true`/`false`), `~` null (empty payload), `]` list, `}` dictionary (alternating keys and
//! values; keys are byte strings). Byte strings are binary-safe, unlike JSON strings.
//!
//! [`parse`] reads exactly one value spanning the whole input; nesting is bounded by
//! [`MAX_DEPTH`] so hostile input cannot exhaust the stack. [`Value::encode`] writes the
//! canonical form, which [`parse`] reads back to the same value.
//!
//! ```
//! use grip::tnetstring::{parse, Value};
//!
//! let v = parse(b"26:7:channel,4:news,1:n,2:42#}").unwrap();
//! assert_eq!(v.get("channel").and_then(Value::as_bytes), Some(&b"news"[..]));
//! assert_eq!(v.get("n"), Some(&Value::Int(42)));
//! assert_eq!(v.to_bytes(), b"26:7:channel,4:news,1:n,2:42#}");
//! ```

use std::fmt;

use bytes::Bytes;

/// How deep lists and dictionaries may nest.
pub const MAX_DEPTH: usize = 64;

/// Digits a length prefix may have: payloads are held in memory, so nine digits (just under
/// 1 GB) is more than any message Holdfast accepts.
const MAX_LEN_DIGITS: usize = 9;

/// One tnetstring value.
#[derive(Clone, PartialEq)]
pub enum Value {
    /// `,`: a byte string.
    Bytes(Bytes),
    /// `#`: a signed 64-bit integer.
    Int(i64),
    /// `^`: a float.
    Float(f64),
    /// `!`: `true` or `false`.
    Bool(bool),
    /// `~`: null.
    Null,
    /// `]`: a list.
    List(Vec<Value>),
    /// `}`: a dictionary, in wire order; keys are byte strings.
    Map(Vec<(Bytes, Value)>),
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bytes(b) => write!(f, "b{:?}", String::from_utf8_lossy(b)),
            Value::Int(n) => write!(f, "{n}"),
            Value::Float(x) => write!(f, "{x:?}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Null => f.write_str("null"),
            Value::List(items) => f.debug_list().entries(items).finish(),
            Value::Map(pairs) => f
                .debug_map()
                .entries(
                    pairs
                        .iter()
                        .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v)),
                )
                .finish(),
        }
    }
}

/// Why bytes are not one tnetstring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TnetError {
    /// The input ended inside a value.
    #[error("tnetstring is truncated at byte {0}")]
    Truncated(usize),
    /// The length prefix is not a decimal number followed by `:`.
    #[error("tnetstring has a bad length prefix at byte {0}")]
    BadLength(usize),
    /// The type character is not one of `,#^!~]}`.
    #[error("tnetstring has unknown type {0:?} at byte {1}")]
    UnknownType(char, usize),
    /// The payload does not fit its type (`#` not an integer, `!` not `true`/`false`, ...).
    #[error("tnetstring has an invalid {0} payload at byte {1}")]
    BadPayload(&'static str, usize),
    /// A dictionary key is not a byte string, or a key has no value.
    #[error("tnetstring dictionary at byte {0} has a key that is not a byte string, or no value for a key")]
    BadKey(usize),
    /// Lists and dictionaries nest deeper than [`MAX_DEPTH`].
    #[error("tnetstring nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// Bytes follow the value.
    #[error("{0} bytes follow the tnetstring")]
    Trailing(usize),
}

/// Parses one value that spans all of `data`.
pub fn parse(data: &[u8]) -> Result<Value, TnetError> {
    parse_shared(&Bytes::copy_from_slice(data))
}

/// [`parse`], with byte strings sharing `data`'s buffer instead of copying.
pub fn parse_shared(data: &Bytes) -> Result<Value, TnetError> {
    let (value, end) = parse_at(data, 0, 0)?;
    if end != data.len() {
        return Err(TnetError::Trailing(data.len() - end));
    }
    Ok(value)
}

/// Parses the value starting at `at`; returns it and where the next value starts.
fn parse_at(data: &Bytes, at: usize, depth: usize) -> Result<(Value, usize), TnetError> {
    let rest = &data[at..];
    let colon = match rest.iter().position(|b| !b.is_ascii_digit()) {
        Some(i) if rest[i] == b':' && (1..=MAX_LEN_DIGITS).contains(&i) => i,
        None if rest.len() <= MAX_LEN_DIGITS => return Err(TnetError::Truncated(data.len())),
        _ => return Err(TnetError::BadLength(at)),
    };
    let digits = &rest[..colon];
    let len: usize = std::str::from_utf8(digits)
        .expect("ASCII digits")
        .parse()
        .map_err(|_| TnetError::BadLength(at))?;
    let start = at + colon + 1;
    let end = start
        .checked_add(len)
        .filter(|&end| end < data.len())
        .ok_or(TnetError::Truncated(data.len()))?;
    let payload = &data[start..end];
    let kind = data[end];
    let bad = |what| TnetError::BadPayload(what, start);
    let value = match kind {
        b',' => Value::Bytes(data.slice(start..end)),
        b'#' => Value::Int(
            std::str::from_utf8(payload)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(bad("integer"))?,
        ),
        b'^' => Value::Float(
            std::str::from_utf8(payload)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b"+-.0123456789eE".contains(&b)))
                .and_then(|s| s.parse::<f64>().ok())
                // A number too large for a double would be infinity, which neither a
                // tnetstring nor the JSON it becomes can carry.
                .filter(|x| x.is_finite())
                .ok_or(bad("float"))?,
        ),
        b'!' => match payload {
            b"true" => Value::Bool(true),
            b"false" => Value::Bool(false),
            _ => return Err(bad("boolean")),
        },
        b'~' if payload.is_empty() => Value::Null,
        b'~' => return Err(bad("null")),
        b']' | b'}' => {
            if depth >= MAX_DEPTH {
                return Err(TnetError::TooDeep);
            }
            let mut items = Vec::new();
            let mut pos = start;
            while pos < end {
                let (item, next) = parse_at(&data.slice(..end), pos, depth + 1)?;
                items.push(item);
                pos = next;
            }
            if kind == b']' {
                Value::List(items)
            } else {
                if items.len() % 2 != 0 {
                    return Err(TnetError::BadKey(start));
                }
                let mut pairs = Vec::with_capacity(items.len() / 2);
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    let Value::Bytes(k) = k else {
                        return Err(TnetError::BadKey(start));
                    };
                    pairs.push((k, v));
                }
                Value::Map(pairs)
            }
        }
        other => return Err(TnetError::UnknownType(char::from(other), end)),
    };
    Ok((value, end + 1))
}

impl Value {
    /// A byte string from text.
    pub fn str(s: &str) -> Value {
        Value::Bytes(Bytes::copy_from_slice(s.as_bytes()))
    }

    /// A dictionary from `(key, value)` pairs, in that order.
    pub fn map<'a>(pairs: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
        Value::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (Bytes::copy_from_slice(k.as_bytes()), v))
                .collect(),
        )
    }

    /// The value of `key` in a dictionary (the first, if it repeats); `None` for other types.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(pairs) => pairs
                .iter()
                .find(|(k, _)| k.as_ref() == key.as_bytes())
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The bytes of a byte string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The text of a byte string that is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The name of the type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Bytes(_) => "byte string",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Bool(_) => "boolean",
            Value::Null => "null",
            Value::List(_) => "list",
            Value::Map(_) => "dictionary",
        }
    }

    /// Appends the encoding of this value to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Bytes(b) => frame(out, b, b','),
            Value::Int(n) => frame(out, n.to_string().as_bytes(), b'#'),
            Value::Float(x) => frame(out, format_float(*x).as_bytes(), b'^'),
            Value::Bool(b) => frame(out, if *b { b"true" } else { b"false" }, b'!'),
            Value::Null => frame(out, b"", b'~'),
            Value::List(items) => {
                let mut body = Vec::new();
                for item in items {
                    item.encode(&mut body);
                }
                frame(out, &body, b']');
            }
            Value::Map(pairs) => {
                let mut body = Vec::new();
                for (k, v) in pairs {
                    frame(&mut body, k, b',');
                    v.encode(&mut body);
                }
                frame(out, &body, b'}');
            }
        }
    }

    /// The encoding of this value.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// A float as a tnetstring payload: Rust's shortest round-trip form, which every reader
/// (Python's `float()`, Qt's `toDouble`) parses. Non-finite values have no such form and are
/// written as 0.
fn format_float(x: f64) -> String {
    if x.is_finite() {
        format!("{x:?}")
    } else {
        "0.0".to_string()
    }
}

fn frame(out: &mut Vec<u8>, payload: &[u8], kind: u8) {
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(payload);
    out.push(kind);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_type() {
        let cases: &[(&[u8], Value)] = &[
            (b"0:,", Value::str("")),
            (b"5:hello,", Value::str("hello")),
            (b"3:a\0b,", Value::Bytes(Bytes::from_static(b"a\0b"))),
            (b"2:42#", Value::Int(42)),
            (b"3:-17#", Value::Int(-17)),
            (b"3:1.5^", Value::Float(1.5)),
            (b"4:true!", Value::Bool(true)),
            (b"5:false!", Value::Bool(false)),
            (b"0:~", Value::Null),
            (b"0:]", Value::List(vec![])),
            (
                b"8:1:1#1:a,]",
                Value::List(vec![Value::Int(1), Value::str("a")]),
            ),
            (b"0:}", Value::Map(vec![])),
            (b"8:1:k,1:v,}", Value::map([("k", Value::str("v"))])),
        ];
        for (wire, want) in cases {
            let got = parse(wire).unwrap_or_else(|e| panic!("{wire:?}: {e}"));
            assert_eq!(&got, want, "{}", String::from_utf8_lossy(wire));
            assert_eq!(got.to_bytes(), *wire, "{want:?} encodes back");
        }
    }

    #[test]
    fn what_pushpin_sends_parses() {
        // A command reply captured from Pushpin 1.36.
        let wire = b"143:7:success,4:true!5:value,113:7:command,20:tcp://127.0.0.1:5863,12:publish-pull,20:tcp://127.0.0.1:5860,11:publish-sub,20:tcp://127.0.0.1:5862,}}";
        let v = parse(wire).unwrap();
        assert_eq!(v.get("success"), Some(&Value::Bool(true)));
        let uris = v.get("value").unwrap();
        assert_eq!(
            uris.get("command").unwrap().as_str(),
            Some("tcp://127.0.0.1:5863")
        );
        assert_eq!(v.to_bytes(), wire);
    }

    #[test]
    fn rejects_malformed_input_with_the_reason() {
        let cases: &[(&[u8], TnetError)] = &[
            (b"", TnetError::Truncated(0)),
            (b"5:abc,", TnetError::Truncated(6)),
            (b"3:abc", TnetError::Truncated(5)),
            (b"x:abc,", TnetError::BadLength(0)),
            (b":,", TnetError::BadLength(0)),
            (b"1234567890:a,", TnetError::BadLength(0)),
            (b"3:abcX", TnetError::UnknownType('X', 5)),
            (b"2:4x#", TnetError::BadPayload("integer", 2)),
            (
                b"20:99999999999999999999#",
                TnetError::BadPayload("integer", 3),
            ),
            (b"3:inf^", TnetError::BadPayload("float", 2)),
            (b"3:yes!", TnetError::BadPayload("boolean", 2)),
            (b"1:x~", TnetError::BadPayload("null", 2)),
            (b"4:1:k,}", TnetError::BadKey(2)),
            (b"8:1:1#1:v,}", TnetError::BadKey(2)),
            (b"0:,x", TnetError::Trailing(1)),
            (b"5:3:ab,]", TnetError::Truncated(7)),
        ];
        for (wire, want) in cases {
            assert_eq!(
                parse(wire).unwrap_err(),
                *want,
                "{}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let mut v = Value::Null;
        for _ in 0..MAX_DEPTH {
            v = Value::List(vec![v]);
        }
        assert_eq!(parse(&v.to_bytes()).unwrap(), v);
        let deeper = Value::List(vec![v]).to_bytes();
        assert_eq!(parse(&deeper).unwrap_err(), TnetError::TooDeep);
    }

    #[test]
    fn a_float_too_large_for_a_double_is_refused() {
        // Found by the tnetstring fuzz target: it parsed as infinity, which encodes as 0.0.
        for text in [&b"5:1e999^"[..], b"6:-1e999^"] {
            assert_eq!(
                parse(text).unwrap_err(),
                TnetError::BadPayload("float", 2),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn floats_round_trip() {
        for x in [0.0, -2.5, 1e-300, 123456.789, f64::MAX] {
            let v = Value::Float(x);
            assert_eq!(parse(&v.to_bytes()).unwrap(), v);
        }
    }
}
