//! The body of a stream hold: the initial body, then every published `http-stream` chunk, with
//! keep-alives in between, until `close`, shutdown or the client leaves.
//!
//! The body is polled by hyper on the connection's own task, so a publish costs the hub one
//! `try_send` and the write happens here. Dropping the body (client gone, write error) drops the
//! [`Subscription`], which leaves the hub.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use grip::instruct::{KeepAlive, KeepAliveMode};
use grip::publish::Action;
use http_body::{Body as HttpBody, Frame};
use hyper::body::Incoming;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use crate::hub::{Delivery, Subscription};
use crate::proxy::body::BoxError;

/// A buffered prefix followed by the rest of an origin body.
pub struct Prefixed {
    prefix: Option<Bytes>,
    rest: Option<Incoming>,
}

impl Prefixed {
    /// `prefix`, then everything `rest` yields.
    pub fn new(prefix: Bytes, rest: Incoming) -> Prefixed {
        Prefixed {
            prefix: Some(prefix).filter(|b| !b.is_empty()),
            rest: Some(rest),
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        if let Some(p) = self.prefix.take() {
            return Poll::Ready(Some(Ok(p)));
        }
        while let Some(rest) = self.rest.as_mut() {
            match ready!(Pin::new(rest).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                Some(Err(e)) => {
                    self.rest = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
                None => self.rest = None,
            }
        }
        Poll::Ready(None)
    }
}

impl HttpBody for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.poll_next(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

struct KeepAliveTimer {
    content: Bytes,
    every: Duration,
    mode: KeepAliveMode,
    sleep: Pin<Box<Sleep>>,
}

/// The body of a stream hold.
pub struct StreamHold {
    initial: Prefixed,
    initial_done: bool,
    rx: mpsc::Receiver<Delivery>,
    keep_alive: Option<KeepAliveTimer>,
    done: bool,
    _subscription: Subscription,
}

impl StreamHold {
    /// A stream of `initial` (then `rest`, if the origin body was not read whole), then published
    /// content from `rx`.
    pub fn new(
        initial: Bytes,
        rest: Option<Incoming>,
        rx: mpsc::Receiver<Delivery>,
        keep_alive: Option<KeepAlive>,
        subscription: Subscription,
    ) -> StreamHold {
        // Spread keep-alives of connections opened together over up to a second, as Pushpin
        // does, so they do not all fire in the same instant.
        let jitter = Duration::from_millis((subscription.id().wrapping_mul(2_654_435_761)) % 1000);
        let keep_alive = keep_alive.map(|k| {
            let every = Duration::from_secs(k.timeout_secs.max(1));
            let first = every.saturating_sub(jitter).max(Duration::from_millis(500));
            KeepAliveTimer {
                content: k.content,
                every,
                mode: k.mode,
                sleep: Box::pin(tokio::time::sleep(first)),
            }
        });
        StreamHold {
            initial: Prefixed {
                prefix: Some(initial).filter(|b| !b.is_empty()),
                rest,
            },
            initial_done: false,
            rx,
            keep_alive,
            done: false,
            _subscription: subscription,
        }
    }

    fn wrote(&mut self) {
        if let Some(k) = self.keep_alive.as_mut() {
            if k.mode == KeepAliveMode::Idle {
                let at = Instant::now() + k.every;
                k.sleep.as_mut().reset(at);
            }
        }
    }
}

impl HttpBody for StreamHold {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if !this.initial_done {
            match this.initial.poll_next(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    this.wrote();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => this.initial_done = true,
                // Published items wait in the queue until the initial body is out.
                Poll::Pending => return Poll::Pending,
            }
        }
        loop {
            match this.rx.poll_recv(cx) {
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(item)) => {
                    let Some(f) = item.formats.http_stream.as_ref() else {
                        continue;
                    };
                    match f.action {
                        Action::Send => {
                            if f.content.is_empty() {
                                continue;
                            }
                            let data = f.content.clone();
                            this.wrote();
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        Action::Close => {
                            this.done = true;
                            return Poll::Ready(None);
                        }
                        // Hints ask for an origin round trip, which stream holds do not make
                        // yet (they need next links); there is no data to send.
                        Action::Hint | Action::Refresh => continue,
                    }
                }
                Poll::Pending => break,
            }
        }
        if let Some(k) = this.keep_alive.as_mut() {
            if k.sleep.as_mut().poll(cx).is_ready() {
                let at = Instant::now() + k.every;
                k.sleep.as_mut().reset(at);
                let data = k.content.clone();
                // Register the reset timer with this task before returning.
                let _ = k.sleep.as_mut().poll(cx);
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
        }
        Poll::Pending
    }
}
