//! POSTs events to their URL: one task, a bounded queue (`presence.post_queue`; when full the
//! new event is not POSTed, and counted), each POST signed with `Grip-Sig` and given
//! `presence.post_timeout_secs`. Events queued together for one URL go in one POST, in order:
//! `{"events":[…]}`. A POST that fails is logged and counted, not retried; the backend can
//! always read the state from `GET /presence/channels`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;

use super::{now_ms, Shared};
use crate::config::Config;

/// Events sent in one POST at most.
const BATCH: usize = 100;
/// How long a `Grip-Sig` token on an event POST is valid.
const SIG_TTL_SECS: u64 = 3600;

type PostClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The poster's queue.
pub(super) struct Poster {
    tx: mpsc::Sender<(String, Arc<str>)>,
    shared: Arc<Shared>,
}

impl Poster {
    /// Starts the task; the queue is `presence.post_queue` events.
    pub fn start(config: &Config, shared: Arc<Shared>) -> (Poster, tokio::task::JoinHandle<()>) {
        let p = &config.presence;
        let (tx, rx) = mpsc::channel(p.post_queue);
        let key = p.sign_key.as_deref().unwrap_or(&config.grip.sig_key);
        let signer = crate::config::keys::signer(key).expect("config was validated");
        let iss = p
            .sign_iss
            .clone()
            .unwrap_or_else(|| config.grip.sig_iss.clone());
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(p.post_timeout_secs)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(crate::tls::client_config())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client: PostClient = Client::builder(TokioExecutor::new()).build(https);
        let task = tokio::spawn(run(
            rx,
            Sender {
                client,
                signer,
                iss,
                timeout: Duration::from_secs(p.post_timeout_secs),
                shared: shared.clone(),
            },
        ));
        (Poster { tx, shared }, task)
    }

    /// Queues an event for `url`; never waits.
    pub fn send(&self, url: Option<String>, json: Arc<str>) {
        let c = &self.shared.counters;
        let Some(url) = url else {
            c.untargeted.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if self.tx.try_send((url, json)).is_err() {
            c.post_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                queue = self.shared.config.post_queue,
                "presence event not POSTed: presence.post_queue is full"
            );
        }
    }
}

struct Sender {
    client: PostClient,
    signer: grip::sig::Signer,
    iss: String,
    timeout: Duration,
    shared: Arc<Shared>,
}

async fn run(mut rx: mpsc::Receiver<(String, Arc<str>)>, sender: Sender) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        // Per URL, in order of first appearance.
        let mut by_url: Vec<(String, Vec<Arc<str>>)> = Vec::new();
        for (url, json) in batch {
            match by_url.iter_mut().find(|(u, _)| *u == url) {
                Some((_, events)) => events.push(json),
                None => by_url.push((url, vec![json])),
            }
        }
        for (url, events) in by_url {
            sender.post(&url, &events).await;
        }
    }
}

impl Sender {
    async fn post(&self, url: &str, events: &[Arc<str>]) {
        let n = events.len() as u64;
        let c = &self.shared.counters;
        match self.try_post(url, events).await {
            Ok(()) => {
                c.posted.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                c.post_failed.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(url, events = n, error = %e, "presence events not delivered");
            }
        }
    }

    async fn try_post(&self, url: &str, events: &[Arc<str>]) -> Result<(), String> {
        let body = format!("{{\"events\":[{}]}}", events.join(","));
        let mut req = http::Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("bad URL: {e}"))?;
        let token = self
            .signer
            .sign(&self.iss, now_ms() / 1000, SIG_TTL_SECS)
            .map_err(|e| e.to_string())?;
        let value = http::HeaderValue::from_str(&token).map_err(|e| e.to_string())?;
        req.headers_mut().insert("grip-sig", value);
        let resp = tokio::time::timeout(self.timeout, self.client.request(req))
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))?
            .map_err(|e| crate::http::error_chain(&e))?;
        if !resp.status().is_success() {
            return Err(format!("answered {}", resp.status()));
        }
        Ok(())
    }
}
