//! 100 MB up and down through the proxy with flat memory. In its own test binary so the peak
//! resident memory it checks belongs to this test alone.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response};
use support::*;

const TOTAL: usize = 100 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

fn generated() -> TestBody {
    static BLOCK: [u8; CHUNK] = [b'z'; CHUNK];
    let frames = (0..TOTAL / CHUNK).map(|_| {
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(Bytes::from_static(&BLOCK)))
    });
    StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn hundred_megabytes_each_way_with_flat_memory() {
    let origin = Origin::start(|req: Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/down" {
            return Response::new(generated());
        }
        let mut body = req.into_body();
        let mut n = 0usize;
        while let Some(frame) = body.frame().await {
            if let Ok(d) = frame.unwrap().into_data() {
                n += d.len();
            }
        }
        Response::new(full(n.to_string()))
    })
    .await;
    let proxy = Proxy::start(&format!("* {}\n", origin.target()), |_| {}).await;

    let resp = send(Request::post(proxy.url("/up")).body(generated()).unwrap()).await;
    assert_eq!(text(resp).await, TOTAL.to_string());

    let mut body = get(&proxy.url("/down")).await.into_body();
    let mut n = 0usize;
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame.unwrap().into_data() {
            assert!(d.iter().all(|b| *b == b'z'));
            n += d.len();
        }
    }
    assert_eq!(n, TOTAL);

    // Client, proxy and origin share this process: had any of them buffered a body whole, the
    // peak would be past 100 MB.
    let peak_mib = peak_rss_kib() / 1024;
    assert!(peak_mib < 64, "peak resident memory {peak_mib} MiB");
}
