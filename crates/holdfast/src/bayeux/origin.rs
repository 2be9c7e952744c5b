//! Asking the route's origin about a Bayeux message: the handshake, each subscribe and each
//! publish is POSTed to the origin as the message's JSON, at the endpoint's path (through the
//! route's rewrites), with the client's headers (cookies, `Authorization`) and Holdfast's
//! `Grip-Sig`, as any proxied request. The origin allows a subscription by answering `2xx`
//! with GRIP instructions naming the channel (`Grip-Channel: /foo/bar`, or an
//! `application/grip-instruct` body); a channel's `prev-id` asks for what was published after
//! that id, from history.

use bytes::Bytes;
use grip::instruct::ChannelSpec;
use http::Method;

use super::message::Message;
use super::Endpoint;
use crate::proxy::{Answer, OriginRequest};

/// What the origin said.
pub enum Verdict {
    /// A `2xx`, with the channels its GRIP instructions name.
    Allowed(Vec<ChannelSpec>),
    /// Anything else: the origin's status.
    Refused(u16),
    /// No answer, or instructions that could not be read: why.
    Failed(String),
}

impl Endpoint {
    /// POSTs `m` to the origin and reads its answer.
    pub(super) async fn ask(&self, m: &Message) -> Verdict {
        let body = Bytes::from(serde_json::to_vec(m).expect("a JSON map serializes"));
        let request = OriginRequest {
            method: Method::POST,
            path: self.origin_path.clone(),
            headers: self.origin_headers.clone(),
        };
        let sent =
            crate::proxy::ask(&self.app, &self.route, &request, crate::http::full(body)).await;
        let (answer, target) = match sent {
            Ok(a) => a,
            Err(e) => return Verdict::Failed(e.to_string()),
        };
        match answer {
            Answer::Relay(resp) if resp.status().is_success() => Verdict::Allowed(Vec::new()),
            Answer::Relay(resp) => Verdict::Refused(resp.status().as_u16()),
            Answer::Grip(resp) => {
                let status = resp.status();
                match crate::proxy::read_grip(&self.app, &target.label(), resp).await {
                    Ok(a) => {
                        let status = a
                            .instruction
                            .response
                            .as_ref()
                            .map_or(status.as_u16(), |r| r.code);
                        if (200..300).contains(&status) {
                            Verdict::Allowed(a.instruction.channels)
                        } else {
                            Verdict::Refused(status)
                        }
                    }
                    Err(e) => Verdict::Failed(e.to_string()),
                }
            }
        }
    }
}
