//! The effective configuration as TOML, for `--check-config`: every field, defaults included,
//! with secrets hidden.
//!
//! Secrets are shown as `"<redacted>"`: inline keys (`grip.sig_key` other than Pushpin's public
//! default `changeme`, `grip.upstream_key`, `publish.jwt_key`, `webhooks.sig_key`,
//! `presence.sign_key`), static tokens, Basic passwords, and Redis and PostgreSQL passwords. A
//! `file:` key shows its path, which is not secret. The output is for
//! reading; a redacted key would not work if the output were loaded as a configuration.

use super::{redis_url, Config, DEFAULT_SIG_KEY};

/// What a hidden secret is printed as.
pub const REDACTED: &str = "<redacted>";

impl Config {
    /// Every field of the configuration as TOML, secrets replaced by [`REDACTED`]. Unset
    /// optional fields (`server.routes`, `tls.cert`, …) are left out.
    pub fn to_effective_toml(&self) -> Result<String, String> {
        let mut shown = self.clone();
        shown.grip.sig_key = redact_key(&self.grip.sig_key);
        shown.grip.upstream_key = self.grip.upstream_key.as_deref().map(redact_key);
        if !self.webhooks.sig_key.is_empty() {
            shown.webhooks.sig_key = redact_key(&self.webhooks.sig_key);
        }
        shown.presence.sign_key = self.presence.sign_key.as_deref().map(redact_key);
        shown.publish.jwt_key = self.publish.jwt_key.iter().map(|k| redact_key(k)).collect();
        shown.publish.token = vec![REDACTED.to_string(); self.publish.token.len()];
        shown.publish.basic = (self.publish.basic.iter())
            .map(|pair| match pair.split_once(':') {
                Some((user, _)) => format!("{user}:{REDACTED}"),
                None => REDACTED.to_string(),
            })
            .collect();
        shown.cluster.redis = self
            .cluster
            .redis
            .iter()
            .map(|u| redis_url::redact(u))
            .collect();
        for source in &mut shown.postgres.sources {
            source.url = super::postgres::redact(&source.url);
        }
        toml::to_string_pretty(&shown).map_err(|e| e.to_string())
    }
}

/// A key in `sig_key`'s forms with its secret hidden: a `file:` path and Pushpin's default
/// `changeme` are shown as they are.
fn redact_key(key: &str) -> String {
    if key.starts_with("file:") || key == DEFAULT_SIG_KEY {
        key.to_string()
    } else {
        REDACTED.to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn every_section_is_printed_and_secrets_are_not() {
        let text = "\
[grip]
sig_key = \"s3cret-key\"
upstream_key = \"file:/keys/up.pem\"
[publish]
token = [\"t0ken\"]
basic = [\"alice:pa55\"]
jwt_key = [\"jwt-s3cret\", \"file:/keys/pub.pem\"]
[cluster]
redis = [\"redis://:redispa55@127.0.0.1:6379\"]
[webhooks]
sig_key = \"hook-s3cret\"
[presence]
sign_key = \"presence-s3cret\"
[[postgres.sources]]
name = \"app\"
url = \"postgres://app:pgsecret@127.0.0.1/app?password=pgsecret2\"
listen = [\"c\"]
";
        let config = Config::parse(text, Path::new("c.toml")).unwrap();
        let out = config.to_effective_toml().unwrap();
        for secret in [
            "s3cret-key",
            "hook-s3cret",
            "t0ken",
            "pa55",
            "jwt-s3cret",
            "redispa55",
            "presence-s3cret",
            "pgsecret",
        ] {
            assert!(!out.contains(secret), "{secret} shown:\n{out}");
        }
        let back: toml::Value = toml::from_str(&out).unwrap();
        for section in [
            "server",
            "limits",
            "timeouts",
            "forwarding",
            "grip",
            "websocket",
            "reliability",
            "cluster",
            "publish",
            "tls",
            "presence",
            "postgres",
            "log",
            "outbound",
            "webhooks",
        ] {
            assert!(back.get(section).is_some(), "[{section}] missing:\n{out}");
        }
        assert_eq!(back["grip"]["sig_key"].as_str(), Some(REDACTED));
        assert_eq!(
            back["grip"]["upstream_key"].as_str(),
            Some("file:/keys/up.pem")
        );
        assert_eq!(
            back["publish"]["basic"][0].as_str(),
            Some("alice:<redacted>")
        );
        assert_eq!(
            back["publish"]["jwt_key"][1].as_str(),
            Some("file:/keys/pub.pem")
        );
        assert_eq!(back["limits"]["max_connections"].as_integer(), Some(50_000));
        assert_eq!(
            back["server"]["listen"][0].as_str(),
            Some("0.0.0.0:7999"),
            "{out}"
        );

        // Pushpin's public default key is shown, so that it can be noticed.
        let default = Config::parse("", Path::new("c.toml")).unwrap();
        let out = default.to_effective_toml().unwrap();
        assert!(out.contains("sig_key = \"changeme\""), "{out}");
    }
}
