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
use super::{Mode, PublishStyle};

/// Cap on any single control request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends one request (a body as JSON) and returns the status and the whole body.
pub async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<String>,
) -> anyhow::Result<(http::StatusCode, Bytes)> {
    send_typed(addr, method, path, body, "application/json").await
}

/// [`send`] with the body's `Content-Type`.
pub async fn send_typed(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<String>,
    content_type: &'static str,
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
            header::HeaderValue::from_static(content_type),
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
        Mode::Longpoll | Mode::LongpollReliable => {
            serde_json::json!({ "http-response": { "body": longpoll_body(stamp, opts) } })
        }
        Mode::Woh => {
            let content = format!("{}{}", stamp.to_line().trim_end_matches('\n'), opts.suffix);
            serde_json::json!({ "ws-message": { "content": content } })
        }
        Mode::BayeuxLp | Mode::BayeuxWs => {
            let data = format!("{}{}", stamp.to_line().trim_end_matches('\n'), opts.suffix);
            serde_json::json!({ "json-object": { "data": data } })
        }
    };
    // Bayeux subscribers are on Bayeux channel `/<channel>`.
    let channel = match mode {
        Mode::BayeuxLp | Mode::BayeuxWs => format!("/{channel}"),
        _ => channel.to_string(),
    };
    let mut item = serde_json::json!({ "channel": channel, "formats": formats });
    if let Some(meta) = &opts.meta {
        item["meta"] = meta.clone();
    }
    if opts.ids {
        item["id"] = item_id(stamp.seq).into();
        if stamp.seq > 1 {
            item["prev-id"] = item_id(stamp.seq - 1).into();
        }
    }
    item
}

/// The `http-response` body of a long-poll message carrying `stamp` (what the reliable
/// long-poll origin is given, too, to answer a client that missed it).
pub fn longpoll_body(stamp: Stamp, opts: &ItemOpts) -> String {
    format!(
        "{}{}\n",
        stamp.to_line().trim_end_matches('\n'),
        opts.suffix
    )
}

/// The item id of message `seq` with `--ids`: `m<seq>`.
pub fn item_id(seq: u64) -> String {
    format!("m{seq}")
}

/// The seq of an item id `m<seq>`.
pub fn parse_item_id(id: &str) -> Option<u64> {
    id.strip_prefix('m')?.parse().ok()
}

/// Tells the bench origin (reliable modes) that item `seq` is the last published, with its
/// `http-response` body if any (reliable long-poll); `seq` 0 resets it.
pub async fn set_origin_last(
    origin: SocketAddr,
    seq: u64,
    body: Option<String>,
) -> anyhow::Result<()> {
    let path = format!("/_bench/last?{seq}");
    let (status, answer) = send_typed(origin, Method::POST, &path, body, "text/plain").await?;
    if !status.is_success() {
        bail!(
            "{origin}{path} answered {status}: {}",
            String::from_utf8_lossy(&answer).trim()
        );
    }
    Ok(())
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

/// Opens one HTTP/1.1 connection to `addr` for [`publish_keepalive`].
async fn publish_connection(addr: SocketAddr) -> anyhow::Result<http1::SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Publishes every body in turn over one keep-alive connection, the next request sent when the
/// previous one is answered; returns the seconds from the first request to the last answer and
/// the errors (non-2xx or failed requests). A server that closes the connection after each
/// answer (Pushpin's publish API does, with `Connection: close`) gets a new one per request.
pub async fn publish_keepalive(
    addr: SocketAddr,
    mut next_body: impl FnMut() -> Option<String>,
) -> anyhow::Result<(f64, Vec<String>)> {
    let mut sender = Some(publish_connection(addr).await?);
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
            let mut conn = match sender.take().filter(|s| !s.is_closed()) {
                Some(s) => s,
                None => publish_connection(addr).await?,
            };
            conn.ready().await?;
            let response = conn.send_request(req).await?;
            let status = response.status();
            let closing = response
                .headers()
                .get(header::CONNECTION)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
            let body = response.into_body().collect().await?.to_bytes();
            if !closing {
                sender = Some(conn);
            }
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

/// Nchan's publish request for `stamp`: the path and the raw message. Nchan's EventSource
/// subscribers get each line of a message as a `data:` line, so the message is the bare stamp
/// line (plus the suffix) without its line end.
pub fn nchan_publish(channel: &str, stamp: Stamp, opts: &ItemOpts) -> (String, String) {
    let message = format!("{}{}", stamp.to_line().trim_end_matches('\n'), opts.suffix);
    (format!("/pub/{channel}"), message)
}

/// One publish request, the same for every address it is posted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRequest {
    /// Request path.
    pub path: String,
    /// Request body.
    pub body: String,
    /// The body's `Content-Type`.
    pub content_type: &'static str,
}

/// The publish request carrying `stamp` in `style`: Pushpin's `POST /publish/` JSON, or Nchan's
/// raw `POST /pub/CHANNEL`.
pub fn publish_request(
    style: PublishStyle,
    channel: &str,
    mode: Mode,
    stamp: Stamp,
    opts: &ItemOpts,
) -> PublishRequest {
    match style {
        PublishStyle::Grip => PublishRequest {
            path: "/publish/".into(),
            body: publish_body_with(channel, mode, &[stamp], opts),
            content_type: "application/json",
        },
        PublishStyle::Nchan => {
            let (path, body) = nchan_publish(channel, stamp, opts);
            PublishRequest {
                path,
                body,
                content_type: "text/plain",
            }
        }
    }
}

/// Posts the same publish request to every address of `addrs` at once (one connection each)
/// and returns, in `addrs` order, whether each answered 2xx.
pub async fn publish_each(
    addrs: &[SocketAddr],
    request: PublishRequest,
) -> Vec<anyhow::Result<()>> {
    let mut posts = tokio::task::JoinSet::new();
    for (i, &addr) in addrs.iter().enumerate() {
        let request = request.clone();
        posts.spawn(async move { (i, post_publish(addr, request).await) });
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

/// Posts one publish request and fails unless the publish API answers 2xx.
async fn post_publish(addr: SocketAddr, request: PublishRequest) -> anyhow::Result<()> {
    let PublishRequest {
        path,
        body,
        content_type,
    } = request;
    let (status, answer) = send_typed(addr, Method::POST, &path, Some(body), content_type).await?;
    if !status.is_success() {
        bail!(
            "{addr}: publish answered {status}: {}",
            String::from_utf8_lossy(&answer).trim()
        );
    }
    Ok(())
}

/// Reads `name` from the metrics page `path` of every address of `addrs` (at once) and returns
/// the sum, with the first error if some could not be read (those count as 0).
pub async fn sum_metric(
    addrs: &[SocketAddr],
    path: &str,
    name: &str,
) -> (f64, Option<anyhow::Error>) {
    let mut reads = tokio::task::JoinSet::new();
    for &addr in addrs {
        let (path, name) = (path.to_string(), name.to_string());
        reads.spawn(async move { read_metric(addr, &path, &name).await });
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

/// Reads one unlabelled sample, `name VALUE` (or `name: VALUE`), from a text page at `addr`
/// `path`.
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

/// Finds the value of sample `name` in Prometheus text, `name N` lines or `name: N` lines (as
/// in Nchan's `nchan_stub_status` page).
pub fn parse_sample(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.split_once(char::is_whitespace)?;
        let key = key.strip_suffix(':').unwrap_or(key);
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
    fn reads_nchan_stub_status() {
        // As nchan 1.3.6 prints it.
        let text = "total published messages: 0\nstored messages: 0\n\
                    shared memory used: 20K\nchannels: 1\nsubscribers: 1834\n\
                    redis pending commands: 0\nnchan version: 1.3.6\n";
        assert_eq!(parse_sample(text, "subscribers"), Some(1834.0));
        assert_eq!(parse_sample(text, "channels"), Some(1.0));
        assert_eq!(parse_sample(text, "messages"), None);
    }

    #[test]
    fn nchan_messages_are_bare_stamp_lines() {
        let stamp = Stamp { seq: 4, ts_us: 99 };
        let (path, message) = nchan_publish("bench", stamp, &ItemOpts::default());
        assert_eq!(path, "/pub/bench");
        assert_eq!(message, "seq=4 ts=99");
        // What an EventSource subscriber then receives from Nchan.
        let delivered = format!("id: 1796162759:0\ndata: {message}\n\n");
        let found: Vec<_> = super::super::stamp::parse_stamps(&delivered).collect();
        assert_eq!(found, vec![stamp]);
    }

    #[test]
    fn publish_requests_follow_the_style() {
        let stamp = Stamp { seq: 3, ts_us: 7 };
        let opts = ItemOpts::default();
        let grip = publish_request(PublishStyle::Grip, "c", Mode::Sse, stamp, &opts);
        assert_eq!(grip.path, "/publish/");
        assert_eq!(grip.content_type, "application/json");
        assert_eq!(grip.body, publish_body("c", Mode::Sse, stamp));
        let nchan = publish_request(PublishStyle::Nchan, "c", Mode::Sse, stamp, &opts);
        assert_eq!(
            (nchan.path.as_str(), nchan.body.as_str(), nchan.content_type),
            ("/pub/c", "seq=3 ts=7", "text/plain")
        );
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
        let ws: serde_json::Value =
            serde_json::from_str(&publish_body("c", Mode::Woh, stamp)).unwrap();
        assert_eq!(
            ws["items"][0]["formats"]["ws-message"]["content"],
            "seq=1 ts=2"
        );
        for mode in [Mode::BayeuxLp, Mode::BayeuxWs] {
            let bayeux: serde_json::Value =
                serde_json::from_str(&publish_body("c", mode, stamp)).unwrap();
            assert_eq!(bayeux["items"][0]["channel"], "/c");
            assert_eq!(
                bayeux["items"][0]["formats"]["json-object"]["data"],
                "seq=1 ts=2"
            );
        }
    }

    #[test]
    fn item_ids_round_trip() {
        assert_eq!(item_id(7), "m7");
        assert_eq!(parse_item_id(&item_id(7)), Some(7));
        assert_eq!(parse_item_id("7"), None);
        assert_eq!(parse_item_id("mx"), None);
    }

    #[test]
    fn reliable_longpoll_items_match_the_origin_body() {
        let opts = ItemOpts {
            suffix: " x".into(),
            ids: true,
            ..ItemOpts::default()
        };
        let stamp = Stamp { seq: 2, ts_us: 5 };
        let item = publish_item("c", Mode::LongpollReliable, stamp, &opts);
        assert_eq!(
            item["formats"]["http-response"]["body"],
            longpoll_body(stamp, &opts)
        );
        assert_eq!(longpoll_body(stamp, &opts), "seq=2 ts=5 x\n");
        assert_eq!(
            (item["id"].as_str(), item["prev-id"].as_str()),
            (Some("m2"), Some("m1"))
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
