//! JSON-P answers: a response turned into a script calling the request's callback, in the two
//! ways Pushpin does it.
//!
//! A relayed answer (an origin's plain response, an error, a GRIP answer without a hold) is
//! wrapped as Pushpin's proxy does: `200 OK`, `Content-Type: application/javascript`, the
//! origin's `Cache-Control` kept, and in extended mode
//! `/**/cb({"code": 200, "reason": "OK", "headers": {...}, "body": "..."});` with each header's
//! first value. A body longer than `limits.max_accept_body`, or of unknown length, streams
//! through, chunked, without the `Cache-Control`.
//!
//! A held long-poll's answer (published, or the origin's at the timeout) is wrapped as Pushpin's
//! handler does: the response's own headers kept (`Content-Type` replaced), and in extended mode
//! the compact `{"body":"...","code":200,"headers":{...},"reason":"OK"}` with repeated headers
//! joined by `, `.
//!
//! Basic mode calls the callback with the body itself, one trailing newline dropped. Header
//! names in the JSON are written in the usual capitalisation (`Content-Type`) and sorted.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

use super::display_name;
use super::jsonp::Callback;
use crate::config::routes::JsonpMode;
use crate::http::{full, Body, BoxError};

/// The answer Pushpin gives when a basic-mode body is empty.
const NOT_ENCODABLE: &str = "Upstream response could not be JSON-P encoded.\n";

/// `s` as the inside of a JSON string (Qt and serde_json escape alike: `"`, `\`, the C0 controls;
/// everything else as it is).
fn json_inner(s: &str) -> String {
    let quoted = serde_json::Value::String(s.to_string()).to_string();
    quoted[1..quoted.len() - 1].to_string()
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The reason phrase the client would have seen.
fn reason_of(status: StatusCode, extensions: &http::Extensions) -> String {
    match extensions.get::<hyper::ext::ReasonPhrase>() {
        Some(r) => String::from_utf8_lossy(r.as_bytes()).into_owned(),
        None => status.canonical_reason().unwrap_or("").to_string(),
    }
}

/// `{"Name":"value",...}`, sorted by name: each name's first value, or all of them joined by
/// `, ` when `join`.
fn headers_json(headers: &HeaderMap, join: bool) -> String {
    let mut sorted = BTreeMap::new();
    for name in headers.keys() {
        let mut values = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let value = if join {
            values.collect::<Vec<_>>().join(", ")
        } else {
            values.next().unwrap_or_default()
        };
        sorted.insert(display_name(name), value);
    }
    let fields: Vec<String> = sorted
        .iter()
        .map(|(k, v)| format!("{}:{}", json_string(k), json_string(v)))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// Drops one trailing `\r\n` or `\n`.
fn trim_newline(b: &[u8]) -> &[u8] {
    b.strip_suffix(b"\r\n")
        .or_else(|| b.strip_suffix(b"\n"))
        .unwrap_or(b)
}

/// `headers` without the named ones, the others in their order (`HeaderMap::remove` moves the
/// last header into the gap).
fn without(headers: &HeaderMap, names: &[header::HeaderName]) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if !names.contains(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

fn javascript() -> HeaderValue {
    HeaderValue::from_static("application/javascript")
}

/// Wraps a relayed answer. A body of known length up to `limit` bytes is read whole, to answer
/// with a length; any other streams through as it comes (an event stream is not held back).
pub async fn relayed(cb: &Callback, resp: Response<Body>, limit: usize) -> Response<Body> {
    let (parts, mut body) = resp.into_parts();
    let whole = body.size_hint().exact().is_some_and(|n| n <= limit as u64);
    let mut buf = BytesMut::new();
    let mut complete = false;
    let mut failed = None;
    if whole {
        loop {
            match body.frame().await {
                None => {
                    complete = true;
                    break;
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => {
                    failed = Some(e);
                    break;
                }
            }
        }
    }
    let extended = cb.mode == JsonpMode::Extended;
    let mut start = format!("/**/{}(", cb.name);
    if extended {
        start.push_str(&format!(
            "{{\"code\": {}, \"reason\": {}, \"headers\": {}, \"body\": \"",
            parts.status.as_u16(),
            json_string(&reason_of(parts.status, &parts.extensions)),
            headers_json(&parts.headers, false),
        ));
    }
    let end: &[u8] = if extended { b"\"});\n" } else { b");\n" };
    let mut out = Response::new(full(""));
    out.headers_mut().insert(header::CONTENT_TYPE, javascript());
    if complete {
        let body = if extended {
            json_inner(&String::from_utf8_lossy(&buf)).into_bytes()
        } else if buf.is_empty() {
            return super::plain(StatusCode::INTERNAL_SERVER_ERROR, NOT_ENCODABLE);
        } else {
            trim_newline(&buf).to_vec()
        };
        for v in parts.headers.get_all(header::CACHE_CONTROL) {
            out.headers_mut().append(header::CACHE_CONTROL, v.clone());
        }
        *out.body_mut() = full([start.as_bytes(), &body, end].concat());
        return out;
    }
    *out.body_mut() = crate::http::boxed(Streamed {
        start: Some(Bytes::from(start)),
        first: Some(buf.freeze()),
        inner: body,
        failed,
        extended,
        held: BytesMut::new(),
        end: Some(Bytes::from_static(end)),
    });
    out
}

/// Wraps a held long-poll's answer (its body is already whole).
pub async fn held(cb: &Callback, resp: Response<Body>) -> Response<Body> {
    let (parts, body) = resp.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let headers = without(&parts.headers, &[header::CONTENT_LENGTH]);
    let content = match cb.mode {
        JsonpMode::Extended => format!(
            "{{\"body\":{},\"code\":{},\"headers\":{},\"reason\":{}}}",
            json_string(&String::from_utf8_lossy(&bytes)),
            parts.status.as_u16(),
            headers_json(&headers, true),
            json_string(&reason_of(parts.status, &parts.extensions)),
        )
        .into_bytes(),
        JsonpMode::Basic => trim_newline(&bytes).to_vec(),
    };
    let mut headers = without(&headers, &[header::CONTENT_TYPE]);
    headers.append(header::CONTENT_TYPE, javascript());
    let script = [
        format!("/**/{}(", cb.name).as_bytes(),
        &content,
        b");\n".as_slice(),
    ]
    .concat();
    let mut out = Response::new(full(script));
    *out.headers_mut() = headers;
    out
}

/// A relayed body too long to buffer, wrapped as it streams.
struct Streamed {
    start: Option<Bytes>,
    /// What was read before the body failed.
    first: Option<Bytes>,
    inner: Body,
    /// The body failed while it was being buffered.
    failed: Option<BoxError>,
    extended: bool,
    /// Bytes held back: in basic mode a trailing newline (dropped if it ends the body) or `\r`,
    /// in extended mode an incomplete UTF-8 sequence (completed by the next chunk).
    held: BytesMut,
    end: Option<Bytes>,
}

impl Streamed {
    /// Encodes a chunk of the body, holding back what must wait for the next one.
    fn encode(&mut self, data: &[u8]) -> Bytes {
        self.held.extend_from_slice(data);
        let all = self.held.split().freeze();
        if self.extended {
            let keep = incomplete_tail(&all);
            let (now, later) = all.split_at(all.len() - keep);
            self.held.extend_from_slice(later);
            Bytes::from(json_inner(&String::from_utf8_lossy(now)))
        } else {
            // A final `\r` may be the start of a `\r\n` the next chunk finishes.
            let mut body = trim_newline(&all).len();
            if body == all.len() && all.ends_with(b"\r") {
                body -= 1;
            }
            self.held.extend_from_slice(&all[body..]);
            all.slice(..body)
        }
    }

    /// The rest at the end of the body: a held incomplete sequence (replaced), or a `\r` that
    /// turned out not to start a newline; never the final newline.
    fn flush(&mut self) -> Bytes {
        let rest = self.held.split().freeze();
        if self.extended && !rest.is_empty() {
            Bytes::from(json_inner(&String::from_utf8_lossy(&rest)))
        } else if &rest[..] == b"\r" {
            rest
        } else {
            Bytes::new()
        }
    }
}

/// A body cut into `pieces` as a long relayed JSON-P body is wrapped, chunk by chunk, between
/// the callback's opening and closing (for fuzzing: it must equal wrapping the whole body at
/// once).
pub fn encode_pieces(extended: bool, pieces: &[&[u8]]) -> Vec<u8> {
    let mut s = Streamed {
        start: None,
        first: None,
        inner: full(""),
        failed: None,
        extended,
        held: BytesMut::new(),
        end: None,
    };
    let mut out = Vec::new();
    for piece in pieces {
        out.extend_from_slice(&s.encode(piece));
    }
    out.extend_from_slice(&s.flush());
    out
}

/// The whole body wrapped at once: what [`encode_pieces`] must give.
pub fn encode_whole(extended: bool, body: &[u8]) -> Vec<u8> {
    if extended {
        json_inner(&String::from_utf8_lossy(body)).into_bytes()
    } else {
        trim_newline(body).to_vec()
    }
}

/// How many bytes at the end of `b` start a UTF-8 sequence that is not finished yet.
fn incomplete_tail(b: &[u8]) -> usize {
    match std::str::from_utf8(b) {
        Err(e) if e.error_len().is_none() => b.len() - e.valid_up_to(),
        Err(e) => {
            // An invalid sequence in the middle; look again after it.
            let after = e.valid_up_to() + e.error_len().unwrap_or(1);
            incomplete_tail(&b[after..])
        }
        Ok(_) => 0,
    }
}

impl HttpBody for Streamed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(start) = this.start.take() {
            return Poll::Ready(Some(Ok(Frame::data(start))));
        }
        if let Some(first) = this.first.take() {
            let chunk = this.encode(&first);
            if !chunk.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
        }
        if let Some(e) = this.failed.take() {
            this.end = None;
            return Poll::Ready(Some(Err(e)));
        }
        loop {
            let Some(end) = &this.end else {
                return Poll::Ready(None);
            };
            match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let chunk = this.encode(&data);
                    if !chunk.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(chunk))));
                    }
                }
                Some(Err(e)) => {
                    this.end = None;
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    let end = end.clone();
                    this.end = None;
                    let rest = this.flush();
                    return Poll::Ready(Some(Ok(Frame::data([rest, end].concat().into()))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.end.is_none() && self.start.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn callback(mode: JsonpMode) -> Callback {
        Callback {
            name: "f".into(),
            mode,
        }
    }

    fn origin_response(
        status: u16,
        headers: &[(&str, &str)],
        body: &'static [u8],
    ) -> Response<Body> {
        let mut resp = Response::new(full(body));
        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
        for (k, v) in headers {
            resp.headers_mut().append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        resp
    }

    async fn parts(resp: Response<Body>) -> (u16, Vec<String>, Vec<u8>) {
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| format!("{}: {}", display_name(k), v.to_str().unwrap()))
            .collect();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, headers, body)
    }

    const ESC: &[u8] = b"\x1f\x7f\xe2\x80\xa8 </script> \xff\xfe \x08\x0c\t\r\n";

    #[tokio::test]
    async fn relayed_extended_as_pushpins_proxy() {
        let resp = origin_response(
            200,
            &[
                ("server", "S"),
                ("content-type", "text/plain"),
                ("cache-control", "a"),
                ("cache-control", "b"),
                ("x-q", "\"q\" <\\>"),
                ("content-length", "24"),
            ],
            ESC,
        );
        let (status, headers, body) =
            parts(relayed(&callback(JsonpMode::Extended), resp, 100).await).await;
        assert_eq!(status, 200);
        assert_eq!(
            headers,
            [
                "Content-Type: application/javascript",
                "Cache-Control: a",
                "Cache-Control: b"
            ]
        );
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "/**/f({\"code\": 200, \"reason\": \"OK\", \"headers\": {\"Cache-Control\":\"a\",\
             \"Content-Length\":\"24\",\"Content-Type\":\"text/plain\",\"Server\":\"S\",\
             \"X-Q\":\"\\\"q\\\" <\\\\>\"}, \"body\": \"\\u001f\x7f\u{2028} </script> \
             \u{fffd}\u{fffd} \\b\\f\\t\\r\\n\"});\n"
        );
    }

    #[tokio::test]
    async fn relayed_basic_drops_one_newline_and_refuses_an_empty_body() {
        let resp = origin_response(404, &[("content-type", "text/plain")], b"not here\n\n");
        let (status, headers, body) =
            parts(relayed(&callback(JsonpMode::Basic), resp, 100).await).await;
        assert_eq!((status, headers.len()), (200, 1));
        assert_eq!(body, b"/**/f(not here\n);\n");
        let empty = origin_response(204, &[], b"");
        let (status, _, body) = parts(relayed(&callback(JsonpMode::Basic), empty, 100).await).await;
        assert_eq!((status, body.as_slice()), (500, NOT_ENCODABLE.as_bytes()));
        let empty = origin_response(204, &[], b"");
        let (_, _, body) = parts(relayed(&callback(JsonpMode::Extended), empty, 100).await).await;
        assert_eq!(
            body,
            b"/**/f({\"code\": 204, \"reason\": \"No Content\", \"headers\": {}, \"body\": \"\"});\n"
        );
    }

    #[tokio::test]
    async fn a_long_body_streams_with_the_same_bytes() {
        // Cut so that a UTF-8 sequence and a CRLF fall across chunks.
        let body = "é".repeat(40) + "x\r\n";
        let chunks: Vec<Bytes> = body
            .as_bytes()
            .chunks(7)
            .map(Bytes::copy_from_slice)
            .collect();
        for (mode, want) in [
            (
                JsonpMode::Extended,
                format!(
                    "/**/f({{\"code\": 200, \"reason\": \"OK\", \"headers\": {{}}, \"body\": \"{}x\\r\\n\"}});\n",
                    "é".repeat(40)
                ),
            ),
            (JsonpMode::Basic, format!("/**/f({}x);\n", "é".repeat(40))),
        ] {
            let stream = futures_util::stream::iter(
                chunks.clone().into_iter().map(|c| Ok::<_, BoxError>(Frame::data(c))),
            );
            let resp = Response::new(crate::http::boxed(http_body_util::StreamBody::new(stream)));
            let (status, headers, got) = parts(relayed(&callback(mode), resp, 10).await).await;
            assert_eq!((status, headers.len()), (200, 1), "{mode:?}");
            assert_eq!(String::from_utf8(got).unwrap(), want, "{mode:?}");
        }
    }

    #[tokio::test]
    async fn held_as_pushpins_handler() {
        let mut resp = origin_response(
            201,
            &[
                ("server", "S"),
                ("x-m", "1"),
                ("x-m", "2"),
                ("content-type", "text/x-pub"),
                ("cache-control", "max-age=5"),
                ("content-length", "10"),
            ],
            b"published\n",
        );
        resp.extensions_mut()
            .insert(hyper::ext::ReasonPhrase::try_from(b"Made".to_vec()).unwrap());
        let (status, headers, body) = parts(held(&callback(JsonpMode::Extended), resp).await).await;
        assert_eq!(status, 200);
        assert_eq!(
            headers,
            [
                "Server: S",
                "X-M: 1",
                "X-M: 2",
                "Cache-Control: max-age=5",
                "Content-Type: application/javascript"
            ]
        );
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "/**/f({\"body\":\"published\\n\",\"code\":201,\"headers\":{\"Cache-Control\":\
             \"max-age=5\",\"Content-Type\":\"text/x-pub\",\"Server\":\"S\",\"X-M\":\"1, 2\"},\
             \"reason\":\"Made\"});\n"
        );
        let empty = origin_response(200, &[], b"");
        let (_, _, body) = parts(held(&callback(JsonpMode::Basic), empty).await).await;
        assert_eq!(body, b"/**/f();\n");
    }
}
