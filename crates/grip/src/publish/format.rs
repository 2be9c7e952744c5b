//! The publish formats: `http-response`, `http-stream` and `ws-message` (Pushpin's three),
//! `http-request` for webhook subscribers, and `json-object` for Bayeux subscribers.
//!
//! As in Pushpin, only the fields that the action uses are read: a `hint` or
//! `close` needs no content, and its other fields are not checked.

use bytes::Bytes;

use super::{
    Action, Formats, HttpRequestFormat, HttpResponseFormat, HttpStreamFormat, JsonObjectFormat,
    MessageType, ResponseBody, WsMessageFormat,
};
use crate::fields::Obj;

const HTTP_RESPONSE: &str = "'http-response'";
const HTTP_STREAM: &str = "'http-stream'";
const WS_MESSAGE: &str = "'ws-message'";
const JSON_OBJECT: &str = "'json-object'";
const HTTP_REQUEST: &str = "'http-request'";

pub(super) fn parse_formats(formats: Obj<'_>) -> Result<Formats, String> {
    let get = |key: &str, name: &'static str| -> Result<Option<Obj<'_>>, String> {
        formats.get(key).map(|v| Obj::new(v, name)).transpose()
    };
    let out = Formats {
        http_response: get("http-response", HTTP_RESPONSE)?
            .map(http_response)
            .transpose()?,
        http_stream: get("http-stream", HTTP_STREAM)?
            .map(http_stream)
            .transpose()?,
        ws_message: get("ws-message", WS_MESSAGE)?.map(ws_message).transpose()?,
        json_object: get("json-object", JSON_OBJECT)?
            .map(json_object)
            .transpose()?,
        http_request: get("http-request", HTTP_REQUEST)?
            .map(http_request)
            .transpose()?,
    };
    if out.http_response.is_none()
        && out.http_stream.is_none()
        && out.ws_message.is_none()
        && out.json_object.is_none()
        && out.http_request.is_none()
    {
        return Err("no formats specified".to_string());
    }
    Ok(out)
}

fn action(format: Obj<'_>) -> Result<Action, String> {
    match format.str_opt("action")? {
        None | Some("send") => Ok(Action::Send),
        Some("hint") => Ok(Action::Hint),
        Some("close") => Ok(Action::Close),
        Some("refresh") => Ok(Action::Refresh),
        Some(other) => Err(format!(
            "{} contains 'action' with unknown value '{other}'",
            format.name()
        )),
    }
}

fn content_filters(format: Obj<'_>) -> Result<Option<Vec<String>>, String> {
    format.string_list_opt(
        "content-filters",
        "content-filters contains element with wrong type",
    )
}

fn http_response(format: Obj<'_>) -> Result<HttpResponseFormat, String> {
    let mut out = HttpResponseFormat {
        action: action(format)?,
        code: 200,
        reason: None,
        headers: Vec::new(),
        body: ResponseBody::Empty,
        content_filters: None,
    };
    if out.action != Action::Send {
        return Ok(out);
    }
    if let Some(code) = format.int_opt("code")? {
        out.code = u16::try_from(code)
            .ok()
            .filter(|c| *c <= 999)
            .ok_or_else(|| format.invalid_value("code", code))?;
    }
    out.reason = format
        .str_opt("reason")?
        .filter(|r| !r.is_empty())
        .map(str::to_string);
    out.headers = format.headers_opt("headers")?.unwrap_or_default();
    out.content_filters = content_filters(format)?;
    out.body = if let Some(body) = format.content_opt("body", "body-bin")? {
        ResponseBody::Bytes(body)
    } else if let Some(ops) = format.get("body-patch") {
        if !ops.is_array() {
            return Err(format.wrong_type("body-patch"));
        }
        let patch = serde_json::from_value::<json_patch::Patch>(ops.clone()).map_err(|e| {
            format!("{HTTP_RESPONSE} contains 'body-patch' with invalid operations: {e}")
        })?;
        ResponseBody::Patch(patch)
    } else {
        return Err(format!(
            "{HTTP_RESPONSE} does not contain 'body', 'body-bin', or 'body-patch'"
        ));
    };
    Ok(out)
}

fn http_request(format: Obj<'_>) -> Result<HttpRequestFormat, String> {
    let method = format.str_opt("method")?.unwrap_or("POST");
    // A token, as RFC 9110 defines a method; hyper would refuse anything else at send time.
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if method.is_empty() || !method.chars().all(is_tchar) {
        return Err(format.invalid_value("method", format!("'{method}'")));
    }
    Ok(HttpRequestFormat {
        method: method.to_string(),
        headers: format.headers_opt("headers")?.unwrap_or_default(),
        body: format.content_opt("body", "body-bin")?.unwrap_or_default(),
    })
}

fn http_stream(format: Obj<'_>) -> Result<HttpStreamFormat, String> {
    let mut out = HttpStreamFormat {
        action: action(format)?,
        content: Bytes::new(),
        content_filters: None,
    };
    if out.action != Action::Send {
        return Ok(out);
    }
    out.content_filters = content_filters(format)?;
    out.content = format
        .content_opt("content", "content-bin")?
        .ok_or_else(|| format!("{HTTP_STREAM} does not contain 'content' or 'content-bin'"))?;
    Ok(out)
}

fn ws_message(format: Obj<'_>) -> Result<WsMessageFormat, String> {
    let mut out = WsMessageFormat {
        action: action(format)?,
        message_type: MessageType::Text,
        content: Bytes::new(),
        close_code: None,
        close_reason: None,
        content_filters: None,
    };
    match out.action {
        Action::Send => {
            let named = format
                .str_opt("type")?
                .map(|name| {
                    MessageType::from_name(name).ok_or_else(|| {
                        format!("{WS_MESSAGE} contains 'type' with unknown value '{name}'")
                    })
                })
                .transpose()?;
            out.content_filters = content_filters(format)?;
            let is_bin = format.has("content-bin");
            match format.content_opt("content", "content-bin")? {
                Some(content) => out.content = content,
                // Control frames may be empty; data frames need content.
                None if matches!(named, Some(MessageType::Ping | MessageType::Pong)) => {}
                None => {
                    return Err(format!(
                        "{WS_MESSAGE} does not contain 'content' or 'content-bin'"
                    ))
                }
            }
            let default = if is_bin {
                MessageType::Binary
            } else {
                MessageType::Text
            };
            out.message_type = named.unwrap_or(default);
        }
        Action::Close => {
            if let Some(code) = format.int_opt("code")? {
                out.close_code =
                    Some(u16::try_from(code).map_err(|_| format.invalid_value("code", code))?);
            }
            out.close_reason = format
                .str_opt("reason")?
                .filter(|r| !r.is_empty())
                .map(str::to_string);
        }
        Action::Hint | Action::Refresh => {}
    }
    Ok(out)
}

/// `{"data": <any JSON>, "channel": "/a/b"}`: `data` is required (`null` is a value) and is
/// kept as compact JSON; `channel`, optional, must be a Bayeux channel name.
fn json_object(format: Obj<'_>) -> Result<JsonObjectFormat, String> {
    let data = format
        .raw("data")
        .ok_or_else(|| format!("{JSON_OBJECT} does not contain 'data'"))?;
    let text = serde_json::to_vec(data).map_err(|e| format!("{JSON_OBJECT} 'data': {e}"))?;
    let channel = format
        .str_opt("channel")?
        .map(|c| {
            if crate::bayeux::is_channel(c) {
                Ok(c.to_string())
            } else {
                Err(format.invalid_value("channel", format!("'{c}'")))
            }
        })
        .transpose()?;
    Ok(JsonObjectFormat {
        data: Bytes::from(text),
        channel,
    })
}
