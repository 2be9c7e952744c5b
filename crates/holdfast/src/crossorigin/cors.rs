//! CORS headers, as Pushpin adds them: each `Access-Control-*` header the response does not
//! already have is appended, in Pushpin's order, from what the request asked for.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::display_name;

/// What a request says about itself for CORS, kept from its headers (owned copies: a held
/// request keeps them for as long as it waits).
#[derive(Debug, Clone, Default)]
pub struct CorsRequest {
    /// `Origin`.
    origin: Option<HeaderValue>,
    /// `Access-Control-Request-Method`.
    method: Option<HeaderValue>,
    /// `Access-Control-Request-Headers`, every comma-separated name of every such header.
    headers: Vec<String>,
}

/// The methods allowed when the request does not name one.
const ALLOW_METHODS: &str = "OPTIONS, HEAD, GET, POST, PUT, DELETE";

/// Response headers a browser shows scripts without being told (CORS "simple" headers, as
/// Pushpin lists them).
const SIMPLE: &[&str] = &[
    "cache-control",
    "content-language",
    "content-length",
    "content-type",
    "expires",
    "last-modified",
    "pragma",
];

impl CorsRequest {
    /// Reads the CORS request headers.
    pub fn of(headers: &HeaderMap) -> CorsRequest {
        let owned = |name: HeaderName| {
            headers
                .get(name)
                .filter(|v| !v.is_empty())
                .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
        };
        CorsRequest {
            origin: owned(header::ORIGIN),
            method: owned(header::ACCESS_CONTROL_REQUEST_METHOD),
            headers: headers
                .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(str::to_string)
                .collect(),
        }
    }

    /// Appends the CORS headers `headers` lacks: `Access-Control-Allow-Methods` (the requested
    /// method, or every common one), `-Allow-Headers` (the requested ones, if any),
    /// `-Expose-Headers` (every response header a script could not otherwise read, if any),
    /// `-Allow-Credentials: true`, `-Allow-Origin` (the request's `Origin`, or `*`) and
    /// `-Max-Age: 3600`. A header the origin set itself is left as it is.
    pub fn apply(&self, headers: &mut HeaderMap) {
        if !headers.contains_key(header::ACCESS_CONTROL_ALLOW_METHODS) {
            let methods = self
                .method
                .clone()
                .unwrap_or(HeaderValue::from_static(ALLOW_METHODS));
            headers.append(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
        }
        if !headers.contains_key(header::ACCESS_CONTROL_ALLOW_HEADERS) && !self.headers.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&self.headers.join(", ")) {
                headers.append(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
            }
        }
        if !headers.contains_key(header::ACCESS_CONTROL_EXPOSE_HEADERS) {
            let expose: Vec<String> = headers
                .keys()
                .filter(|name| is_exposable(name))
                .map(display_name)
                .collect();
            if let Ok(v) = HeaderValue::from_str(&expose.join(", ")) {
                if !expose.is_empty() {
                    headers.append(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
                }
            }
        }
        if !headers.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS) {
            headers.append(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if !headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
            let origin = self.origin.clone().unwrap_or(HeaderValue::from_static("*"));
            headers.append(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        }
        if !headers.contains_key(header::ACCESS_CONTROL_MAX_AGE) {
            headers.append(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("3600"),
            );
        }
    }
}

/// A response header worth listing in `Access-Control-Expose-Headers`.
fn is_exposable(name: &HeaderName) -> bool {
    let name = name.as_str();
    !SIMPLE.contains(&name) && !name.starts_with("access-control-") && !name.starts_with("grip-")
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

    fn lines(h: &HeaderMap) -> Vec<String> {
        h.iter()
            .map(|(k, v)| format!("{}: {}", display_name(k), v.to_str().unwrap()))
            .collect()
    }

    #[test]
    fn adds_pushpins_headers_in_pushpins_order() {
        let req = CorsRequest::of(&map(&[("origin", "http://a.example")]));
        let mut resp = map(&[
            ("server", "s"),
            ("date", "d"),
            ("content-type", "application/json"),
            ("x-custom", "a"),
            ("cache-control", "no-cache"),
            ("x-other", "b"),
            ("content-length", "14"),
        ]);
        req.apply(&mut resp);
        assert_eq!(
            lines(&resp)[7..],
            [
                "Access-Control-Allow-Methods: OPTIONS, HEAD, GET, POST, PUT, DELETE",
                "Access-Control-Expose-Headers: Server, Date, X-Custom, X-Other",
                "Access-Control-Allow-Credentials: true",
                "Access-Control-Allow-Origin: http://a.example",
                "Access-Control-Max-Age: 3600",
            ]
        );
    }

    #[test]
    fn a_preflight_gets_what_it_asked_for() {
        let req = CorsRequest::of(&map(&[
            ("origin", "http://a.example"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "x-a, Content-Type"),
            ("access-control-request-headers", " x-b ,"),
        ]));
        let mut resp = map(&[("allow", "GET, POST"), ("content-type", "text/plain")]);
        req.apply(&mut resp);
        assert_eq!(
            lines(&resp)[2..],
            [
                "Access-Control-Allow-Methods: PUT",
                "Access-Control-Allow-Headers: x-a, Content-Type, x-b",
                "Access-Control-Expose-Headers: Allow",
                "Access-Control-Allow-Credentials: true",
                "Access-Control-Allow-Origin: http://a.example",
                "Access-Control-Max-Age: 3600",
            ]
        );
    }

    #[test]
    fn the_origins_own_headers_stay_and_nothing_to_expose_is_no_header() {
        let req = CorsRequest::of(&HeaderMap::new());
        let mut resp = map(&[
            ("access-control-allow-origin", "https://own.example"),
            ("access-control-allow-methods", "GET"),
            ("content-type", "text/plain"),
            ("grip-hold", "response"),
        ]);
        req.apply(&mut resp);
        assert_eq!(
            lines(&resp),
            [
                "Access-Control-Allow-Origin: https://own.example",
                "Access-Control-Allow-Methods: GET",
                "Content-Type: text/plain",
                "Grip-Hold: response",
                "Access-Control-Allow-Credentials: true",
                "Access-Control-Max-Age: 3600",
            ]
        );
        let mut bare = HeaderMap::new();
        req.apply(&mut bare);
        assert_eq!(bare["access-control-allow-origin"], "*");
        assert!(!bare.contains_key("access-control-expose-headers"));
        assert!(!bare.contains_key("access-control-allow-headers"));
    }
}
