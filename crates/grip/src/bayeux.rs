//! Bayeux channel names (the Bayeux 1.0 protocol that Faye and CometD speak).
//!
//! A channel name is `/segment(/segment)*`, each segment one or more of `A-Z a-z 0-9` and
//! `- _ ! ~ ( ) $ @` (Faye's grammar). A pattern ends in `/*` (one more segment) or `/**`
//! (one or more segments): `/foo/*` matches `/foo/bar`, `/foo/**` matches `/foo/bar` and
//! `/foo/bar/baz`, `/**` matches every channel. `/meta/…` channels are the protocol's own;
//! `/service/…` channels are for messages to the server, never delivered to subscribers.
//!
//! ```
//! use grip::bayeux;
//! assert!(bayeux::is_channel("/chat/room-1"));
//! assert!(bayeux::is_pattern("/chat/*"));
//! assert_eq!(
//!     bayeux::patterns_matching("/a/b"),
//!     vec!["/a/*", "/a/**", "/**"],
//! );
//! ```

fn is_segment(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_!~()$@".contains(&b))
}

/// Whether `name` is a channel name (no wildcard).
pub fn is_channel(name: &str) -> bool {
    match name.strip_prefix('/') {
        Some(rest) => rest.split('/').all(is_segment),
        None => false,
    }
}

/// Whether `name` is a pattern: a channel name, or nothing, followed by `/*` or `/**`.
pub fn is_pattern(name: &str) -> bool {
    let base = name.strip_suffix("/**").or_else(|| name.strip_suffix("/*"));
    match base {
        Some("") => true,
        Some(base) => is_channel(base),
        None => false,
    }
}

/// Whether `name` is a `/meta/…` channel (or pattern).
pub fn is_meta(name: &str) -> bool {
    name == "/meta" || name.starts_with("/meta/")
}

/// Whether `name` is a `/service/…` channel (or pattern).
pub fn is_service(name: &str) -> bool {
    name == "/service" || name.starts_with("/service/")
}

/// The patterns that match the channel `name`, most specific first: for `/a/b/c`, `/a/b/*`,
/// `/a/b/**`, `/a/**`, `/**`. Empty when `name` is not a channel name.
pub fn patterns_matching(name: &str) -> Vec<String> {
    if !is_channel(name) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let parent = &name[..name.rfind('/').unwrap_or(0)];
    out.push(format!("{parent}/*"));
    let mut base = parent;
    loop {
        out.push(format!("{base}/**"));
        if base.is_empty() {
            break;
        }
        base = &base[..base.rfind('/').unwrap_or(0)];
    }
    out
}

/// Whether the pattern (or channel) `pattern` matches the channel `name`.
pub fn matches(pattern: &str, name: &str) -> bool {
    pattern == name || patterns_matching(name).iter().any(|p| p == pattern)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["/a", "/foo/bar", "/a-b/c_d/!~()$@/X9"] {
            assert!(is_channel(ok), "{ok}");
            assert!(!is_pattern(ok), "{ok}");
        }
        for bad in ["", "/", "a", "/a/", "//a", "/a b", "/a/*", "/a.b", "/é"] {
            assert!(!is_channel(bad), "{bad}");
        }
        for ok in ["/*", "/**", "/a/*", "/a/b/**"] {
            assert!(is_pattern(ok), "{ok}");
        }
        for bad in ["*", "/a*", "/*/a", "/a/***", "/a//*", "/a"] {
            assert!(!is_pattern(bad), "{bad}");
        }
        assert!(is_meta("/meta/connect") && !is_meta("/metal"));
        assert!(is_service("/service/x") && !is_service("/services"));
    }

    #[test]
    fn wildcards() {
        assert_eq!(patterns_matching("/a"), vec!["/*", "/**"]);
        assert_eq!(
            patterns_matching("/a/b/c"),
            vec!["/a/b/*", "/a/b/**", "/a/**", "/**"]
        );
        assert!(patterns_matching("/a/*").is_empty());
        assert!(matches("/a/*", "/a/b"));
        assert!(!matches("/a/*", "/a/b/c"));
        assert!(matches("/a/**", "/a/b/c"));
        assert!(!matches("/a/**", "/a"));
        assert!(matches("/a/b", "/a/b"));
    }
}
