//! Presence across instances, in the first Redis server of `cluster.redis`.
//!
//! Keys (with `cluster.prefix`, `holdfast:` by default):
//! - `presence:instances`, a sorted set: each instance id, scored by when it expires (its
//!   last heartbeat plus `presence.instance_ttl_secs`, in Unix ms from Redis's clock);
//! - `presence:inst:<id>`, a set: the keys that instance holds (`c:<channel>`, or
//!   `m:["<channel>","<user>"]` for a member);
//! - `presence:h:<key>`, a set: the instances holding a key; a key is present cluster-wide
//!   while it is not empty;
//! - `presence:info`, a hash: per present key, its channel, user and event URL, written by the
//!   instance that made it present and read by the one that makes it absent;
//! - `presence:live`, a set of the occupied channels; `presence:members:<channel>`, a set of
//!   its users; `presence:count:<channel>`, a hash of each instance's subscriber count;
//! - `presence:events`, the pubsub channel every event is published on.
//!
//! Each change is one Lua script (`EVAL`), so it is atomic: the instance whose script moved a key's
//! holders from none to one, or from one to none, is told so and emits the event; nobody else
//! does. The heartbeat script also vacates, once, the keys of every instance whose time is up.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use redis::aio::MultiplexedConnection;
use serde_json::{json, Value};

use super::{ChannelState, Key, PresenceError, Shared};
use crate::config::ClusterConfig;

/// Makes a key present for an instance. KEYS: holders, the instance's set, info, the index
/// set (live channels or the channel's members), the instances. ARGV: id, key, info, index
/// member. Returns 1 if it made the key present, 0 if it was already, -1 if the instance is
/// not registered (it expired).
const HOLD: &str = r"
if not redis.call('ZSCORE', KEYS[5], ARGV[1]) then return -1 end
redis.call('SADD', KEYS[2], ARGV[2])
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 and redis.call('SCARD', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
  redis.call('SADD', KEYS[4], ARGV[4])
  return 1
end
return 0
";

/// Makes a key absent for an instance. KEYS: holders, the instance's set, info, the index
/// set, the channel's count hash. ARGV: id, key, index member, `c` for a channel. Returns the
/// key's info if it made the key absent, else nil.
const RELEASE: &str = r"
redis.call('SREM', KEYS[2], ARGV[2])
if ARGV[4] == 'c' then redis.call('HDEL', KEYS[5], ARGV[1]) end
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 and redis.call('SCARD', KEYS[1]) == 0 then
  local info = redis.call('HGET', KEYS[3], ARGV[2]) or '{}'
  redis.call('HDEL', KEYS[3], ARGV[2])
  redis.call('SREM', KEYS[4], ARGV[3])
  return info
end
return false
";

/// Keeps an instance alive and vacates the keys of instances whose time is up. KEYS: the
/// instances. ARGV: id, ttl in ms, prefix. Returns whether the instance was registered (1/0),
/// then the info of every key it made absent.
const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local known = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local p = ARGV[3]
local out = { known and 1 or 0 }
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  local inst = p .. 'presence:inst:' .. id
  for _, key in ipairs(redis.call('SMEMBERS', inst)) do
    local holders = p .. 'presence:h:' .. key
    local raw = redis.call('HGET', p .. 'presence:info', key)
    local info = raw and cjson.decode(raw)
    if info and info.kind == 'c' then
      redis.call('HDEL', p .. 'presence:count:' .. info.channel, id)
    end
    if redis.call('SREM', holders, id) == 1 and redis.call('SCARD', holders) == 0 and info then
      redis.call('HDEL', p .. 'presence:info', key)
      if info.kind == 'c' then
        redis.call('SREM', p .. 'presence:live', info.channel)
      else
        redis.call('SREM', p .. 'presence:members:' .. info.channel, info.user)
      end
      table.insert(out, raw)
    end
  end
  redis.call('DEL', inst)
  redis.call('ZREM', KEYS[1], id)
end
return out
";

/// Whether a hold made the key present.
pub(super) enum Hold {
    /// It was absent cluster-wide; this instance emits the event.
    Made,
    /// Another instance held it already.
    Joined,
    /// This instance is not registered (it expired): everything must be written again.
    Forgotten,
}

/// What a heartbeat found.
pub(super) struct Heartbeat {
    /// The instance was registered before it (else it expired, or is new).
    pub known: bool,
    /// Keys of expired instances this heartbeat made absent, with their event URL.
    pub vacated: Vec<(Key, Option<String>)>,
}

/// Presence's side of Redis: the client, the key names, this instance's id and its command
/// connection while connected.
#[derive(Clone)]
pub(super) struct Cluster {
    client: redis::Client,
    prefix: String,
    id: String,
    ttl_ms: u64,
    /// `cluster.connect_timeout_secs`.
    connect_timeout: Duration,
    /// `cluster.command_timeout_secs`: how long any command may go unanswered.
    command_timeout: Duration,
    conn: Arc<Mutex<Option<MultiplexedConnection>>>,
}

impl Cluster {
    /// Presence in the Redis of `client`, with the key prefix and timeouts of `cluster`.
    pub fn new(
        client: redis::Client,
        cluster: &ClusterConfig,
        id: String,
        ttl_secs: u64,
    ) -> Cluster {
        Cluster {
            client,
            prefix: cluster.prefix.clone(),
            id,
            ttl_ms: ttl_secs * 1000,
            connect_timeout: cluster.connect_timeout(),
            command_timeout: cluster.command_timeout(),
            conn: Arc::default(),
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}presence:{name}", self.prefix)
    }

    fn connection(&self) -> redis::RedisResult<MultiplexedConnection> {
        self.conn
            .lock()
            .expect("presence connection poisoned")
            .clone()
            .ok_or_else(|| {
                redis::RedisError::from((redis::ErrorKind::Io, "presence: not connected to Redis"))
            })
    }

    /// Connects the command connection.
    pub async fn connect(&self) -> redis::RedisResult<()> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *self.conn.lock().expect("presence connection poisoned") = Some(conn);
        Ok(())
    }

    /// Drops the command connection (after a failure).
    pub fn disconnect(&self) {
        *self.conn.lock().expect("presence connection poisoned") = None;
    }

    /// Makes `key` present for this instance, its events going to `url`.
    pub async fn hold(&self, key: &Key, url: Option<&str>) -> redis::RedisResult<Hold> {
        let enc = encode(key);
        let (channel, user) = parts(key);
        let info = json!({
            "kind": if user.is_some() { "m" } else { "c" },
            "channel": channel,
            "user": user,
            "url": url,
        });
        let (index, member) = self.index(key);
        let made: i64 = redis::cmd("EVAL")
            .arg(HOLD)
            .arg(5)
            .arg(self.key(&format!("h:{enc}")))
            .arg(self.key(&format!("inst:{}", self.id)))
            .arg(self.key("info"))
            .arg(index)
            .arg(self.key("instances"))
            .arg(&self.id)
            .arg(&enc)
            .arg(info.to_string())
            .arg(member)
            .query_async(&mut self.connection()?)
            .await?;
        Ok(match made {
            1 => Hold::Made,
            -1 => Hold::Forgotten,
            _ => Hold::Joined,
        })
    }

    /// Makes `key` absent for this instance: `Some(url)` (where the event goes) when that made
    /// it absent cluster-wide.
    pub async fn release(&self, key: &Key) -> redis::RedisResult<Option<Option<String>>> {
        let enc = encode(key);
        let (channel, user) = parts(key);
        let (index, member) = self.index(key);
        let info: Option<String> = redis::cmd("EVAL")
            .arg(RELEASE)
            .arg(5)
            .arg(self.key(&format!("h:{enc}")))
            .arg(self.key(&format!("inst:{}", self.id)))
            .arg(self.key("info"))
            .arg(index)
            .arg(self.key(&format!("count:{channel}")))
            .arg(&self.id)
            .arg(&enc)
            .arg(member)
            .arg(if user.is_some() { "m" } else { "c" })
            .query_async(&mut self.connection()?)
            .await?;
        Ok(info.map(|raw| info_of(&raw).1))
    }

    /// Registers this instance (for `presence.instance_ttl_secs` more), writes `counts` and
    /// vacates expired instances' keys.
    pub async fn heartbeat(&self, counts: &[(String, u64)]) -> redis::RedisResult<Heartbeat> {
        let mut conn = self.connection()?;
        let out: Vec<redis::Value> = redis::cmd("EVAL")
            .arg(HEARTBEAT)
            .arg(1)
            .arg(self.key("instances"))
            .arg(&self.id)
            .arg(self.ttl_ms)
            .arg(&self.prefix)
            .query_async(&mut conn)
            .await?;
        if !counts.is_empty() {
            let mut pipe = redis::pipe();
            for (channel, n) in counts {
                pipe.hset(self.key(&format!("count:{channel}")), &self.id, n)
                    .ignore();
            }
            pipe.exec_async(&mut conn).await?;
        }
        let mut out = out.into_iter();
        let known = matches!(out.next(), Some(redis::Value::Int(1)));
        let vacated = out
            .filter_map(|v| redis::from_redis_value::<String>(v).ok())
            .filter_map(|raw| {
                let (key, url) = info_of(&raw);
                key.map(|k| (k, url))
            })
            .collect();
        Ok(Heartbeat { known, vacated })
    }

    /// The keys Redis holds for this instance.
    pub async fn registered(&self) -> redis::RedisResult<Vec<Key>> {
        let encs: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.key(&format!("inst:{}", self.id)))
            .query_async(&mut self.connection()?)
            .await?;
        Ok(encs.iter().filter_map(|e| decode(e)).collect())
    }

    /// Leaves the instance list (at shutdown, after releasing every key).
    pub async fn forget_instance(&self) -> redis::RedisResult<()> {
        let mut conn = self.connection()?;
        redis::pipe()
            .zrem(self.key("instances"), &self.id)
            .ignore()
            .del(self.key(&format!("inst:{}", self.id)))
            .ignore()
            .exec_async(&mut conn)
            .await
    }

    /// Publishes an event to every instance's listeners.
    pub async fn announce(&self, json: &str) -> redis::RedisResult<()> {
        redis::cmd("PUBLISH")
            .arg(self.key("events"))
            .arg(json)
            .exec_async(&mut self.connection()?)
            .await
    }

    /// The occupied channels with their summed counts, by name.
    pub async fn channels(&self) -> Result<Vec<(String, u64)>, PresenceError> {
        let mut conn = self.connection().map_err(unavailable)?;
        let mut names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.key("live"))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        names.sort();
        let mut pipe = redis::pipe();
        for c in &names {
            pipe.hvals(self.key(&format!("count:{c}")));
        }
        let counts: Vec<Vec<u64>> = if names.is_empty() {
            Vec::new()
        } else {
            pipe.query_async(&mut conn).await.map_err(unavailable)?
        };
        Ok(names
            .into_iter()
            .zip(counts)
            .map(|(c, n)| (c, n.iter().sum()))
            .collect())
    }

    /// One channel, cluster-wide.
    pub async fn channel(
        &self,
        channel: &str,
        member_channel: bool,
    ) -> Result<ChannelState, PresenceError> {
        let mut conn = self.connection().map_err(unavailable)?;
        let (occupied, counts, mut members): (bool, Vec<u64>, Vec<String>) = redis::pipe()
            .sismember(self.key("live"), channel)
            .hvals(self.key(&format!("count:{channel}")))
            .smembers(self.key(&format!("members:{channel}")))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        members.sort();
        Ok(ChannelState {
            occupied,
            subscribers: counts.iter().sum(),
            members: member_channel.then_some(members),
        })
    }

    /// The index set a key is listed in, and its entry there.
    fn index(&self, key: &Key) -> (String, String) {
        match key {
            Key::Channel(c) => (self.key("live"), c.clone()),
            Key::Member { channel, user } => {
                (self.key(&format!("members:{channel}")), user.clone())
            }
        }
    }
}

fn unavailable(e: redis::RedisError) -> PresenceError {
    PresenceError::Unavailable(e.to_string())
}

fn parts(key: &Key) -> (&str, Option<&str>) {
    match key {
        Key::Channel(c) => (c, None),
        Key::Member { channel, user } => (channel, Some(user)),
    }
}

/// A key as Redis names it: `c:<channel>`, or `m:["<channel>","<user>"]`.
fn encode(key: &Key) -> String {
    match key {
        Key::Channel(c) => format!("c:{c}"),
        Key::Member { channel, user } => format!("m:{}", json!([channel, user])),
    }
}

fn decode(enc: &str) -> Option<Key> {
    if let Some(c) = enc.strip_prefix("c:") {
        return Some(Key::Channel(c.to_string()));
    }
    let (channel, user): (String, String) = serde_json::from_str(enc.strip_prefix("m:")?).ok()?;
    Some(Key::Member { channel, user })
}

/// The key and event URL in a key's info.
fn info_of(raw: &str) -> (Option<Key>, Option<String>) {
    let Ok(info) = serde_json::from_str::<Value>(raw) else {
        return (None, None);
    };
    let url = info["url"].as_str().map(str::to_string);
    let channel = info["channel"].as_str().map(str::to_string);
    let key = match (info["kind"].as_str(), channel, info["user"].as_str()) {
        (Some("c"), Some(c), _) => Some(Key::Channel(c)),
        (Some("m"), Some(channel), Some(user)) => Some(Key::Member {
            channel,
            user: user.to_string(),
        }),
        _ => None,
    };
    (key, url)
}

/// Hands every event published on `presence:events` to this instance's listeners, connecting
/// again a second after any failure, until the task is aborted.
pub(super) async fn listen(shared: Arc<Shared>) {
    let cluster = shared.cluster.clone().expect("cluster mode");
    let channel = cluster.key("events");
    loop {
        match within(cluster.connect_timeout, cluster.client.get_async_pubsub()).await {
            Ok(mut pubsub) => {
                match within(cluster.command_timeout, pubsub.subscribe(&channel)).await {
                    Ok(()) => {
                        let mut messages = pubsub.on_message();
                        while let Some(msg) = messages.next().await {
                            if let Ok(json) = msg.get_payload::<String>() {
                                shared.broadcast(json.into());
                            }
                        }
                        tracing::debug!("presence: event subscription to Redis ended");
                    }
                    Err(e) => tracing::debug!(error = %e, "presence: cannot subscribe to events"),
                }
            }
            Err(e) => tracing::debug!(error = %e, "presence: cannot connect for events"),
        }
        let wait = super::tracker::HEARTBEAT;
        tokio::time::sleep(wait + crate::retry::jitter(wait / 2)).await;
    }
}

/// Runs a Redis call that has no timeout of its own with one.
async fn within<T>(
    limit: Duration,
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_encode_and_decode() {
        for key in [
            Key::Channel("a:b c".into()),
            Key::Member {
                channel: "room".into(),
                user: "u\"1".into(),
            },
        ] {
            assert_eq!(decode(&encode(&key)), Some(key));
        }
        assert_eq!(decode("x:what"), None);
    }

    #[test]
    fn info_gives_the_key_and_url() {
        let raw = r#"{"kind":"m","channel":"room","user":"ann","url":"http://o/p"}"#;
        let (key, url) = info_of(raw);
        assert_eq!(
            key,
            Some(Key::Member {
                channel: "room".into(),
                user: "ann".into()
            })
        );
        assert_eq!(url.as_deref(), Some("http://o/p"));
        assert_eq!(info_of("{}"), (None, None));
    }
}
