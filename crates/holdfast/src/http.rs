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

/// A response not known yet: a held long-poll's, decided by a publish or the timeout.
pub type Later = std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>>;

/// The response a long-poll hold returns at once when the server can take its request's socket
/// from hyper and write the response itself (`can_defer` of [`crate::route::handle`]): a
/// placeholder whose extension holds the real response, still to come. The server then frees
/// hyper's connection while the request is held, and writes the response when it resolves.
#[derive(Clone)]
pub struct Deferred(std::sync::Arc<std::sync::Mutex<Option<Later>>>);

impl Deferred {
    /// A placeholder response carrying `later`.
    pub fn response(later: Later) -> Response<Body> {
        let mut resp = Response::new(full(""));
        resp.extensions_mut()
            .insert(Deferred(std::sync::Arc::new(std::sync::Mutex::new(Some(
                later,
            )))));
        resp
    }

    /// The deferred response of `resp`, if it is such a placeholder.
    pub fn of(resp: &Response<Body>) -> Option<Deferred> {
        resp.extensions().get::<Deferred>().cloned()
    }

    /// Takes the future out; `None` once taken.
    pub fn take(&self) -> Option<Later> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Runs `map` on the response once it comes (the entrance's finishing steps without
    /// cross-origin work: the access log), in place. Cheaper to keep than [`Deferred::then`]:
    /// the waiting future holds the closure and the placeholder, no second future.
    pub fn map<F>(&self, map: F)
    where
        F: FnOnce(Response<Body>) -> Response<Body> + Send + 'static,
    {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(later) = slot.take() {
            *slot = Some(Box::pin(async move { map(later.await) }));
        }
    }

    /// Runs `then` on the response once it comes (the entrance's finishing steps: cross-origin
    /// wrapping, the access log), in place.
    pub fn then<F, Fut>(&self, then: F)
    where
        F: FnOnce(Response<Body>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
    {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(later) = slot.take() {
            *slot = Some(Box::pin(async move { then(later.await).await }));
        }
    }
}

/// Whether `headers` have a `Connection` header with the `close` option.
pub fn says_close(headers: &http::HeaderMap) -> bool {
    headers.get_all(http::header::CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    })
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
