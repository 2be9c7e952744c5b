//! Webhook delivery to many receivers: `--receivers` HTTP servers in this process, each
//! registered as a webhook subscriber of one channel on Holdfast's publish API, then
//! `--messages` items published in requests of `--batch`. Every receiver records when each item
//! arrived; the report gives deliveries per second (from the first publish to the last
//! delivery), the latency from an item's publish request to its delivery (p50, p99, max) and
//! the deliveries that never came. Holdfast must allow loopback (`[outbound] allow`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::Args;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// `holdfast-bench webhooks`.
#[derive(Debug, Args)]
pub struct WebhookArgs {
    /// Holdfast's publish API, `host:port`.
    #[arg(long)]
    publish: SocketAddr,
    /// Receivers, each its own subscriber on its own port.
    #[arg(long, default_value_t = 100)]
    receivers: usize,
    /// Items published (each goes to every receiver).
    #[arg(long, default_value_t = 200)]
    messages: usize,
    /// Items per publish request.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// Seconds to wait for every delivery.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

struct Record {
    published: Vec<Option<Instant>>,
    latencies: Vec<Duration>,
    last: Option<Instant>,
    count: usize,
}

struct Shared {
    record: Mutex<Record>,
    want: Mutex<usize>,
    done: Notify,
}

/// Runs the benchmark on a runtime of its own.
pub fn run(args: WebhookArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(args))
}

async fn bench(args: WebhookArgs) -> anyhow::Result<()> {
    if args.receivers == 0 || args.messages == 0 || args.batch == 0 {
        bail!("--receivers, --messages and --batch must be at least 1");
    }
    let shared = Arc::new(Shared {
        record: Mutex::new(Record {
            published: vec![None; args.messages + 1],
            latencies: Vec::with_capacity(args.receivers * args.messages),
            last: None,
            count: 0,
        }),
        want: Mutex::new(args.receivers),
        done: Notify::new(),
    });
    let mut ports = Vec::new();
    for _ in 0..args.receivers {
        ports.push(receiver(shared.clone()).await?);
    }
    let channel = format!("bench-hooks-{}", std::process::id());
    let mut ids = Vec::new();
    for port in &ports {
        let body = json!({"channel": channel, "url": format!("http://127.0.0.1:{port}/hook")});
        let (status, text) = call(args.publish, "POST", "/webhooks", body.to_string()).await?;
        if status != 201 {
            bail!("registering a receiver: {status} {text}");
        }
        let v: serde_json::Value = serde_json::from_str(&text)?;
        ids.push(v["id"].as_str().unwrap_or_default().to_string());
    }
    // Warm-up: item 0 reaches every receiver, so every connection is open before timing.
    publish(args.publish, &channel, &shared, 0..1).await?;
    wait(&shared, Duration::from_secs(args.timeout)).await;
    {
        let mut r = shared.record.lock().unwrap();
        r.latencies.clear();
        r.count = 0;
        r.last = None;
    }
    *shared.want.lock().unwrap() = args.receivers * args.messages;
    let start = Instant::now();
    let mut next = 1;
    while next <= args.messages {
        let end = (next + args.batch).min(args.messages + 1);
        publish(args.publish, &channel, &shared, next..end).await?;
        next = end;
    }
    let published = start.elapsed();
    let complete = wait(&shared, Duration::from_secs(args.timeout)).await;
    let (mut latencies, last, count) = {
        let r = shared.record.lock().unwrap();
        (r.latencies.clone(), r.last, r.count)
    };
    for id in &ids {
        let _ = call(
            args.publish,
            "DELETE",
            &format!("/webhooks/{id}"),
            String::new(),
        )
        .await;
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let span = last.map_or(Duration::ZERO, |l| l - start);
    let want = args.receivers * args.messages;
    println!(
        "webhooks: {} receivers x {} items (batches of {}): {count}/{want} delivered{}",
        args.receivers,
        args.messages,
        args.batch,
        if complete { "" } else { " (timed out)" }
    );
    println!(
        "deliveries/s {:.0}  published in {:.1} ms  last delivery at {:.1} ms",
        count as f64 / span.as_secs_f64().max(1e-9),
        published.as_secs_f64() * 1000.0,
        span.as_secs_f64() * 1000.0
    );
    println!(
        "latency publish -> delivery ms: p50 {:.1}  p99 {:.1}  max {:.1}  lost {}",
        pct(0.50),
        pct(0.99),
        pct(1.0),
        want - count.min(want)
    );
    Ok(())
}

/// Waits until the wanted number of deliveries arrived; `false` on timeout.
async fn wait(shared: &Shared, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let notified = shared.done.notified();
        if shared.record.lock().unwrap().count >= *shared.want.lock().unwrap() {
            return true;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return false;
        }
    }
}

async fn publish(
    addr: SocketAddr,
    channel: &str,
    shared: &Shared,
    range: std::ops::Range<usize>,
) -> anyhow::Result<()> {
    let items: Vec<_> = range
        .clone()
        .map(|n| json!({"channel": channel, "id": format!("{n}"), "formats": {"http-request": {"body": "x"}}}))
        .collect();
    let now = Instant::now();
    {
        let mut r = shared.record.lock().unwrap();
        for n in range {
            r.published[n] = Some(now);
        }
    }
    let (status, text) = call(
        addr,
        "POST",
        "/publish/",
        json!({ "items": items }).to_string(),
    )
    .await?;
    if status != 200 {
        bail!("publish: {status} {text}");
    }
    Ok(())
}

async fn receiver(shared: Arc<Shared>) -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let shared = shared.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let shared = shared.clone();
                    async move {
                        let n = req
                            .headers()
                            .get("holdfast-item-id")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<usize>().ok());
                        let _ = req.into_body().collect().await;
                        let now = Instant::now();
                        let mut r = shared.record.lock().unwrap();
                        if let Some(at) = n.and_then(|n| r.published.get(n).copied().flatten()) {
                            r.latencies.push(now - at);
                            r.count += 1;
                            r.last = Some(now);
                        }
                        drop(r);
                        shared.done.notify_one();
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(port)
}

/// One request on a fresh connection: status and body text.
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: String,
) -> anyhow::Result<(u16, String)> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let text = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&text).into_owned()))
}
