//! The outbox: a table of publish items, read in order from a position kept in the database.
//!
//! The table has `id bigint`, `tx xid8` (the inserting transaction, `DEFAULT
//! pg_current_xact_id()`) and `item jsonb`. Rows are read in `(tx, id)` order, and only rows of
//! transactions older than every transaction still running (`pg_snapshot_xmin`): a row whose
//! transaction is still open, or began before one that is, is not read yet, so a transaction
//! that commits late cannot slip in behind the position. The position, `(tx, id)` of the last
//! row acknowledged, is a row of the position table per source.
//!
//! Each batch is published and then acknowledged: the position moves past it only once the bus
//! accepted its items. A crash between the two publishes the batch again after the restart (at
//! least once into the bus; the items keep their ids, so held clients skip what they have). The
//! position moves with a compare-and-set on the old position; if another consumer moved it,
//! the session ends and the source starts again from the stored position.
//!
//! An item without an `id` gets the row's `id`, and the `id` of the channel's previous row as
//! its `prev-id`, so clients resume across restarts; an item with an `id` keeps its own `id`
//! and `prev-id`. A row that is not a publish item is logged with its id, counted and skipped.

use std::sync::atomic::Ordering;
use std::time::Duration;

use grip::publish::PublishItem;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_postgres::{Client, Statement};

use super::source::SessionError;
use super::Stats;
use crate::app::App;
use crate::config::postgres::{quote_table, PostgresSource};

/// A source's outbox, on one connection.
pub(super) struct Outbox {
    name: String,
    read: Statement,
    advance: Statement,
    /// `(tx, id)` of the last row acknowledged; tx as text (xid8 has no client type).
    position: (String, i64),
    batch_size: usize,
    poll: Duration,
}

impl Outbox {
    /// Prepares the statements, makes the position table if it is missing, and reads the
    /// position (the table's start for a source with none yet).
    pub async fn open(
        client: &Client,
        config: &PostgresSource,
        table: &str,
    ) -> Result<Outbox, SessionError> {
        let positions = quote_table(&config.position_table);
        let exists: Option<String> = client
            .query_one(
                "SELECT to_regclass($1)::text",
                &[&config.position_table.as_str()],
            )
            .await?
            .get(0);
        if exists.is_none() {
            client
                .batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {positions} \
                     (source text PRIMARY KEY, last_tx xid8 NOT NULL, last_id bigint NOT NULL)"
                ))
                .await?;
        }
        client
            .execute(
                &format!(
                    "INSERT INTO {positions} (source, last_tx, last_id) \
                     VALUES ($1, '0'::xid8, 0) ON CONFLICT (source) DO NOTHING"
                ),
                &[&config.name],
            )
            .await?;
        let row = client
            .query_one(
                &format!("SELECT last_tx::text, last_id FROM {positions} WHERE source = $1"),
                &[&config.name],
            )
            .await?;
        let outbox = quote_table(table);
        let read = client
            .prepare(&format!(
                "SELECT o.id, o.tx::text, o.item::text, \
                   (SELECT p.id FROM {outbox} p \
                     WHERE p.item->>'channel' = o.item->>'channel' AND (p.tx, p.id) < (o.tx, o.id) \
                     ORDER BY p.tx DESC, p.id DESC LIMIT 1) \
                 FROM {outbox} o \
                 WHERE (o.tx, o.id) > ($1::text::xid8, $2) \
                   AND o.tx < pg_snapshot_xmin(pg_current_snapshot()) \
                 ORDER BY o.tx, o.id LIMIT $3"
            ))
            .await?;
        let advance = client
            .prepare(&format!(
                "UPDATE {positions} SET last_tx = $2::text::xid8, last_id = $3 \
                 WHERE source = $1 AND last_tx = $4::text::xid8 AND last_id = $5"
            ))
            .await?;
        Ok(Outbox {
            name: config.name.clone(),
            read,
            advance,
            position: (row.get(0), row.get(1)),
            batch_size: config.batch_size,
            poll: Duration::from_millis(config.poll_interval_ms),
        })
    }

    /// Reads, publishes and acknowledges batches until an error.
    pub async fn run(
        &mut self,
        client: &Client,
        app: &App,
        stats: &Stats,
        wake: &Notify,
    ) -> SessionError {
        stats.position.store(self.position.1, Ordering::Relaxed);
        loop {
            let full = match self.batch(client, app, stats).await {
                Ok(full) => full,
                Err(e) => return e,
            };
            if !full {
                // A wake-up that came while the batch was read is kept by `Notify`, so a row
                // committed meanwhile is read at once.
                let _ = tokio::time::timeout(self.poll, wake.notified()).await;
            }
        }
    }

    /// One batch: true when it was full (more rows may be waiting).
    async fn batch(
        &mut self,
        client: &Client,
        app: &App,
        stats: &Stats,
    ) -> Result<bool, SessionError> {
        let limit = self.batch_size as i64;
        let rows = client
            .query(&self.read, &[&self.position.0, &self.position.1, &limit])
            .await?;
        Stats::add(&stats.reads, 1);
        let Some(last) = rows.last() else {
            return Ok(false);
        };
        let next: (String, i64) = (last.get(1), last.get(0));
        Stats::add(&stats.rows, rows.len() as u64);
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = row.get(0);
            let text: Option<String> = row.get(2);
            let prev: Option<i64> = row.get(3);
            match parse_row(id, text.as_deref(), prev) {
                Ok(item) => items.push(item),
                Err(e) => {
                    Stats::add(&stats.rejected, 1);
                    tracing::warn!(source = %self.name, row = id, error = %e,
                        "postgres: outbox row is not a publish item, skipped");
                }
            }
        }
        if !items.is_empty() {
            let count = items.len();
            app.traffic.received(crate::metrics::Input::Postgres, count);
            if let Err(e) = app.bus.publish(items).await {
                // Not acknowledged: the same rows are read again after the poll interval.
                tracing::warn!(source = %self.name, error = %e, rows = count,
                    "postgres: publish refused, the outbox will be read again");
                return Ok(false);
            }
        }
        let moved = client
            .execute(
                &self.advance,
                &[
                    &self.name,
                    &next.0,
                    &next.1,
                    &self.position.0,
                    &self.position.1,
                ],
            )
            .await?;
        if moved != 1 {
            return Err(SessionError::PositionMoved);
        }
        self.position = next;
        stats.position.store(self.position.1, Ordering::Relaxed);
        Ok(rows.len() == self.batch_size)
    }
}

/// A row as a publish item: the row's id and its channel's previous row's id become `id` and
/// `prev-id` when the item has no `id` of its own.
fn parse_row(id: i64, item: Option<&str>, prev: Option<i64>) -> Result<PublishItem, String> {
    let text = item.ok_or("item is NULL")?;
    let mut value: Value =
        serde_json::from_str(text).map_err(|e| format!("item is not JSON: {e}"))?;
    if let Value::Object(fields) = &mut value {
        if !fields.contains_key("id") {
            fields.insert("id".into(), Value::String(id.to_string()));
            match prev {
                Some(prev) => fields.insert("prev-id".into(), Value::String(prev.to_string())),
                None => fields.remove("prev-id"),
            };
        }
    }
    grip::publish::parse_publish_item(&value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = r#""formats":{"http-stream":{"content":"x"}}"#;

    #[test]
    fn rows_get_the_row_ids_unless_they_have_their_own() {
        let item = parse_row(7, Some(&format!(r#"{{"channel":"c",{STREAM}}}"#)), Some(5)).unwrap();
        assert_eq!(
            (item.id.as_deref(), item.prev_id.as_deref()),
            (Some("7"), Some("5"))
        );
        let first = parse_row(7, Some(&format!(r#"{{"channel":"c",{STREAM}}}"#)), None).unwrap();
        assert_eq!((first.id.as_deref(), first.prev_id), (Some("7"), None));
        let own = parse_row(
            7,
            Some(&format!(
                r#"{{"channel":"c","id":"a2","prev-id":"a1",{STREAM}}}"#
            )),
            Some(5),
        )
        .unwrap();
        assert_eq!(
            (own.id.as_deref(), own.prev_id.as_deref()),
            (Some("a2"), Some("a1"))
        );
    }

    #[test]
    fn a_bad_row_says_what_is_wrong() {
        assert_eq!(parse_row(1, None, None).unwrap_err(), "item is NULL");
        assert!(parse_row(1, Some("[1]"), None)
            .unwrap_err()
            .contains("object"));
        assert!(parse_row(1, Some(r#"{"channel":"c"}"#), None).is_err());
    }
}
