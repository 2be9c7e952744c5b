//! One source: its connection, its `LISTEN` channels, and its outbox, made again whenever the
//! connection fails.
//!
//! The connection's messages are read by one task (`drive`). A notification on a `listen`
//! channel goes into a bounded queue (`queue`) that `relay` drains into the bus; when the queue
//! is full the reader waits, so the connection is not read meanwhile and PostgreSQL keeps the
//! notifications in its own queue. A notification on the outbox's `notify` channel only wakes
//! the outbox reader (a flag, no queue). The session ends at the first error of any of them, and
//! the source connects again after its backoff.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use grip::publish::PublishItem;
use tokio::sync::{mpsc, Notify};
use tokio_postgres::AsyncMessage;

use super::lease::Lease;
use super::outbox::Outbox;
use super::{Backoff, Stats};
use crate::app::App;
use crate::config::postgres::{redact, PostgresSource};

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub(super) enum SessionError {
    /// PostgreSQL refused or failed a request, or the connection was lost.
    #[error("{}", crate::http::error_chain(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// The connection ended without an error.
    #[error("the connection closed")]
    Closed,
    /// Another consumer moved the outbox position (a second instance consuming the source).
    #[error("the outbox position was moved by another consumer")]
    PositionMoved,
}

/// A configured source and what it needs to run.
pub(super) struct Source {
    app: Arc<App>,
    config: PostgresSource,
    stats: Arc<Stats>,
    lease: Option<Lease>,
}

impl Source {
    pub fn new(
        app: Arc<App>,
        config: PostgresSource,
        stats: Arc<Stats>,
        lease: Option<Lease>,
    ) -> Source {
        Source {
            app,
            config,
            stats,
            lease,
        }
    }

    /// Consumes the source until the task is stopped: in cluster mode while holding its lease,
    /// which is given up when the server shuts down (the drain waits for that), so another
    /// instance takes over at once instead of when the lease expires.
    pub async fn run(self) {
        let Some(lease) = &self.lease else {
            self.stats.consuming.store(true, Ordering::Relaxed);
            self.consume().await;
            return;
        };
        let mut stop = self.app.shutdown.signal();
        loop {
            let mut held = tokio::select! {
                held = lease.acquire() => held,
                () = stop.stopped() => return,
            };
            let drain = self.app.shutdown.guard();
            self.stats.consuming.store(true, Ordering::Relaxed);
            let stopping = tokio::select! {
                _ = self.consume() => false,
                () = held.lost() => false,
                () = stop.stopped() => true,
            };
            self.stats.consuming.store(false, Ordering::Relaxed);
            self.stats.connected.store(false, Ordering::Relaxed);
            held.release().await;
            drop(drain);
            if stopping {
                return;
            }
        }
    }

    /// Connects, runs a session, and connects again after each failure, forever.
    async fn consume(&self) {
        let name = &self.config.name;
        let mut backoff = Backoff::new(Duration::from_millis(self.config.reconnect_max_ms));
        let mut first = true;
        loop {
            if !first {
                self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            first = false;
            let err = self.session(&mut backoff).await;
            self.stats.connected.store(false, Ordering::Relaxed);
            let wait = backoff.delay();
            tracing::warn!(source = %name, url = %redact(&self.config.url), error = %err,
                retry_in_ms = wait.as_millis() as u64, "postgres: source disconnected");
            tokio::time::sleep(wait).await;
        }
    }

    /// One connection, from connecting to its first error.
    async fn session(&self, backoff: &mut Backoff) -> SessionError {
        let (client, connection) = match connect_config(&self.config.url) {
            Ok(pg) => match pg.connect(tokio_postgres::NoTls).await {
                Ok(pair) => pair,
                Err(e) => return e.into(),
            },
            Err(e) => return e.into(),
        };
        let (tx, rx) = mpsc::channel(self.config.queue);
        let wake = Arc::new(Notify::new());
        let driver = drive(
            connection,
            tx,
            wake.clone(),
            self.config.notify.clone(),
            self.stats.clone(),
        );
        tokio::pin!(driver);
        let setup = async {
            for channel in self.config.listen.iter().chain(&self.config.notify) {
                client
                    .batch_execute(&format!("LISTEN {}", quote_ident(channel)))
                    .await?;
            }
            match &self.config.outbox {
                Some(table) => Outbox::open(&client, &self.config, table).await.map(Some),
                None => Ok(None),
            }
        };
        let outbox = tokio::select! {
            r = setup => match r {
                Ok(outbox) => outbox,
                Err(e) => return e,
            },
            e = &mut driver => return e,
        };
        self.stats.connected.store(true, Ordering::Relaxed);
        backoff.reset();
        tracing::info!(source = %self.config.name, listen = ?self.config.listen,
            outbox = ?self.config.outbox, "postgres: source connected");
        let reader = async {
            match outbox {
                Some(mut outbox) => outbox.run(&client, &self.app, &self.stats, &wake).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            e = &mut driver => e,
            e = reader => e,
            () = relay(&self.app, &self.config.name, rx, &self.stats) => SessionError::Closed,
        }
    }
}

/// How long a connection attempt may take, unless the URL says (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle time before TCP keep-alive probes, unless the URL says (`keepalives_idle`): a
/// connection to a server that vanished is noticed in about a minute, not two hours.
const KEEPALIVES_IDLE: Duration = Duration::from_secs(30);

/// The client settings of `url`, with Holdfast's defaults where the URL sets nothing.
fn connect_config(url: &str) -> Result<tokio_postgres::Config, tokio_postgres::Error> {
    let mut pg: tokio_postgres::Config = url.parse()?;
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(CONNECT_TIMEOUT);
    }
    if !url.contains("keepalives_idle") {
        pg.keepalives_idle(KEEPALIVES_IDLE);
    }
    Ok(pg)
}

/// `name` as a quoted SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Reads the connection's messages until it ends: notifications on `listen` channels into
/// `tx`, on the `notify` channel into `wake`.
async fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    tx: mpsc::Sender<(String, String)>,
    wake: Arc<Notify>,
    notify: Option<String>,
    stats: Arc<Stats>,
) -> SessionError
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    while let Some(message) = messages.next().await {
        match message {
            Ok(AsyncMessage::Notification(n)) if notify.as_deref() == Some(n.channel()) => {
                wake.notify_one();
            }
            Ok(AsyncMessage::Notification(n)) => {
                Stats::add(&stats.notifications, 1);
                if tx
                    .send((n.channel().to_string(), n.payload().to_string()))
                    .await
                    .is_err()
                {
                    return SessionError::Closed;
                }
            }
            Ok(AsyncMessage::Notice(notice)) => {
                tracing::debug!(notice = %notice, "postgres: server notice");
            }
            Ok(_) => {}
            Err(e) => return e.into(),
        }
    }
    SessionError::Closed
}

/// Items handed to the bus in one publish.
const BATCH: usize = 100;

/// Publishes the notifications of `rx`, batching what is waiting; a payload that is not a
/// publish item is logged and counted.
async fn relay(app: &App, source: &str, mut rx: mpsc::Receiver<(String, String)>, stats: &Stats) {
    while let Some(first) = rx.recv().await {
        let mut items = Vec::new();
        let mut next = Some(first);
        while let Some((channel, payload)) = next.take() {
            match parse_payload(&payload) {
                Ok(item) => items.push(item),
                Err(e) => {
                    Stats::add(&stats.rejected, 1);
                    tracing::warn!(source, channel, error = %e,
                        "postgres: notification is not a publish item, skipped");
                }
            }
            if items.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        if items.is_empty() {
            continue;
        }
        let count = items.len();
        app.traffic.received(crate::metrics::Input::Postgres, count);
        if let Err(e) = app.bus.publish(items).await {
            Stats::add(&stats.unpublished, count as u64);
            tracing::warn!(source, error = %e, items = count,
                "postgres: publish refused, notification items lost");
        }
    }
}

/// A notification payload as a publish item.
fn parse_payload(payload: &str) -> Result<PublishItem, String> {
    let value: serde_json::Value =
        serde_json::from_str(payload).map_err(|e| format!("payload is not JSON: {e}"))?;
    grip::publish::parse_publish_item(&value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_publish_items_and_errors_say_what_is_wrong() {
        let item = parse_payload(
            r#"{"channel":"c","id":"2","prev-id":"1","formats":{"http-stream":{"content":"x"}}}"#,
        )
        .unwrap();
        assert_eq!(
            (item.channel.as_str(), item.id.as_deref()),
            ("c", Some("2"))
        );
        assert!(parse_payload("hello").unwrap_err().contains("not JSON"));
        assert!(parse_payload(r#"{"formats":{}}"#)
            .unwrap_err()
            .contains("channel"));
    }

    #[test]
    fn the_url_decides_timeouts_else_holdfast_does() {
        let pg = connect_config("postgres://h/db").unwrap();
        assert_eq!(pg.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        assert_eq!(pg.get_keepalives_idle(), KEEPALIVES_IDLE);
        let pg = connect_config("postgres://h/db?connect_timeout=3&keepalives_idle=7").unwrap();
        assert_eq!(pg.get_connect_timeout(), Some(&Duration::from_secs(3)));
        assert_eq!(pg.get_keepalives_idle(), Duration::from_secs(7));
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("scores"), "\"scores\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
