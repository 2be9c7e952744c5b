//! The built-in `test` target, as Pushpin's: `GET /` says hello, `/response` holds a long-poll and
//! `/stream` a stream on channel `test` (or the `channel` query parameters), through the same
//! hold machinery as a real origin's GRIP answer.

use std::sync::Arc;

use bytes::Bytes;
use grip::instruct::{ChannelSpec, HoldMode, Instruction};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::app::App;
use crate::config::routes::Route;
use crate::hold::{self, Accepted};
use crate::proxy::body::{AccessRecord, Body};
use crate::proxy::error::{text_response, ProxyError};

/// What `GET /` on the test target answers.
pub const HELLO: &str = "Hello from the Holdfast test handler!\n";

/// Serves a request routed to the test target.
pub async fn serve(
    app: &Arc<App>,
    route: &Route,
    req: Request<Incoming>,
    record: &mut AccessRecord,
) -> Result<Response<Body>, ProxyError> {
    let path = req.uri().path();
    let path = match &route.condition.path_beg {
        Some(beg) => path.strip_prefix(beg.trim_end_matches('/')).unwrap_or(path),
        None => path,
    };
    let mode = match path {
        "" | "/" => return Ok(text_response(StatusCode::OK, HELLO)),
        "/response" => HoldMode::Response,
        "/stream" => HoldMode::Stream,
        _ => return Ok(text_response(StatusCode::NOT_FOUND, "Not Found\n")),
    };
    let mut channels: Vec<ChannelSpec> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.strip_prefix("channel="))
        .map(percent_decode)
        .filter(|c| !c.is_empty())
        .map(|name| ChannelSpec {
            name,
            prev_id: None,
            filters: Vec::new(),
        })
        .collect();
    if channels.is_empty() {
        channels.push(ChannelSpec {
            name: "test".to_string(),
            prev_id: None,
            filters: Vec::new(),
        });
    }
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
    hold::hold(app, route, None, accepted, record).await
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
