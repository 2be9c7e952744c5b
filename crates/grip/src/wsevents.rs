//! The `application/websocket-events` codec of WebSocket-over-HTTP
//! (reference §3.4).
//!
//! A body is a sequence of events, each `NAME\r\n` or
//! `NAME SIZEHEX\r\n<content>\r\n`. Sizes are read in either case and written
//! in lowercase, as Pushpin writes them. Parsing is strict: a missing line end,
//! a bad size or content cut short is an error naming the event and the byte
//! where it starts. Event names Pushpin does not know are skipped, as Pushpin
//! skips them. Content is sliced out of the body without copying.

use bytes::{BufMut, Bytes};

/// The media type of WebSocket-over-HTTP bodies.
pub const CONTENT_TYPE: &str = "application/websocket-events";

/// What happened on the WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The connection opens (request) or is accepted (response).
    Open,
    /// A text message.
    Text,
    /// A binary message.
    Binary,
    /// A ping.
    Ping,
    /// A pong.
    Pong,
    /// A close; content is the 2-byte big-endian code and the UTF-8 reason.
    Close,
    /// The connection is dropped without a close handshake.
    Disconnect,
}

impl EventKind {
    /// The wire name, e.g. `TEXT`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Open => "OPEN",
            EventKind::Text => "TEXT",
            EventKind::Binary => "BINARY",
            EventKind::Ping => "PING",
            EventKind::Pong => "PONG",
            EventKind::Close => "CLOSE",
            EventKind::Disconnect => "DISCONNECT",
        }
    }

    /// Parses a wire name (case-sensitive, like Pushpin).
    pub fn from_name(name: &[u8]) -> Option<Self> {
        Some(match name {
            b"OPEN" => EventKind::Open,
            b"TEXT" => EventKind::Text,
            b"BINARY" => EventKind::Binary,
            b"PING" => EventKind::Ping,
            b"PONG" => EventKind::Pong,
            b"CLOSE" => EventKind::Close,
            b"DISCONNECT" => EventKind::Disconnect,
            _ => return None,
        })
    }

    /// Whether the size line is written even for empty content: a message
    /// can be empty, but an `OPEN` or a bare `CLOSE` has no content at all.
    fn always_sized(self) -> bool {
        matches!(self, EventKind::Text | EventKind::Binary)
    }
}

/// One WebSocket event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The payload (empty when the event has none).
    pub content: Bytes,
}

impl Event {
    /// An event with no content.
    pub fn new(kind: EventKind) -> Self {
        Event {
            kind,
            content: Bytes::new(),
        }
    }

    /// An event with content.
    pub fn with_content(kind: EventKind, content: impl Into<Bytes>) -> Self {
        Event {
            kind,
            content: content.into(),
        }
    }

    /// A `CLOSE` carrying `code` and `reason`.
    pub fn close(code: u16, reason: &str) -> Self {
        Event::with_content(EventKind::Close, encode_close_content(code, reason))
    }

    /// The code and reason of a `CLOSE`; `None` for other events and for a
    /// `CLOSE` without a code.
    pub fn close_code_and_reason(&self) -> Option<(u16, String)> {
        match self.kind {
            EventKind::Close => parse_close_content(&self.content),
            _ => None,
        }
    }
}

/// A body that is not valid `application/websocket-events`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsEventsError {
    /// The event line has no `\r\n`.
    #[error("event at byte {offset} has no CRLF at the end of its line '{line}'")]
    UnterminatedLine {
        /// Where the event starts.
        offset: usize,
        /// The rest of the body (at most 40 bytes, escaped).
        line: String,
    },
    /// The size is not hexadecimal.
    #[error("event '{name}' at byte {offset} has invalid hex size '{size}'")]
    InvalidSize {
        /// Event name.
        name: String,
        /// Where the event starts.
        offset: usize,
        /// The size as written.
        size: String,
    },
    /// The body ends before the declared content does.
    #[error("event '{name}' at byte {offset} declares {declared} bytes of content but only {available} remain")]
    Truncated {
        /// Event name.
        name: String,
        /// Where the event starts.
        offset: usize,
        /// The declared size.
        declared: usize,
        /// Bytes left in the body after the size line.
        available: usize,
    },
    /// The content is not followed by `\r\n`.
    #[error("event '{name}' at byte {offset} has no CRLF after its {size} bytes of content")]
    MissingContentEnd {
        /// Event name.
        name: String,
        /// Where the event starts.
        offset: usize,
        /// The declared size.
        size: usize,
    },
}

/// Parses a body, copying it once into shared storage.
///
/// ```
/// use grip::wsevents::{parse_events, EventKind};
///
/// let events = parse_events(b"OPEN\r\nTEXT e\r\nhi from client\r\n").unwrap();
/// assert_eq!(events[0].kind, EventKind::Open);
/// assert_eq!(events[1].kind, EventKind::Text);
/// assert_eq!(&events[1].content[..], b"hi from client");
///
/// let err = parse_events(b"TEXT 10\r\nshort\r\n").unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "event 'TEXT' at byte 0 declares 16 bytes of content but only 7 remain"
/// );
/// ```
pub fn parse_events(body: &[u8]) -> Result<Vec<Event>, WsEventsError> {
    parse_events_shared(&Bytes::copy_from_slice(body))
}

/// Parses a body held in [`Bytes`]; event content shares its storage.
pub fn parse_events_shared(body: &Bytes) -> Result<Vec<Event>, WsEventsError> {
    let mut events = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let offset = pos;
        let rest = &body[pos..];
        let Some(line_len) = rest.windows(2).position(|w| w == b"\r\n") else {
            let shown = &rest[..rest.len().min(40)];
            return Err(WsEventsError::UnterminatedLine {
                offset,
                line: String::from_utf8_lossy(shown).escape_debug().to_string(),
            });
        };
        let line = &rest[..line_len];
        pos += line_len + 2;
        let (name, size) = match line.iter().position(|&b| b == b' ') {
            Some(space) => (&line[..space], Some(&line[space + 1..])),
            None => (line, None),
        };
        let shown_name = || String::from_utf8_lossy(name).into_owned();
        let mut content = Bytes::new();
        if let Some(size) = size {
            let declared = parse_hex_size(size).ok_or_else(|| WsEventsError::InvalidSize {
                name: shown_name(),
                offset,
                size: String::from_utf8_lossy(size).into_owned(),
            })?;
            let available = body.len() - pos;
            if declared > available {
                return Err(WsEventsError::Truncated {
                    name: shown_name(),
                    offset,
                    declared,
                    available,
                });
            }
            content = body.slice(pos..pos + declared);
            pos += declared;
            if body.get(pos..pos + 2) != Some(b"\r\n".as_slice()) {
                return Err(WsEventsError::MissingContentEnd {
                    name: shown_name(),
                    offset,
                    size: declared,
                });
            }
            pos += 2;
        }
        if let Some(kind) = EventKind::from_name(name) {
            events.push(Event { kind, content });
        }
    }
    Ok(events)
}

fn parse_hex_size(size: &[u8]) -> Option<usize> {
    if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    usize::from_str_radix(std::str::from_utf8(size).ok()?, 16).ok()
}

/// Appends the encoding of `events` to `out`. `TEXT` and `BINARY` always carry
/// a size (an empty message is `TEXT 0\r\n\r\n`); other events carry one only
/// when they have content, as Pushpin writes them.
///
/// ```
/// use grip::wsevents::{encode_events, Event, EventKind};
///
/// let mut out = Vec::new();
/// encode_events(
///     &[
///         Event::new(EventKind::Open),
///         Event::with_content(EventKind::Text, "hi from client"),
///         Event::close(1000, ""),
///     ],
///     &mut out,
/// );
/// assert_eq!(out, b"OPEN\r\nTEXT e\r\nhi from client\r\nCLOSE 2\r\n\x03\xe8\r\n");
/// ```
pub fn encode_events(events: &[Event], out: &mut Vec<u8>) {
    for event in events {
        out.put_slice(event.kind.as_str().as_bytes());
        if !event.content.is_empty() || event.kind.always_sized() {
            out.put_slice(format!(" {:x}\r\n", event.content.len()).as_bytes());
            out.put_slice(&event.content);
        }
        out.put_slice(b"\r\n");
    }
}

/// `CLOSE` content: the code as two big-endian bytes, then the reason.
pub fn encode_close_content(code: u16, reason: &str) -> Bytes {
    let mut out = Vec::with_capacity(2 + reason.len());
    out.put_u16(code);
    out.put_slice(reason.as_bytes());
    Bytes::from(out)
}

/// Reads `CLOSE` content: `None` when it is shorter than the 2-byte code.
/// A reason that is not UTF-8 is decoded lossily.
pub fn parse_close_content(content: &[u8]) -> Option<(u16, String)> {
    let (code, reason) = content.split_first_chunk::<2>()?;
    Some((
        u16::from_be_bytes(*code),
        String::from_utf8_lossy(reason).into_owned(),
    ))
}

#[cfg(test)]
mod tests;
