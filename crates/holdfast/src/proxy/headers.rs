//! Header rewriting between client and origin: hop-by-hop removal, `Grip-*` stripping (except
//! from an upstream GRIP proxy), `X-Forwarded-*`, `Host` and route `header=` rules.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::routes::ORIG_HEADER_PREFIX;
use crate::config::{ForwardedProto, XffRule};

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus those Pushpin also drops towards origins.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// Removes every header whose name starts with `grip-`.
pub fn remove_grip(headers: &mut HeaderMap) {
    let grip: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("grip-"))
        .cloned()
        .collect();
    for name in grip {
        headers.remove(name);
    }
}

/// Route `orig_headers`, as Pushpin: returns a copy of every header the client sent, named
/// `eb9bf0f5-<name>` (a header already so named is taken out and kept as it is), for the caller
/// to append once the other headers are rewritten — so an origin behind another proxy can still
/// read the original request. Without `orig_headers`, headers with that prefix are removed, so
/// a client cannot pass off its own as originals; from an upstream GRIP proxy (`trusted`) with
/// `orig_headers` they are the upstream's copies and stay where they are.
pub fn take_originals(
    headers: &mut HeaderMap,
    orig_headers: bool,
    trusted: bool,
) -> Vec<(HeaderName, HeaderValue)> {
    let is_marked = |name: &HeaderName| name.as_str().starts_with(ORIG_HEADER_PREFIX);
    if orig_headers && trusted {
        return Vec::new();
    }
    let marked: Vec<HeaderName> = headers.keys().filter(|n| is_marked(n)).cloned().collect();
    let mut out = Vec::new();
    if orig_headers {
        for (name, value) in headers.iter() {
            let name = if is_marked(name) {
                name.clone()
            } else {
                match HeaderName::from_bytes(format!("{ORIG_HEADER_PREFIX}{name}").as_bytes()) {
                    Ok(n) => n,
                    Err(_) => continue,
                }
            };
            out.push((name, value.clone()));
        }
    }
    for name in marked {
        headers.remove(name);
    }
    out
}

/// How a request is forwarded: everything the header rules need besides the headers.
pub struct Forwarding<'a> {
    /// The client's address.
    pub peer: IpAddr,
    /// The request arrived over TLS (or was accepted as such via X-Forwarded-Proto).
    pub tls: bool,
    /// WebSocket request (proto `wss`/`ws`).
    pub websocket: bool,
    /// `X-Forwarded-For` rules.
    pub xff: &'a [XffRule],
    /// The client is an upstream GRIP proxy (`grip.upstream_key`): its `Grip-*` headers stay.
    pub keep_grip: bool,
    /// `X-Forwarded-Proto` policy.
    pub xfp: ForwardedProto,
    /// Value for `Host`, when the route or target overrides it.
    pub host: Option<&'a str>,
    /// Route `header=` rules.
    pub route_headers: &'a [(String, String)],
}

/// Rewrites a client's request headers for the origin.
pub fn to_origin(headers: &mut HeaderMap, fwd: &Forwarding<'_>) {
    remove_hop_by_hop(headers);
    if !fwd.keep_grip {
        remove_grip(headers);
    }
    headers.remove(header::ACCEPT_ENCODING);
    headers.remove(header::EXPECT);
    apply_xff(headers, fwd.peer, fwd.xff);
    headers.remove("x-forwarded-proto");
    headers.remove("x-forwarded-protocol");
    if fwd.tls && fwd.xfp != ForwardedProto::None {
        let proto = HeaderValue::from_static(if fwd.websocket { "wss" } else { "https" });
        if fwd.xfp == ForwardedProto::Both {
            headers.insert("x-forwarded-protocol", proto.clone());
        }
        headers.insert("x-forwarded-proto", proto);
    }
    if let Some(host) = fwd.host.and_then(|h| HeaderValue::from_str(h).ok()) {
        headers.insert(header::HOST, host);
    }
    for (name, value) in fwd.route_headers {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        if value.is_empty() {
            headers.remove(name);
        } else if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
}

fn apply_xff(headers: &mut HeaderMap, peer: IpAddr, rules: &[XffRule]) {
    if rules.is_empty() {
        return;
    }
    let mut values: Vec<String> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    for rule in rules {
        match rule {
            XffRule::Truncate(n) => {
                let cut = values.len().saturating_sub(*n);
                values.drain(..cut);
            }
            XffRule::Append => values.push(peer.to_string()),
        }
    }
    headers.remove("x-forwarded-for");
    if let Ok(v) = HeaderValue::from_str(&values.join(", ")) {
        if !values.is_empty() {
            headers.insert("x-forwarded-for", v);
        }
    }
}

/// Cleans an origin's response headers for a relayed (non-GRIP) response.
pub fn to_client(headers: &mut HeaderMap) {
    remove_hop_by_hop(headers);
}

/// A copy of `headers` whose values own their bytes. Parsed header values are slices of the
/// 8 KiB buffer the head was read into, so anything kept for long (a held session's request, a
/// held response's head) would pin that buffer while hyper allocates another for its next read.
pub fn detached(headers: &HeaderMap) -> HeaderMap {
    let mut copy = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let mut owned = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        owned.set_sensitive(value.is_sensitive());
        copy.append(name.clone(), owned);
    }
    copy
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn fwd<'a>(xff: &'a [XffRule], host: Option<&'a str>) -> Forwarding<'a> {
        Forwarding {
            peer: "10.0.0.9".parse().unwrap(),
            tls: false,
            websocket: false,
            xff,
            keep_grip: false,
            xfp: ForwardedProto::ProtoOnly,
            host,
            route_headers: &[],
        }
    }

    #[test]
    fn strips_hop_by_hop_grip_and_connection_tokens() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("grip-sig", "forged"),
            ("grip-last", "c; last-id=1"),
            ("accept-encoding", "gzip"),
            ("x-keep", "yes"),
        ]);
        to_origin(&mut h, &fwd(&[], None));
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-keep"]);
    }

    #[test]
    fn an_upstream_grip_proxys_grip_headers_stay() {
        let mut h = map(&[
            ("grip-sig", "upstream-token"),
            ("grip-last", "c; last-id=1"),
            ("connection", "keep-alive"),
        ]);
        let mut f = fwd(&[], None);
        f.keep_grip = true;
        to_origin(&mut h, &f);
        assert_eq!(h["grip-sig"], "upstream-token");
        assert_eq!(h["grip-last"], "c; last-id=1");
        assert!(h.get("connection").is_none());
    }

    #[test]
    fn xff_rules() {
        let cases: &[(&[XffRule], Option<&str>, Option<&str>)] = &[
            (&[XffRule::Append], None, Some("10.0.0.9")),
            (
                &[XffRule::Append],
                Some("1.1.1.1, 2.2.2.2"),
                Some("1.1.1.1, 2.2.2.2, 10.0.0.9"),
            ),
            (
                &[XffRule::Truncate(1), XffRule::Append],
                Some("1.1.1.1, 2.2.2.2"),
                Some("2.2.2.2, 10.0.0.9"),
            ),
            (&[XffRule::Truncate(0)], Some("1.1.1.1"), None),
            (&[], Some("1.1.1.1"), Some("1.1.1.1")),
        ];
        for (rules, given, want) in cases {
            let mut h = given.map_or_else(HeaderMap::new, |g| map(&[("x-forwarded-for", g)]));
            to_origin(&mut h, &fwd(rules, None));
            assert_eq!(
                h.get("x-forwarded-for").map(|v| v.to_str().unwrap()),
                *want,
                "{rules:?} {given:?}"
            );
        }
    }

    #[test]
    fn forwarded_proto_only_when_tls() {
        let mut h = map(&[("x-forwarded-proto", "https")]);
        to_origin(&mut h, &fwd(&[], None));
        assert!(h.get("x-forwarded-proto").is_none());
        let mut f = fwd(&[], None);
        f.tls = true;
        f.xfp = ForwardedProto::Both;
        to_origin(&mut h, &f);
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-protocol"], "https");
    }

    #[test]
    fn original_headers_are_copied_or_removed() {
        let client = || {
            map(&[
                ("host", "client.example"),
                ("connection", "keep-alive"),
                ("eb9bf0f5-x-kept", "upstream"),
                ("x-a", "1"),
                ("x-a", "2"),
            ])
        };
        let mut h = client();
        let copies = take_originals(&mut h, true, false);
        let names: Vec<String> = copies
            .iter()
            .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
            .collect();
        assert_eq!(
            names,
            [
                "eb9bf0f5-host: client.example",
                "eb9bf0f5-connection: keep-alive",
                "eb9bf0f5-x-kept: upstream",
                "eb9bf0f5-x-a: 1",
                "eb9bf0f5-x-a: 2",
            ]
        );
        assert!(h.get("eb9bf0f5-x-kept").is_none());
        // Without the option a client's marked header never reaches the origin.
        let mut h = client();
        assert!(take_originals(&mut h, false, false).is_empty());
        assert!(h.get("eb9bf0f5-x-kept").is_none());
        assert_eq!(h.len(), 4);
        let mut h = client();
        assert!(take_originals(&mut h, false, true).is_empty());
        assert!(h.get("eb9bf0f5-x-kept").is_none());
        // An upstream GRIP proxy's copies stay, and no more are made.
        let mut h = client();
        assert!(take_originals(&mut h, true, true).is_empty());
        assert_eq!(h["eb9bf0f5-x-kept"], "upstream");
    }

    #[test]
    fn host_and_route_headers() {
        let mut h = map(&[
            ("host", "client.example"),
            ("x-drop", "1"),
            ("x-set", "old"),
        ]);
        let rules = vec![
            ("X-Drop".to_string(), String::new()),
            ("X-Set".to_string(), "new".to_string()),
            ("X-Add".to_string(), "added".to_string()),
        ];
        let mut f = fwd(&[], Some("origin.internal:81"));
        f.route_headers = &rules;
        to_origin(&mut h, &f);
        assert_eq!(h["host"], "origin.internal:81");
        assert!(h.get("x-drop").is_none());
        assert_eq!(h["x-set"], "new");
        assert_eq!(h["x-add"], "added");
    }
}
