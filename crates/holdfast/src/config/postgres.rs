//! `[postgres]`: PostgreSQL as a publish source (docs/postgres.md). Each `[[postgres.sources]]`
//! is one database connection that turns `NOTIFY` payloads on its `listen` channels, rows of its
//! `outbox` table, or both, into publishes.

use std::str::FromStr as _;

use serde::{Deserialize, Serialize};

/// `[postgres]`: the PostgreSQL publish sources.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// The sources, each with its own connection. Empty (default): no PostgreSQL source.
    pub sources: Vec<PostgresSource>,
}

/// One `[[postgres.sources]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresSource {
    /// The source's name: its row in the position table, its Redis lease and its metrics label.
    /// Unique among the sources. Required.
    pub name: String,
    /// `postgres://user:password@host:port/database`. TLS is not supported: `sslmode=require`
    /// is refused. Required.
    pub url: String,
    /// Channels to `LISTEN` on; each notification's payload is one publish item as JSON, as in
    /// the publish API's `items`. Default none.
    pub listen: Vec<String>,
    /// The outbox table (`table` or `schema.table`), with columns `id bigint`, `tx xid8` and
    /// `item jsonb`. Default unset: no outbox.
    pub outbox: Option<String>,
    /// A channel to `LISTEN` on as the outbox's wake-up: a notification on it reads the outbox
    /// at once instead of at the next poll. Default unset.
    pub notify: Option<String>,
    /// Where each source's outbox position is kept (created if missing). Default
    /// `holdfast_outbox_position`.
    pub position_table: String,
    /// Rows read, published and acknowledged at a time. Default 500.
    pub batch_size: usize,
    /// Milliseconds between reads of the outbox when nothing wakes it. Default 1000.
    pub poll_interval_ms: u64,
    /// Notifications of `listen` waiting for the bus; when full, the source stops reading from
    /// its connection (PostgreSQL keeps the notifications queued). Default 1024.
    pub queue: usize,
    /// The longest wait between reconnection attempts, in milliseconds (the wait starts at
    /// 250 ms and doubles). Default 5000.
    pub reconnect_max_ms: u64,
    /// In cluster mode: milliseconds the Redis lease that makes one instance the source's
    /// consumer lasts; it is renewed every third of it. Default 10000.
    pub lease_ms: u64,
}

impl Default for PostgresSource {
    fn default() -> Self {
        Self {
            name: String::new(),
            url: String::new(),
            listen: Vec::new(),
            outbox: None,
            notify: None,
            position_table: "holdfast_outbox_position".to_string(),
            batch_size: 500,
            poll_interval_ms: 1000,
            queue: 1024,
            reconnect_max_ms: 5000,
            lease_ms: 10_000,
        }
    }
}

/// Whether `name` is a plain lower-case SQL identifier, or two joined by a dot
/// (`schema.table`), which Holdfast then quotes itself. Lower case only: PostgreSQL folds
/// unquoted names to lower case, so `Outbox` in SQL is the table `outbox`.
fn is_table_name(name: &str) -> bool {
    let ident = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    match name.split_once('.') {
        Some((schema, table)) => ident(schema) && ident(table),
        None => ident(name),
    }
}

/// `name` as a quoted SQL identifier (`"schema"."table"`); `name` passed [`is_table_name`].
pub fn quote_table(name: &str) -> String {
    name.split('.')
        .map(|part| format!("\"{part}\""))
        .collect::<Vec<_>>()
        .join(".")
}

/// A URL with its password (in the user part or the `password` parameter) hidden.
pub fn redact(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return url.to_string();
    };
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    if u.query_pairs().any(|(k, _)| k == "password") {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "password" { "***".into() } else { v };
                (k.into_owned(), v.into_owned())
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

impl PostgresConfig {
    /// The first problem, with the field it is in.
    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        for (i, s) in self.sources.iter().enumerate() {
            let which = |what: &str| format!("source {:?}: {what}", s.name);
            if s.name.is_empty() {
                return Err((
                    "postgres.name",
                    format!("source {}: a name is needed", i + 1),
                ));
            }
            if self.sources[..i].iter().any(|o| o.name == s.name) {
                return Err(("postgres.name", which("the name is used twice")));
            }
            check_url(&s.url).map_err(|e| ("postgres.url", which(&e)))?;
            if s.listen.is_empty() && s.outbox.is_none() {
                return Err((
                    "postgres.listen",
                    which("needs `listen` channels, an `outbox` table, or both"),
                ));
            }
            for channel in s.listen.iter().chain(&s.notify) {
                if channel.is_empty() || channel.len() > 63 {
                    return Err((
                        "postgres.listen",
                        which(&format!(
                            "{channel:?} is not a channel name (1 to 63 bytes)"
                        )),
                    ));
                }
            }
            if s.notify.as_ref().is_some_and(|n| s.listen.contains(n)) {
                return Err((
                    "postgres.notify",
                    which("is also in `listen`: a wake-up channel carries no items"),
                ));
            }
            if s.notify.is_some() && s.outbox.is_none() {
                return Err(("postgres.notify", which("is set but there is no `outbox`")));
            }
            for (field, table) in [
                ("postgres.outbox", s.outbox.as_deref()),
                ("postgres.position_table", Some(s.position_table.as_str())),
            ] {
                if let Some(t) = table.filter(|t| !is_table_name(t)) {
                    return Err((
                        field,
                        which(&format!(
                            "{t:?} is not a table name (lower-case letters, digits and '_', optionally `schema.table`)"
                        )),
                    ));
                }
            }
            let counts = [
                ("postgres.batch_size", s.batch_size as u64),
                ("postgres.poll_interval_ms", s.poll_interval_ms),
                ("postgres.queue", s.queue as u64),
                ("postgres.reconnect_max_ms", s.reconnect_max_ms),
                ("postgres.lease_ms", s.lease_ms),
            ];
            if let Some((field, _)) = counts.iter().find(|(_, n)| *n == 0) {
                return Err((field, which("must be at least 1")));
            }
            if s.lease_ms < 300 {
                return Err(("postgres.lease_ms", which("must be at least 300")));
            }
        }
        Ok(())
    }
}

/// Checks a connection URL: `postgres://` or `postgresql://`, readable by the client, and not
/// asking for TLS.
fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(format!(
            "{:?}: expected a postgres:// or postgresql:// URL",
            redact(url)
        ));
    }
    let config =
        tokio_postgres::Config::from_str(url).map_err(|e| format!("{:?}: {e}", redact(url)))?;
    if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
        return Err(format!(
            "{:?}: sslmode=require is not supported (Holdfast connects without TLS)",
            redact(url)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<(), (&'static str, String)> {
        let c: PostgresConfig = toml::from_str(text).unwrap();
        c.check()
    }

    #[test]
    fn checks_name_the_field_and_the_source() {
        let ok =
            "[[sources]]\nname = \"a\"\nurl = \"postgres://u@127.0.0.1/db\"\nlisten = [\"c\"]\n";
        assert!(check(ok).is_ok());
        let cases = [
            (
                "url = \"postgres://h/db\"\nlisten = [\"c\"]",
                "postgres.name",
                "a name is needed",
            ),
            (
                "name = \"a\"\nurl = \"http://h/db\"\nlisten = [\"c\"]",
                "postgres.url",
                "postgres://",
            ),
            (
                "name = \"a\"\nurl = \"postgres://h/db?sslmode=require\"\nlisten = [\"c\"]",
                "postgres.url",
                "sslmode=require",
            ),
            (
                "name = \"a\"\nurl = \"postgres://h/db\"",
                "postgres.listen",
                "needs `listen`",
            ),
            (
                "name = \"a\"\nurl = \"postgres://h/db\"\noutbox = \"x; drop table y\"",
                "postgres.outbox",
                "not a table name",
            ),
            (
                "name = \"a\"\nurl = \"postgres://h/db\"\nlisten = [\"c\"]\nnotify = \"n\"",
                "postgres.notify",
                "no `outbox`",
            ),
            (
                "name = \"a\"\nurl = \"postgres://h/db\"\noutbox = \"o\"\nbatch_size = 0",
                "postgres.batch_size",
                "at least 1",
            ),
        ];
        for (body, field, message) in cases {
            let (f, e) = check(&format!("[[sources]]\n{body}\n")).unwrap_err();
            assert_eq!(f, field, "{body}");
            assert!(e.contains(message), "{body}: {e}");
        }
        let twice = format!("{ok}{ok}");
        assert!(check(&twice).unwrap_err().1.contains("used twice"));
    }

    #[test]
    fn table_names_are_plain_identifiers_and_quoted() {
        assert!(is_table_name("outbox"));
        assert!(is_table_name("app.outbox_2"));
        for bad in ["", "1x", "a.b.c", "a-b", "o\"", "a b", "Outbox"] {
            assert!(!is_table_name(bad), "{bad}");
        }
        assert_eq!(quote_table("app.outbox"), "\"app\".\"outbox\"");
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert!(!redact("postgres://u@h/db?password=secret&x=1").contains("secret"));
    }
}
