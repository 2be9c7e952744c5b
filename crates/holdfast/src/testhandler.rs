//! The built-in `test` target, as Pushpin's: `GET /` says hello, `/response` holds a long-poll and
//! `/stream` a stream on channel `test` (or the `channel` query parameters), through the same
//! hold machinery as a real origin's GRIP answer; `/ws` is a WebSocket on the same channels that
//! echoes what the client sends ([`crate::ws::serve_test`]).

use std::sync::Arc;

use bytes::Bytes;
use grip::instruct::{ChannelSpec, HoldMode, Instruction};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::app::App;
use crate::config::routes::Route;
use crate::hold;
use crate::http::text_response;
use crate::http::Body;
use crate::proxy::body::AccessRecord;
use crate::proxy::error::ProxyError;
use crate::proxy::Accepted;

/// What `GET /` on the test target answers.
pub const HELLO: &str = "Hello from the Holdfast test handler!\n";

/// Serves a request routed to the test target.
pub async fn serve(
    app: &Arc<App>,
    route: &Arc<Route>,
    req: Request<Incoming>,
    record: &mut AccessRecord,
    client: crate::conns::Client,
) -> Result<Response<Body>, ProxyError> {
    let path = req.uri().path();
    let path = match &route.condition.path_beg {
        Some(beg) => path.strip_prefix(beg.trim_end_matches('/')).unwrap_or(path),
        None => path,
    };
    if path == "/ws" {
        if !req.headers().contains_key(header::UPGRADE) {
            return Ok(text_response(
                StatusCode::BAD_REQUEST,
                "/ws needs a WebSocket upgrade\n",
            ));
        }
        let channels = query_channels(req.uri().query());
        return crate::ws::serve_test(app, route, req, channels, client);
    }
    let mode = match path {
        "" | "/" => return Ok(text_response(StatusCode::OK, HELLO)),
        "/response" => HoldMode::Response,
        "/stream" => HoldMode::Stream,
        _ => return Ok(text_response(StatusCode::NOT_FOUND, "Not Found\n")),
    };
    let channels: Vec<ChannelSpec> = query_channels(req.uri().query())
        .into_iter()
        .map(|name| ChannelSpec {
            name,
            prev_id: None,
            filters: Vec::new(),
        })
        .collect();
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    let body = match mode {
        HoldMode::Response => "[timeout]\n",
        HoldMode::Stream => "[stream opened]\n",
    };
    let accepted = Accepted {
        status: StatusCode::OK,
        headers,
        body: Bytes::from_static(body.as_bytes()),
        rest: None,
        instruction: Instruction {
            hold: Some(mode),
            channels,
            ..Instruction::default()
        },
    };
    let ctx = hold::HeldRequest::without_origin(app.clone(), route.clone(), client);
    hold::hold(Arc::new(ctx), None, accepted, record).await
}

/// The `channel` query parameters, or `test` when there are none.
fn query_channels(query: Option<&str>) -> Vec<String> {
    let channels: Vec<String> = query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.strip_prefix("channel="))
        .map(percent_decode)
        .filter(|c| !c.is_empty())
        .collect();
    if channels.is_empty() {
        return vec!["test".to_string()];
    }
    channels
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())
            {
                Some(b) => {
                    out.push(b);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_decoding() {
        for (input, want) in [
            ("a%20b", "a b"),
            ("a+b", "a b"),
            ("100%", "100%"),
            ("%zz", "%zz"),
            ("%4", "%4"),
            ("x%2Fy", "x/y"),
        ] {
            assert_eq!(super::percent_decode(input), want, "{input}");
        }
    }
}
