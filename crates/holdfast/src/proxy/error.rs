//! Proxy errors, tagged by who caused them, and the one place they become HTTP responses.

use http::{Response, StatusCode};
use tracing::Level;

use crate::http::{text_response, Body};

/// Who caused an error: decides the status code family and the log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The client sent something Holdfast cannot serve.
    Client,
    /// The origin failed or misbehaved.
    Origin,
    /// Holdfast itself.
    Internal,
}

/// Everything that can stop a request from being proxied.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route matches the request.
    #[error("No route for host: {0}")]
    NoRoute(String),
    /// No target could be connected to; each entry is `label` and why.
    #[error("Unable to connect to any targets. Tried: {}", .0.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>().join(", "))]
    Unreachable(Vec<(String, String)>),
    /// The origin did not answer within the response timeout.
    #[error("Timed out waiting for the origin ({0}) to respond.")]
    OriginTimeout(String),
    /// The origin's body sent nothing for `timeouts.origin_body_idle_secs`.
    #[error("Timed out waiting for the origin ({target}) to send its body: {reason}.")]
    OriginBodyTimeout {
        /// The target label.
        target: String,
        /// How long it was silent, naming the setting.
        reason: String,
    },
    /// The origin connection failed after the request was sent.
    #[error("Error while proxying to origin {target}: {reason}")]
    Origin {
        /// The target label.
        target: String,
        /// What went wrong.
        reason: String,
    },
    /// The origin's GRIP instructions are invalid.
    #[error("Failed to parse accept instructions from {target}: {reason}")]
    BadInstructions {
        /// The target label.
        target: String,
        /// The parse error, naming the header or field.
        reason: String,
    },
    /// The client's request cannot be served as sent.
    #[error("{0}")]
    BadRequest(String),
    /// The client's request body broke off (malformed chunked framing, shorter than its
    /// `Content-Length`); the origin request was aborted.
    #[error("The request body could not be read: {0}.")]
    RequestBody(String),
    /// The client's request body sent nothing for `timeouts.client_body_idle_secs`; the origin
    /// request was aborted.
    #[error("The request body stalled: {0}.")]
    RequestBodyTimeout(String),
    /// Holdfast has no file descriptor left for an origin connection.
    #[error("{0}")]
    NoDescriptors(crate::descriptors::Exhausted),
}

impl ProxyError {
    /// Who is to blame.
    pub fn source_of(&self) -> Source {
        match self {
            ProxyError::NoRoute(_)
            | ProxyError::BadRequest(_)
            | ProxyError::RequestBody(_)
            | ProxyError::RequestBodyTimeout(_) => Source::Client,
            ProxyError::Unreachable(_)
            | ProxyError::OriginTimeout(_)
            | ProxyError::OriginBodyTimeout { .. }
            | ProxyError::Origin { .. }
            | ProxyError::BadInstructions { .. } => Source::Origin,
            ProxyError::NoDescriptors(_) => Source::Internal,
        }
    }

    /// The status code the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute(_)
            | ProxyError::Unreachable(_)
            | ProxyError::Origin { .. }
            | ProxyError::BadInstructions { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::OriginTimeout(_) | ProxyError::OriginBodyTimeout { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::BadRequest(_) | ProxyError::RequestBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::RequestBodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::NoDescriptors(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The response for the client: a short text, with details only when `debug` is on. The
    /// error is logged unless its level is more verbose than `max_level` (the route's
    /// `log_level`).
    pub fn to_response(&self, debug: bool, max_level: Option<Level>) -> Response<Body> {
        let text = match (self, debug) {
            (ProxyError::Unreachable(tried), true) => format!(
                "Unable to connect to any targets. Tried: {}",
                tried
                    .iter()
                    .map(|(t, why)| format!("{t} ({why})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            // A policy refusal is the routes file's and the policy's doing, not the origin's
            // state: the client is told, without the addresses.
            (ProxyError::Unreachable(tried), false) => format!(
                "Unable to connect to any targets. Tried: {}",
                tried
                    .iter()
                    .map(|(t, why)| match why.starts_with(crate::outbound::REFUSED) {
                        true => format!("{t} ({why})"),
                        false => t.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            (ProxyError::Origin { .. } | ProxyError::BadInstructions { .. }, false) => {
                "Error while proxying to origin.".to_string()
            }
            (ProxyError::OriginTimeout(_) | ProxyError::OriginBodyTimeout { .. }, false) => {
                "Timed out waiting for the origin to respond.".to_string()
            }
            _ => self.to_string(),
        };
        let level = match self.source_of() {
            Source::Client => Level::DEBUG,
            Source::Origin => Level::WARN,
            Source::Internal => Level::ERROR,
        };
        if max_level.is_none_or(|max| level <= max) {
            match self.source_of() {
                Source::Client => tracing::debug!(error = %self, "request refused"),
                Source::Origin => tracing::warn!(error = %self, "origin error"),
                Source::Internal => tracing::error!(error = %self, "internal error"),
            }
        }
        text_response(self.status(), format!("{text}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn text_of(resp: Response<Body>) -> (StatusCode, String) {
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn unreachable_names_targets_and_details_only_in_debug() {
        let e = ProxyError::Unreachable(vec![
            ("a:1".into(), "connection refused".into()),
            ("b:2".into(), "timed out".into()),
        ]);
        assert_eq!(
            e.to_string(),
            "Unable to connect to any targets. Tried: a:1, b:2"
        );
        assert_eq!(
            text_of(e.to_response(false, None)).await,
            (
                StatusCode::BAD_GATEWAY,
                "Unable to connect to any targets. Tried: a:1, b:2\n".to_string()
            )
        );
        assert_eq!(
            text_of(e.to_response(true, None)).await.1,
            "Unable to connect to any targets. Tried: a:1 (connection refused), b:2 (timed out)\n"
        );
    }

    #[tokio::test]
    async fn a_policy_refusal_is_told_without_debug_and_other_reasons_are_not() {
        let refused = crate::outbound::Refused {
            host: "internal".into(),
            addr: "10.0.0.1".parse().unwrap(),
            class: crate::outbound::Class::Private,
        };
        let e = ProxyError::Unreachable(vec![
            ("internal:80".into(), refused.brief()),
            ("b:2".into(), "connection refused".into()),
        ]);
        assert_eq!(
            text_of(e.to_response(false, None)).await,
            (
                StatusCode::BAD_GATEWAY,
                "Unable to connect to any targets. Tried: internal:80 (refused by the outbound \
                 policy: a private address, which outbound.allow does not list), b:2\n"
                    .to_string()
            )
        );
    }

    #[tokio::test]
    async fn a_broken_request_body_is_the_clients_fault() {
        let e = ProxyError::RequestBody("invalid chunk size line".into());
        assert_eq!(e.source_of(), Source::Client);
        assert_eq!(
            text_of(e.to_response(false, None)).await,
            (
                StatusCode::BAD_REQUEST,
                "The request body could not be read: invalid chunk size line.\n".to_string()
            )
        );
        let e = ProxyError::RequestBodyTimeout("nothing arrived for 30 s".into());
        assert_eq!(e.source_of(), Source::Client);
        let (status, text) = text_of(e.to_response(false, None)).await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(
            text,
            "The request body stalled: nothing arrived for 30 s.\n"
        );
    }

    #[tokio::test]
    async fn origin_failures_hide_their_reason_unless_debug() {
        let e = ProxyError::OriginTimeout("a:1".into());
        assert_eq!(
            text_of(e.to_response(false, None)).await,
            (
                StatusCode::GATEWAY_TIMEOUT,
                "Timed out waiting for the origin to respond.\n".to_string()
            )
        );
        let e = ProxyError::Origin {
            target: "a:1".into(),
            reason: "secret detail".into(),
        };
        let (status, text) = text_of(e.to_response(false, None)).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(text, "Error while proxying to origin.\n");
        let stalled = ProxyError::OriginBodyTimeout {
            target: "a:1".into(),
            reason: "the origin sent nothing for 60 s".into(),
        };
        assert_eq!(
            text_of(stalled.to_response(false, None)).await,
            (
                StatusCode::GATEWAY_TIMEOUT,
                "Timed out waiting for the origin to respond.\n".to_string()
            )
        );
        let (_, text) = text_of(e.to_response(true, None)).await;
        assert!(text.contains("secret detail"), "{text}");
    }
}
