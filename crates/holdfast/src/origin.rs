//! Pooled HTTP/1.1 clients towards origins: one verifying TLS against the system roots, one for
//! targets marked `insecure`, and the same two for `untrusted` targets, whose connections go
//! through the outbound policy ([`crate::outbound::Guarded`]); and the request body they carry,
//! which a failed connect hands back.
//!
//! The pool is a shared resource, like the descriptor budget whose descriptors its connections
//! take: it stands below [`crate::app`], which owns it, and [`crate::proxy`] sends through it.
//! [`health`] keeps how each target has been answering, for the status page.

pub mod health;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::outbound::OutboundConfig;
use crate::config::routes::Target;
use crate::config::TimeoutsConfig;
use crate::descriptors::{Budgeted, Descriptors};
use crate::http::{Body, BoxError};
use crate::metrics::{Histogram, Page};
use crate::outbound::{Guarded, Policy, Refusals};

/// The client type used for every origin request.
pub type HttpClient = Client<HttpsConnector<Budgeted<Connector>>, Reclaimable>;

/// How a target's connections are made: as the routes file says (`Plain`), or, for an
/// `untrusted` target, only to addresses the outbound policy allows (`Guarded`).
#[derive(Clone)]
pub enum Connector {
    /// Connects to whatever the target's host resolves to.
    Plain(HttpConnector),
    /// Resolves, checks every address against the outbound policy, connects to a checked one.
    Guarded(Guarded),
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Connector::Plain(c) => c.poll_ready(cx).map_err(Into::into),
            Connector::Guarded(c) => c.poll_ready(cx),
        }
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        match self {
            Connector::Plain(c) => {
                let connecting = c.call(uri);
                Box::pin(async move { connecting.await.map_err(Into::into) })
            }
            Connector::Guarded(c) => c.call(uri),
        }
    }
}

/// How a target is reached: its TLS check and whether the outbound policy applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// `insecure`: no TLS certificate check.
    pub insecure: bool,
    /// `untrusted`: connect only to addresses the outbound policy allows.
    pub untrusted: bool,
}

impl Access {
    /// How `target` is reached.
    pub fn of(target: &Target) -> Access {
        Access {
            insecure: target.insecure,
            untrusted: target.untrusted,
        }
    }
}

/// The origin clients; each keeps its own keep-alive pool, so a connection made for a trusted
/// target is never reused for an untrusted one. Requests to one target are limited to
/// `timeouts.origin_concurrency_per_target` in flight ([`OriginClients::slot`]).
#[derive(Clone)]
pub struct OriginClients {
    verified: HttpClient,
    insecure: HttpClient,
    untrusted_verified: HttpClient,
    untrusted_insecure: HttpClient,
    per_target: usize,
    /// One semaphore per target label, made on first use. Targets come from the routes file, so
    /// the map is as small as the set of targets ever configured.
    slots: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
    waiting: Arc<AtomicUsize>,
    /// Origin requests by outcome, and their latency.
    outcomes: Arc<Outcomes>,
    /// How each target has been answering.
    health: Arc<health::Health>,
}

/// How origin requests ended, for `holdfast_origin_requests_total` and the latency histogram.
#[derive(Debug)]
struct Outcomes {
    /// By [`OUTCOMES`]: a status class, `error` (no response) or `cancelled`.
    counts: [AtomicU64; 7],
    latency: Histogram,
}

/// The `status` label's values.
const OUTCOMES: [&str; 7] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error", "cancelled"];

/// One origin request being timed; counted as `cancelled` if dropped before it ends (a timeout
/// or the client leaving).
struct Timing<'a> {
    outcomes: &'a Outcomes,
    start: std::time::Instant,
    done: bool,
}

impl Timing<'_> {
    fn end(mut self, outcome: usize) {
        self.done = true;
        self.outcomes.counts[outcome].fetch_add(1, Ordering::Relaxed);
        self.outcomes.latency.observe(self.start.elapsed());
    }
}

impl Drop for Timing<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.outcomes.counts[6].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A request's place among the requests in flight to its target; freed when dropped. Cloning
/// shares the place, so it can ride in a response's extensions.
#[derive(Clone)]
pub struct Slot {
    _permit: Arc<OwnedSemaphorePermit>,
}

impl OriginClients {
    /// Builds the clients with the configured timeouts; every connection they open takes a
    /// descriptor from `budget`. Connections to `untrusted` targets follow `outbound`'s allow
    /// list (validated) and count refusals in `refused`.
    pub fn new(
        timeouts: &TimeoutsConfig,
        budget: &Descriptors,
        outbound: &OutboundConfig,
        refused: &Refusals,
    ) -> OriginClients {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verified = system_roots_tls();
        let insecure = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
            .with_no_client_auth();
        let plain = {
            let mut http = HttpConnector::new();
            http.enforce_http(false);
            http.set_nodelay(true);
            http.set_connect_timeout(Some(timeouts.origin_connect()));
            Connector::Plain(http)
        };
        let guarded = Connector::Guarded(Guarded::new(
            Policy::new(outbound.allow_nets().unwrap_or_default()),
            timeouts.origin_connect(),
            "timeouts.origin_connect_secs",
            refused.clone(),
        ));
        OriginClients {
            verified: build(verified.clone(), plain.clone(), timeouts, budget),
            insecure: build(insecure.clone(), plain, timeouts, budget),
            untrusted_verified: build(verified, guarded.clone(), timeouts, budget),
            untrusted_insecure: build(insecure, guarded, timeouts, budget),
            per_target: timeouts.origin_concurrency_per_target.max(1),
            slots: Arc::default(),
            waiting: Arc::default(),
            outcomes: Arc::new(Outcomes {
                counts: Default::default(),
                latency: Histogram::new(crate::metrics::ORIGIN_BUCKETS),
            }),
            health: Arc::default(),
        }
    }

    /// Waits for a free slot for a request to the target `label` (FIFO).
    async fn slot(&self, label: &str) -> Slot {
        let semaphore = {
            let mut slots = self.slots.lock().expect("origin slots poisoned");
            slots
                .entry(label.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_target)))
                .clone()
        };
        let permit = match semaphore.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // Counted while waiting; a request given up on (timeout, client gone) uncounts.
                self.waiting.fetch_add(1, Ordering::Relaxed);
                let _waiting = Uncount(&self.waiting);
                semaphore
                    .acquire_owned()
                    .await
                    .expect("origin semaphores are never closed")
            }
        };
        Slot {
            _permit: Arc::new(permit),
        }
    }

    /// Sends `req` to the target `label` once one of its slots is free. The slot rides in the
    /// response's extensions, so it is freed when the response head is dropped: once a relayed
    /// head has been written to the client, or once a GRIP answer's body has been read.
    pub async fn request(
        &self,
        label: &str,
        access: Access,
        req: hyper::Request<Reclaimable>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
        let slot = self.slot(label).await;
        let timing = Timing {
            outcomes: &self.outcomes,
            start: std::time::Instant::now(),
            done: false,
        };
        let mut resp = match self.get(access).request(req).await {
            Ok(resp) => resp,
            Err(e) => {
                timing.end(5);
                return Err(e);
            }
        };
        timing.end(usize::from(resp.status().as_u16() / 100).clamp(1, 5) - 1);
        resp.extensions_mut().insert(slot);
        Ok(resp)
    }

    /// Adds the origin requests by outcome and their latency to `page`.
    pub fn metrics(&self, page: &mut Page) {
        let counts = (OUTCOMES.iter().zip(&self.outcomes.counts))
            .map(|(s, c)| (vec![("status", s.to_string())], c.load(Ordering::Relaxed)))
            .collect();
        page.counters(
            "holdfast_origin_requests_total",
            "Requests to origins (proxied requests, WebSocket-over-HTTP) by outcome: the response's status class, error when none came, cancelled when given up on",
            counts,
        )
        .live(
            "holdfast_origin_request_seconds",
            "Time from sending an origin request to its response head (or failure)",
            self.outcomes.latency.clone(),
        );
    }

    /// Origin requests waiting for a free slot now, over all targets.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// How each target has been answering.
    pub fn health(&self) -> &health::Health {
        &self.health
    }

    /// The client for a target.
    pub fn get(&self, access: Access) -> &HttpClient {
        match (access.untrusted, access.insecure) {
            (false, false) => &self.verified,
            (false, true) => &self.insecure,
            (true, false) => &self.untrusted_verified,
            (true, true) => &self.untrusted_insecure,
        }
    }
}

/// A TLS client configuration (ring) that checks servers against the system's root
/// certificates ([`crate::tls::client_config`]).
pub fn system_roots_tls() -> rustls::ClientConfig {
    crate::tls::client_config()
}

fn build(
    tls: rustls::ClientConfig,
    connector: Connector,
    timeouts: &TimeoutsConfig,
    budget: &Descriptors,
) -> HttpClient {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(Budgeted::new(connector, budget.clone()));
    Client::builder(TokioExecutor::new())
        // Without a timer the pool never reaps idle connections: the idle timeout is only
        // checked when a connection is taken out again, so an origin's quiet hour kept every
        // connection of its last burst open.
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(timeouts.origin_idle_secs))
        .pool_max_idle_per_host(timeouts.origin_idle_per_target)
        .set_host(false)
        .build(https)
}

struct Uncount<'a>(&'a AtomicUsize);

impl Drop for Uncount<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Certificate verifier for `insecure` targets: accepts any certificate, still checks signatures
/// so the handshake is well-formed.
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client request body lent to one origin attempt.
///
/// hyper only polls a request body once the origin connection is up, so when an attempt fails to
/// connect the body is still in its slot and [`Reclaimable::reclaim`] hands it back for the next
/// target: failover never needs the body buffered.
pub struct Reclaimable {
    slot: Arc<Mutex<Option<Body>>>,
    taken: Option<Body>,
    end_stream: bool,
    hint: SizeHint,
}

impl Reclaimable {
    /// Wraps a body; keep the returned slot to reclaim it.
    pub fn new(body: Body) -> (Reclaimable, Arc<Mutex<Option<Body>>>) {
        let end_stream = body.is_end_stream();
        let hint = body.size_hint();
        let slot = Arc::new(Mutex::new(Some(body)));
        (
            Reclaimable {
                slot: slot.clone(),
                taken: None,
                end_stream,
                hint,
            },
            slot,
        )
    }

    /// Takes the body back if no attempt has started sending it.
    pub fn reclaim(slot: &Mutex<Option<Body>>) -> Option<Body> {
        slot.lock().expect("body slot poisoned").take()
    }
}

impl HttpBody for Reclaimable {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.taken.is_none() {
            let body = self.slot.lock().expect("body slot poisoned").take();
            self.taken = body;
        }
        match self.taken.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.taken
            .as_ref()
            .map_or(self.end_stream, HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.taken.as_ref().map_or(self.hint, HttpBody::size_hint)
    }
}
