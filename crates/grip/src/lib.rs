//! Pure GRIP protocol support for Holdfast: the wire formats Pushpin speaks,
//! with no I/O, no tokio and no sockets.
//!
//! Everything here turns bytes into types (`parse_*`) or types into bytes, and
//! reports bad input with an error that names the header or field and the
//! offending value. Published content is kept in [`bytes::Bytes`] so the server
//! can share one copy among every recipient.
//!
//! # Layout
//!
//! - [`bayeux`]: Bayeux channel names, patterns (`*`, `**`) and the patterns a
//!   channel matches.
//! - [`channel`]: what a channel name may be, checked wherever one is read.
//! - [`instruct`]: GRIP instructions in an origin response (`Grip-*` headers
//!   and `application/grip-instruct` bodies) → [`instruct::Instruction`].
//! - [`publish`]: publish API bodies and items with their `http-response`,
//!   `http-stream`, `ws-message` and `json-object` formats → [`publish::PublishItem`].
//! - [`sig`]: `Grip-Sig` tokens (HS256, ES256 or RS256 JWT) and the `Grip-Feature` list.
//! - [`wsevents`]: the `application/websocket-events` codec of
//!   WebSocket-over-HTTP → [`wsevents::Event`].
//! - [`control`]: WebSocket control messages (`c:{...}`) →
//!   [`control::ControlMessage`].
//! - [`tnetstring`]: typed netstrings, the encoding of Pushpin's ZeroMQ
//!   messages (publish items, commands, stats), and ZeroMQ publish items
//!   through [`publish::parse_zmq_item`].
//! - [`filter`]: subscription filters (`skip-self`, `skip-users`,
//!   `require-sub`, `build-id`, `var-subst`) and the `%` template syntax.
//!
//! A private `fields` module gives every JSON parser the same typed field
//! access and the same error wording.
#![deny(missing_docs)]

pub mod bayeux;
pub mod channel;
pub mod control;
mod fields;
pub mod filter;
#[doc(hidden)]
pub mod fuzz;
pub mod instruct;
pub mod publish;
pub mod sig;
pub mod tnetstring;
pub mod wsevents;
