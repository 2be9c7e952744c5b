//! The driver's side requests: publishing, and reading subscription counts.
//!
//! Each request uses a fresh HTTP/1.1 connection; these are a handful of requests per run, so
//! connection reuse would only add state.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::stamp::Stamp;
use super::Mode;

/// Cap on any single control request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends one request and returns the status and the whole body.
pub async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<String>,
) -> anyhow::Result<(http::StatusCode, Bytes)> {
    let exchange = async {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::new(Full::new(Bytes::from(body.unwrap_or_default())));
        *req.method_mut() = method;
        *req.uri_mut() = path.parse()?;
        let headers = req.headers_mut();
        headers.insert(header::HOST, crate::host_header(addr).parse()?);
        headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        let response = sender.send_request(req).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(result) => result,
        Err(_) => bail!("{addr}{path}: no answer within {REQUEST_TIMEOUT:?}"),
    }
}

/// What goes into each published item besides its stamp.
#[derive(Debug, Clone, Default)]
pub struct ItemOpts {
    /// Appended to the stamp in the content (before the line end), e.g. ` id=%I`.
    pub suffix: String,
    /// Item `meta` (a JSON object), if any.
    pub meta: Option<serde_json::Value>,
    /// Give each item `id` = `m<seq>` and `prev-id` = `m<seq-1>` (none for seq 1).
    pub ids: bool,
}

/// One publish item carrying `stamp` to `channel`, in the format `mode` subscribes with.
pub fn publish_item(channel: &str, mode: Mode, stamp: Stamp, opts: &ItemOpts) -> serde_json::Value {
    let formats = match mode {
        Mode::Sse => {
            let ev = stamp.to_sse_event();
            let content = format!("{}{}\n\n", ev.trim_end_matches('\n'), opts.suffix);
            serde_json::json!({ "http-stream": { "content": content } })
        }
        Mode::Longpoll => {
            let body = format!(
                "{}{}\n",
                stamp.to_line().trim_end_matches('\n'),
                opts.suffix
            );
            serde_json::json!({ "http-response": { "body": body } })
        }
    };
    let mut item = serde_json::json!({ "channel": channel, "formats": formats });
    if let Some(meta) = &opts.meta {
        item["meta"] = meta.clone();
    }
    if opts.ids {
        item["id"] = format!("m{}", stamp.seq).into();
        if stamp.seq > 1 {
            item["prev-id"] = format!("m{}", stamp.seq - 1).into();
        }
    }
    item
}

/// The Pushpin publish body carrying `stamp` to `channel`, in the format `mode` subscribes with.
#[cfg(test)]
pub fn publish_body(channel: &str, mode: Mode, stamp: Stamp) -> String {
    publish_body_with(channel, mode, &[stamp], &ItemOpts::default())
}

/// A publish body with one item per stamp.
pub fn publish_body_with(channel: &str, mode: Mode, stamps: &[Stamp], opts: &ItemOpts) -> String {
    let items: Vec<_> = stamps
        .iter()
        .map(|s| publish_item(channel, mode, *s, opts))
        .collect();
    serde_json::json!({ "items": items }).to_string()
}

/// Publishes every body in turn over one keep-alive connection; returns the seconds from the
/// first request to the last answer and the errors (non-2xx or failed requests).
pub async fn publish_keepalive(
    addr: SocketAddr,
    mut next_body: impl FnMut() -> Option<String>,
) -> anyhow::Result<(f64, Vec<String>)> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let host: header::HeaderValue = crate::host_header(addr).parse()?;
    let started = std::time::Instant::now();
    let mut errors = Vec::new();
    while let Some(body) = next_body() {
        let mut req = Request::new(Full::new(Bytes::from(body)));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = "/publish/".parse()?;
        req.headers_mut().insert(header::HOST, host.clone());
        req.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        let exchange = async {
            sender.ready().await?;
            let response = sender.send_request(req).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(Ok((status, _))) if status.is_success() => {}
            Ok(Ok((status, body))) => errors.push(format!(
                "publish answered {status}: {}",
                String::from_utf8_lossy(&body).trim()
            )),
            Ok(Err(e)) => {
                errors.push(format!("{e:#}"));
                break;
            }
            Err(_) => {
                errors.push(format!("no answer within {REQUEST_TIMEOUT:?}"));
                break;
            }
        }
    }
    Ok((started.elapsed().as_secs_f64(), errors))
}

/// Posts the same publish body to every address of `addrs` at once (one connection each) and
/// returns, in `addrs` order, whether each answered 2xx.
pub async fn publish_each(addrs: &[SocketAddr], body: String) -> Vec<anyhow::Result<()>> {
    let mut posts = tokio::task::JoinSet::new();
    for (i, &addr) in addrs.iter().enumerate() {
        let body = body.clone();
        posts.spawn(async move { (i, post_publish(addr, body).await) });
    }
    let mut outcomes: Vec<anyhow::Result<()>> = addrs
        .iter()
        .map(|a| Err(anyhow::anyhow!("{a}: the publish task did not finish")))
        .collect();
    while let Some(done) = posts.join_next().await {
        if let Ok((i, outcome)) = done {
            outcomes[i] = outcome;
        }
    }
    outcomes
}

/// Posts one publish body and fails unless the publish API answers 2xx.
async fn post_publish(addr: SocketAddr, body: String) -> anyhow::Result<()> {
    let (status, answer) = send(addr, Method::POST, "/publish/", Some(body)).await?;
    if !status.is_success() {
        bail!(
            "{addr}: publish answered {status}: {}",
            String::from_utf8_lossy(&answer).trim()
        );
    }
    Ok(())
}

/// Reads `name` from the Prometheus page of every address of `addrs` (at once) and returns the
/// sum, with the first error if some could not be read (those count as 0).
pub async fn sum_metric(addrs: &[SocketAddr], name: &str) -> (f64, Option<anyhow::Error>) {
    let mut reads = tokio::task::JoinSet::new();
    for &addr in addrs {
        let name = name.to_string();
        reads.spawn(async move { read_metric(addr, "/metrics", &name).await });
    }
    let mut sum = 0.0;
    let mut error = None;
    while let Some(done) = reads.join_next().await {
        match done {
            Ok(Ok(v)) => sum += v,
            Ok(Err(e)) => {
                error.get_or_insert(e);
            }
            Err(e) => {
                error.get_or_insert(e.into());
            }
        }
    }
    (sum, error)
}

/// Reads one unlabelled sample, `name VALUE`, from a Prometheus text page at `addr` `path`.
pub async fn read_metric(addr: SocketAddr, path: &str, name: &str) -> anyhow::Result<f64> {
    let (status, body) = send(addr, Method::GET, path, None).await?;
    if !status.is_success() {
        bail!("GET {addr}{path} answered {status}");
    }
    let text = String::from_utf8_lossy(&body);
    match parse_sample(&text, name) {
        Some(v) => Ok(v),
        None => bail!("GET {addr}{path} has no sample named {name}"),
    }
}

/// Finds the value of sample `name` in Prometheus text or `name N` lines.
pub fn parse_sample(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.split_once(char::is_whitespace)?;
        (key == name).then(|| value.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_unlabelled_sample() {
        let text = "# HELP holdfast_subscriptions x\n# TYPE holdfast_subscriptions gauge\n\
                    holdfast_subscriptions_total 9\nholdfast_subscriptions 1234\n";
        assert_eq!(parse_sample(text, "holdfast_subscriptions"), Some(1234.0));
        assert_eq!(parse_sample(text, "missing"), None);
    }

    #[test]
    fn reads_origin_stats_lines() {
        assert_eq!(parse_sample("requests 7\nholds 5\n", "holds"), Some(5.0));
    }

    #[test]
    fn publish_bodies_use_the_mode_format() {
        let stamp = Stamp { seq: 1, ts_us: 2 };
        let sse: serde_json::Value =
            serde_json::from_str(&publish_body("c", Mode::Sse, stamp)).unwrap();
        assert_eq!(
            sse["items"][0]["formats"]["http-stream"]["content"],
            "data: seq=1 ts=2\n\n"
        );
        let lp: serde_json::Value =
            serde_json::from_str(&publish_body("c", Mode::Longpoll, stamp)).unwrap();
        assert_eq!(lp["items"][0]["channel"], "c");
        assert_eq!(
            lp["items"][0]["formats"]["http-response"]["body"],
            "seq=1 ts=2\n"
        );
    }

    #[test]
    fn item_options_add_suffix_meta_and_ids() {
        let opts = ItemOpts {
            suffix: " id=%I".into(),
            meta: Some(serde_json::json!({ "sender": "nobody" })),
            ids: true,
        };
        let stamps = [Stamp { seq: 1, ts_us: 2 }, Stamp { seq: 2, ts_us: 3 }];
        let body: serde_json::Value =
            serde_json::from_str(&publish_body_with("c", Mode::Sse, &stamps, &opts)).unwrap();
        let items = body["items"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[0]["formats"]["http-stream"]["content"],
            "data: seq=1 ts=2 id=%I\n\n"
        );
        assert_eq!(items[0]["id"], "m1");
        assert!(items[0].get("prev-id").is_none());
        assert_eq!(items[1]["prev-id"], "m1");
        assert_eq!(items[1]["meta"]["sender"], "nobody");
        let found: Vec<_> = super::super::stamp::parse_stamps(
            items[1]["formats"]["http-stream"]["content"]
                .as_str()
                .unwrap(),
        )
        .collect();
        assert_eq!(found, vec![stamps[1]]);
    }
}
