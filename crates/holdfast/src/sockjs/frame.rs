//! SockJS frames and how each transport carries them: the open frame `o`, the heartbeat `h`,
//! messages `a[…]` and the close frame `c[code,"reason"]`; the client's payloads (a JSON array
//! of strings); the JSON-P callback names a transport may call.
//!
//! Messages are JSON-encoded as SockJS servers do it: besides what JSON escapes, the
//! characters some browsers mangle in a response (U+200C, U+2028–U+202F, U+2060–U+206F,
//! U+FFF0–U+FFFF, and every character outside the Basic Multilingual Plane, as a surrogate
//! pair) are written as `\uXXXX`.

use bytes::Bytes;

/// The open frame.
pub const OPEN: &str = "o";
/// The heartbeat frame.
pub const HEARTBEAT: &str = "h";

/// What closed a session: sent to every later request as `c[code,"reason"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseValue {
    /// The close code (the origin's WebSocket close code, or a SockJS one: 2010, 3000).
    pub code: u16,
    /// The reason.
    pub reason: String,
}

impl CloseValue {
    /// A close value.
    pub fn new(code: u16, reason: &str) -> CloseValue {
        CloseValue {
            code,
            reason: reason.to_string(),
        }
    }

    /// The close value of a WebSocket close: its code and reason, `Connection closed` for an
    /// empty reason (as Pushpin), 1000 without a code.
    pub fn of_close(
        frame: Option<&tokio_tungstenite::tungstenite::protocol::CloseFrame>,
    ) -> CloseValue {
        match frame {
            Some(f) if f.reason.is_empty() => CloseValue::new(f.code.into(), "Connection closed"),
            Some(f) => CloseValue::new(f.code.into(), f.reason.as_str()),
            None => CloseValue::new(1000, "Connection closed"),
        }
    }

    /// A second receiver on a session that already has one.
    pub fn another_connection() -> CloseValue {
        CloseValue::new(2010, "Another connection still open")
    }

    /// The close frame, `c[code,"reason"]`.
    pub fn to_frame(&self) -> String {
        let mut out = format!("c[{},", self.code);
        push_json_string(&mut out, &self.reason);
        out.push(']');
        out
    }
}

/// The messages frame, `a["…","…"]`.
pub fn messages_frame<'a>(messages: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::from("a[");
    for (i, m) in messages.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(&mut out, m);
    }
    out.push(']');
    out
}

/// Appends `s` as a JSON string, with SockJS's extra escapes.
pub fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn needs_escape(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{200c}'
        | '\u{2028}'..='\u{202f}'
        | '\u{2060}'..='\u{206f}'
        | '\u{fff0}'..='\u{ffff}')
        || u32::from(c) > 0xffff
}

/// Why a client's payload was refused; the text is the answer's body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Nothing was sent.
    #[error("Payload expected.")]
    Empty,
    /// Not a JSON array of strings (or, over a WebSocket, one string).
    #[error("Broken JSON encoding.")]
    Broken,
}

/// The messages of an `xhr_send` body or a WebSocket frame: a JSON array of strings, or (as
/// sockjs-client's older versions send over a WebSocket) a single JSON string.
pub fn parse_messages(payload: &[u8]) -> Result<Vec<String>, PayloadError> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Err(PayloadError::Empty);
    }
    if let Ok(list) = serde_json::from_slice::<Vec<String>>(payload) {
        return Ok(list);
    }
    serde_json::from_slice::<String>(payload)
        .map(|one| vec![one])
        .map_err(|_| PayloadError::Broken)
}

/// How a transport carries frames in an HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// xhr-polling and xhr-streaming: each frame and a newline.
    Xhr,
    /// eventsource: each frame as an event's data.
    EventSource,
    /// jsonp-polling: a call of the callback with the frame as a string.
    Jsonp(String),
}

impl Framing {
    /// The first bytes of a streaming response, before any frame: 2048 `h` and a newline for
    /// xhr-streaming (so that browsers start handing the response to the script), a blank
    /// line for eventsource.
    pub fn prelude(&self) -> Bytes {
        match self {
            Framing::Xhr => {
                let mut p = vec![b'h'; 2048];
                p.push(b'\n');
                Bytes::from(p)
            }
            Framing::EventSource => Bytes::from_static(b"\r\n"),
            Framing::Jsonp(_) => Bytes::new(),
        }
    }

    /// `frame` as this transport writes it.
    pub fn wrap(&self, frame: &str) -> Bytes {
        match self {
            Framing::Xhr => Bytes::from(format!("{frame}\n")),
            Framing::EventSource => Bytes::from(format!("data: {frame}\r\n\r\n")),
            Framing::Jsonp(callback) => {
                let mut out = format!("/**/{callback}(");
                push_json_string(&mut out, frame);
                // Pushpin ends the call with a newline (the SockJS spec: `\r\n`).
                out.push_str(");\n");
                Bytes::from(out)
            }
        }
    }

    /// The `Content-Type` of a response carrying frames this way: Pushpin's for the
    /// transports it serves (xhr-polling `text/plain`, jsonp `application/javascript`), the
    /// SockJS spec's for xhr-streaming and eventsource, which it does not.
    pub fn content_type(&self, streaming: bool) -> &'static str {
        match self {
            Framing::Xhr if streaming => "application/javascript; charset=UTF-8",
            Framing::Xhr => "text/plain",
            Framing::EventSource => "text/event-stream; charset=UTF-8",
            Framing::Jsonp(_) => "application/javascript",
        }
    }
}

/// Whether `name` may be called as a JSON-P callback: 1 to 200 letters, digits, `_` and `.`,
/// so that a callback name cannot inject script.
pub fn is_callback(name: &str) -> bool {
    (1..=200).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_written_as_sockjs_clients_read_them() {
        assert_eq!(messages_frame(["a", "b\"c"]), r#"a["a","b\"c"]"#);
        assert_eq!(messages_frame(Vec::<&str>::new()), "a[]");
        assert_eq!(
            CloseValue::new(3000, "Go away!").to_frame(),
            r#"c[3000,"Go away!"]"#
        );
        assert_eq!(
            CloseValue::another_connection().to_frame(),
            r#"c[2010,"Another connection still open"]"#
        );
    }

    #[test]
    fn characters_browsers_mangle_are_escaped() {
        let cases = [
            ("\u{0}\u{1f}", r#""\u0000\u001f""#),
            ("\u{2028}x\u{2029}", r#""\u2028x\u2029""#),
            ("\u{200c}\u{2060}\u{ffff}", r#""\u200c\u2060\uffff""#),
            ("\u{1f600}", r#""\ud83d\ude00""#),
            ("é€", "\"é€\""),
            ("\\/", r#""\\/""#),
        ];
        for (input, want) in cases {
            let mut out = String::new();
            push_json_string(&mut out, input);
            assert_eq!(out, want, "{input:?}");
            let back: String = serde_json::from_str(&out).unwrap();
            assert_eq!(back, input);
        }
    }

    #[test]
    fn client_payloads() {
        let ok = |p: &str| parse_messages(p.as_bytes());
        assert_eq!(ok(r#"["a","b"]"#), Ok(vec!["a".into(), "b".into()]));
        assert_eq!(ok(r#""one""#), Ok(vec!["one".into()]));
        assert_eq!(ok("[]"), Ok(vec![]));
        assert_eq!(ok(""), Err(PayloadError::Empty));
        assert_eq!(ok(" \n"), Err(PayloadError::Empty));
        assert_eq!(ok(r#"["a""#), Err(PayloadError::Broken));
        assert_eq!(ok("[1]"), Err(PayloadError::Broken));
        assert_eq!(ok(r#"{"a":1}"#), Err(PayloadError::Broken));
    }

    #[test]
    fn transports_wrap_frames() {
        assert_eq!(Framing::Xhr.wrap("o"), "o\n");
        assert_eq!(
            Framing::EventSource.wrap(r#"a["x"]"#),
            "data: a[\"x\"]\r\n\r\n"
        );
        assert_eq!(
            Framing::Jsonp("cb.x".into()).wrap(r#"a["x"]"#),
            "/**/cb.x(\"a[\\\"x\\\"]\");\n"
        );
        let prelude = Framing::Xhr.prelude();
        assert_eq!(prelude.len(), 2049);
        assert!(prelude.ends_with(b"h\n"));
    }

    #[test]
    fn callback_names() {
        for ok in ["cb", "a.b_c9", "_jp.a1b2c3"] {
            assert!(is_callback(ok), "{ok}");
        }
        let long = "a".repeat(201);
        for bad in ["", "a(b)", "a;alert(1)", "x y", "<script>", long.as_str()] {
            assert!(!is_callback(bad), "{bad}");
        }
    }
}
