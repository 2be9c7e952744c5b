//! Body types of the proxy: the one boxed body every response uses, a request body that can be
//! taken back when a target could not be reached, and the access-log wrapper.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;

/// A client request body passed through while keeping a copy of its first `limit` bytes, so a
/// held session can send the request again.
pub struct Captured {
    inner: Incoming,
    state: Arc<Mutex<Capture>>,
    limit: usize,
}

/// The copy [`Captured`] keeps.
#[derive(Default)]
pub struct Capture {
    bytes: bytes::BytesMut,
    overflow: bool,
    complete: bool,
}

/// The shared end of a [`Captured`] body.
pub struct CaptureHandle(Arc<Mutex<Capture>>);

impl CaptureHandle {
    /// The whole request body, or `None` when it was longer than the limit or not read to the end.
    pub fn take(&self) -> Option<Bytes> {
        let mut c = self.0.lock().expect("capture poisoned");
        (c.complete && !c.overflow).then(|| std::mem::take(&mut c.bytes).freeze())
    }
}

impl Captured {
    /// Wraps `inner`, copying at most `limit` bytes.
    pub fn new(inner: Incoming, limit: usize) -> (Captured, CaptureHandle) {
        let state = Arc::new(Mutex::new(Capture {
            complete: inner.is_end_stream(),
            ..Capture::default()
        }));
        (
            Captured {
                inner,
                state: state.clone(),
                limit,
            },
            CaptureHandle(state),
        )
    }
}

impl HttpBody for Captured {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        let mut c = self.state.lock().expect("capture poisoned");
        match &poll {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if c.bytes.len() + data.len() > self.limit {
                        c.overflow = true;
                        c.bytes.clear();
                    } else if !c.overflow {
                        c.bytes.extend_from_slice(data);
                    }
                }
            }
            Poll::Ready(None) => c.complete = true,
            _ => {}
        }
        drop(c);
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What the access log line says about a request, filled in as the request is handled.
#[derive(Debug, Clone)]
pub struct AccessRecord {
    /// Request method.
    pub method: http::Method,
    /// Request URI as received.
    pub uri: String,
    /// Client address.
    pub peer: std::net::IpAddr,
    /// Route id, if one matched.
    pub route: Option<String>,
    /// Target label (`host:port`, `test`), if one answered.
    pub target: Option<String>,
    /// Status sent to the client.
    pub status: u16,
    /// `hold=response` / `hold=stream` when the response became a GRIP hold.
    pub hold: Option<&'static str>,
    /// When the request arrived.
    pub started: Instant,
}

impl AccessRecord {
    /// A record for a response produced on a session's behalf (a retry's answer), which is
    /// logged as part of the client's original request.
    pub fn internal() -> AccessRecord {
        AccessRecord {
            method: http::Method::GET,
            uri: String::new(),
            peer: std::net::IpAddr::from([0, 0, 0, 0]),
            route: None,
            target: None,
            status: 0,
            hold: None,
            started: Instant::now(),
        }
    }
}

/// Wraps a response body and writes the access-log line when it is finished or dropped, so the
/// line carries the bytes actually sent and the whole duration, also for streams and holds.
pub struct Logged<B> {
    inner: B,
    bytes: u64,
    record: AccessRecord,
}

impl<B> Logged<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, record: AccessRecord) -> Self {
        Logged {
            inner,
            bytes: 0,
            record,
        }
    }
}

impl<B: HttpBody<Data = Bytes> + Unpin> HttpBody for Logged<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &poll {
            if let Some(data) = frame.data_ref() {
                self.bytes += data.len() as u64;
            }
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Logged<B> {
    fn drop(&mut self) {
        let r = &self.record;
        tracing::info!(
            target: "holdfast::access",
            method = %r.method,
            uri = %r.uri,
            from = %r.peer,
            route = r.route.as_deref().unwrap_or("-"),
            target = r.target.as_deref().unwrap_or("-"),
            status = r.status,
            hold = r.hold.unwrap_or("-"),
            bytes = self.bytes,
            duration_ms = r.started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
    }
}
