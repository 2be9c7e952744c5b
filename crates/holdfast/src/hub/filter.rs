//! Running a subscription's filters over a delivery: the one place held HTTP sessions and
//! WebSockets decide whether a subscriber gets an item, and with what content.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::Delivery;

/// What a subscription's filters read besides the item itself.
pub struct FilterScope<'a> {
    /// The subscription's filters on the item's channel, in order.
    pub filters: &'a [String],
    /// Subscription meta (`Grip-Set-Meta`, or a WebSocket's `set-meta`).
    pub sub_meta: &'a BTreeMap<String, String>,
    /// The session's last id per channel, by the origin's channel names; built only when a
    /// filter runs.
    pub positions: &'a dyn Fn() -> BTreeMap<String, String>,
    /// Whether the subscription is on a channel (by the origin's name).
    pub subscribed: &'a dyn Fn(&str) -> bool,
}

/// Runs the subscription's filters and the item's `content_filters` over `content`: `None` when
/// this subscriber does not get it (a filter said so, or failed); the content itself (shared,
/// not copied) when no filter rewrote it.
pub fn filter_delivery(
    item: &Delivery,
    content: &Bytes,
    content_filters: Option<&[String]>,
    scope: FilterScope<'_>,
) -> Option<Bytes> {
    if scope.filters.is_empty() && content_filters.is_none_or(|c| c.is_empty()) {
        return Some(content.clone());
    }
    let positions = (scope.positions)();
    let input = grip::filter::Input {
        sub_meta: scope.sub_meta,
        pub_meta: &item.meta,
        positions: &positions,
        subscribed: scope.subscribed,
    };
    match grip::filter::apply(scope.filters, &input, content_filters, content) {
        Ok(outcome) => outcome.into_shared(content),
        Err(e) => {
            tracing::debug!(channel = %item.channel, error = %e, "filter failed, not delivered");
            None
        }
    }
}
