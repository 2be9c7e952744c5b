//! GRIP instructions: what an origin response asks the proxy to do.
//!
//! An origin answers with `Grip-*` headers and/or an
//! `application/grip-instruct` JSON body; [`parse_instruction`] turns both into
//! one [`Instruction`]. Headers are read first and the JSON body, when there is
//! one, overrides them (channels from both are kept), exactly in Pushpin's
//! order. Defaults and clamps are applied here, so the server never sees a
//! response timeout under 5 s or a keep-alive interval under 1 s, and bounds are
//! checked here, so it never sees a timeout over [`MAX_TIMEOUT_SECS`] or a bad
//! channel name (see [`crate::channel`]).
//!
//! Every failure is an [`InstructError`] naming the header or JSON field and the
//! offending value; the proxy answers such a response with a 502.

mod headers;
mod json;
mod params;
mod status;

use std::collections::BTreeMap;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::HeaderMap;

pub use status::reason_phrase;

/// Response hold timeout when `Grip-Timeout` is absent, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 55;
/// Smallest response hold timeout; smaller values are raised to this.
pub const MIN_TIMEOUT_SECS: u64 = 5;
/// Keep-alive interval when a keep-alive gives no `timeout`, in seconds.
pub const DEFAULT_KEEP_ALIVE_TIMEOUT_SECS: u64 = 55;
/// Next-link refresh interval when `Grip-Link` gives no `timeout`, in seconds.
pub const DEFAULT_NEXT_LINK_TIMEOUT_SECS: u64 = 120;
/// Most filters one channel subscription may carry.
pub const MAX_FILTERS_PER_CHANNEL: usize = 5;
/// Largest timeout or interval an origin may give, in seconds, wherever it gives one
/// (`Grip-Timeout`, keep-alive and `Grip-Link` timeouts, `application/grip-instruct`
/// timeouts, WebSocket control messages): 2147483647, about 68 years. Pushpin reads these
/// values as a 32-bit int and rejects larger ones; the bound also keeps every deadline
/// computed from them within what the clock can hold. A larger value is an error, like a
/// negative one.
pub const MAX_TIMEOUT_SECS: u64 = i32::MAX as u64;

/// The media type of a JSON instruct body.
pub const GRIP_INSTRUCT_CONTENT_TYPE: &str = "application/grip-instruct";

/// Everything an origin response asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// How to hold the client request; `None` relays the response (possibly
    /// followed by a next link).
    pub hold: Option<HoldMode>,
    /// Channels to subscribe the held request to, in order.
    pub channels: Vec<ChannelSpec>,
    /// Response hold timeout in seconds (at least [`MIN_TIMEOUT_SECS`]).
    pub timeout_secs: u64,
    /// Data to send on an idle stream hold.
    pub keep_alive: Option<KeepAlive>,
    /// Subscription meta used by filters (`user`, `id_format`, ...).
    pub meta: BTreeMap<String, String>,
    /// `Grip-Link: <...>; rel=next`.
    pub next_link: Option<NextLink>,
    /// `Grip-Link: <...>; rel=gone`: URL to `POST` when the client goes away.
    pub gone_link: Option<String>,
    /// `Grip-Status`: replaces the origin's status line.
    pub status: Option<StatusOverride>,
    /// `Grip-Expose-Headers`: when set, only these origin headers reach the client.
    pub expose_headers: Option<Vec<String>>,
    /// For `application/grip-instruct` content: the response to use instead of
    /// the origin's (whose headers and body are then discarded). `Grip-Status`
    /// is already folded into it.
    pub response: Option<InstructResponse>,
}

impl Default for Instruction {
    fn default() -> Self {
        Instruction {
            hold: None,
            channels: Vec::new(),
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            keep_alive: None,
            meta: BTreeMap::new(),
            next_link: None,
            gone_link: None,
            status: None,
            expose_headers: None,
            response: None,
        }
    }
}

impl Instruction {
    /// The origin headers the client may see: every `Grip-*` header removed
    /// and, when `Grip-Expose-Headers` was given, only the listed ones kept.
    /// Hop-by-hop headers are left for the caller to handle.
    ///
    /// ```
    /// use http::HeaderMap;
    ///
    /// let mut origin = HeaderMap::new();
    /// origin.insert("grip-hold", "stream".parse().unwrap());
    /// origin.insert("x-a", "1".parse().unwrap());
    /// origin.insert("x-b", "2".parse().unwrap());
    /// origin.insert("grip-expose-headers", "X-A".parse().unwrap());
    ///
    /// let instruction = grip::instruct::parse_instruction(200, &origin, b"").unwrap();
    /// let shown = instruction.client_headers(&origin);
    /// assert_eq!(shown.len(), 1);
    /// assert_eq!(shown["x-a"], "1");
    /// ```
    pub fn client_headers(&self, origin: &HeaderMap) -> HeaderMap {
        let mut out = HeaderMap::with_capacity(origin.len());
        for (name, value) in origin {
            if name.as_str().starts_with("grip-") {
                continue;
            }
            if let Some(exposed) = &self.expose_headers {
                if !exposed
                    .iter()
                    .any(|e| e.eq_ignore_ascii_case(name.as_str()))
                {
                    continue;
                }
            }
            out.append(name.clone(), value.clone());
        }
        out
    }
}

/// How the client request is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldMode {
    /// Long-poll: nothing is sent until a publish or the timeout.
    Response,
    /// Streaming: the origin body is sent now, published content is appended.
    Stream,
}

/// One channel subscription requested by the origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSpec {
    /// Channel name (without any route prefix).
    pub name: String,
    /// The id of the last item the origin included, for reliable delivery.
    pub prev_id: Option<String>,
    /// Filter names in order, at most [`MAX_FILTERS_PER_CHANNEL`].
    pub filters: Vec<String>,
}

/// Keep-alive data for a stream hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepAlive {
    /// Bytes to write; never empty.
    pub content: Bytes,
    /// Interval in seconds, at least 1.
    pub timeout_secs: u64,
    /// Whether traffic resets the timer.
    pub mode: KeepAliveMode,
}

/// When keep-alives are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeepAliveMode {
    /// After `timeout` seconds without any data written.
    #[default]
    Idle,
    /// Every `timeout` seconds, whatever else is written.
    Interval,
}

/// `Grip-Link: <uri>; rel=next`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextLink {
    /// The link as given: absolute, or relative to the request URI.
    pub uri: String,
    /// Seconds after which the link is fetched again when nothing arrived.
    pub timeout_secs: u64,
}

/// `Grip-Status: <code>[ <reason>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusOverride {
    /// Status code, 0 to 999.
    pub code: u16,
    /// Reason phrase; `None` means [`reason_phrase`] of the code.
    pub reason: Option<String>,
}

/// The `response` of an `application/grip-instruct` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstructResponse {
    /// Status code (default 200, or the `Grip-Status` code).
    pub code: u16,
    /// Reason phrase; `None` means [`reason_phrase`] of the code.
    pub reason: Option<String>,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
    /// Body (`body` text or decoded `body-bin`).
    pub body: Bytes,
}

/// A response that cannot be turned into an [`Instruction`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstructError {
    /// A `Grip-*` header holds bytes that are not UTF-8.
    #[error("{header} header is not valid UTF-8")]
    NotUtf8 {
        /// The header.
        header: &'static str,
    },
    /// A header value breaks the parameter syntax.
    #[error("{header} value '{value}' is malformed: {reason}")]
    Malformed {
        /// The header.
        header: &'static str,
        /// The whole value.
        value: String,
        /// What is wrong and where.
        reason: String,
    },
    /// `Grip-Hold` is neither `response` nor `stream`.
    #[error("Grip-Hold must be set to either 'response' or 'stream', not '{0}'")]
    InvalidHold(String),
    /// A `Grip-Channel` item has no name.
    #[error("Grip-Channel value '{0}' has an item with an empty channel name")]
    EmptyChannel(String),
    /// A channel name is too long or holds a control character.
    #[error("{place}: {error}")]
    InvalidChannel {
        /// `Grip-Channel`, or the `application/grip-instruct` field.
        place: &'static str,
        /// What is wrong with the name.
        error: crate::channel::ChannelNameError,
    },
    /// More than [`MAX_FILTERS_PER_CHANNEL`] filters on one channel.
    #[error("too many filters for channel '{channel}': {count} given, at most 5 allowed")]
    TooManyFilters {
        /// The channel.
        channel: String,
        /// How many filters were given.
        count: usize,
    },
    /// `Grip-Timeout` is not a whole number from 0 to [`MAX_TIMEOUT_SECS`].
    #[error(
        "Grip-Timeout must be a whole number of seconds from 0 to {MAX_TIMEOUT_SECS}, not '{0}'"
    )]
    InvalidTimeout(String),
    /// `Grip-Keep-Alive` has no data.
    #[error("Grip-Keep-Alive cannot be empty")]
    EmptyKeepAlive,
    /// Unknown `Grip-Keep-Alive` `format`.
    #[error("Grip-Keep-Alive format must be 'raw', 'cstring' or 'base64', not '{0}'")]
    InvalidKeepAliveFormat(String),
    /// Unknown `Grip-Keep-Alive` `mode`.
    #[error("Grip-Keep-Alive mode must be 'idle' or 'interval', not '{0}'")]
    InvalidKeepAliveMode(String),
    /// `Grip-Keep-Alive` `timeout` is not a whole number from 0 to [`MAX_TIMEOUT_SECS`].
    #[error("Grip-Keep-Alive timeout must be a whole number of seconds from 0 to {MAX_TIMEOUT_SECS}, not '{0}'")]
    InvalidKeepAliveTimeout(String),
    /// `Grip-Keep-Alive` data does not decode in its format.
    #[error("Grip-Keep-Alive data '{data}' is not valid {format}: {reason}")]
    InvalidKeepAliveData {
        /// The data as given.
        data: String,
        /// `cstring` or `base64`.
        format: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// `Grip-Set-Meta` is present but sets nothing.
    #[error("Grip-Set-Meta cannot be empty")]
    EmptySetMeta,
    /// A `Grip-Link` target is not `<...>`.
    #[error(
        "Grip-Link value '{0}' must start with a URL in angle brackets, like '</next>; rel=next'"
    )]
    InvalidLink(String),
    /// `Grip-Link` `timeout` is not a whole number from 0 to [`MAX_TIMEOUT_SECS`].
    #[error("Grip-Link timeout must be a whole number of seconds from 0 to {MAX_TIMEOUT_SECS}, not '{0}'")]
    InvalidLinkTimeout(String),
    /// `Grip-Status` is not `<code>[ <reason>]` with a code up to 999.
    #[error("Grip-Status must be a status code from 0 to 999, optionally followed by a reason, not '{0}'")]
    InvalidStatus(String),
    /// `application/grip-instruct` content came with a status other than 200.
    #[error("response code for application/grip-instruct content must be 200, not {0}")]
    InstructStatus(u16),
    /// `application/grip-instruct` content is not JSON.
    #[error("failed to parse application/grip-instruct content as JSON: {0}")]
    InstructJson(String),
    /// `application/grip-instruct` JSON has a missing or wrong field.
    #[error("invalid application/grip-instruct content: {0}")]
    InvalidInstruct(String),
}

/// Whether an origin response carries GRIP instructions: any `Grip-*` header,
/// or `Content-Type: application/grip-instruct` (parameters ignored).
///
/// ```
/// use http::HeaderMap;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("content-type", "text/plain".parse().unwrap());
/// assert!(!grip::instruct::is_grip_response(&headers));
///
/// headers.insert("Grip-Status", "404".parse().unwrap());
/// assert!(grip::instruct::is_grip_response(&headers));
/// ```
pub fn is_grip_response(headers: &HeaderMap) -> bool {
    headers
        .keys()
        .any(|name| name.as_str().starts_with("grip-"))
        || is_instruct_content(headers)
}

fn is_instruct_content(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).is_some_and(|value| {
        let value = value.as_bytes();
        let media = value.split(|&b| b == b';').next().unwrap_or_default();
        media
            .trim_ascii()
            .eq_ignore_ascii_case(GRIP_INSTRUCT_CONTENT_TYPE.as_bytes())
    })
}

/// Parses the GRIP instructions of an origin response.
///
/// `status` and `body` matter only for `application/grip-instruct` content.
///
/// ```
/// use grip::instruct::{parse_instruction, HoldMode};
/// use http::HeaderMap;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("Grip-Hold", "stream".parse().unwrap());
/// headers.insert("Grip-Channel", "news; prev-id=7, sports".parse().unwrap());
/// headers.insert("Grip-Keep-Alive", r":\n\n; format=cstring; timeout=20".parse().unwrap());
///
/// let instruction = parse_instruction(200, &headers, b"").unwrap();
/// assert_eq!(instruction.hold, Some(HoldMode::Stream));
/// assert_eq!(instruction.channels[0].name, "news");
/// assert_eq!(instruction.channels[0].prev_id.as_deref(), Some("7"));
/// assert_eq!(instruction.channels[1].name, "sports");
/// let keep_alive = instruction.keep_alive.unwrap();
/// assert_eq!(&keep_alive.content[..], b":\n\n");
/// assert_eq!(keep_alive.timeout_secs, 20);
///
/// headers.insert("Grip-Hold", "Stream".parse().unwrap());
/// let err = parse_instruction(200, &headers, b"").unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "Grip-Hold must be set to either 'response' or 'stream', not 'Stream'"
/// );
/// ```
pub fn parse_instruction(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Instruction, InstructError> {
    let mut instruction = headers::parse(headers)?;
    if is_instruct_content(headers) {
        if status != 200 {
            return Err(InstructError::InstructStatus(status));
        }
        json::apply(&mut instruction, body)?;
    }
    instruction.timeout_secs = instruction.timeout_secs.max(MIN_TIMEOUT_SECS);
    if let Some(keep_alive) = &mut instruction.keep_alive {
        keep_alive.timeout_secs = keep_alive.timeout_secs.max(1);
    }
    Ok(instruction)
}

#[cfg(test)]
mod tests;
