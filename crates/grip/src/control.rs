//! WebSocket control messages: the JSON an origin sends after `c:` on a GRIP
//! WebSocket or in a WebSocket-over-HTTP `TEXT` event (reference §3.3).
//!
//! [`parse_control_message`] takes the JSON with the prefix already removed.
//! Defaults are filled in: a keep-alive repeats every 55 s and a delayed
//! message waits 1 s unless told otherwise. Channel names are checked with
//! [`check_channel_name`], and a timeout over
//! [`MAX_TIMEOUT_SECS`](crate::instruct::MAX_TIMEOUT_SECS) is an error. Messages
//! use Pushpin's names for the object (`grip control object`) so origin authors
//! recognise them.

use bytes::Bytes;
use serde_json::Value;

use crate::channel::{check_channel_name, ChannelNameError};
use crate::fields::Obj;
use crate::instruct::{KeepAliveMode, MAX_FILTERS_PER_CHANNEL};
use crate::publish::MessageType;

/// The prefix that marks a control message in origin text messages.
pub const CONTROL_PREFIX: &str = "c:";
/// The default prefix of ordinary origin messages (`grip; message-prefix=...`).
pub const DEFAULT_MESSAGE_PREFIX: &str = "m:";
/// Keep-alive interval when a `keep-alive` gives no `timeout`, in seconds.
pub const DEFAULT_KEEP_ALIVE_TIMEOUT_SECS: u64 = 55;
/// Delay when a `send-delayed` gives no `timeout`, in seconds.
pub const DEFAULT_SEND_DELAYED_TIMEOUT_SECS: u64 = 1;

const OBJECT: &str = "grip control object";

/// One control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlMessage {
    /// Subscribe the connection to a channel.
    Subscribe {
        /// Channel name (without route prefix), never empty.
        channel: String,
        /// Filters in order, at most [`MAX_FILTERS_PER_CHANNEL`].
        filters: Vec<String>,
    },
    /// Unsubscribe the connection from a channel.
    Unsubscribe {
        /// Channel name, never empty.
        channel: String,
    },
    /// Drop the origin side and keep the client (one-way push).
    Detach,
    /// Set the legacy session id.
    Session {
        /// The id, if given.
        id: Option<String>,
    },
    /// Set or delete one subscription meta value.
    SetMeta {
        /// Meta name, never empty.
        name: String,
        /// New value; `None` deletes it.
        value: Option<String>,
    },
    /// Enable (`Some`) or disable (`None`) keep-alive messages.
    KeepAlive(Option<WsKeepAlive>),
    /// Send a message after a delay unless replaced by another one.
    SendDelayed(DelayedMessage),
    /// Send the pending delayed message now.
    FlushDelayed,
}

/// A WebSocket keep-alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsKeepAlive {
    /// Frame type (`text` unless `content-bin` or `message-type` say otherwise).
    pub message_type: MessageType,
    /// Payload; may be empty.
    pub content: Bytes,
    /// Interval in seconds, from 1 to [`MAX_TIMEOUT_SECS`](crate::instruct::MAX_TIMEOUT_SECS).
    pub timeout_secs: u64,
    /// Whether client traffic resets the timer.
    pub mode: KeepAliveMode,
}

/// A message for `send-delayed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelayedMessage {
    /// Frame type (`text` unless `content-bin` or `message-type` say otherwise).
    pub message_type: MessageType,
    /// Payload; empty when none was given.
    pub content: Bytes,
    /// Delay in seconds, at most [`MAX_TIMEOUT_SECS`](crate::instruct::MAX_TIMEOUT_SECS).
    pub timeout_secs: u64,
}

/// A control message that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The text after `c:` is not JSON.
    #[error("grip control packet is not valid JSON: {0}")]
    InvalidJson(String),
    /// The JSON is not a valid control message.
    #[error("invalid grip control message: {0}")]
    Invalid(String),
    /// A `subscribe` or `unsubscribe` names a channel that is too long or holds a control
    /// character.
    #[error("invalid grip control message: {0}")]
    InvalidChannel(#[from] ChannelNameError),
    /// A `subscribe` with more than [`MAX_FILTERS_PER_CHANNEL`] filters
    /// (Pushpin closes the connection with code 1011).
    #[error("too many filters for channel '{channel}': {count} given, at most 5 allowed")]
    TooManyFilters {
        /// The channel.
        channel: String,
        /// How many filters were given.
        count: usize,
    },
}

/// Parses the JSON of a control message (without the `c:` prefix).
///
/// ```
/// use grip::control::{parse_control_message, ControlMessage};
///
/// let msg = parse_control_message(br#"{"type": "subscribe", "channel": "w1"}"#).unwrap();
/// assert_eq!(
///     msg,
///     ControlMessage::Subscribe { channel: "w1".into(), filters: vec![] }
/// );
///
/// let err = parse_control_message(br#"{"type": "subscribed"}"#).unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "invalid grip control message: 'type' contains unknown value 'subscribed'"
/// );
/// ```
pub fn parse_control_message(json: &[u8]) -> Result<ControlMessage, ControlError> {
    let doc: Value =
        serde_json::from_slice(json).map_err(|e| ControlError::InvalidJson(e.to_string()))?;
    if !doc.is_object() {
        let message = "grip control packet is not an object".to_string();
        return Err(ControlError::Invalid(message));
    }
    let obj = Obj::new(&doc, OBJECT).map_err(ControlError::Invalid)?;
    let invalid = ControlError::Invalid;
    let kind = obj.str_req("type").map_err(invalid)?;
    Ok(match kind {
        "subscribe" => {
            let channel = channel(obj)?;
            let filters = obj
                .string_list_opt("filters", "filters contains value with wrong type")
                .map_err(invalid)?
                .unwrap_or_default();
            if filters.len() > MAX_FILTERS_PER_CHANNEL {
                return Err(ControlError::TooManyFilters {
                    channel,
                    count: filters.len(),
                });
            }
            ControlMessage::Subscribe { channel, filters }
        }
        "unsubscribe" => ControlMessage::Unsubscribe {
            channel: channel(obj)?,
        },
        "detach" => ControlMessage::Detach,
        "session" => ControlMessage::Session {
            id: obj.str_opt("id").map_err(invalid)?.map(str::to_string),
        },
        "set-meta" => {
            let name = obj.str_req("name").map_err(invalid)?;
            if name.is_empty() {
                return Err(invalid(obj.invalid_value("name", "''")));
            }
            ControlMessage::SetMeta {
                name: name.to_string(),
                value: obj.str_opt("value").map_err(invalid)?.map(str::to_string),
            }
        }
        "keep-alive" => ControlMessage::KeepAlive(keep_alive(obj).map_err(invalid)?),
        "send-delayed" => {
            let (message_type, content) = message(obj).map_err(invalid)?;
            ControlMessage::SendDelayed(DelayedMessage {
                message_type,
                content: content.unwrap_or_default(),
                timeout_secs: obj
                    .seconds_opt("timeout")
                    .map_err(invalid)?
                    .unwrap_or(DEFAULT_SEND_DELAYED_TIMEOUT_SECS),
            })
        }
        "flush-delayed" => ControlMessage::FlushDelayed,
        other => {
            return Err(invalid(format!("'type' contains unknown value '{other}'")));
        }
    })
}

fn channel(obj: Obj<'_>) -> Result<String, ControlError> {
    let channel = obj.str_req("channel").map_err(ControlError::Invalid)?;
    if channel.is_empty() {
        return Err(ControlError::Invalid(obj.invalid_value("channel", "''")));
    }
    check_channel_name(channel)?;
    Ok(channel.to_string())
}

/// The `message-type` and `content`/`content-bin` shared by `keep-alive` and
/// `send-delayed`. Without `message-type`, `content-bin` means binary.
fn message(obj: Obj<'_>) -> Result<(MessageType, Option<Bytes>), String> {
    let named = obj
        .str_opt("message-type")?
        .map(|name| {
            MessageType::from_name(name).ok_or_else(|| {
                format!("{OBJECT} contains 'message-type' with unknown value '{name}'")
            })
        })
        .transpose()?;
    let is_bin = obj.has("content-bin");
    let content = obj.content_opt("content", "content-bin")?;
    let default = if is_bin {
        MessageType::Binary
    } else {
        MessageType::Text
    };
    Ok((named.unwrap_or(default), content))
}

fn keep_alive(obj: Obj<'_>) -> Result<Option<WsKeepAlive>, String> {
    let (message_type, content) = message(obj)?;
    let mode = match obj.str_opt("mode")? {
        None | Some("idle") => KeepAliveMode::Idle,
        Some("interval") => KeepAliveMode::Interval,
        Some(other) => {
            return Err(format!(
                "{OBJECT} contains 'mode' with unknown value '{other}'"
            ));
        }
    };
    let timeout_secs = obj
        .seconds_opt("timeout")?
        .unwrap_or(DEFAULT_KEEP_ALIVE_TIMEOUT_SECS)
        .max(1);
    Ok(content.map(|content| WsKeepAlive {
        message_type,
        content,
        timeout_secs,
        mode,
    }))
}

#[cfg(test)]
mod tests;
