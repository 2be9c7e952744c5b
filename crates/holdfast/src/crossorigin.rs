//! Automatic cross-origin support, Pushpin's `auto_cross_origin` (route option `aco`): CORS
//! headers on HTTP responses ([`cors`]) and JSON-P ([`jsonp`] reads the request, [`wrap`] the
//! answer), so a page on another origin can reach the origin through Holdfast without the
//! origin doing anything.
//!
//! The entrance reads a request's [`CrossOrigin`] facts before it is proxied (a JSON-P request
//! is rewritten into the request it stands for) and, once the response is ready, [`finish`]es
//! it. How is decided by the response's [`Shape`], which the code that made the response marks:
//! Pushpin changes responses in two places — its proxy (relayed answers and errors) and its
//! handler (held long-polls) — and each does it its own way. Stream holds get CORS headers
//! only, never a JSON-P wrapper, as in Pushpin. A preflight `OPTIONS` is proxied like any
//! request and its answer gets the CORS headers; Holdfast does not answer it itself.

pub mod cors;
pub mod jsonp;
pub mod wrap;

use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::http::{full, Body};
use cors::CorsRequest;
use jsonp::Callback;

/// Which of Pushpin's two places a response stands for; marked in its extensions by whoever
/// made it. Unmarked responses are [`Shape::Relayed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shape {
    /// An origin's answer passed on, an error, or a GRIP answer that held nothing.
    #[default]
    Relayed,
    /// A held long-poll's answer: published, or the origin's at the timeout.
    Held,
    /// A stream hold, or an answer followed by next links: headers only.
    Stream,
}

impl Shape {
    /// Marks `resp` as made this way.
    pub fn mark(self, mut resp: Response<Body>) -> Response<Body> {
        resp.extensions_mut().insert(self);
        resp
    }
}

/// A request's cross-origin facts, read at the entrance.
#[derive(Debug, Clone)]
pub struct CrossOrigin {
    /// What the request says for CORS.
    pub cors: CorsRequest,
    /// The JSON-P callback, when the request is a JSON-P one.
    pub callback: Option<Callback>,
}

/// Applies cross-origin support to a response for a request with `co`: CORS headers, or the
/// JSON-P wrapper (never both, as in Pushpin). `limit`: bytes of a relayed body buffered to
/// answer JSON-P with a length (`limits.max_accept_body`).
pub async fn finish(co: &CrossOrigin, resp: Response<Body>, limit: usize) -> Response<Body> {
    let shape = resp
        .extensions()
        .get::<Shape>()
        .copied()
        .unwrap_or_default();
    match (shape, &co.callback) {
        (Shape::Relayed, Some(cb)) => wrap::relayed(cb, resp, limit).await,
        (Shape::Held, Some(cb)) => wrap::held(cb, resp).await,
        _ => {
            let mut resp = resp;
            co.cors.apply(resp.headers_mut());
            resp
        }
    }
}

/// A `text/plain` answer of cross-origin support's own (a refused JSON-P request, a body that
/// cannot be wrapped), with Pushpin's exact content type.
pub fn plain(status: StatusCode, text: impl Into<bytes::Bytes>) -> Response<Body> {
    let mut resp = Response::new(full(text));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

/// A header name as Pushpin users see it written: `content-type` as `Content-Type`. Holdfast
/// keeps names in lower case (as HTTP/2 requires), and the CORS and JSON-P headers Pushpin
/// writes name them in the origin's capitalisation, which is almost always this one.
pub fn display_name(name: &HeaderName) -> String {
    let mut out = String::with_capacity(name.as_str().len());
    let mut upper = true;
    for c in name.as_str().chars() {
        out.push(if upper { c.to_ascii_uppercase() } else { c });
        upper = c == '-';
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names() {
        for (name, want) in [
            ("content-type", "Content-Type"),
            ("x-custom", "X-Custom"),
            ("etag", "Etag"),
            ("a--b", "A--B"),
        ] {
            assert_eq!(display_name(&HeaderName::from_static(name)), want);
        }
    }
}
