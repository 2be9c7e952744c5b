//! The REP command socket (reference §4.5): one tnetstring request, one tnetstring reply.
//!
//! A request is `{id?, method, args?}`; the reply echoes `id` and has `success` and either
//! `value` or `condition`, as Pushpin's (captured from Pushpin 1.36):
//!
//! | method | args | value, or condition |
//! |---|---|---|
//! | `publish` | `items`: publish items | null; `bad-request` with the parser's message as `value` |
//! | `recover` | — | null |
//! | `refresh` | `cid` or `channel` | null; `item-not-found` for an unknown WebSocket id; `bad-request` |
//! | `conncheck` | `ids`: connection ids | the ids that are open here; `bad-request` |
//! | `get-zmq-uris` | — | `{command, publish-pull, publish-sub}` of the configured sockets |
//! | anything else | | `method-not-found` |
//!
//! Where Pushpin answers nothing (a request that is not a tnetstring dictionary), Holdfast
//! answers `bad-request` with the reason, so a REQ client is not left waiting. A publish
//! the bus cannot take (cluster mode, Redis unreachable) is `service-unavailable`.
//! `refresh` by `channel` goes through the bus like a publish of a `ws-message` `refresh`
//! action, so in cluster mode it reaches every instance; by `cid` it acts on this instance's
//! connection only.

use std::sync::Arc;

use bytes::Bytes;
use grip::publish::{Action, Formats, MessageType, PublishItem, WsMessageFormat};
use grip::tnetstring::{self, Value};
use zeromq::{SocketRecv as _, SocketSend as _};

use super::{Counters, Uris};
use crate::app::App;
use crate::conns::ConnKind;

/// A refused request: Pushpin's condition and, when there is one, the reason.
struct Refusal {
    condition: &'static str,
    reason: Option<String>,
}

fn bad_request(reason: impl Into<String>) -> Refusal {
    Refusal {
        condition: "bad-request",
        reason: Some(reason.into()),
    }
}

/// What the command socket answers from.
pub(super) struct Commands {
    app: Arc<App>,
    uris: Uris,
    counters: Arc<Counters>,
}

impl Commands {
    pub fn new(app: Arc<App>, uris: Uris, counters: Arc<Counters>) -> Commands {
        Commands {
            app,
            uris,
            counters,
        }
    }

    /// Answers requests until the task is stopped.
    pub async fn run(self, mut socket: zeromq::RepSocket) {
        loop {
            let request = match socket.recv().await {
                Ok(msg) => msg.into_vec(),
                Err(e) => {
                    tracing::debug!(error = %e, "zmq: command peer error");
                    continue;
                }
            };
            let reply = match request.as_slice() {
                [one] => self.answer(one).await,
                parts => {
                    let r =
                        bad_request(format!("a request must have one part, not {}", parts.len()));
                    self.reply(None, Err(r))
                }
            };
            if let Err(e) = socket.send(Bytes::from(reply).into()).await {
                tracing::debug!(error = %e, "zmq: command reply not sent");
            }
        }
    }

    /// The reply to one request.
    pub async fn answer(&self, request: &[u8]) -> Vec<u8> {
        let request = match tnetstring::parse(request) {
            Ok(v @ Value::Map(_)) => v,
            Ok(other) => {
                let r = bad_request(format!(
                    "the request is a {}, not a dictionary",
                    other.type_name()
                ));
                return self.reply(None, Err(r));
            }
            Err(e) => return self.reply(None, Err(bad_request(e.to_string()))),
        };
        let id = request.get("id").cloned();
        let Some(method) = request.get("method").and_then(Value::as_str) else {
            return self.reply(id, Err(bad_request("the request has no 'method'")));
        };
        let args = request.get("args");
        let result = match method {
            "publish" => self.publish(args).await,
            "recover" => {
                let sessions = self.app.hub.recover();
                tracing::info!(
                    sessions,
                    "zmq: recover: every channel's last id forgotten, sessions updating"
                );
                Ok(Value::Null)
            }
            "refresh" => self.refresh(args).await,
            "conncheck" => self.conncheck(args),
            "get-zmq-uris" => Ok(self.zmq_uris()),
            _ => Err(Refusal {
                condition: "method-not-found",
                reason: None,
            }),
        };
        if let Err(r) = &result {
            tracing::info!(
                method,
                condition = r.condition,
                reason = r.reason.as_deref().unwrap_or(""),
                "zmq: command refused"
            );
        }
        self.reply(id, result)
    }

    fn reply(&self, id: Option<Value>, result: Result<Value, Refusal>) -> Vec<u8> {
        Counters::add(&self.counters.commands);
        let mut pairs = Vec::new();
        if let Some(id) = id {
            pairs.push(("id", id));
        }
        match result {
            Ok(value) => {
                pairs.push(("success", Value::Bool(true)));
                pairs.push(("value", value));
            }
            Err(r) => {
                Counters::add(&self.counters.commands_failed);
                pairs.push(("success", Value::Bool(false)));
                pairs.push(("condition", Value::str(r.condition)));
                if let Some(reason) = r.reason {
                    pairs.push(("value", Value::str(&reason)));
                }
            }
        }
        Value::map(pairs).to_bytes()
    }

    async fn publish(&self, args: Option<&Value>) -> Result<Value, Refusal> {
        let items = match args.and_then(|a| a.get("items")) {
            Some(Value::List(items)) => items,
            Some(_) => return Err(bad_request("Invalid format: 'items' is not a list")),
            None => {
                return Err(bad_request(
                    "Invalid format: object does not contain 'items'",
                ))
            }
        };
        let max = self.app.config.publish.max_items;
        if items.len() > max {
            return Err(bad_request(format!(
                "request has {} items, over publish.max_items ({max})",
                items.len()
            )));
        }
        let items = items
            .iter()
            .map(grip::publish::parse_tnet_item)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad_request(e.to_string()))?;
        self.app
            .traffic
            .received(crate::metrics::Input::Zmq, items.len());
        self.app.publish(items).await.map_err(|e| Refusal {
            condition: "service-unavailable",
            reason: Some(e.to_string()),
        })?;
        Ok(Value::Null)
    }

    async fn refresh(&self, args: Option<&Value>) -> Result<Value, Refusal> {
        let args = args.ok_or_else(|| bad_request("refresh needs 'cid' or 'channel'"))?;
        if let Some(cid) = args.get("cid") {
            let cid = cid
                .as_str()
                .ok_or_else(|| bad_request("'cid' is not a text string"))?;
            return match self.app.conns.get(cid) {
                Some(conn) if conn.kind == ConnKind::Ws => {
                    if let Some(signal) = &conn.refresh {
                        signal.notify_one();
                    }
                    Ok(Value::Null)
                }
                _ => Err(Refusal {
                    condition: "item-not-found",
                    reason: None,
                }),
            };
        }
        let Some(channel) = args.get("channel") else {
            return Err(bad_request("refresh needs 'cid' or 'channel'"));
        };
        let channel = channel
            .as_str()
            .ok_or_else(|| bad_request("'channel' is not a text string"))?;
        grip::channel::check_channel_name(channel).map_err(|e| bad_request(e.to_string()))?;
        let item = refresh_item(channel);
        self.app
            .bus
            .publish(vec![item])
            .await
            .map_err(|e| Refusal {
                condition: "service-unavailable",
                reason: Some(e.to_string()),
            })?;
        Ok(Value::Null)
    }

    fn conncheck(&self, args: Option<&Value>) -> Result<Value, Refusal> {
        let Some(Value::List(ids)) = args.and_then(|a| a.get("ids")) else {
            return Err(bad_request("conncheck needs 'ids', a list"));
        };
        let mut open = Vec::new();
        for id in ids {
            let id = id
                .as_str()
                .ok_or_else(|| bad_request("'ids' has an entry that is not a text string"))?;
            if self.app.conns.get(id).is_some() {
                open.push(Value::str(id));
            }
        }
        Ok(Value::List(open))
    }

    fn zmq_uris(&self) -> Value {
        let u = &self.uris;
        let pairs = [
            ("command", &u.command),
            ("publish-pull", &u.publish_pull),
            ("publish-sub", &u.publish_sub),
        ];
        Value::map(
            pairs
                .into_iter()
                .filter_map(|(k, v)| v.as_deref().map(|v| (k, Value::str(v)))),
        )
    }
}

/// A `ws-message` `refresh` for every WebSocket on `channel`.
fn refresh_item(channel: &str) -> PublishItem {
    PublishItem {
        channel: channel.to_string(),
        id: None,
        prev_id: None,
        formats: Formats {
            ws_message: Some(WsMessageFormat {
                action: Action::Refresh,
                message_type: MessageType::Text,
                content: Bytes::new(),
                close_code: None,
                close_reason: None,
                content_filters: None,
            }),
            ..Formats::default()
        },
        meta: Default::default(),
        size: None,
        no_seq: true,
    }
}
