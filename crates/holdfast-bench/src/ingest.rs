//! `holdfast-bench ingest`: how fast a publish API takes items, with nobody subscribed.
//!
//! `--connections` keep-alive HTTP/1.1 connections each post `POST /publish/` requests back to
//! back (the next one when the previous is answered) for `--duration-secs`, every request
//! carrying `--items` items on channels `<prefix>0 … <prefix>(channels-1)` in turn. Prints one
//! JSON line: requests and items per second over the time from the first request to the last
//! answer, and the errors (non-2xx answers and failed requests, the first few quoted).
//!
//! Bounded: each connection stops sending at the deadline, and a request gets at most the
//! control requests' cap to be answered.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use tokio::task::JoinSet;

use crate::fanout::control::publish_keepalive;

/// Flags of `holdfast-bench ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Publish API address (Pushpin-style `POST /publish/`).
    #[arg(long, value_name = "ADDR")]
    publish: SocketAddr,
    /// Keep-alive connections posting at once.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Items in each request.
    #[arg(long, default_value_t = 1)]
    items: usize,
    /// Distinct channels the items go to, in turn.
    #[arg(long, default_value_t = 1000)]
    channels: usize,
    /// Channel name prefix.
    #[arg(long, default_value = "ingest-")]
    channel_prefix: String,
    /// Seconds of posting.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
}

pub fn run(args: IngestArgs) -> anyhow::Result<()> {
    if args.connections == 0 || args.items == 0 || args.channels == 0 {
        bail!("--connections, --items and --channels must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(drive(args))
}

/// One request's body: `items` items of `http-stream` content, channels taken in turn from
/// `next_channel`.
fn body(args: &IngestArgs, next_channel: &mut usize) -> String {
    let items: Vec<_> = (0..args.items)
        .map(|_| {
            let channel = format!("{}{}", args.channel_prefix, *next_channel % args.channels);
            *next_channel += 1;
            serde_json::json!({
                "channel": channel,
                "formats": { "http-stream": { "content": "data: ingest\n\n" } },
            })
        })
        .collect();
    serde_json::json!({ "items": items }).to_string()
}

async fn drive(args: IngestArgs) -> anyhow::Result<()> {
    let args = std::sync::Arc::new(args);
    let deadline = Instant::now() + Duration::from_secs(args.duration_secs);
    let mut tasks = JoinSet::new();
    for connection in 0..args.connections {
        let args = args.clone();
        tasks.spawn(async move {
            // Each connection starts at its own channel so that they spread over the channels.
            let mut next_channel = connection * args.items;
            let mut sent = 0u64;
            let (secs, errors) = publish_keepalive(args.publish, || {
                (Instant::now() < deadline).then(|| {
                    sent += 1;
                    body(&args, &mut next_channel)
                })
            })
            .await?;
            anyhow::Ok((sent, secs, errors))
        });
    }
    let (mut requests, mut secs, mut errors) = (0u64, 0f64, Vec::new());
    while let Some(joined) = tasks.join_next().await {
        let (sent, took, errs) = joined??;
        requests += sent;
        secs = secs.max(took);
        errors.extend(errs);
    }
    let answered = requests.saturating_sub(errors.len() as u64);
    let items = answered * args.items as u64;
    let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    println!(
        "{}",
        serde_json::json!({
            "connections": args.connections,
            "items_per_request": args.items,
            "channels": args.channels,
            "seconds": (secs * 1000.0).round() / 1000.0,
            "requests": requests,
            "requests_per_sec": per_sec(answered).round(),
            "items_per_sec": per_sec(items).round(),
            "errors": errors.len(),
            "first_errors": errors.iter().take(3).collect::<Vec<_>>(),
        })
    );
    if !errors.is_empty() {
        bail!("{} of {requests} publish requests failed", errors.len());
    }
    Ok(())
}
