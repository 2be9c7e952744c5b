//! Where registrations are kept: the file `webhooks.store`, or Redis in cluster mode.
//!
//! The registrations file (`webhooks.store`): `{"webhooks": [{"id", "channel", "url",
//! "created"}]}`, rewritten whole on every change to a temporary file beside it that is then
//! renamed over it, so a crash leaves the old file or the new one, never half of one.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One registration as the file keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Saved {
    pub id: String,
    pub channel: String,
    pub url: String,
    pub created: u64,
}

#[derive(Serialize, Deserialize)]
struct File {
    webhooks: Vec<Saved>,
}

/// The store file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing failed.
    #[error("webhooks.store {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        error: std::io::Error,
    },
    /// Redis (cluster mode) could not be reached or answered an error.
    #[error("webhook registrations in Redis {0}")]
    Redis(String),
    /// The file is not a registrations file.
    #[error("webhooks.store {path}: not a webhook registrations file: {error}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What the JSON parser said.
        error: serde_json::Error,
    },
}

/// The registrations in `path`; none when the file does not exist yet.
pub(super) fn load(path: &Path) -> Result<Vec<Saved>, StoreError> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                error,
            })
        }
    };
    let file: File = serde_json::from_slice(&text).map_err(|error| StoreError::Invalid {
        path: path.to_path_buf(),
        error,
    })?;
    Ok(file.webhooks)
}

/// Writes `saved` to `path` through a temporary file and a rename.
pub(super) fn save(path: &Path, saved: &[Saved]) -> Result<(), StoreError> {
    let io = |error| StoreError::Io {
        path: path.to_path_buf(),
        error,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let body = serde_json::to_vec_pretty(&File {
        webhooks: saved.to_vec(),
    })
    .expect("registrations serialize");
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    file.write_all(&body).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Registrations in cluster mode: the hash `<prefix>webhooks` (id → the registration as JSON)
/// on the first `cluster.redis` server, and a counter `<prefix>webhooks:version` that every
/// change increments, so that instances reread the hash only when it changed.
pub(super) struct RedisStore {
    client: redis::Client,
    addr: String,
    key: String,
    version_key: String,
    /// `cluster.connect_timeout_secs` and `cluster.command_timeout_secs`.
    connect_timeout: std::time::Duration,
    command_timeout: std::time::Duration,
    conn: std::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
}

impl RedisStore {
    pub(super) fn new(
        client: redis::Client,
        addr: String,
        cluster: &crate::config::ClusterConfig,
    ) -> RedisStore {
        let prefix = &cluster.prefix;
        RedisStore {
            client,
            addr,
            key: format!("{prefix}webhooks"),
            version_key: format!("{prefix}webhooks:version"),
            connect_timeout: cluster.connect_timeout(),
            command_timeout: cluster.command_timeout(),
            conn: std::sync::Mutex::default(),
        }
    }

    fn fail(&self, e: redis::RedisError) -> StoreError {
        // A broken connection is made again on the next call.
        *self.conn.lock().expect("webhook redis poisoned") = None;
        StoreError::Redis(format!("{}: {e}", self.addr))
    }

    async fn conn(&self) -> Result<redis::aio::MultiplexedConnection, StoreError> {
        if let Some(conn) = self.conn.lock().expect("webhook redis poisoned").clone() {
            return Ok(conn);
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.fail(e))?;
        *self.conn.lock().expect("webhook redis poisoned") = Some(conn.clone());
        Ok(conn)
    }

    pub(super) async fn add(&self, saved: &Saved) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let json = serde_json::to_string(saved).expect("a registration serializes");
        redis::pipe()
            .atomic()
            .hset(&self.key, &saved.id, json)
            .ignore()
            .incr(&self.version_key, 1)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.fail(e))
    }

    /// Removes `id`; `false` when no instance had registered it.
    pub(super) async fn remove(&self, id: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let (removed,): (u64,) = redis::pipe()
            .atomic()
            .hdel(&self.key, id)
            .incr(&self.version_key, 1)
            .ignore()
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(removed > 0)
    }

    /// The change counter now.
    pub(super) async fn version(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn().await?;
        redis::cmd("GET")
            .arg(&self.version_key)
            .query_async::<Option<u64>>(&mut conn)
            .await
            .map(Option::unwrap_or_default)
            .map_err(|e| self.fail(e))
    }

    /// Every registration; an entry that does not read is logged and left out.
    pub(super) async fn load(&self) -> Result<Vec<Saved>, StoreError> {
        let mut conn = self.conn().await?;
        let all: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&self.key)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(all
            .into_iter()
            .filter_map(|(id, json)| match serde_json::from_str::<Saved>(&json) {
                Ok(saved) => Some(saved),
                Err(e) => {
                    tracing::warn!(%id, key = %self.key, error = %e, "webhook registration in Redis unreadable, skipped");
                    None
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_and_names_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hooks.json");
        assert!(load(&path).unwrap().is_empty());
        let one = Saved {
            id: "a1".into(),
            channel: "news".into(),
            url: "https://example.com/hook".into(),
            created: 7,
        };
        save(&path, std::slice::from_ref(&one)).unwrap();
        let back = load(&path).unwrap();
        assert_eq!(
            (back[0].id.as_str(), back[0].url.as_str()),
            ("a1", "https://example.com/hook")
        );
        std::fs::write(&path, "{\"hooks\": []}").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "webhooks.store {}: not a webhook registrations file: missing field `webhooks`",
                path.display()
            )),
            "{err}"
        );
    }
}
