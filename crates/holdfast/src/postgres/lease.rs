//! The Redis lease that makes one instance of a cluster the consumer of a source.
//!
//! The lease is the key `<cluster.prefix>postgres-lease:<source>` on the first `cluster.redis`
//! server, set with `SET NX PX lease_ms` to a token of this instance. The holder renews it every
//! third of `lease_ms` (only while the key still holds its token); an instance that could not
//! renew for two thirds of `lease_ms` takes the lease as lost and stops consuming, before the
//! key expires and another instance may take it. Instances without the lease try to take it
//! every third of `lease_ms`. Outside cluster mode there is no lease: the instance consumes.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::time::Instant;

use crate::config::{redis_url, Config};

/// Renews the lease only while it is still ours.
const RENEW: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
    return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
/// Gives the lease up only while it is still ours.
const RELEASE: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
    return redis.call('del', KEYS[1]) else return 0 end";

/// A source's lease in Redis.
pub(super) struct Lease {
    client: redis::Client,
    key: String,
    token: String,
    ttl: Duration,
}

impl Lease {
    /// The lease of source `name`, in cluster mode; `None` outside it.
    pub fn for_source(config: &Config, name: &str, lease_ms: u64) -> Option<Lease> {
        let url = config.cluster.redis.first()?;
        let ca = config.cluster.redis_ca().expect("config was validated");
        let client = redis_url::client(url, ca.as_deref()).expect("config was validated");
        Some(Lease {
            client,
            key: format!("{}postgres-lease:{name}", config.cluster.prefix),
            token: format!(
                "holdfast_{}_{:016x}",
                std::process::id(),
                rand::random::<u64>()
            ),
            ttl: Duration::from_millis(lease_ms),
        })
    }

    fn every(&self) -> Duration {
        self.ttl / 3
    }

    async fn connect(&self) -> redis::RedisResult<MultiplexedConnection> {
        let timeout = Duration::from_millis(1000).min(self.every());
        match tokio::time::timeout(timeout, self.client.get_multiplexed_async_connection()).await {
            Ok(r) => r,
            Err(_) => Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "connection timed out",
            ))),
        }
    }

    /// Waits until this instance holds the lease.
    pub async fn acquire(&self) -> Held<'_> {
        loop {
            match self.try_acquire().await {
                Ok(Some(conn)) => {
                    tracing::info!(key = %self.key, "postgres: lease taken, consuming");
                    return Held {
                        lease: self,
                        conn: Some(conn),
                        last_ok: Instant::now(),
                    };
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(key = %self.key, error = %e, "postgres: lease not taken"),
            }
            tokio::time::sleep(self.every()).await;
        }
    }

    async fn try_acquire(&self) -> redis::RedisResult<Option<MultiplexedConnection>> {
        let mut conn = self.connect().await?;
        let set: Option<String> = redis::cmd("SET")
            .arg(&self.key)
            .arg(&self.token)
            .arg("NX")
            .arg("PX")
            .arg(self.ttl.as_millis() as u64)
            .query_async(&mut conn)
            .await?;
        Ok(set.map(|_| conn))
    }
}

/// The lease, held.
pub(super) struct Held<'a> {
    lease: &'a Lease,
    conn: Option<MultiplexedConnection>,
    last_ok: Instant,
}

impl Held<'_> {
    /// Renews the lease until it is lost: taken by another instance, or not renewed for two
    /// thirds of its length.
    pub async fn lost(&mut self) {
        let lease = self.lease;
        loop {
            tokio::time::sleep(lease.every()).await;
            match self.renew().await {
                Ok(true) => self.last_ok = Instant::now(),
                Ok(false) => {
                    tracing::warn!(key = %lease.key, "postgres: lease taken by another instance, no longer consuming");
                    return;
                }
                Err(e) => {
                    self.conn = None;
                    if self.last_ok.elapsed() >= lease.ttl * 2 / 3 {
                        tracing::warn!(key = %lease.key, error = %e, "postgres: lease could not be renewed, no longer consuming");
                        return;
                    }
                    tracing::debug!(key = %lease.key, error = %e, "postgres: lease renewal failed");
                }
            }
        }
    }

    async fn renew(&mut self) -> redis::RedisResult<bool> {
        let lease = self.lease;
        let conn = match &mut self.conn {
            Some(c) => c,
            None => self.conn.insert(lease.connect().await?),
        };
        let renewed: i64 = redis::cmd("EVAL")
            .arg(RENEW)
            .arg(1)
            .arg(&lease.key)
            .arg(&lease.token)
            .arg(lease.ttl.as_millis() as u64)
            .query_async(conn)
            .await?;
        Ok(renewed == 1)
    }

    /// Gives the lease up, so another instance need not wait for it to expire; gives up itself
    /// after a second (the lease then expires as it would).
    pub async fn release(mut self) {
        let lease = self.lease;
        if let Some(conn) = &mut self.conn {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(RELEASE).arg(1).arg(&lease.key).arg(&lease.token);
            let release = cmd.query_async::<i64>(conn);
            match tokio::time::timeout(Duration::from_secs(1), release).await {
                Ok(Ok(_)) => tracing::info!(key = %lease.key, "postgres: lease given up"),
                Ok(Err(e)) => {
                    tracing::debug!(key = %lease.key, error = %e, "postgres: lease not released")
                }
                Err(_) => tracing::debug!(key = %lease.key, "postgres: lease release timed out"),
            }
        }
    }
}
