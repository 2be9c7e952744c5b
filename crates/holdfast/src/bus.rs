//! How publishes reach subscribers: straight into this process's hub, or — in cluster mode —
//! through a shared engine to every instance that has subscribers on the channel.
//!
//! The publish API hands every accepted item to [`Bus::publish`]; nothing else publishes. In
//! local mode that is [`Hub::publish`]. A cluster bus must deliver each item exactly once to every
//! instance's hub (the publishing instance included), in publish order per channel, and fail the
//! publish — so the API answers 503 — rather than drop it silently.

use grip::publish::PublishItem;

use crate::hub::{Delivery, Hub};

/// Why a publish could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The cluster engine cannot be reached; nothing was published.
    #[error("cluster bus unavailable: {0}")]
    Unavailable(String),
}

impl BusError {
    /// True when retrying later may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, BusError::Unavailable(_))
    }
}

/// The publish path.
pub enum Bus {
    /// One process: items go straight into the hub.
    Local(Hub),
}

impl Bus {
    /// A bus that delivers into `hub` only.
    pub fn local(hub: Hub) -> Bus {
        Bus::Local(hub)
    }

    /// Publishes items in order; returns how many local subscribers received them now (in
    /// cluster mode, deliveries happen as the items come back from the engine, and 0 is
    /// returned).
    pub async fn publish(&self, items: Vec<PublishItem>) -> Result<usize, BusError> {
        match self {
            Bus::Local(hub) => Ok(items
                .into_iter()
                .map(|item| {
                    let channel = item.channel.clone();
                    let receivers = hub.publish(item);
                    tracing::info!(%channel, receivers, "publish");
                    receivers
                })
                .sum()),
        }
    }

    /// Items published on `channel` after the one with id `after`, from history shared across
    /// instances; `None` when there is no such history (local mode: the hub's own history was
    /// already consulted) or it no longer has `after`.
    pub async fn history_after(&self, channel: &str, after: &str) -> Option<Vec<Delivery>> {
        match self {
            Bus::Local(_) => {
                let _ = (channel, after);
                None
            }
        }
    }
}
