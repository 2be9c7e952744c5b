//! The HTTP vocabulary every floor shares: the one boxed body type of every response, the
//! constructors for it, and the error-chain formatting used wherever hyper's errors are logged.
//!
//! It stands at the bottom of the server (only `config` is lower), so the entrance, the
//! transports, the upstream and the publish API all speak the same types without importing one
//! another.

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body::Body as HttpBody;
use http_body_util::BodyExt;

/// Error type carried by response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response Holdfast sends to a client.
pub type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// A body holding `bytes` (possibly empty).
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Boxes any body whose error converts into [`BoxError`].
pub fn boxed<B>(body: B) -> Body
where
    B: HttpBody<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// A `text/plain` response. The type names no charset, as Pushpin's own answers do not; the
/// texts are ASCII but for names quoted from requests, which are UTF-8.
pub fn text_response(status: StatusCode, text: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    resp
}

/// An error and its sources, joined: hyper's top-level messages alone say little.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn error_chain_joins_every_source() {
        let e = Layer("client error", Some(Box::new(Layer("connect", None))));
        assert_eq!(error_chain(&e), "client error: connect");
    }
}
