//! Publish items: what a publisher sends to channels (reference §4.2).
//!
//! [`parse_publish_body`] reads the `{"items": [...]}` body of `POST /publish`;
//! [`parse_publish_item`] reads one item (the ZeroMQ inputs carry single
//! items). Every item names a channel and carries at least one format: what to
//! write to held responses, streams and WebSockets. Content is held in
//! [`Bytes`] so one parsed item can be handed to every subscriber without a copy.
//!
//! Error messages follow Pushpin's (`Invalid format: 'http-stream' does not
//! contain 'content' or 'content-bin'`) and add the offending value where
//! Pushpin gives none.

mod encode;
mod fast;
mod format;
mod zmq;

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::Value;

use crate::channel::check_channel_name;
use crate::fields::Obj;

pub use zmq::{parse_tnet_item, parse_zmq_item, tnet_to_json};

/// One item published to a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishItem {
    /// The channel to deliver to.
    pub channel: String,
    /// Item id, for de-duplication and sequencing.
    pub id: Option<String>,
    /// Id of the item that precedes this one on the channel.
    pub prev_id: Option<String>,
    /// What to deliver to each kind of subscriber.
    pub formats: Formats,
    /// Publish meta for filters (`sender`, `skip_users`, `require_sub`, ...).
    pub meta: BTreeMap<String, String>,
    /// Declared size, used only for statistics.
    pub size: Option<u64>,
    /// Deliver at once instead of waiting for a missing predecessor.
    pub no_seq: bool,
}

/// The per-transport payloads of an item; at least one is present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Formats {
    /// For response (long-poll) holds.
    pub http_response: Option<HttpResponseFormat>,
    /// For stream holds.
    pub http_stream: Option<HttpStreamFormat>,
    /// For WebSocket connections.
    pub ws_message: Option<WsMessageFormat>,
    /// For Bayeux subscribers: `json-object`.
    pub json_object: Option<JsonObjectFormat>,
    /// For webhook subscribers: the request each subscriber's URL gets.
    pub http_request: Option<HttpRequestFormat>,
}

/// What a format asks for. Every format accepts every action, as in Pushpin
/// (`pushpin-publish --hint` sends `hint` in all three); a transport ignores the
/// actions it has no use for: `close` and `refresh` mean nothing to a response
/// hold, `hint` nothing to a WebSocket, `refresh` nothing to a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Action {
    /// Deliver the content (the default).
    #[default]
    Send,
    /// Something changed: ask the origin again (retry or next-link fetch).
    Hint,
    /// End the stream or close the WebSocket.
    Close,
    /// Ask a WebSocket-over-HTTP origin for pending messages.
    Refresh,
}

/// The `http-response` format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponseFormat {
    /// What to do.
    pub action: Action,
    /// Status code, 0 to 999 (default 200).
    pub code: u16,
    /// Reason phrase; `None` means the standard phrase of `code`.
    pub reason: Option<String>,
    /// Headers that replace same-named headers of the original response.
    pub headers: Vec<(String, String)>,
    /// The new body. Always set for `send`, [`ResponseBody::Empty`] otherwise.
    pub body: ResponseBody,
    /// Deliver only to subscriptions with exactly these content filters.
    pub content_filters: Option<Vec<String>>,
}

/// The body of an `http-response` format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseBody {
    /// No body given (non-`send` actions).
    Empty,
    /// `body` text or decoded `body-bin`.
    Bytes(Bytes),
    /// `body-patch`: JSON Patch operations on the original response body.
    Patch(json_patch::Patch),
}

/// The `http-stream` format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpStreamFormat {
    /// What to do.
    pub action: Action,
    /// Bytes appended to the stream as they are; empty unless `send`.
    pub content: Bytes,
    /// Deliver only to subscriptions with exactly these content filters.
    pub content_filters: Option<Vec<String>>,
}

/// The `ws-message` format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsMessageFormat {
    /// What to do.
    pub action: Action,
    /// Frame type for `send`.
    pub message_type: MessageType,
    /// Message payload for `send`.
    pub content: Bytes,
    /// Close code for `close`.
    pub close_code: Option<u16>,
    /// Close reason for `close`.
    pub close_reason: Option<String>,
    /// Deliver only to subscriptions with exactly these content filters.
    pub content_filters: Option<Vec<String>>,
}

/// The `json-object` format: a JSON value for Bayeux subscribers, delivered as the `data` of
/// a Bayeux message on the item's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonObjectFormat {
    /// The `data` value as compact JSON text, serialized once for every subscriber.
    pub data: Bytes,
    /// The Bayeux channel subscribers are told the message was published on, when it is not
    /// the item's own channel: Holdfast sets it on the copies of an item it publishes to the
    /// patterns (`/a/*`, `/a/**`) that match the item's channel.
    pub channel: Option<String>,
}

/// The `http-request` format: the request a webhook subscriber's URL is sent. Holdfast's
/// addition; Pushpin has no webhook subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequestFormat {
    /// The method, `POST` unless given.
    pub method: String,
    /// Headers added to the request.
    pub headers: Vec<(String, String)>,
    /// `body` text or decoded `body-bin`; empty when neither is given.
    pub body: Bytes,
}

/// A WebSocket message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MessageType {
    /// Text frame.
    #[default]
    Text,
    /// Binary frame.
    Binary,
    /// Ping frame.
    Ping,
    /// Pong frame.
    Pong,
}

impl MessageType {
    /// Parses the wire name (`text`, `binary`, `ping`, `pong`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "text" => Some(MessageType::Text),
            "binary" => Some(MessageType::Binary),
            "ping" => Some(MessageType::Ping),
            "pong" => Some(MessageType::Pong),
            _ => None,
        }
    }
}

/// A publish body or item that cannot be used, or a patch that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The body is not JSON at all.
    #[error("Body is not valid JSON.")]
    InvalidJson,
    /// The JSON does not have the publish format.
    #[error("Invalid format: {0}")]
    InvalidFormat(String),
    /// `body-patch` needs a JSON original body and this one is not.
    #[error("original response body is not valid JSON, so 'body-patch' cannot be applied: {0}")]
    OriginalNotJson(String),
    /// A patch operation failed (`test` mismatch, missing path, ...).
    #[error("'body-patch' could not be applied: {0}")]
    PatchFailed(String),
}

/// Parses a `POST /publish` body, `{"items": [...]}`.
///
/// ```
/// let body = br#"{"items": [{
///     "channel": "news",
///     "id": "2",
///     "prev-id": "1",
///     "formats": {"http-stream": {"content": "data: hi\n\n"}}
/// }]}"#;
/// let items = grip::publish::parse_publish_body(body).unwrap();
/// assert_eq!(items[0].channel, "news");
/// let stream = items[0].formats.http_stream.as_ref().unwrap();
/// assert_eq!(&stream.content[..], b"data: hi\n\n");
///
/// let err = grip::publish::parse_publish_body(br#"{"items": [{"channel": "c",
///     "formats": {"http-stream": {}}}]}"#).unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "Invalid format: 'http-stream' does not contain 'content' or 'content-bin'"
/// );
/// ```
pub fn parse_publish_body(body: &[u8]) -> Result<Vec<PublishItem>, PublishError> {
    if let Some(items) = fast::parse(body) {
        return Ok(items);
    }
    parse_publish_body_general(body)
}

/// [`parse_publish_body`] without its fast path for the common shapes: every field, every error.
fn parse_publish_body_general(body: &[u8]) -> Result<Vec<PublishItem>, PublishError> {
    let doc: Value = serde_json::from_slice(body).map_err(|_| PublishError::InvalidJson)?;
    let doc = Obj::new(&doc, "body").map_err(PublishError::InvalidFormat)?;
    let items = match doc.get("items") {
        None => return Err(invalid("object does not contain 'items'")),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(invalid("'items' is not an array")),
    };
    items.iter().map(parse_publish_item).collect()
}

/// Parses one publish item, as carried alone by the ZeroMQ inputs.
///
/// ```
/// use grip::publish::{parse_publish_item, Action};
///
/// let item: serde_json::Value = serde_json::from_str(
///     r#"{"channel": "room", "ws-message": {"action": "close", "code": 4001, "reason": "bye"}}"#,
/// )
/// .unwrap();
/// let item = parse_publish_item(&item).unwrap();
/// let ws = item.formats.ws_message.unwrap();
/// assert_eq!((ws.action, ws.close_code), (Action::Close, Some(4001)));
/// ```
pub fn parse_publish_item(item: &Value) -> Result<PublishItem, PublishError> {
    let obj = Obj::new(item, "publish item object").map_err(PublishError::InvalidFormat)?;
    let field = PublishError::InvalidFormat;
    let channel = obj.str_req("channel").map_err(field)?;
    if channel.is_empty() {
        return Err(invalid(&obj.invalid_value("channel", "''")));
    }
    // No subscription can have such a name, so the item could never be delivered.
    check_channel_name(channel).map_err(|e| invalid(&e.to_string()))?;
    // Legacy items put the formats directly on the item.
    let formats_obj = obj
        .obj_opt("formats", "formats")
        .map_err(field)?
        .unwrap_or(obj);
    let formats = format::parse_formats(formats_obj).map_err(field)?;
    Ok(PublishItem {
        channel: channel.to_string(),
        id: obj.str_opt("id").map_err(field)?.map(str::to_string),
        prev_id: obj.str_opt("prev-id").map_err(field)?.map(str::to_string),
        formats,
        meta: obj
            .string_map_opt("meta")
            .map_err(field)?
            .unwrap_or_default()
            .into_iter()
            .collect(),
        size: obj.uint_opt("size").map_err(field)?,
        no_seq: obj.bool_opt("no-seq").map_err(field)?.unwrap_or(false),
    })
}

fn invalid(message: &str) -> PublishError {
    PublishError::InvalidFormat(message.to_string())
}

impl HttpResponseFormat {
    /// The body to send, given the body of the original (held) response:
    /// `body`/`body-bin` as published, `body-patch` applied to the original,
    /// which must be JSON. The patched document is written as compact JSON.
    ///
    /// ```
    /// let items = grip::publish::parse_publish_body(br#"{"items": [{"channel": "c",
    ///     "http-response": {"body-patch": [{"op": "replace", "path": "/n", "value": 2}]}}]}"#)
    ///     .unwrap();
    /// let format = items[0].formats.http_response.as_ref().unwrap();
    /// let body = format.apply_patch(br#"{"n": 1, "s": "x"}"#).unwrap();
    /// assert_eq!(&body[..], br#"{"n":2,"s":"x"}"#);
    /// ```
    pub fn apply_patch(&self, original_body: &[u8]) -> Result<Bytes, PublishError> {
        let patch = match &self.body {
            ResponseBody::Empty => return Ok(Bytes::new()),
            ResponseBody::Bytes(body) => return Ok(body.clone()),
            ResponseBody::Patch(patch) => patch,
        };
        let mut doc: Value = serde_json::from_slice(original_body)
            .map_err(|e| PublishError::OriginalNotJson(e.to_string()))?;
        // Nothing is kept on failure, so the undo log of `patch` is not needed.
        json_patch::patch_unsafe(&mut doc, &patch.0)
            .map_err(|e| PublishError::PatchFailed(e.to_string()))?;
        let out = serde_json::to_vec(&doc).map_err(|e| PublishError::PatchFailed(e.to_string()))?;
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests;
