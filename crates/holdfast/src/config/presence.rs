//! `[presence]`: channel state events (a channel gained its first subscriber, or lost its last),
//! subscriber counts, and per-connection presence on the channels that opt in. Off by default,
//! so the hub's paths cost nothing for it. See docs/presence.md.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// `[presence]`: channel state events, counts and members (docs/presence.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// Track channels: POST and stream `channel-occupied`/`channel-vacated` events, answer
    /// `/presence/…` on the publish listener. Default false.
    pub enabled: bool,
    /// Milliseconds a channel stays occupied after its last subscriber left: a client that
    /// comes back within it (a long-poll re-polling, a page reload) causes no event. In cluster
    /// mode each instance applies it to its own subscribers. Default 1000.
    pub linger_ms: u64,
    /// Where events are POSTed. A path (default `/_holdfast/presence`) is taken on the origin
    /// of the route the channel's first subscriber came through (its first target, `https`
    /// with `ssl`); an `http://` or `https://` URL gets every event. Empty: no POSTs, only the
    /// event stream.
    pub url: String,
    /// Key the `Grip-Sig` header of event POSTs is signed with, in `grip.sig_key`'s forms.
    /// Unset: `grip.sig_key`, which the origin already checks.
    pub sign_key: Option<String>,
    /// The `iss` of that token. Unset: `grip.sig_iss`.
    pub sign_iss: Option<String>,
    /// Seconds an event POST may take before it counts as failed (it is not retried).
    /// Default 5.
    pub post_timeout_secs: u64,
    /// Events waiting to be POSTed; when full, a new event is not POSTed and is counted
    /// (`holdfast_presence_posts_total{result="dropped"}`). Default 1024.
    pub post_queue: usize,
    /// Events one `GET /presence/events` listener may fall behind by; a listener further
    /// behind gets a last `event: dropped` and its stream ends. Default 1024.
    pub listener_queue: usize,
    /// `GET /presence/events` streams served at once; one more gets `503`. Default 16.
    pub max_listeners: usize,
    /// Channel name prefixes whose WebSocket subscribers with a `user` meta value are members:
    /// `member-connect` and `member-disconnect` events, and a member list in
    /// `GET /presence/channels/{channel}`. `""` opts every channel in. Default: none.
    pub member_channels: Vec<String>,
    /// Cluster mode: seconds after its last heartbeat (one a second) that an instance's counts
    /// and members expire, and its channels are vacated by another instance. Default 15.
    pub instance_ttl_secs: u64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            linger_ms: 1000,
            url: "/_holdfast/presence".to_string(),
            sign_key: None,
            sign_iss: None,
            post_timeout_secs: 5,
            post_queue: 1024,
            listener_queue: 1024,
            max_listeners: 16,
            member_channels: Vec::new(),
            instance_ttl_secs: 15,
        }
    }
}

impl PresenceConfig {
    /// Whether WebSocket subscribers of `channel` are members (per-connection presence).
    pub fn is_member_channel(&self, channel: &str) -> bool {
        self.member_channels
            .iter()
            .any(|prefix| channel.starts_with(prefix.as_str()))
    }

    /// Resolves a relative `file:` key against the config file's folder.
    pub(super) fn resolve_paths(&mut self, dir: &Path) {
        if let Some(key) = &self.sign_key {
            self.sign_key = Some(super::keys::resolve(key, dir));
        }
    }

    /// The first problem, with its field.
    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        if !self.url.is_empty() && !self.url.starts_with('/') {
            let parsed = url::Url::parse(&self.url)
                .map_err(|e| ("presence.url", format!("{:?}: {e}", self.url)))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err((
                    "presence.url",
                    format!(
                        "{:?}: expected a path (/…) on the route's origin, or an http:// or https:// URL",
                        self.url
                    ),
                ));
            }
        }
        if let Some(key) = &self.sign_key {
            super::keys::signer(key).map_err(|e| ("presence.sign_key", e))?;
        }
        for (field, n) in [
            ("presence.post_timeout_secs", self.post_timeout_secs),
            ("presence.post_queue", self.post_queue as u64),
            ("presence.listener_queue", self.listener_queue as u64),
            ("presence.instance_ttl_secs", self.instance_ttl_secs),
        ] {
            if n == 0 {
                return Err((field, "must be at least 1".to_string()));
            }
        }
        if self.instance_ttl_secs < 3 {
            return Err((
                "presence.instance_ttl_secs",
                format!(
                    "{}: must be at least 3, so that one late heartbeat (one a second) does not expire a live instance",
                    self.instance_ttl_secs
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_name_the_field() {
        let check = |text: &str| toml::from_str::<PresenceConfig>(text).unwrap().check();
        assert!(check("enabled = true").is_ok());
        assert!(check(r#"url = "https://backend.example/presence""#).is_ok());
        assert!(check(r#"url = """#).is_ok());
        let (field, e) = check(r#"url = "ftp://x/y""#).unwrap_err();
        assert_eq!(field, "presence.url");
        assert!(e.contains("ftp://x/y"), "{e}");
        let (field, _) = check(r#"url = "backend/presence""#).unwrap_err();
        assert_eq!(field, "presence.url");
        let (field, _) = check("post_queue = 0").unwrap_err();
        assert_eq!(field, "presence.post_queue");
        let (field, _) = check("instance_ttl_secs = 2").unwrap_err();
        assert_eq!(field, "presence.instance_ttl_secs");
        let (field, e) = check(r#"sign_key = "file:/nonexistent/key""#).unwrap_err();
        assert_eq!(field, "presence.sign_key");
        assert!(e.contains("/nonexistent/key"), "{e}");
    }

    #[test]
    fn member_channels_are_prefixes() {
        let c: PresenceConfig = toml::from_str(r#"member_channels = ["room-"]"#).unwrap();
        assert!(c.is_member_channel("room-1"));
        assert!(!c.is_member_channel("feed"));
        let all: PresenceConfig = toml::from_str(r#"member_channels = [""]"#).unwrap();
        assert!(all.is_member_channel("feed"));
    }
}
