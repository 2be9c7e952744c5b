//! `cluster.redis` URLs: checked when the configuration is validated, and shown in messages
//! with their password hidden.

/// Checks one `cluster.redis` URL: a scheme and options the cluster bus can use. Errors show the URL with its password hidden.
pub fn check(url: &str) -> Result<(), String> {
    let shown = redact(url);
    let parsed = url::Url::parse(url).map_err(|e| format!("{shown:?} is not a URL: {e}"))?;
    match parsed.scheme() {
        "redis" | "valkey" | "unix" | "redis+unix" | "valkey+unix" => {}
        "rediss" | "valkeys" => {
            return Err(format!(
                "{shown:?}: TLS to Redis is not supported; use redis:// (through a TLS tunnel if the network needs one)"
            ))
        }
        other => {
            return Err(format!(
                "{shown:?}: unknown scheme {other:?} (expected redis:// or unix://)"
            ))
        }
    }
    if let Some((_, v)) = parsed.query_pairs().find(|(k, _)| k == "protocol") {
        if !matches!(v.to_ascii_lowercase().as_str(), "2" | "resp2") {
            return Err(format!(
                "{shown:?}: protocol={v} is not supported; Holdfast speaks RESP2 to Redis"
            ));
        }
    }
    ::redis::Client::open(url)
        .map(|_| ())
        .map_err(|e| format!("{shown:?}: {e}"))
}

/// The URL with its password replaced by `***`.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_passwords_hidden() {
        let cases = [
            ("redis://127.0.0.1:6379", None),
            ("redis://:secret@host:6379/2", None),
            ("unix:///run/redis.sock", None),
            ("rediss://:secret@host", Some("TLS")),
            ("http://host", Some("unknown scheme")),
            ("redis://host?protocol=resp3", Some("RESP2")),
            ("not a url", Some("is not a URL")),
        ];
        for (url, want) in cases {
            match (check(url), want) {
                (Ok(()), None) => {}
                (Err(e), Some(w)) => {
                    assert!(e.contains(w), "{url}: {e}");
                    assert!(!e.contains("secret"), "{url}: {e}");
                }
                (got, _) => panic!("{url}: {got:?}"),
            }
        }
        assert_eq!(redact("redis://u:pw@h:1/0"), "redis://u:***@h:1/0");
    }
}
