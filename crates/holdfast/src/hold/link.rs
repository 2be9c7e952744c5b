//! Requests a session makes to its origin besides the first: next links (`Grip-Link rel=next`)
//! with retries, and the gone link (`rel=gone`) when the client leaves.
//!
//! Links resolve against the URI the origin saw (the route's path rewrite already applied), so a
//! relative link is the origin's own path and is sent as is — never rewritten a second time.
//! Identical next-link requests from many sessions are *not* collapsed into one: each session
//! gets a response rendered for its own `Grip-Last`, and the session rate limit
//! (`reliability.session_requests_per_sec`) is what keeps a storm of them in check.
//!
//! On a route with an `untrusted` target, a link to another host than the one the client asked
//! for is refused (a warning names the link, the host and the target): an origin that is not
//! trusted must not send Holdfast elsewhere. Links never connect to a host the routes file does
//! not name (the request goes to the route's targets), so the outbound policy
//! ([`crate::outbound`]) has nothing to check here.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response};
use hyper::body::Incoming;

use super::{HeldRequest, Positions};
use crate::app::App;
use crate::config::routes::{Route, Target};
use crate::http::full;
use crate::proxy::OriginRequest;

/// Builds a request for `link` from the session's original request: its `Host` (or the link's,
/// when it names another host) and forwarding headers, nothing else of the client's.
fn derive(ctx: &HeldRequest, link: &str, method: Method) -> Result<OriginRequest, NextLinkError> {
    let unresolvable = || NextLinkError::Unresolvable(link.to_string());
    let original = ctx.request.as_ref().ok_or_else(unresolvable)?;
    let host = original
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or(&ctx.host);
    let base =
        url::Url::parse(&format!("http://{host}{}", original.path)).map_err(|_| unresolvable())?;
    let resolved = base.join(link).map_err(|_| unresolvable())?;
    let mut path = resolved.path().to_string();
    if let Some(q) = resolved.query() {
        path.push('?');
        path.push_str(q);
    }
    // A fresh set of headers, as Pushpin sends: the client's own headers (Last-Event-ID,
    // cookies, ...) described the first request, not this one — an origin that reads
    // Last-Event-ID before its link's query would render the same page again.
    let mut headers = HeaderMap::new();
    for name in [
        header::HOST,
        header::HeaderName::from_static("x-forwarded-for"),
        header::HeaderName::from_static("x-forwarded-proto"),
        header::HeaderName::from_static("x-forwarded-protocol"),
    ] {
        for v in original.headers.get_all(&name) {
            headers.append(name.clone(), v.clone());
        }
    }
    let authority = match (resolved.host_str(), resolved.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => host.to_string(),
    };
    let same_host = resolved.host_str() == base.host_str()
        && resolved.port_or_known_default() == base.port_or_known_default();
    if !same_host {
        if let Some(target) = ctx.route.targets.iter().find(|t| t.untrusted) {
            return Err(NextLinkError::Denied {
                link: link.to_string(),
                host: host.to_string(),
                target: target.label(),
            });
        }
        if let Ok(v) = HeaderValue::from_str(&authority) {
            headers.insert(header::HOST, v);
        }
    }
    Ok(OriginRequest {
        method,
        path,
        headers,
    })
}

/// Why a next link gave the session nothing to send.
#[derive(Debug, thiserror::Error)]
pub enum NextLinkError {
    /// The link does not resolve against the request the origin saw.
    #[error("next link {0:?} cannot be resolved")]
    Unresolvable(String),
    /// Every try failed; carries the last failure.
    #[error("Failed to retrieve next link: {0}")]
    Failed(String),
    /// The link leaves the client's host on a route whose origins are not trusted to do that.
    #[error(
        "link {link:?} leads away from host {host}, and target {target} of this route is \
         untrusted"
    )]
    Denied {
        /// The link as the origin gave it.
        link: String,
        /// The host the client asked for.
        host: String,
        /// The untrusted target.
        target: String,
    },
}

/// GETs a next link, retrying with backoff while the origin cannot be reached or answers
/// other than 2xx. Returns the response and the target that gave it.
pub async fn fetch_next(
    ctx: &HeldRequest,
    link: &str,
    positions: &Positions,
) -> Result<(Response<Incoming>, Target), NextLinkError> {
    let mut request = derive(ctx, link, Method::GET).inspect_err(|e| {
        if matches!(e, NextLinkError::Denied { .. }) {
            tracing::warn!(error = %e, "next link refused");
        }
    })?;
    positions.grip_last(&mut request.headers);
    let mut last_error = String::new();
    let mut delays = crate::retry::origin_retries();
    for attempt in 0..=crate::retry::ORIGIN_RETRIES.len() {
        if attempt > 0 {
            let delay = delays.next().expect("one delay per retry");
            tracing::debug!(link, attempt, ?delay, error = %last_error, "retrying next link");
            tokio::time::sleep(delay).await;
        }
        ctx.app.session_requests.acquire().await;
        match crate::proxy::send(&ctx.app, &ctx.route, &request, full("")).await {
            Ok((resp, target)) if resp.status().is_success() => return Ok((resp, target.clone())),
            Ok((resp, target)) => {
                last_error = format!("{} answered {}", target.label(), resp.status());
            }
            Err(e) => last_error = e.to_string(),
        }
    }
    tracing::warn!(link, error = %last_error, "Failed to retrieve next link.");
    Err(NextLinkError::Failed(last_error))
}

/// The `Grip-Link: <url>; rel=gone` of a session: POSTed, best effort, when the session ends.
pub struct GoneLink {
    app: Arc<App>,
    route: Arc<Route>,
    request: OriginRequest,
}

impl GoneLink {
    /// The gone link of a session, if its URL resolves and may be followed.
    pub fn new(ctx: &HeldRequest, url: &str) -> Option<GoneLink> {
        let request = match derive(ctx, url, Method::POST) {
            Ok(r) => r,
            Err(e @ NextLinkError::Denied { .. }) => {
                tracing::warn!(error = %e, "gone link refused");
                return None;
            }
            Err(_) => return None,
        };
        Some(GoneLink {
            app: ctx.app.clone(),
            route: ctx.route.clone(),
            request,
        })
    }
}

impl Drop for GoneLink {
    fn drop(&mut self) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (app, route) = (self.app.clone(), self.route.clone());
        let mut request = self.request.clone();
        request
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        rt.spawn(async move {
            app.session_requests.acquire().await;
            match crate::proxy::send(&app, &route, &request, full("")).await {
                Ok((resp, _)) => {
                    tracing::debug!(path = %request.path, status = %resp.status(), "gone link")
                }
                Err(e) => tracing::debug!(path = %request.path, error = %e, "gone link failed"),
            }
        });
    }
}
