//! The presence part of the control API (docs/presence.md), behind the publish API's
//! authentication: `GET /presence/channels` (the occupied channels with their subscriber
//! counts), `GET /presence/channels/<channel>` (one channel, with its members on a member
//! channel) and `GET /presence/events` (the events as Server-Sent Events). The channel in the
//! path is percent-decoded. With presence off every one of them answers `404` saying so.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde_json::json;

use crate::app::App;
use crate::http::{full, text_response, Body};
use crate::presence::PresenceError;

/// Answers a `GET` under `/presence`, or `None` when `path` is not presence's.
pub async fn handle(app: &App, path: &str) -> Option<Response<Body>> {
    let rest = path.strip_prefix("/presence")?;
    Some(match rest {
        "/events" => {
            crate::presence::events_response(&app.presence, app.shutdown.signal().into_stopped())
        }
        "/channels" => match app.presence.channels().await {
            Ok(channels) => {
                let list: Vec<_> = (channels.iter())
                    .map(|(c, n)| json!({ "channel": c, "subscribers": n }))
                    .collect();
                json_response(json!({ "channels": list }))
            }
            Err(e) => error(e),
        },
        _ => {
            let Some(raw) = rest.strip_prefix("/channels/") else {
                return Some(text_response(StatusCode::NOT_FOUND, "Not Found\n"));
            };
            let channel = match percent_decode(raw) {
                Ok(c) => c,
                Err(e) => return Some(text_response(StatusCode::BAD_REQUEST, format!("{e}\n"))),
            };
            match app.presence.channel(&channel).await {
                Ok(state) => {
                    let mut body = json!({
                        "channel": channel,
                        "occupied": state.occupied,
                        "subscribers": state.subscribers,
                    });
                    if let Some(members) = state.members {
                        body["members"] = json!(members);
                    }
                    json_response(body)
                }
                Err(e) => error(e),
            }
        }
    })
}

fn json_response(body: serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(full(format!("{body}\n")));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn error(e: PresenceError) -> Response<Body> {
    let status = match e {
        PresenceError::Off => StatusCode::NOT_FOUND,
        PresenceError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    text_response(status, format!("{e}\n"))
}

/// `%XX` escapes decoded; the result must be UTF-8.
fn percent_decode(raw: &str) -> Result<String, String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("Channel {raw:?} has a bad %-escape at byte {i}."))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("Channel {raw:?} is not UTF-8 once decoded."))
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn channels_in_paths_are_percent_decoded() {
        assert_eq!(percent_decode("a%20b%2Fc").unwrap(), "a b/c");
        assert_eq!(percent_decode("plain").unwrap(), "plain");
        assert!(percent_decode("bad%2")
            .unwrap_err()
            .contains("bad %-escape"));
        assert!(percent_decode("%ff").unwrap_err().contains("UTF-8"));
    }
}
