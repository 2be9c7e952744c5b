//! Body types of the proxy: a client's request body and an origin's response body, each
//! tagged with whose it is and given an idle timeout; a request body copied for retries; and the
//! access-log wrapper.
//!
//! [`ClientBody`] and [`OriginBody`] exist so a failed body says who failed: hyper's client
//! reports a request body that broke mid-way as its own error, with the body's error as the
//! source, and [`crate::proxy::exchange`] finds a [`ClientBodyError`] there and blames the
//! client (`400`, or `408` when it stalled) instead of the origin. Their idle timers run only
//! while the body is being waited on with nothing arriving, are made on the first such wait,
//! and are gone with the body: a body that arrives at once never has one.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

/// Fires when a body has been waited on for its timeout with nothing arriving.
struct IdleTimer {
    after: Option<Duration>,
    sleep: Option<Pin<Box<Sleep>>>,
    arrived: bool,
}

impl IdleTimer {
    fn new(after: Option<Duration>) -> IdleTimer {
        IdleTimer {
            after,
            sleep: None,
            arrived: false,
        }
    }

    /// Polls the timer once the body had nothing: true when the wait has lasted the timeout,
    /// counted from the last frame (or the first wait).
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(after) = self.after else {
            return false;
        };
        let sleep = match &mut self.sleep {
            Some(sleep) => {
                if std::mem::take(&mut self.arrived) {
                    sleep.as_mut().reset(tokio::time::Instant::now() + after);
                }
                sleep
            }
            None => {
                self.arrived = false;
                self.sleep.insert(Box::pin(tokio::time::sleep(after)))
            }
        };
        sleep.as_mut().poll(cx).is_ready()
    }

    /// A frame arrived: the next wait starts a new count.
    fn arrived(&mut self) {
        self.arrived = true;
    }

    /// The body has ended: no more waits, no timer.
    fn ended(&mut self) {
        self.sleep = None;
        self.after = None;
    }
}

/// Polls `inner` under `timer`: `Err(None)` when the wait timed out, `Err(Some(e))` when the body
/// failed.
fn poll_timed(
    inner: Pin<&mut Incoming>,
    timer: &mut IdleTimer,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, Option<hyper::Error>>>> {
    match inner.poll_frame(cx) {
        Poll::Pending if timer.poll_expired(cx) => {
            timer.ended();
            Poll::Ready(Some(Err(None)))
        }
        Poll::Pending => Poll::Pending,
        Poll::Ready(Some(Ok(frame))) => {
            timer.arrived();
            Poll::Ready(Some(Ok(frame)))
        }
        Poll::Ready(Some(Err(e))) => {
            timer.ended();
            Poll::Ready(Some(Err(Some(e))))
        }
        Poll::Ready(None) => {
            timer.ended();
            Poll::Ready(None)
        }
    }
}

/// Why a client's request body could not be read to its end: the client's fault.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    /// The body broke off: malformed chunked framing, or the connection closed before
    /// `Content-Length` bytes.
    #[error("{}", crate::http::error_chain(.0))]
    Read(hyper::Error),
    /// Nothing arrived for `timeouts.client_body_idle_secs`.
    #[error("nothing arrived for {} s (timeouts.client_body_idle_secs)", .0.as_secs())]
    Idle(Duration),
}

/// A client's request body, on its way to an origin: its errors are [`ClientBodyError`], and it
/// fails when nothing arrives for `idle` (`timeouts.client_body_idle_secs`).
pub struct ClientBody {
    inner: Incoming,
    timer: IdleTimer,
}

impl ClientBody {
    /// Wraps `inner`; `idle: None` waits without end.
    pub fn new(inner: Incoming, idle: Option<Duration>) -> ClientBody {
        ClientBody {
            inner,
            timer: IdleTimer::new(idle),
        }
    }
}

impl HttpBody for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = &mut *self;
        let after = this.timer.after;
        let polled = ready!(poll_timed(Pin::new(&mut this.inner), &mut this.timer, cx));
        Poll::Ready(polled.map(|r| {
            r.map_err(|e| match e {
                Some(e) => ClientBodyError::Read(e),
                None => ClientBodyError::Idle(after.unwrap_or_default()),
            })
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why an origin's response body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum OriginBodyError {
    /// The origin's connection failed mid-body.
    #[error("{}", crate::http::error_chain(.0))]
    Read(hyper::Error),
    /// Nothing arrived for `timeouts.origin_body_idle_secs`.
    #[error(
        "the origin sent nothing for {} s (timeouts.origin_body_idle_secs)",
        .0.as_secs()
    )]
    Idle(Duration),
}

impl OriginBodyError {
    /// Whether the origin stalled (as opposed to failing).
    pub fn is_idle(&self) -> bool {
        matches!(self, OriginBodyError::Idle(_))
    }
}

/// An origin's response body as Holdfast reads it — relayed, read for GRIP instructions, or
/// streamed after them — failing when nothing arrives for `idle`
/// (`timeouts.origin_body_idle_secs`). Dropping it closes the origin connection, unless the
/// body had ended.
pub struct OriginBody {
    inner: Incoming,
    timer: IdleTimer,
}

impl OriginBody {
    /// Wraps `inner`; `idle: None` waits without end.
    pub fn new(inner: Incoming, idle: Option<Duration>) -> OriginBody {
        OriginBody {
            inner,
            timer: IdleTimer::new(idle),
        }
    }
}

impl HttpBody for OriginBody {
    type Data = Bytes;
    type Error = OriginBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, OriginBodyError>>> {
        let this = &mut *self;
        let after = this.timer.after;
        let polled = ready!(poll_timed(Pin::new(&mut this.inner), &mut this.timer, cx));
        Poll::Ready(polled.map(|r| {
            r.map_err(|e| match e {
                Some(e) => OriginBodyError::Read(e),
                None => OriginBodyError::Idle(after.unwrap_or_default()),
            })
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A client request body passed through while keeping a copy of its first `limit` bytes, so a
/// held session can send the request again.
pub struct Captured {
    inner: ClientBody,
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
    pub fn new(inner: ClientBody, limit: usize) -> (Captured, CaptureHandle) {
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
    type Error = ClientBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
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
    /// The route's `log_level`: the line is written only if `info` is within it.
    pub log_level: Option<tracing::Level>,
    /// The share of requests logged, in parts per million (`log.access_sample`, or the route's
    /// `access_log=`).
    pub sample: u32,
    /// The request's `User-Agent`, when `log.user_agent` asks for it.
    pub user_agent: Option<String>,
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
            log_level: None,
            sample: ALL,
            user_agent: None,
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

/// [`AccessRecord::sample`] for every request.
pub const ALL: u32 = 1_000_000;

impl AccessRecord {
    /// Whether this request's line is written: always at [`ALL`], never at `0`, else a random
    /// draw at the sampled share, with server errors (`5xx`) always written.
    fn sampled_in(&self) -> bool {
        match self.sample {
            ALL.. => true,
            0 => false,
            share => self.status >= 500 || rand::random_range(0..ALL) < share,
        }
    }
}

impl<B> Drop for Logged<B> {
    fn drop(&mut self) {
        let r = &self.record;
        if r.log_level.is_some_and(|max| tracing::Level::INFO > max) || !r.sampled_in() {
            return;
        }
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
            user_agent = r.user_agent.as_deref(),
            "request"
        );
    }
}
