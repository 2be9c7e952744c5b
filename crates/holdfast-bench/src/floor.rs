//! The floor server: the fastest SSE fan-out this machine can do, as the benchmarks' baseline.
//!
//! No proxying, no origin, no GRIP, and one channel unless `--fanout channels`. `--listen`
//! accepts HTTP/1.1 requests, reads each request head with `httparse` (at most [`MAX_HEAD`] bytes
//! within [`HEAD_TIMEOUT`], bytes after it ignored), answers `200 OK` with
//! `Content-Type: text/event-stream`, `Cache-Control: no-cache`, `Transfer-Encoding: chunked` and
//! a first chunk carrying the 5-byte SSE comment `:ok\n\n`, whatever the method and path, and
//! holds the stream ([`hub`]).
//!
//! `--publish-listen` is a hyper HTTP/1.1 server:
//!
//! - `POST /publish/` takes Pushpin's publish JSON ([`publish`]); the `http-stream` content of
//!   the items is encoded once as chunks and written to every held stream, whatever the item's
//!   channel (the floor has just one). The answer, `200 Published`, is sent once the chunk is
//!   queued for every shard, not after it is written. With `--fanout channels` a subscriber for
//!   `/sub/NAME` is held on channel NAME, each item goes to its own channel's streams only, and
//!   the answer is sent once every item has been written ([`hub`]).
//! - `GET /metrics` answers `holdfast_subscriptions N`, the streams held, so the fan-out driver's
//!   `--ready metrics` works as it does for Holdfast.
//!
//! The process runs on a multi-thread tokio runtime of `--threads` threads and exits on SIGTERM
//! or SIGINT, or after `--exit-after` seconds; exiting drops every stream.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

pub mod hub;
pub mod publish;

use hub::{Fanout, Hub};

/// Longest request head read from a subscriber.
pub const MAX_HEAD: usize = 8192;
/// Time a subscriber has to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest publish body accepted.
const MAX_PUBLISH_BODY: usize = 1 << 20;
/// The response head and first chunk every subscriber gets.
const STREAM_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\
    Content-Type: text/event-stream\r\n\
    Cache-Control: no-cache\r\n\
    Transfer-Encoding: chunked\r\n\
    \r\n\
    5\r\n:ok\n\n\r\n";
/// The answer to a request head that does not parse.
const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Flags of `holdfast-bench floor`.
#[derive(Debug, Args)]
pub struct FloorArgs {
    /// Address the subscribers connect to.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// Address of the publish API (`POST /publish/`, `GET /metrics`).
    #[arg(long, value_name = "ADDR")]
    publish_listen: SocketAddr,
    /// Worker threads of the runtime.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// How a published chunk reaches the streams.
    #[arg(long, value_enum, default_value_t = Fanout::Shards)]
    fanout: Fanout,
    /// Shard tasks for `--fanout shards` (default: twice `--threads`).
    #[arg(long, value_name = "N")]
    shards: Option<usize>,
    /// Exit after this many seconds.
    #[arg(long, default_value_t = 3600, value_name = "SECS")]
    exit_after: u64,
}

/// Runs the floor server until a signal or `--exit-after`.
pub fn run(args: FloorArgs) -> anyhow::Result<()> {
    let threads = args.threads.max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let streams = crate::accept::bind(args.listen)?;
        let publish = crate::accept::bind(args.publish_listen)?;
        let hub = Hub::new(args.fanout, args.shards.unwrap_or(2 * threads));
        tokio::select! {
            r = serve(streams, publish, hub) => r,
            r = shutdown_signal() => r,
            () = tokio::time::sleep(Duration::from_secs(args.exit_after)) => Ok(()),
        }
    });
    // Held streams never end by themselves; do not wait for them.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Serves subscribers on `streams` and the publish API on `publish` until a listener fails.
pub async fn serve(streams: TcpListener, publish: TcpListener, hub: Hub) -> anyhow::Result<()> {
    let hub = Arc::new(hub);
    tokio::select! {
        r = accept_streams(streams, Arc::clone(&hub)) => r,
        r = accept_publishers(publish, hub) => r,
    }
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r?,
    }
    Ok(())
}

async fn accept_streams(listener: TcpListener, hub: Arc<Hub>) -> anyhow::Result<()> {
    loop {
        let stream = crate::accept::next(&listener, "floor").await;
        let hub = Arc::clone(&hub);
        tokio::spawn(async move {
            if let Some((stream, channel)) = open_stream(stream).await {
                hub.hold(stream, &channel).await;
            }
        });
    }
}

/// Reads the request head and writes the stream's response head; the stream and its channel
/// (NAME for a path `/sub/NAME`, else empty), or `None` if the client went away or sent
/// something that is not HTTP/1.x.
async fn open_stream(mut stream: TcpStream) -> Option<(TcpStream, String)> {
    let handshake = async {
        let Some(path) = read_head(&mut stream).await? else {
            let _ = stream.write_all(BAD_REQUEST).await;
            return None;
        };
        stream.write_all(STREAM_HEAD).await.ok()?;
        Some(channel_of(&path).to_string())
    };
    let channel = tokio::time::timeout(HEAD_TIMEOUT, handshake).await.ok()??;
    Some((stream, channel))
}

/// The channel a subscriber's path names: NAME for `/sub/NAME`, else the empty channel.
fn channel_of(path: &str) -> &str {
    path.strip_prefix("/sub/").unwrap_or("")
}

/// Reads until a complete request head; `Some(Some(path))` for a complete one, `Some(None)` if
/// it does not parse or is too long, `None` if the connection ends first.
async fn read_head(stream: &mut TcpStream) -> Option<Option<String>> {
    let mut buf = Vec::with_capacity(1024);
    while buf.len() < MAX_HEAD {
        let mut more = [0u8; 1024];
        let n = stream.read(&mut more).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&more[..n]);
        if let Some(done) = parse_head(&buf) {
            return Some(done);
        }
    }
    Some(None)
}

/// `Some(Some(path))` for a complete request head, `Some(None)` for an invalid one, `None` if
/// more bytes are needed.
fn parse_head(buf: &[u8]) -> Option<Option<String>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => Some(Some(req.path.unwrap_or("/").to_string())),
        Ok(httparse::Status::Partial) => None,
        Err(_) => Some(None),
    }
}

async fn accept_publishers(listener: TcpListener, hub: Arc<Hub>) -> anyhow::Result<()> {
    loop {
        let stream = crate::accept::next(&listener, "floor publish").await;
        let hub = Arc::clone(&hub);
        tokio::spawn(async move {
            let service = service_fn(move |req| answer_publisher(Arc::clone(&hub), req));
            // A publisher closing mid-request is its own business.
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer_publisher(
    hub: Arc<Hub>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    Ok(match (req.method(), path) {
        (&Method::GET, "/metrics") => text(
            StatusCode::OK,
            format!(
                "# TYPE holdfast_subscriptions gauge\nholdfast_subscriptions {}\n",
                hub.held()
            ),
        ),
        (&Method::POST, "/publish" | "/publish/") => {
            let body = match Limited::new(req.into_body(), MAX_PUBLISH_BODY)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return Ok(text(
                        StatusCode::BAD_REQUEST,
                        format!("cannot read the publish body: {e}\n"),
                    ))
                }
            };
            if hub.by_channel() {
                return Ok(match publish::parse_items(&body) {
                    Ok(items) => {
                        for (channel, chunk) in items {
                            hub.publish_to(&channel, chunk).await;
                        }
                        text(StatusCode::OK, "Published\n".into())
                    }
                    Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
                });
            }
            match publish::parse_publish(&body) {
                Ok(chunk) => {
                    hub.publish(chunk).await;
                    text(StatusCode::OK, "Published\n".into())
                }
                Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "floor: POST /publish/ or GET /metrics\n".into(),
        ),
    })
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::control;

    #[test]
    fn request_heads() {
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Some("/".to_string()))
        );
        assert_eq!(parse_head(b"GET /sub/bench HTTP/1.1\r\nHo"), None);
        assert_eq!(parse_head(b"\x16\x03\x01 hello\r\n\r\n"), Some(None));
        assert_eq!(channel_of("/sub/c42"), "c42");
        assert_eq!(channel_of("/x"), "");
    }

    async fn read_until(stream: &mut TcpStream, got: &mut Vec<u8>, want: &[u8]) {
        let read = async {
            while !got.windows(want.len()).any(|w| w == want) {
                let mut buf = [0u8; 4096];
                let n = stream.read(&mut buf).await.unwrap();
                assert!(
                    n > 0,
                    "stream ended; got {:?}",
                    String::from_utf8_lossy(got)
                );
                got.extend_from_slice(&buf[..n]);
            }
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("timed out waiting for bytes");
    }

    async fn held(publish: SocketAddr) -> f64 {
        control::read_metric(publish, "/metrics", "holdfast_subscriptions")
            .await
            .unwrap()
    }

    async fn wait_held(publish: SocketAddr, n: f64) {
        for _ in 0..250 {
            if held(publish).await == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("never saw {n} held streams");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streams_get_every_publish_and_closed_ones_are_dropped() {
        for fanout in [Fanout::Shards, Fanout::Broadcast] {
            let streams = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let publisher = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let (addr, publish) = (
                streams.local_addr().unwrap(),
                publisher.local_addr().unwrap(),
            );
            let server = tokio::spawn(serve(streams, publisher, Hub::new(fanout, 3)));

            let mut clients = Vec::new();
            for path in ["/", "/sub/bench", "/x"] {
                let mut c = TcpStream::connect(addr).await.unwrap();
                let head =
                    format!("GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n");
                c.write_all(head.as_bytes()).await.unwrap();
                let mut got = Vec::new();
                read_until(&mut c, &mut got, b"5\r\n:ok\n\n\r\n").await;
                let text = String::from_utf8_lossy(&got);
                assert!(
                    text.starts_with("HTTP/1.1 200 OK\r\n"),
                    "{fanout:?}: {text}"
                );
                assert!(text.contains("Content-Type: text/event-stream\r\n"));
                assert!(text.contains("Transfer-Encoding: chunked\r\n"));
                clients.push((c, got));
            }
            wait_held(publish, 3.0).await;

            let body = r#"{"items":[{"channel":"bench","formats":{"http-stream":{"content":"data: hi\n\n"}}}]}"#;
            let (status, _) = control::send(publish, Method::POST, "/publish/", Some(body.into()))
                .await
                .unwrap();
            assert_eq!(status, StatusCode::OK);
            for (c, got) in &mut clients {
                read_until(c, got, b"a\r\ndata: hi\n\n\r\n").await;
            }

            let (status, answer) =
                control::send(publish, Method::POST, "/publish/", Some("{}".into()))
                    .await
                    .unwrap();
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert!(String::from_utf8_lossy(&answer).contains("missing field `items`"));

            drop(clients.pop());
            wait_held(publish, 2.0).await;
            server.abort();
        }
    }

    /// With `--fanout channels` an item reaches the streams of its own channel and no others.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn channels_get_only_their_own_items() {
        let streams = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let publisher = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, publish) = (
            streams.local_addr().unwrap(),
            publisher.local_addr().unwrap(),
        );
        let server = tokio::spawn(serve(streams, publisher, Hub::new(Fanout::Channels, 1)));
        let mut clients = Vec::new();
        for path in ["/sub/a", "/sub/a", "/sub/b"] {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
            c.write_all(head.as_bytes()).await.unwrap();
            let mut got = Vec::new();
            read_until(&mut c, &mut got, b"5\r\n:ok\n\n\r\n").await;
            clients.push((c, got));
        }
        wait_held(publish, 3.0).await;
        let item = |channel: &str, content: &str| {
            format!(
                r#"{{"channel":"{channel}","formats":{{"http-stream":{{"content":"{content}"}}}}}}"#
            )
        };
        // One request with an item for each channel, then one for b alone, then one for a.
        for body in [
            format!(
                r#"{{"items":[{},{}]}}"#,
                item("a", "for-a;"),
                item("b", "for-b;")
            ),
            format!(r#"{{"items":[{}]}}"#, item("b", "end-b;")),
            format!(r#"{{"items":[{}]}}"#, item("a", "end-a;")),
        ] {
            let (status, _) = control::send(publish, Method::POST, "/publish/", Some(body))
                .await
                .unwrap();
            assert_eq!(status, StatusCode::OK);
        }
        // Each stream has its channel's items in order and nothing of the other's.
        for (i, (c, got)) in clients.iter_mut().enumerate() {
            let (first, last) = if i < 2 {
                ("for-a;", "end-a;")
            } else {
                ("for-b;", "end-b;")
            };
            read_until(c, got, format!("6\r\n{last}\r\n").as_bytes()).await;
            let text = String::from_utf8_lossy(got);
            let want = format!("5\r\n:ok\n\n\r\n6\r\n{first}\r\n6\r\n{last}\r\n");
            assert!(text.ends_with(&want), "stream {i}: {text}");
        }
        drop(clients.pop());
        wait_held(publish, 2.0).await;
        server.abort();
    }

    #[tokio::test]
    async fn garbage_gets_400_and_is_not_held() {
        let streams = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let publisher = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, publish) = (
            streams.local_addr().unwrap(),
            publisher.local_addr().unwrap(),
        );
        let server = tokio::spawn(serve(streams, publisher, Hub::new(Fanout::Shards, 1)));
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"\x16\x03\x01\x02\x00\r\n\r\n").await.unwrap();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got)).await;
        assert!(got.starts_with(b"HTTP/1.1 400 "), "{got:?}");
        assert_eq!(held(publish).await, 0.0);
        server.abort();
    }
}
