//! JSON-P requests: a `GET` with a callback parameter stands for another request, described by
//! its query string, which is what the origin is sent — as Pushpin reads it.
//!
//! The callback parameter (`callback`, or the route's `jsonp_cb=`) names the function the answer
//! calls. `_method` sets the method (else the route's `jsonp_defmethod=`, else `GET` in
//! extended mode and `POST` in basic mode), `_headers` adds headers (a JSON object of strings),
//! and `_body` — or the route's `jsonp_body=` parameter, sent as `application/json` — is the
//! body. Those parameters leave the query; `Accept` becomes `*/*`. With `jsonp_defcb=` and
//! `jsonp_body=` set, a request carrying the body parameter is JSON-P even without a callback.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Method;

use crate::config::routes::{is_callback_name, JsonpConfig, JsonpMode};

/// Why a JSON-P request was refused (`400`, with Pushpin's texts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonpError {
    /// The callback is empty, not percent-encoded properly, or not a callback name.
    #[error("Invalid callback parameter.")]
    Callback,
    /// `_method` is empty, badly encoded or not a method.
    #[error("Invalid _method parameter.")]
    Method,
    /// `_headers` is not a JSON object of strings naming valid headers.
    #[error("Invalid _headers parameter.")]
    Headers,
    /// The route's `jsonp_body=` parameter is empty or badly encoded.
    #[error("Invalid body parameter.")]
    Body,
    /// `_body` is empty or badly encoded.
    #[error("Invalid _body parameter.")]
    UnderscoreBody,
}

/// The callback a JSON-P answer calls, and how it wraps the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    /// The function to call.
    pub name: String,
    /// The route's `jsonp_mode`.
    pub mode: JsonpMode,
}

/// The request a JSON-P request stands for.
#[derive(Debug, Clone)]
pub struct JsonpRequest {
    /// The callback of the answer.
    pub callback: Callback,
    /// The method for the origin.
    pub method: Method,
    /// The path and query for the origin, without the JSON-P parameters.
    pub path_and_query: String,
    /// Headers from `_headers`, in order.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body, from `_body` or the `jsonp_body=` parameter (empty without).
    pub body: Bytes,
    /// The body came from the `jsonp_body=` parameter: it is sent as `application/json`.
    pub json_body: bool,
}

/// One `key=value` of a query, as it was written.
struct Item<'a> {
    raw: &'a str,
    key: Vec<u8>,
    value: &'a str,
}

fn items(query: &str) -> Vec<Item<'_>> {
    query
        .split('&')
        .filter(|raw| !raw.is_empty())
        .map(|raw| {
            let (key, value) = raw.split_once('=').unwrap_or((raw, ""));
            Item {
                raw,
                key: percent_decode(key).unwrap_or_else(|| key.as_bytes().to_vec()),
                value,
            }
        })
        .collect()
}

/// Decodes `%XX` escapes; `None` when an escape is broken or the result is empty (Pushpin
/// treats both as an invalid value). `+` stays `+`.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Reads a JSON-P request: `Ok(None)` when the request is not one (not a `GET`, or no
/// callback), an error naming the parameter when it is one that cannot be served.
pub fn parse(
    config: &JsonpConfig,
    method: &Method,
    path_and_query: &str,
) -> Result<Option<JsonpRequest>, JsonpError> {
    if method != Method::GET {
        return Ok(None);
    }
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let mut items = items(query);
    let has = |items: &[Item<'_>], name: &str| items.iter().any(|i| i.key == name.as_bytes());
    let take = |items: &mut Vec<Item<'_>>, name: &str| -> Option<String> {
        let first = items.iter().position(|i| i.key == name.as_bytes())?;
        let value = items[first].value.to_string();
        items.retain(|i| i.key != name.as_bytes());
        Some(value)
    };
    let callback_param = config.callback_param();
    let body_param = config.body_param.as_deref();
    let by_body = config.default_callback.is_some() && body_param.is_some_and(|p| has(&items, p));
    if !has(&items, callback_param) && !by_body {
        return Ok(None);
    }
    let name = match take(&mut items, callback_param) {
        Some(v) => percent_decode(&v)
            .and_then(|b| String::from_utf8(b).ok())
            .filter(|n| is_callback_name(n))
            .ok_or(JsonpError::Callback)?,
        None => config.default_callback.clone().unwrap_or_default(),
    };
    let method = match take(&mut items, "_method") {
        Some(v) => percent_decode(&v)
            .and_then(|b| Method::from_bytes(&b).ok())
            .ok_or(JsonpError::Method)?,
        None => config.default_method(),
    };
    let headers = match take(&mut items, "_headers") {
        Some(v) => parse_headers(&v)?,
        None => Vec::new(),
    };
    let (body, json_body) = match body_param {
        Some(param) => match take(&mut items, param) {
            Some(v) => (percent_decode(&v).ok_or(JsonpError::Body)?, true),
            None => (Vec::new(), false),
        },
        None => match take(&mut items, "_body") {
            Some(v) => (percent_decode(&v).ok_or(JsonpError::UnderscoreBody)?, false),
            None => (Vec::new(), false),
        },
    };
    let rest: Vec<&str> = items.iter().map(|i| i.raw).collect();
    let path_and_query = if rest.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", rest.join("&"))
    };
    Ok(Some(JsonpRequest {
        callback: Callback {
            name,
            mode: config.mode,
        },
        method,
        path_and_query,
        headers,
        body: Bytes::from(body),
        json_body,
    }))
}

/// `_headers`: a JSON object of string values; `Host` and `Accept` in it are ignored.
fn parse_headers(v: &str) -> Result<Vec<(HeaderName, HeaderValue)>, JsonpError> {
    let raw = percent_decode(v).ok_or(JsonpError::Headers)?;
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&raw).map_err(|_| JsonpError::Headers)?;
    let mut out = Vec::new();
    for (k, v) in object {
        let value = v.as_str().ok_or(JsonpError::Headers)?;
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| JsonpError::Headers)?;
        if name == header::HOST || name == header::ACCEPT {
            continue;
        }
        out.push((
            name,
            HeaderValue::from_str(value).map_err(|_| JsonpError::Headers)?,
        ));
    }
    Ok(out)
}

impl JsonpRequest {
    /// Rewrites the client's request headers into the ones this request is sent with: the
    /// `_headers` ones added, `Accept: */*`, `Content-Type: application/json` for a body from the
    /// `jsonp_body=` parameter, and the client's own framing dropped (the body is new).
    pub fn apply_headers(&self, headers: &mut HeaderMap) {
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::TRANSFER_ENCODING);
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        if self.json_body {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(mode: JsonpMode) -> JsonpConfig {
        JsonpConfig {
            mode,
            ..JsonpConfig::default()
        }
    }

    #[test]
    fn reads_pushpins_parameters() {
        let r = parse(
            &config(JsonpMode::Extended),
            &Method::GET,
            "/e/plain?x=1&callback=cb&_method=DELETE&_headers=%7B%22X-H%22%3A%22v%22%2C%22Host%22%3A%22h%22%7D&_body=a%2Bb&y=%2F",
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.callback.name, "cb");
        assert_eq!(r.callback.mode, JsonpMode::Extended);
        assert_eq!(r.method, Method::DELETE);
        assert_eq!(r.path_and_query, "/e/plain?x=1&y=%2F");
        assert_eq!(r.headers.len(), 1);
        assert_eq!(r.headers[0].0, "x-h");
        assert_eq!(r.headers[0].1, "v");
        assert_eq!(r.body, "a+b");
        assert!(!r.json_body);
    }

    #[test]
    fn defaults_follow_the_mode_and_the_route() {
        let r = parse(&config(JsonpMode::Basic), &Method::GET, "/p?callback=f")
            .unwrap()
            .unwrap();
        assert_eq!((r.method, r.path_and_query.as_str()), (Method::POST, "/p"));
        let r = parse(&config(JsonpMode::Extended), &Method::GET, "/p?callback=f")
            .unwrap()
            .unwrap();
        assert_eq!(r.method, Method::GET);
        let routed = JsonpConfig {
            callback_param: Some("cb".into()),
            body_param: Some("bd".into()),
            default_callback: Some("defcb".into()),
            default_method: Some(Method::PUT),
            ..JsonpConfig::default()
        };
        // The body parameter alone makes it JSON-P, with the default callback.
        let r = parse(&routed, &Method::GET, "/c?bd=%7B%7D")
            .unwrap()
            .unwrap();
        assert_eq!(r.callback.name, "defcb");
        assert_eq!((r.method, r.body.as_ref()), (Method::PUT, &b"{}"[..]));
        assert!(r.json_body);
        let r = parse(&routed, &Method::GET, "/c?bd=x&cb=h")
            .unwrap()
            .unwrap();
        assert_eq!(r.callback.name, "h");
        // `callback` is not this route's parameter; `_body` is not its body parameter.
        assert!(parse(&routed, &Method::GET, "/c?callback=f")
            .unwrap()
            .is_none());
        let r = parse(&routed, &Method::GET, "/c?cb=f&_body=z")
            .unwrap()
            .unwrap();
        assert_eq!((r.body.len(), r.path_and_query.as_str()), (0, "/c?_body=z"));
    }

    #[test]
    fn not_jsonp() {
        let c = config(JsonpMode::Extended);
        for (method, uri) in [
            (Method::GET, "/p"),
            (Method::GET, "/p?cb=f"),
            (Method::POST, "/p?callback=f"),
            (Method::OPTIONS, "/p?callback=f"),
        ] {
            assert!(parse(&c, &method, uri).unwrap().is_none(), "{method} {uri}");
        }
    }

    #[test]
    fn bad_parameters_are_named() {
        let c = config(JsonpMode::Extended);
        let cases = [
            ("/p?callback=", JsonpError::Callback),
            ("/p?callback=%zz", JsonpError::Callback),
            ("/p?callback=alert(1)//", JsonpError::Callback),
            ("/p?callback=f&_method=", JsonpError::Method),
            ("/p?callback=f&_method=G%20T", JsonpError::Method),
            ("/p?callback=f&_headers=%5B%5D", JsonpError::Headers),
            (
                "/p?callback=f&_headers=%7B%22a%22%3A1%7D",
                JsonpError::Headers,
            ),
            (
                "/p?callback=f&_headers=%7B%22a%20b%22%3A%22v%22%7D",
                JsonpError::Headers,
            ),
            ("/p?callback=f&_body=", JsonpError::UnderscoreBody),
        ];
        for (uri, want) in cases {
            assert_eq!(parse(&c, &Method::GET, uri).unwrap_err(), want, "{uri}");
        }
        let with_body = JsonpConfig {
            body_param: Some("bd".into()),
            ..JsonpConfig::default()
        };
        assert_eq!(
            parse(&with_body, &Method::GET, "/p?callback=f&bd=%4").unwrap_err(),
            JsonpError::Body
        );
        assert_eq!(JsonpError::Method.to_string(), "Invalid _method parameter.");
    }

    #[test]
    fn headers_for_the_origin() {
        let r = parse(
            &JsonpConfig {
                body_param: Some("bd".into()),
                ..JsonpConfig::default()
            },
            &Method::GET,
            "/p?callback=f&bd=1&_headers=%7B%22X-H%22%3A%22v%22%7D",
        )
        .unwrap()
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static("text/html"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        h.insert("x-h", HeaderValue::from_static("client"));
        r.apply_headers(&mut h);
        assert_eq!(h[header::ACCEPT], "*/*");
        assert_eq!(h[header::CONTENT_TYPE], "application/json");
        assert!(h.get(header::CONTENT_LENGTH).is_none());
        let xh: Vec<_> = h.get_all("x-h").iter().collect();
        assert_eq!(xh, ["client", "v"]);
    }
}
