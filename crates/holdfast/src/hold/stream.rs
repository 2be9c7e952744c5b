//! The body of a stream hold, and of a response followed by next links: the initial body, then
//! next-link bodies and published `http-stream` chunks, with keep-alives in between, until
//! `close`, the end of a next-link chain, shutdown, or the client leaving.
//!
//! The session is an async state machine ([`StreamSession::next`]) polled as the response body
//! (by the held-stream writer, or by hyper), on the connection's own task: a queued publish costs
//! the hub one `try_send` and the write happens here. While the session waits with nothing
//! queued it tells the stream's [`Sink`], and the hub writes plain chunks to the socket itself
//! without waking it. Dropping the body (client gone, write error) drops the [`Subscription`],
//! which leaves the hub, and the gone link, which tells the origin.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use grip::instruct::{HoldMode, KeepAlive, KeepAliveMode, NextLink};
use grip::publish::Action;
use http_body::{Body as HttpBody, Frame};
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use super::link::{self, GoneLink};
use super::{HeldRequest, Positions, Verdict};
use crate::deadline;
use crate::http::{boxed, Body, BoxError};
use crate::hub::{Delivery, Subscription};
use crate::proxy::body::OriginBody;
use crate::proxy::Answer;
use crate::sink::Sink;

/// A buffered prefix followed by the rest of an origin body.
pub struct Prefixed {
    prefix: Option<Bytes>,
    rest: Option<OriginBody>,
}

impl Prefixed {
    /// `prefix`, then everything `rest` yields.
    pub fn new(prefix: Bytes, rest: OriginBody) -> Prefixed {
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

/// How a stream session starts.
pub struct Start {
    /// The initial body (buffered part).
    pub initial: Bytes,
    /// The rest of the initial body, when it was too long to buffer.
    pub rest: Option<OriginBody>,
    /// Channels and positions.
    pub positions: Positions,
    /// A stream hold (subscribe), or only a next-link chain.
    pub live: bool,
    /// `Grip-Keep-Alive`.
    pub keep_alive: Option<KeepAlive>,
    /// `Grip-Link: rel=next`.
    pub next_link: Option<NextLink>,
    /// `Grip-Link: rel=gone`, sent when the session ends.
    pub gone: Option<GoneLink>,
    /// The stream's socket as the hub sees it (attached only when the server writes the stream
    /// itself).
    pub sink: Arc<Sink>,
}

/// The response body for a stream session.
pub fn session_body(ctx: Arc<HeldRequest>, start: Start) -> Body {
    let session = StreamSession::new(ctx, start);
    let chunks = futures_util::stream::unfold(session, |mut s| async move {
        let chunk = s.next().await?;
        Some((chunk, s))
    });
    boxed(StreamBody::new(chunks.map(|r| r.map(Frame::data))))
}

struct KeepAliveTimer {
    content: Bytes,
    every: Duration,
    mode: KeepAliveMode,
    sleep: Pin<Box<Sleep>>,
}

struct Live {
    sub: Subscription,
    rx: mpsc::Receiver<Delivery>,
}

struct StreamSession {
    ctx: Arc<HeldRequest>,
    out: VecDeque<Bytes>,
    /// Boxed: the session lives as long as its client, and this is empty nearly all that time.
    body_in: Option<Box<OriginBody>>,
    queued: VecDeque<Delivery>,
    live: Option<Live>,
    positions: Positions,
    keep_alive: Option<KeepAliveTimer>,
    next_link: Option<NextLink>,
    link_timer: Option<Pin<Box<Sleep>>>,
    needs_fetch: bool,
    /// Channels found behind at subscription, not yet caught up.
    stale: Vec<(String, String)>,
    done: bool,
    jitter: Duration,
    sink: Arc<Sink>,
    _gone: Option<GoneLink>,
}

impl StreamSession {
    fn new(ctx: Arc<HeldRequest>, start: Start) -> StreamSession {
        let mut s = StreamSession {
            ctx,
            out: VecDeque::new(),
            body_in: start.rest.map(Box::new),
            queued: VecDeque::new(),
            live: None,
            positions: start.positions,
            keep_alive: None,
            next_link: None,
            link_timer: None,
            needs_fetch: false,
            stale: Vec::new(),
            done: false,
            jitter: Duration::ZERO,
            sink: start.sink,
            _gone: start.gone,
        };
        if !start.initial.is_empty() {
            let initial = if s.body_in.is_none() {
                s.positions.build_id_body(start.initial)
            } else {
                start.initial
            };
            s.out.push_back(initial);
        }
        if start.live {
            s.go_live();
        } else {
            s.needs_fetch = start.next_link.is_some();
        }
        s.set_instructions(start.keep_alive, start.next_link);
        s
    }

    /// Subscribes to the session's channels; history fills what the client is missing.
    fn go_live(&mut self) {
        let requests = self.positions.requests();
        let app = &self.ctx.app;
        (app.presence).note_route(requests.iter().map(|(c, _)| c.as_str()), &self.ctx.route);
        let (sub, rx, resumes) = app.hub.subscribe_stream(requests, self.sink.clone());
        // Spread keep-alives of connections opened together over up to a second, as Pushpin
        // does, so they do not all fire in the same instant.
        self.jitter = Duration::from_millis(sub.id().wrapping_mul(2_654_435_761) % 1000);
        let (replay, stale) = self.positions.resume(resumes);
        self.queued.extend(replay);
        self.stale = stale;
        self.live = Some(Live { sub, rx });
    }

    fn set_instructions(&mut self, keep_alive: Option<KeepAlive>, next_link: Option<NextLink>) {
        self.keep_alive = keep_alive.map(|k| {
            let every = Duration::from_secs(k.timeout_secs.max(1));
            let first = every
                .saturating_sub(self.jitter)
                .max(Duration::from_millis(500));
            KeepAliveTimer {
                content: k.content,
                every,
                mode: k.mode,
                sleep: Box::pin(tokio::time::sleep(first)),
            }
        });
        self.link_timer = next_link
            .as_ref()
            .filter(|l| l.timeout_secs > 0)
            .map(|l| Box::pin(tokio::time::sleep(Duration::from_secs(l.timeout_secs))));
        self.next_link = next_link;
    }

    /// Behind on a channel with nothing in history to catch up from: the next link if there is
    /// one; otherwise carry on live (what was missed is lost, and logged).
    fn gap_without_history(&mut self) {
        if self.next_link.is_some() && self.ctx.request.is_some() {
            self.needs_fetch = true;
            self.queued.clear();
        } else {
            tracing::info!(channels = ?self.positions.channels.iter().map(|c| &c.name).collect::<Vec<_>>(),
                "stream is behind its channel and has no next link; continuing live");
        }
    }

    fn wrote(&mut self) {
        if let Some(k) = self.keep_alive.as_mut() {
            if k.mode == KeepAliveMode::Idle {
                k.sleep.as_mut().reset(deadline::after(k.every));
            }
        }
    }

    fn delivered(&mut self) {
        if let (Some(timer), Some(link)) = (self.link_timer.as_mut(), self.next_link.as_ref()) {
            timer
                .as_mut()
                .reset(deadline::after_secs(link.timeout_secs));
        }
    }

    /// The session's half of "may the hub write a plain chunk itself": whether a plain chunk
    /// published to the session's channels would reach the client unchanged while the session
    /// waits (no filters, nothing of the session's own to send or fetch). The item's half, which
    /// items are plain, is [`crate::sink::plain_chunk`].
    fn passes_plain_chunks(&self) -> bool {
        self.next_link.is_none()
            && self.body_in.is_none()
            && !self.done
            && !self.needs_fetch
            && self.stale.is_empty()
            && self.out.is_empty()
            && self.queued.is_empty()
            && self.positions.channels.iter().all(|c| c.filters.is_empty())
    }

    /// The next chunk for the client, or `None` at the end.
    async fn next(&mut self) -> Option<Result<Bytes, BoxError>> {
        loop {
            if let Some(b) = self.out.pop_front() {
                self.wrote();
                return Some(Ok(b));
            }
            if let Some(body) = self.body_in.as_mut() {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            self.wrote();
                            return Some(Ok(data));
                        }
                    }
                    Some(Err(e)) => {
                        self.done = true;
                        return Some(Err(e.into()));
                    }
                    None => self.body_in = None,
                }
                continue;
            }
            if self.done {
                return None;
            }
            if !self.stale.is_empty() {
                let stale = std::mem::take(&mut self.stale);
                // Rare paths are boxed so the session's state, alive as long as the client
                // stays, is not sized for an origin request in flight.
                match Box::pin(super::fill_from_bus(&self.ctx.app, &stale)).await {
                    Some(items) => self.queued.extend(items),
                    None => self.gap_without_history(),
                }
                continue;
            }
            if self.needs_fetch {
                self.needs_fetch = false;
                Box::pin(self.fetch()).await;
                continue;
            }
            // Without a hold, the chain of next links has ended.
            self.live.as_ref()?;
            if let Some(item) = self.queued.pop_front() {
                self.handle(item);
                continue;
            }
            match self.wait().await {
                Event::Item(None) => self.done = true,
                Event::Item(Some(item)) => self.handle(item),
                Event::KeepAlive => {
                    if let Some(content) = self.keep_alive_due() {
                        return Some(Ok(content));
                    }
                }
                Event::LinkTimeout => {
                    self.delivered();
                    self.needs_fetch = true;
                }
            }
        }
    }

    /// Waits for the next item, the keep-alive or the next link's timer. While it waits with
    /// nothing queued and plain chunks pass through unchanged, the hub may write to the socket
    /// itself ([`Sink::park`]).
    async fn wait(&mut self) -> Event {
        let plain = self.passes_plain_chunks();
        let StreamSession {
            live,
            keep_alive,
            link_timer,
            sink,
            ..
        } = self;
        let live = live.as_mut().expect("only a live session waits");
        if plain {
            sink.park(|| live.rx.is_empty());
        }
        let keep_alive = async {
            match keep_alive.as_mut() {
                Some(k) => k.sleep.as_mut().await,
                None => std::future::pending().await,
            }
        };
        let link_timer = async {
            match link_timer.as_mut() {
                Some(t) => t.as_mut().await,
                None => std::future::pending().await,
            }
        };
        let event = tokio::select! {
            item = live.rx.recv() => Event::Item(item),
            () = keep_alive => Event::KeepAlive,
            () = link_timer => Event::LinkTimeout,
        };
        if plain {
            sink.unpark();
        }
        event
    }

    /// The keep-alive fired: its content when it is due now. An idle keep-alive counts the
    /// chunks the hub wrote itself as traffic, and is put off past the last of them.
    fn keep_alive_due(&mut self) -> Option<Bytes> {
        let k = self.keep_alive.as_mut().expect("fired");
        let now = Instant::now();
        let later = (k.mode == KeepAliveMode::Idle)
            .then(|| self.sink.last_write())
            .flatten()
            .map(|at| deadline::later(at, k.every))
            .filter(|due| *due > now);
        if let Some(due) = later {
            k.sleep.as_mut().reset(due);
            return None;
        }
        k.sleep.as_mut().reset(deadline::later(now, k.every));
        Some(k.content.clone())
    }

    fn handle(&mut self, item: Delivery) {
        let Some(live) = self.live.as_ref() else {
            return;
        };
        match self.positions.judge(&live.sub, &item) {
            Verdict::Deliver(items) => self.send(&items),
            Verdict::Skip => {}
            Verdict::Update => {
                let is_hint = item
                    .formats
                    .http_stream
                    .as_ref()
                    .is_some_and(|f| f.action == Action::Hint);
                if self.next_link.is_some() && self.ctx.request.is_some() {
                    self.needs_fetch = true;
                    self.queued.clear();
                } else if !is_hint {
                    // A gap with nothing to recover it from: deliver what arrived.
                    tracing::debug!(channel = %item.channel, id = ?item.id, "gap with no history or next link; delivering");
                    if let Some(c) = self
                        .positions
                        .channels
                        .iter_mut()
                        .find(|c| c.name == item.channel)
                    {
                        c.position = item.id.clone().or(c.position.take());
                    }
                    self.send(&[item]);
                }
            }
        }
    }

    /// Queues the `http-stream` content of delivered items, through the channel's filters; a
    /// `close` ends the stream.
    fn send(&mut self, items: &[Delivery]) {
        for item in items {
            let Some(f) = item.formats.http_stream.as_ref() else {
                continue;
            };
            match f.action {
                Action::Send if !f.content.is_empty() => {
                    let filtered =
                        self.positions
                            .filter(item, &f.content, f.content_filters.as_deref());
                    if let Some(content) = filtered.filter(|c| !c.is_empty()) {
                        self.out.push_back(content);
                    }
                }
                Action::Close => {
                    self.done = true;
                    return;
                }
                _ => {}
            }
        }
        self.delivered();
    }

    /// Fetches the next link, queues its body and takes its instructions.
    async fn fetch(&mut self) {
        let Some(next) = self.next_link.clone() else {
            return;
        };
        let (resp, target) = match link::fetch_next(&self.ctx, &next.uri, &self.positions).await {
            Ok(r) => r,
            Err(e) => {
                self.fail(&e.to_string());
                return;
            }
        };
        let app = self.ctx.app.clone();
        let resp = match Answer::of(&self.ctx.route, resp) {
            Answer::Grip(resp) => resp,
            Answer::Relay(resp) => {
                // A plain response ends the chain: its body is the last part of the stream.
                let body = crate::proxy::origin_body(&self.ctx.app, resp.into_body());
                self.body_in = Some(Box::new(body));
                self.next_link = None;
                self.done = true;
                return;
            }
        };
        let accepted = match crate::proxy::read_grip(&app, &target.label(), resp).await {
            Ok(a) => a,
            Err(e) => {
                self.fail(&e.to_string());
                return;
            }
        };
        let ins = accepted.instruction;
        let body = ins
            .response
            .as_ref()
            .map_or(accepted.body, |r| r.body.clone());
        self.body_in = accepted.rest.map(Box::new);
        if ins.hold == Some(HoldMode::Stream) || !ins.channels.is_empty() {
            match Positions::new(&app, &self.ctx.route, &target.subs, &ins) {
                Ok(next) => self.positions.update_from(next),
                Err(e) => {
                    self.fail(&format!("Next link returned bad channels: {e}"));
                    return;
                }
            }
        }
        // A body streamed past the buffer is sent as is; a buffered one gets build-id.
        let body = if self.body_in.is_none() {
            self.positions.build_id_body(body)
        } else {
            body
        };
        if !body.is_empty() {
            self.out.push_back(body);
        }
        match ins.hold {
            Some(HoldMode::Response) => self.fail("Next link returned non-stream hold."),
            Some(HoldMode::Stream) => {
                self.set_instructions(ins.keep_alive, ins.next_link);
                if self.live.is_some() {
                    self.resubscribe();
                } else {
                    self.go_live();
                }
            }
            None => {
                self.needs_fetch = ins.next_link.is_some();
                self.done = ins.next_link.is_none();
                self.set_instructions(ins.keep_alive, ins.next_link);
            }
        }
    }

    /// Makes a live session's subscription match its positions' channels (a next link's
    /// stream hold may name other channels than the session had).
    fn resubscribe(&mut self) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let want: Vec<String> = self
            .positions
            .channels
            .iter()
            .map(|c| c.name.clone())
            .collect();
        let old: Vec<String> = live.sub.channels().to_vec();
        for name in old.iter().filter(|c| !want.contains(c)) {
            live.sub.remove(name);
        }
        for name in want {
            live.sub.add(name);
        }
    }

    fn fail(&mut self, message: &str) {
        tracing::info!(error = message, "stream session ended");
        if self.ctx.route.options.debug || self.ctx.app.config.server.debug {
            self.out.push_back(Bytes::from(format!("{message}\n")));
        }
        self.done = true;
    }
}

/// What a waiting stream session woke up for.
enum Event {
    Item(Option<Delivery>),
    KeepAlive,
    LinkTimeout,
}
