//! The HTTP side of WebSockets: checking a client's upgrade request, the headers sent to the
//! origin, reading the origin's `grip` extension, and the `101 Switching Protocols` the client
//! gets.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::http::{full, Body};
use crate::proxy::headers;

/// `Sec-WebSocket-Extensions`.
pub const EXTENSIONS: HeaderName = header::SEC_WEBSOCKET_EXTENSIONS;

/// What Holdfast needs from a client's upgrade request.
#[derive(Debug, Clone)]
pub struct ClientHandshake {
    /// `Sec-WebSocket-Key`, as sent.
    pub key: HeaderValue,
    /// Where the client connects from, for the connection registry.
    pub client: crate::conns::Client,
    /// The client is an upstream GRIP proxy (`grip.upstream_key`): the origin's `grip`
    /// extension is passed up to it, and it handles the GRIP messages ([`pass_grip_up`]).
    pub upstream: bool,
}

impl ClientHandshake {
    /// Checks an upgrade request (RFC 6455 §4.2.1); the error names what is wrong.
    pub fn parse<B>(req: &Request<B>) -> Result<ClientHandshake, String> {
        if req.method() != http::Method::GET {
            return Err(format!(
                "WebSocket upgrade must use GET, not {}",
                req.method()
            ));
        }
        let h = req.headers();
        let has_token = |name: HeaderName, token: &str| {
            h.get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        if !has_token(header::CONNECTION, "upgrade") {
            return Err("WebSocket upgrade without 'Connection: Upgrade'".to_string());
        }
        match h
            .get(header::SEC_WEBSOCKET_VERSION)
            .map(HeaderValue::as_bytes)
        {
            Some(b"13") => {}
            Some(v) => {
                return Err(format!(
                    "Sec-WebSocket-Version {:?} is not supported (only 13)",
                    String::from_utf8_lossy(v)
                ))
            }
            None => return Err("WebSocket upgrade without Sec-WebSocket-Version".to_string()),
        }
        let key = h
            .get(header::SEC_WEBSOCKET_KEY)
            .filter(|k| !k.is_empty())
            .ok_or("WebSocket upgrade without Sec-WebSocket-Key")?
            .clone();
        Ok(ClientHandshake {
            key,
            client: crate::conns::Client::default(),
            upstream: false,
        })
    }

    /// The `101` for this client, carrying `extra` headers (the origin's, cleaned by
    /// [`client_headers`]).
    pub fn accept(&self, extra: HeaderMap) -> Response<Body> {
        let mut resp = Response::new(full(""));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        *h = extra;
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        let accept = derive_accept_key(self.key.as_bytes());
        h.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
        );
        resp
    }
}

/// For an upstream GRIP proxy: the origin's `grip` extension, as the origin wrote it, is added
/// to `extra` (the `101`'s headers), so the upstream does the GRIP work, as Pushpin passes it up
/// instead of acting on it. Returns whether the origin spoke `grip`.
pub fn pass_grip_up(origin: &HeaderMap, extra: &mut HeaderMap) -> bool {
    let grip = origin
        .get_all(EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find(|ext| ext.split(';').next().map(str::trim) == Some("grip"))
        .and_then(|ext| HeaderValue::from_str(ext.trim()).ok());
    match grip {
        Some(ext) => {
            extra.insert(EXTENSIONS, ext);
            true
        }
        None => false,
    }
}

/// Adds the headers of a WebSocket handshake towards the origin: a fresh key, version 13 and
/// `Connection: Upgrade` (the proxy's header rewrite removed the client's hop-by-hop headers).
/// Returns the key, to check the origin's `Sec-WebSocket-Accept` against.
pub fn to_origin_upgrade(headers: &mut HeaderMap) -> String {
    let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(
        header::SEC_WEBSOCKET_VERSION,
        HeaderValue::from_static("13"),
    );
    headers.insert(
        header::SEC_WEBSOCKET_KEY,
        HeaderValue::from_str(&key).expect("base64 is a valid header value"),
    );
    key
}

/// Whether the origin's `Sec-WebSocket-Accept` answers `key`.
pub fn is_accepted(headers: &HeaderMap, key: &str) -> bool {
    headers
        .get(header::SEC_WEBSOCKET_ACCEPT)
        .is_some_and(|v| v.as_bytes() == derive_accept_key(key.as_bytes()).as_bytes())
}

/// The message prefix when the origin accepted the `grip` extension
/// (`grip; message-prefix="p"`, default `m:`); `None` when it did not.
pub fn grip_prefix(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(EXTENSIONS).iter() {
        let Ok(value) = value.to_str() else { continue };
        for ext in value.split(',') {
            let mut params = ext.split(';').map(str::trim);
            if params.next() != Some("grip") {
                continue;
            }
            let prefix = params
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim() == "message-prefix")
                .map(|(_, v)| unquote(v.trim()));
            return Some(
                prefix.unwrap_or_else(|| grip::control::DEFAULT_MESSAGE_PREFIX.to_string()),
            );
        }
    }
    None
}

fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => v.to_string(),
    }
}

/// The origin's handshake response headers as the client may see them in its `101`: no
/// hop-by-hop or `Grip-*` headers, no extension (Holdfast negotiates none with the client),
/// and none of `drop`.
pub fn client_headers(mut h: HeaderMap, drop: &[&str]) -> HeaderMap {
    headers::remove_hop_by_hop(&mut h);
    headers::remove_grip(&mut h);
    h.remove(EXTENSIONS);
    h.remove(header::SEC_WEBSOCKET_ACCEPT);
    h.remove(header::CONTENT_LENGTH);
    for name in drop {
        h.remove(*name);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(EXTENSIONS, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_grip_extension_is_passed_up_as_the_origin_wrote_it() {
        let mut extra = HeaderMap::new();
        let origin = ext(&["permessage-deflate", "grip; message-prefix=\"\""]);
        assert!(pass_grip_up(&origin, &mut extra));
        assert_eq!(extra[EXTENSIONS], "grip; message-prefix=\"\"");
        let mut extra = HeaderMap::new();
        assert!(!pass_grip_up(&ext(&["permessage-deflate"]), &mut extra));
        assert!(extra.is_empty());
    }

    #[test]
    fn grip_extension_and_its_prefix() {
        let cases: &[(&[&str], Option<&str>)] = &[
            (&[], None),
            (&["permessage-deflate"], None),
            (&["grip"], Some("m:")),
            (&["grip; message-prefix=\"\""], Some("")),
            (
                &["grip; message-prefix=\"msg \\\"q\\\"\""],
                Some("msg \"q\""),
            ),
            (&["x, grip;message-prefix=p:"], Some("p:")),
            (&["gripx"], None),
        ];
        for (values, want) in cases {
            assert_eq!(grip_prefix(&ext(values)).as_deref(), *want, "{values:?}");
        }
    }

    #[test]
    fn client_handshake_errors_name_the_problem() {
        let base = || {
            Request::get("/")
                .header("upgrade", "websocket")
                .header("connection", "keep-alive, Upgrade")
                .header("sec-websocket-version", "13")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        };
        let ok = ClientHandshake::parse(&base().body(()).unwrap()).unwrap();
        let resp = ok.accept(HeaderMap::new());
        assert_eq!(
            resp.headers()["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let bad = base()
            .header("sec-websocket-version", "8")
            .body(())
            .unwrap();
        let mut bad = bad;
        bad.headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("8"));
        let err = ClientHandshake::parse(&bad).unwrap_err();
        assert!(err.contains("\"8\""), "{err}");
        let mut no_key = base().body(()).unwrap();
        no_key.headers_mut().remove("sec-websocket-key");
        assert!(ClientHandshake::parse(&no_key)
            .unwrap_err()
            .contains("Sec-WebSocket-Key"));
    }
}
