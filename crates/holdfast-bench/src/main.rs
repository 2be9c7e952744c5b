//! `holdfast-bench`: the load tools behind Holdfast's benchmarks.
//!
//! # Layout
//!
//! - [`origin`]: a minimal keep-alive HTTP/1.1 origin, plain, answering GRIP holds, or speaking
//!   WebSocket-over-HTTP.
//! - [`fanout`]: the fan-out driver. The parent process spreads subscribers over worker
//!   processes (this binary re-executed with the hidden `fanout-worker` subcommand), waits until
//!   they are all subscribed, publishes timestamped messages and reports delivery latency, loss,
//!   subscribe rate and the proxy's memory per connection.
//! - [`floor`]: the floor server, a minimal SSE fan-out server with no proxying at all, as the
//!   fastest this machine can do.
//! - [`channels`]: many channels with a few subscribers each, publishes at rising rates until
//!   p99 publish → delivery passes a limit.
//! - [`ingest`]: publish API ingest, requests and items per second over keep-alive connections.
//! - [`handshakes`]: the TLS handshake rate of a server, from several client processes.
//! - [`tls`]: the TLS client settings of `fanout --tls` and `handshakes`.
//! - [`session`]: what one TLS session costs rustls on the server, alone.
//! - [`storm`]: a reconnect storm of reliable-SSE clients, counting the origin requests it causes.
//! - [`accept`]: the accept step the origin and the floor server share.
//! - [`usage`]: resident memory and CPU time of the processes under test, from `/proc`.
//!
//! Every loop here is bounded in time: the origin and the floor server exit after
//! `--exit-after`, workers after `--deadline-secs`, and the driver's waits all have caps.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod accept;
mod channels;
mod fanout;
mod floor;
mod handshakes;
mod ingest;
mod origin;
mod session;
mod storm;
mod tls;
mod usage;
mod webhooks;

/// Load tools for benchmarking Holdfast against Pushpin, Nchan and a floor server.
#[derive(Debug, Parser)]
#[command(name = "holdfast-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a minimal keep-alive HTTP/1.1 origin.
    Origin(origin::OriginArgs),
    /// Open many subscribers through a proxy, publish messages and measure their delivery.
    Fanout(Box<fanout::FanoutArgs>),
    /// Run the floor server: hold SSE streams and write each publish to all of them.
    Floor(floor::FloorArgs),
    /// Reconnect storm of reliable-SSE clients: origin requests per reconnecting client.
    Storm(storm::StormArgs),
    /// Many channels, few subscribers each: the highest publish rate with p99 within a limit.
    Channels(channels::ChannelsArgs),
    /// Publish API ingest: requests and items per second over keep-alive connections.
    Ingest(ingest::IngestArgs),
    /// TLS handshakes per second a server completes, from several client processes.
    Handshakes(handshakes::HandshakeArgs),
    /// Resident memory per rustls server session after a handshake, without sockets.
    TlsSession(session::SessionArgs),
    /// Webhook delivery to many receivers: deliveries per second and latency.
    Webhooks(webhooks::WebhookArgs),
    /// One client process of `handshakes` (started by `handshakes` itself).
    #[command(hide = true)]
    HandshakeWorker(handshakes::HandshakeWorkerArgs),
    /// One worker process of `fanout` (started by `fanout` itself).
    #[command(hide = true)]
    FanoutWorker(fanout::worker::WorkerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Origin(args) => origin::run(args),
        Command::Fanout(args) => fanout::run(*args),
        Command::Floor(args) => floor::run(args),
        Command::Storm(args) => storm::run(args),
        Command::Webhooks(args) => webhooks::run(args),
        Command::FanoutWorker(args) => fanout::worker::run(args),
        Command::Ingest(args) => ingest::run(args),
        Command::Channels(args) => channels::run(args),
        Command::Handshakes(args) => handshakes::run(args),
        Command::HandshakeWorker(args) => handshakes::run_worker(args),
        Command::TlsSession(args) => session::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("holdfast-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parses a comma-separated list of IP addresses, as given to `--source-ips`.
fn parse_ip_list(s: &str) -> Result<Vec<IpAddr>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().map_err(|e| format!("{p:?}: {e}")))
        .collect()
}

/// Joins addresses back into the `--source-ips` form, to hand them to a worker.
fn to_ip_list(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The `Host` header value for requests to `addr`.
fn host_header(addr: SocketAddr) -> String {
    addr.to_string()
}
