//! A held session's channels and its position on each: which items it gets, which it already
//! has, and when it must ask the origin again ([`Positions::judge`]); and the filters it runs.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use grip::channel::{check_channel_name, ChannelNameError};
use grip::instruct::Instruction;
use grip::publish::Action;
use http::header::{HeaderMap, HeaderValue};

use crate::app::App;
use crate::config::routes::Route;
use crate::hub::{filter_delivery, Delivery, FilterScope, Resume, Subscription};

/// One channel of a session: its hub name, the name the origin used, and the session's position.
#[derive(Debug, Clone)]
pub struct ChannelPos {
    /// Name in the hub (route prefix applied).
    pub name: String,
    /// Name as the origin gave it (for `Grip-Last`).
    pub origin_name: String,
    /// Id of the last item the session has, if known.
    pub position: Option<String>,
    /// Filters of this subscription, in order.
    pub filters: Vec<String>,
}

/// A session's channels, its position on each, and its subscription meta.
#[derive(Debug, Clone, Default)]
pub struct Positions {
    /// Channels in subscription order.
    pub channels: Vec<ChannelPos>,
    /// Subscription meta (`Grip-Set-Meta`), read by filters.
    pub meta: BTreeMap<String, String>,
}

/// What to do with an item that reached a session.
pub enum Verdict {
    /// Deliver these items, in order (a gap filled from history, then the item).
    Deliver(Vec<Delivery>),
    /// The session already has it.
    Skip,
    /// Ask the origin: a hint, or a gap history cannot fill.
    Update,
}

/// Why the channels an instruction asks for cannot be held.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelsError {
    /// More distinct channels than `limits.max_channels_per_connection`. The whole instruction
    /// is refused: holding some of them would leave publishes to the others undelivered.
    #[error(
        "{count} channels for one connection (the instruction's and the target's sub= channels), \
         over limits.max_channels_per_connection ({max})"
    )]
    TooMany {
        /// Distinct channels asked for.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A name that is too long once the route's `prefix=` is added, or a bad `sub=` name.
    #[error("{0} (with the route's prefix=, as the hub and publishers see it)")]
    Name(#[from] ChannelNameError),
}

impl Positions {
    /// The channels of an instruction plus the target's implicit `sub=` channels, prefixed and
    /// without duplicates; refused when there are more than
    /// `limits.max_channels_per_connection` or a prefixed name is too long.
    pub fn new(
        app: &App,
        route: &Route,
        subs: &[String],
        ins: &Instruction,
    ) -> Result<Positions, ChannelsError> {
        let prefix = &route.options.channel_prefix;
        let max = app.config.limits.max_channels_per_connection;
        let mut out = Positions {
            meta: ins.meta.clone(),
            ..Positions::default()
        };
        let explicit = ins
            .channels
            .iter()
            .map(|c| (&c.name, c.prev_id.clone(), c.filters.clone()));
        let implicit = subs.iter().map(|s| (s, None, Vec::new()));
        let mut seen = HashSet::new();
        for (origin_name, prev, filters) in explicit.chain(implicit) {
            let name = format!("{prefix}{origin_name}");
            if !seen.insert(name.clone()) {
                continue;
            }
            check_channel_name(&name)?;
            out.channels.push(ChannelPos {
                name,
                origin_name: origin_name.clone(),
                position: prev,
                filters,
            });
        }
        if out.channels.len() > max {
            return Err(ChannelsError::TooMany {
                count: out.channels.len(),
                max,
            });
        }
        // Kept for the life of the hold: no room for channels that will never come (a push to
        // an empty `Vec` makes room for four).
        out.channels.shrink_to_fit();
        Ok(out)
    }

    /// What to subscribe to, with each channel's position.
    pub fn requests(&self) -> Vec<(String, Option<String>)> {
        self.channels
            .iter()
            .map(|c| (c.name.clone(), c.position.clone()))
            .collect()
    }

    /// Whether this session passes every item through as it comes: no channel has a position
    /// (so none can be stale or already had) or a filter.
    pub fn is_plain(&self) -> bool {
        (self.channels.iter()).all(|c| c.position.is_none() && c.filters.is_empty())
    }

    /// Adds `Grip-Last: <channel>; last-id=<id>` for every channel with a position.
    pub fn grip_last(&self, headers: &mut HeaderMap) {
        headers.remove("grip-last");
        for c in &self.channels {
            let Some(id) = &c.position else { continue };
            if let Ok(v) = HeaderValue::from_str(&format!("{}; last-id={id}", c.origin_name)) {
                headers.append("grip-last", v);
            }
        }
    }

    /// Reads the result of subscribing: items to replay, and the channels (with positions) that
    /// are behind with nothing in local history to catch up from.
    pub fn resume(&self, resumes: Vec<Resume>) -> (Vec<Delivery>, Vec<(String, String)>) {
        let mut replay = Vec::new();
        let mut stale = Vec::new();
        for (c, r) in self.channels.iter().zip(resumes) {
            match r {
                Resume::Live => {}
                // Positions advance as the replayed items are judged and delivered.
                Resume::Replay(items) => replay.extend(items),
                Resume::Stale { last_id } => {
                    tracing::debug!(channel = %c.name, position = ?c.position, ?last_id, "session may be behind its channel");
                    if let Some(pos) = &c.position {
                        stale.push((c.name.clone(), pos.clone()));
                    }
                }
            }
        }
        (replay, stale)
    }

    /// Decides what an item means for this session, and advances the position when delivered.
    pub fn judge(&mut self, sub: &Subscription, item: &Delivery) -> Verdict {
        let hint = item
            .formats
            .http_response
            .as_ref()
            .map(|f| f.action)
            .or(item.formats.http_stream.as_ref().map(|f| f.action))
            == Some(Action::Hint);
        if hint {
            return Verdict::Update;
        }
        let Some(c) = self.channels.iter_mut().find(|c| c.name == item.channel) else {
            return Verdict::Deliver(vec![item.clone()]);
        };
        if item.id.is_some() && item.id == c.position {
            // Already delivered (replayed from history, then heard live).
            return Verdict::Skip;
        }
        let verdict = match (&c.position, &item.prev_id, &item.id) {
            (Some(pos), Some(prev), _) if prev != pos && !item.no_seq => {
                if item
                    .id
                    .as_deref()
                    .is_some_and(|id| sub.is_covered(&c.name, id, pos))
                {
                    return Verdict::Skip;
                }
                match sub.history_between(&c.name, pos, item.id.as_deref()) {
                    Some(items) if items.last().is_some_and(|l| l.id == item.id) => {
                        Verdict::Deliver(items)
                    }
                    _ => return Verdict::Update,
                }
            }
            _ => Verdict::Deliver(vec![item.clone()]),
        };
        if let Some(id) = &item.id {
            c.position = Some(id.clone());
        }
        verdict
    }

    /// Takes the positions the origin gave in a new instruction; channels it names keep theirs
    /// when it gives none.
    pub fn update_from(&mut self, next: Positions) {
        self.meta.extend(next.meta);
        let old = std::mem::take(&mut self.channels);
        self.channels = next
            .channels
            .into_iter()
            .map(|mut c| {
                if c.position.is_none() {
                    c.position = old
                        .iter()
                        .find(|o| o.name == c.name)
                        .and_then(|o| o.position.clone());
                }
                c
            })
            .collect();
    }
}

impl Positions {
    fn filter_input<'a>(
        &'a self,
        pub_meta: &'a BTreeMap<String, String>,
        positions: &'a BTreeMap<String, String>,
        subscribed: &'a dyn Fn(&str) -> bool,
    ) -> grip::filter::Input<'a> {
        grip::filter::Input {
            sub_meta: &self.meta,
            pub_meta,
            positions,
            subscribed,
        }
    }

    fn position_map(&self) -> BTreeMap<String, String> {
        self.channels
            .iter()
            .filter_map(|c| Some((c.origin_name.clone(), c.position.clone()?)))
            .collect()
    }

    /// Runs the filters of `item`'s channel over `content`: `None` when this subscription does
    /// not get it; the content itself (shared, not copied) when no filter rewrote it.
    pub fn filter(
        &self,
        item: &Delivery,
        content: &Bytes,
        content_filters: Option<&[String]>,
    ) -> Option<Bytes> {
        let filters = self
            .channels
            .iter()
            .find(|c| c.name == item.channel)
            .map_or(&[][..], |c| c.filters.as_slice());
        let subscribed = |name: &str| {
            self.channels
                .iter()
                .any(|c| c.origin_name == name || c.name == name)
        };
        let scope = FilterScope {
            filters,
            sub_meta: &self.meta,
            positions: &|| self.position_map(),
            subscribed: &subscribed,
        };
        filter_delivery(item, content, content_filters, scope)
    }

    /// Applies `build-id` to a body that is not a delivery (the initial body, a next-link
    /// body), when any channel has that filter.
    pub fn build_id_body(&self, body: Bytes) -> Bytes {
        if !self
            .channels
            .iter()
            .any(|c| c.filters.iter().any(|f| f == "build-id"))
        {
            return body;
        }
        let positions = self.position_map();
        let empty = BTreeMap::new();
        let subscribed = |_: &str| true;
        let input = self.filter_input(&empty, &positions, &subscribed);
        match grip::filter::build_id(&input, &body) {
            Ok(v) => Bytes::from(v),
            Err(e) => {
                tracing::debug!(error = %e, "build-id could not render the body; sent as is");
                body
            }
        }
    }
}
