//! Holdfast: a realtime reverse proxy that speaks GRIP, drop-in compatible with Pushpin.
//!
//! A client connection is accepted ([`server`]), its request is proxied to an origin
//! ([`proxy`]), the origin's answer is either relayed or turned into a hold ([`hold`]), the hold
//! subscribes to channels in the [`hub`], and a publish travels from the publish API
//! ([`publish`]) through the hub into every held connection.
//!
//! # Layout
//!
//! - [`config`]: the TOML file, command-line overrides and validation; [`config::routes`] parses
//!   the Pushpin-syntax routes file and matches requests to routes.
//! - [`app`]: the state every connection shares (config, live routes, origin clients, hub).
//! - [`descriptors`]: the file-descriptor budget client and origin sockets share.
//! - [`server`]: listeners, the accept loop with its connection cap, and the graceful drain.
//! - [`reload`]: reloading the routes file on change and on SIGHUP.
//! - [`proxy`]: forwarding to origins — header rewriting, failover, errors, the access log.
//! - [`testhandler`]: the built-in `test` target.
//! - [`hold`]: response holds (long-polling) and stream holds (HTTP streaming, SSE).
//! - [`ws`]: WebSockets — pass-through, GRIP WebSocket and WebSocket-over-HTTP.
//! - [`hub`]: channels, subscriptions, sequencing, history, duplicate removal and fan-out.
//! - [`limiter`]: the rate limit on origin requests made for held sessions.
//! - [`publish`]: the publish/control API.
//! - [`bus`]: how publishes reach the hub — locally, or through the cluster engine.

#![deny(missing_docs)]

pub mod app;
pub mod bus;
pub mod config;
pub mod descriptors;
pub mod hold;
pub mod http;
pub mod hub;
pub mod limiter;
pub mod origin;
pub mod proxy;
pub mod publish;
pub mod reload;
pub mod retry;
pub mod route;
pub mod server;
pub mod shutdown;
pub mod sink;
pub mod socket;
pub mod testhandler;
pub mod ws;

pub use config::Config;
pub use server::Server;
