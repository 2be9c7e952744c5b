//! The `/webhooks` routes of the publish API, behind its authentication:
//!
//! - `POST /webhooks` with `{"channel": …, "url": …}`: register (`201`, or `200` with the
//!   existing subscriber when the pair is registered already);
//! - `GET /webhooks[?channel=…]`: list, oldest first;
//! - `GET /webhooks/{id}`: one subscriber with its counters and last error;
//! - `DELETE /webhooks/{id}`: delete (`204`).
//!
//! Answers are JSON; errors are plain text naming what was wrong.

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::{WebhookError, Webhooks};
use crate::http::{full, text_response, Body};

/// Bytes a registration body may have.
const MAX_BODY: usize = 16 * 1024;

/// Whether `path` (without a trailing slash) is for [`handle`].
pub fn is_route(path: &str) -> bool {
    path == "/webhooks" || path.starts_with("/webhooks/")
}

/// Answers a request to one of the `/webhooks` routes; `path` is without a trailing slash.
pub async fn handle(hooks: &Webhooks, path: &str, req: Request<Incoming>) -> Response<Body> {
    let rest = path.strip_prefix("/webhooks").unwrap_or(path);
    if rest.is_empty() {
        return match *req.method() {
            Method::POST => create(hooks, req).await,
            Method::GET | Method::HEAD => list(hooks, req.uri().query()),
            _ => not_allowed("GET, POST"),
        };
    }
    let Some(id) = rest.strip_prefix('/').filter(|id| !id.contains('/')) else {
        return text_response(StatusCode::NOT_FOUND, "Not Found\n");
    };
    match *req.method() {
        Method::GET | Method::HEAD => match hooks.get(id) {
            Some(sub) => json_response(StatusCode::OK, json!(sub.view())),
            None => no_such(id),
        },
        Method::DELETE => match hooks.delete(id).await {
            Ok(true) => {
                let mut resp = Response::new(full(""));
                *resp.status_mut() = StatusCode::NO_CONTENT;
                resp
            }
            Ok(false) => no_such(id),
            Err(e) => refused(e),
        },
        _ => not_allowed("GET, DELETE"),
    }
}

async fn create(hooks: &Webhooks, req: Request<Incoming>) -> Response<Body> {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let message = if e.is::<http_body_util::LengthLimitError>() {
                format!("Request body exceeds {MAX_BODY} bytes.\n")
            } else {
                "Request body could not be read.\n".to_string()
            };
            return text_response(StatusCode::BAD_REQUEST, message);
        }
    };
    let doc: Value = match serde_json::from_slice(&body) {
        Ok(Value::Object(doc)) => Value::Object(doc),
        Ok(_) => return bad("Body is not a JSON object."),
        Err(e) => return bad(&format!("Body is not valid JSON: {e}.")),
    };
    if let Some(key) = doc
        .as_object()
        .and_then(|o| o.keys().find(|k| !matches!(k.as_str(), "channel" | "url")))
    {
        return bad(&format!(
            "Unknown field '{key}'; a registration has 'channel' and 'url'."
        ));
    }
    let field = |name: &str| match doc.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("'{name}' is not a string.")),
        None => Err(format!("Body does not contain '{name}'.")),
    };
    let (channel, url) = match (field("channel"), field("url")) {
        (Ok(c), Ok(u)) => (c, u),
        (Err(e), _) | (_, Err(e)) => return bad(&e),
    };
    match hooks.create(&channel, &url).await {
        Ok((sub, new)) => {
            let status = if new {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let mut resp = json_response(status, json!(sub.view()));
            if let Ok(location) = HeaderValue::from_str(&format!("/webhooks/{}", sub.id)) {
                resp.headers_mut().insert(header::LOCATION, location);
            }
            resp
        }
        Err(e) => refused(e),
    }
}

fn list(hooks: &Webhooks, query: Option<&str>) -> Response<Body> {
    let channel = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "channel")
            .map(|(_, v)| v.into_owned())
    });
    let subs: Vec<Value> = hooks
        .list(channel.as_deref())
        .iter()
        .map(|s| json!(s.view()))
        .collect();
    json_response(StatusCode::OK, json!({ "webhooks": subs }))
}

fn refused(e: WebhookError) -> Response<Body> {
    let status = match e {
        WebhookError::Channel(_) | WebhookError::Url(_) => StatusCode::BAD_REQUEST,
        WebhookError::Full(_) => StatusCode::CONFLICT,
        WebhookError::Store(super::StoreError::Redis(_)) => {
            tracing::warn!(error = %e, "webhook registration not saved");
            StatusCode::SERVICE_UNAVAILABLE
        }
        WebhookError::Store(_) => {
            tracing::error!(error = %e, "webhook registration not saved");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    text_response(status, format!("{e}\n"))
}

fn bad(message: &str) -> Response<Body> {
    text_response(StatusCode::BAD_REQUEST, format!("{message}\n"))
}

fn no_such(id: &str) -> Response<Body> {
    text_response(
        StatusCode::NOT_FOUND,
        format!("No webhook subscriber with id {id:?}.\n"),
    )
}

fn not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp = text_response(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed.\n");
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

fn json_response(status: StatusCode, body: Value) -> Response<Body> {
    let mut resp = Response::new(full(format!("{body}\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
