//! Channel names: what an origin may subscribe a connection to and a publisher may publish to.
//!
//! Pushpin takes any string. Here a name is 1 to [`MAX_CHANNEL_NAME_LEN`] bytes of UTF-8 with
//! no control characters, and every parser that reads one checks it with
//! [`check_channel_name`]: `Grip-Channel`, `application/grip-instruct` channels, WebSocket
//! `subscribe` and `unsubscribe` control messages, and publish items. An empty name is always a
//! mistake (a `Grip-Channel` list with a hole in it, an unset variable), a huge one is kept in
//! the hub and in every log line that names it, and a control character breaks `Grip-Last`
//! headers and log lines; each is reported rather than held.

/// Longest channel name, in bytes.
///
/// A constant, not a setting: names must mean the same to the origin that subscribes, to the
/// publisher and to every instance sharing a cluster bus, and the parsers here read no
/// configuration. 512 bytes is many times what real names need (a prefix and a UUID or two).
pub const MAX_CHANNEL_NAME_LEN: usize = 512;

/// Characters of a bad name shown in an error; the rest is elided.
const SHOWN_CHARS: usize = 32;

/// A channel name that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelNameError {
    /// The name is the empty string.
    #[error("channel name is empty")]
    Empty,
    /// The name is longer than [`MAX_CHANNEL_NAME_LEN`] bytes.
    #[error("channel name '{shown}' is {len} bytes, over the limit of {MAX_CHANNEL_NAME_LEN}")]
    TooLong {
        /// The start of the name, escaped.
        shown: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The name holds a control character (U+0000–U+001F, U+007F–U+009F).
    #[error("channel name '{shown}' has the control character U+{code:04X} at byte {at}")]
    ControlCharacter {
        /// The start of the name, escaped.
        shown: String,
        /// The character's code point.
        code: u32,
        /// Its byte offset in the name.
        at: usize,
    },
}

/// Checks that `name` may name a channel.
///
/// ```
/// use grip::channel::check_channel_name;
///
/// assert!(check_channel_name("news.sports").is_ok());
/// assert_eq!(
///     check_channel_name("").unwrap_err().to_string(),
///     "channel name is empty"
/// );
/// assert_eq!(
///     check_channel_name("a\tb").unwrap_err().to_string(),
///     r"channel name 'a\tb' has the control character U+0009 at byte 1"
/// );
/// ```
pub fn check_channel_name(name: &str) -> Result<(), ChannelNameError> {
    if name.is_empty() {
        return Err(ChannelNameError::Empty);
    }
    if name.len() > MAX_CHANNEL_NAME_LEN {
        return Err(ChannelNameError::TooLong {
            shown: shown(name),
            len: name.len(),
        });
    }
    if let Some((at, c)) = name.char_indices().find(|(_, c)| c.is_control()) {
        return Err(ChannelNameError::ControlCharacter {
            shown: shown(name),
            code: u32::from(c),
            at,
        });
    }
    Ok(())
}

/// The first [`SHOWN_CHARS`] characters of `name`, escaped so control characters show, with
/// `…` when there is more.
fn shown(name: &str) -> String {
    let mut out: String = name
        .chars()
        .take(SHOWN_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if name.chars().nth(SHOWN_CHARS).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let long = "x".repeat(MAX_CHANNEL_NAME_LEN + 1);
        let cases: Vec<(String, Result<(), &str>)> = vec![
            ("a".into(), Ok(())),
            ("news; with, separators and spaces".into(), Ok(())),
            ("caf\u{e9}/\u{1f600}".into(), Ok(())),
            ("x".repeat(MAX_CHANNEL_NAME_LEN), Ok(())),
            ("".into(), Err("channel name is empty")),
            (
                long,
                Err("channel name 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…' is 513 bytes, over the limit of 512"),
            ),
            (
                "line\nbreak".into(),
                Err(r"channel name 'line\nbreak' has the control character U+000A at byte 4"),
            ),
            (
                "nul\0".into(),
                Err(r"channel name 'nul\0' has the control character U+0000 at byte 3"),
            ),
            (
                "del\u{7f}".into(),
                Err(r"channel name 'del\u{7f}' has the control character U+007F at byte 3"),
            ),
            (
                "\u{e9}\u{85}".into(),
                Err(r"channel name 'é\u{85}' has the control character U+0085 at byte 2"),
            ),
        ];
        for (name, want) in cases {
            let got = check_channel_name(&name).map_err(|e| e.to_string());
            assert_eq!(got, want.map_err(str::to_string), "name {name:?}");
        }
    }
}
