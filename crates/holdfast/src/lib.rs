//! Holdfast: a realtime reverse proxy that speaks GRIP, drop-in compatible with Pushpin.
//!
//! A client connection is accepted ([`server`]), its request is routed ([`route`]) and proxied
//! to an origin ([`proxy`]), the origin's answer is either relayed or turned into a hold
//! ([`hold`], or [`ws`] for WebSockets), the hold subscribes to channels in the [`hub`], and a
//! publish travels from the publish API ([`publish`]) through the [`bus`] and the hub into every
//! held connection.
//!
//! # Layout
//!
//! The modules stand on floors, top first; a module imports only from floors below it
//! (`scripts/check-layers` checks this).
//!
//! - [`server`]: listeners, the accept loop with its connection cap, and the held-stream writer.
//!   [`publisher`]: `holdfast publish`, the command-line publisher, and `holdfast health`.
//! - [`reload`]: reloading the routes file and the TLS certificate folder on change and on
//!   SIGHUP. [`publish`]: the publish/control API, its authentication and its input limits.
//!   [`zmq`]: Pushpin's ZeroMQ sockets — the PULL and SUB publish inputs, the command socket
//!   and the stats socket. [`postgres`]: PostgreSQL as a publish source (`LISTEN`/`NOTIFY`
//!   and outbox tables).
//! - [`route`]: the entrance — route a request, dispatch it to the test handler, `ws`, a hold or a
//!   relay; errors become responses here.
//! - [`testhandler`]: the built-in `test` target. [`sockjs`]: SockJS endpoints, each session
//!   bridged to one origin WebSocket through `ws`. [`bayeux`]: Bayeux 1.0 / Faye endpoints,
//!   sessions held here and authorised by the origin.
//! - [`ws`]: WebSockets — pass-through, GRIP WebSocket and WebSocket-over-HTTP. [`hold`]: response
//!   holds (long-polling), stream holds (HTTP streaming, SSE) and next links.
//! - [`proxy`]: the upstream — sending to origins, one failure classification, GRIP or relay,
//!   header rewriting, the access log.
//! - [`crossorigin`]: automatic CORS headers and JSON-P (`auto_cross_origin`, route `aco`).
//! - [`app`]: the state every connection shares (config, live routes, origin clients, hub).
//! - [`origin`]: the pooled origin clients and the body they carry. [`webhook`]: webhook
//!   subscribers — registrations, their store, the control API routes and delivery.
//! - [`socket`]: the client socket shared between hyper and the handlers that take it.
//! - [`limiter`]: the rate limit on origin requests made for held sessions. [`descriptors`]:
//!   the file-descriptor budget client and origin sockets share. [`conns`]: the held
//!   connections by id, for the ZeroMQ command and stats sockets.
//! - [`bus`]: how publishes reach the hub — locally, or through the cluster engine.
//!   [`presence`]: channel state events, subscriber counts and members (`[presence]`).
//! - [`hub`]: channels, subscriptions, sequencing, history, duplicate removal and fan-out.
//! - [`sink`]: a client socket as the hub sees it, and the wire encoders.
//! - [`http`]: the response body type and helpers. [`retry`]: retry delays and jitter.
//!   [`shutdown`]: the shutdown signal and drain. [`metrics`]: the metrics page and instruments.
//!   [`deadline`]: deadlines that saturate instead of overflowing the clock. [`tls`]: the
//!   certificate files and the rustls settings of the TLS listeners. [`outbound`]: the client
//!   and address policy of requests to URLs not from the routes file.
//! - [`config`]: the TOML file, command-line overrides and validation; [`config::pushpin`] reads
//!   Pushpin's `pushpin.conf` onto the same configuration; [`config::routes`] parses the
//!   Pushpin-syntax routes file and matches requests to routes.

#![deny(missing_docs)]

pub mod app;
pub mod bayeux;
pub mod bus;
pub mod config;
pub mod conns;
pub mod crossorigin;
pub mod deadline;
pub mod descriptors;
#[doc(hidden)]
pub mod fuzz;
pub mod hold;
pub mod http;
pub mod hub;
pub mod limiter;
pub mod metrics;
pub mod origin;
pub mod outbound;
pub mod postgres;
pub mod presence;
pub mod proxy;
pub mod publish;
pub mod publisher;
pub mod reload;
pub mod retry;
pub mod route;
pub mod server;
pub mod shutdown;
pub mod sink;
pub mod socket;
pub mod sockjs;
pub mod testhandler;
pub mod tls;
pub mod webhook;
pub mod ws;
pub mod zmq;

pub use config::Config;
pub use server::Server;
