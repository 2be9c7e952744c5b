//! Writing a [`PublishItem`] back as Pushpin's publish JSON, for engines that carry items between
//! processes (the cluster bus).
//!
//! The output is what [`parse_publish_item`](super::parse_publish_item) reads, and reading it
//! gives the same item back: content that is valid UTF-8 is written as `content`/`body`, anything
//! else as base64 `content-bin`/`body-bin`; a format whose action is not `send` carries only its
//! action (and the close code and reason of a `ws-message` close), as parsing ignores the rest.

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value};

use super::{
    Action, Formats, HttpRequestFormat, HttpResponseFormat, HttpStreamFormat, MessageType,
    PublishItem, ResponseBody, WsMessageFormat,
};

impl PublishItem {
    /// The item as one publish item object in Pushpin's JSON format.
    ///
    /// ```
    /// let body = br#"{"items": [{"channel": "news", "id": "2", "prev-id": "1",
    ///     "formats": {"http-stream": {"content": "data: hi\n\n"}}}]}"#;
    /// let item = grip::publish::parse_publish_body(body).unwrap().remove(0);
    /// let again = grip::publish::parse_publish_item(&item.to_json()).unwrap();
    /// assert_eq!(again, item);
    /// ```
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("channel".into(), self.channel.clone().into());
        if let Some(id) = &self.id {
            out.insert("id".into(), id.clone().into());
        }
        if let Some(prev) = &self.prev_id {
            out.insert("prev-id".into(), prev.clone().into());
        }
        out.insert("formats".into(), formats(&self.formats));
        if !self.meta.is_empty() {
            let meta = self
                .meta
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.clone())))
                .collect();
            out.insert("meta".into(), Value::Object(meta));
        }
        if let Some(size) = self.size {
            out.insert("size".into(), size.into());
        }
        if self.no_seq {
            out.insert("no-seq".into(), true.into());
        }
        Value::Object(out)
    }
}

fn formats(f: &Formats) -> Value {
    let mut out = Map::new();
    if let Some(r) = &f.http_response {
        out.insert("http-response".into(), http_response(r));
    }
    if let Some(s) = &f.http_stream {
        out.insert("http-stream".into(), http_stream(s));
    }
    if let Some(w) = &f.ws_message {
        out.insert("ws-message".into(), ws_message(w));
    }
    if let Some(j) = &f.json_object {
        // The text was serialized from a JSON value, so it parses back.
        let data = serde_json::from_slice(&j.data).unwrap_or(Value::Null);
        let mut obj = Map::new();
        obj.insert("data".into(), data);
        if let Some(c) = &j.channel {
            obj.insert("channel".into(), c.clone().into());
        }
        out.insert("json-object".into(), Value::Object(obj));
    }
    if let Some(r) = &f.http_request {
        out.insert("http-request".into(), http_request(r));
    }
    Value::Object(out)
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Send => "send",
        Action::Hint => "hint",
        Action::Close => "close",
        Action::Refresh => "refresh",
    }
}

/// A format object that names its action; the caller adds the action's fields.
fn with_action(action: Action) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("action".into(), action_name(action).into());
    out
}

/// Puts `content` under `text_key` when it is UTF-8, else base64 under `bin_key`.
fn put_content(out: &mut Map<String, Value>, text_key: &str, bin_key: &str, content: &Bytes) {
    match std::str::from_utf8(content) {
        Ok(text) => out.insert(text_key.into(), text.into()),
        Err(_) => out.insert(
            bin_key.into(),
            base64::engine::general_purpose::STANDARD
                .encode(content)
                .into(),
        ),
    };
}

fn put_filters(out: &mut Map<String, Value>, filters: &Option<Vec<String>>) {
    if let Some(filters) = filters {
        out.insert("content-filters".into(), filters.clone().into());
    }
}

fn http_response(r: &HttpResponseFormat) -> Value {
    let mut out = with_action(r.action);
    if r.action != Action::Send {
        return Value::Object(out);
    }
    out.insert("code".into(), r.code.into());
    if let Some(reason) = &r.reason {
        out.insert("reason".into(), reason.clone().into());
    }
    if !r.headers.is_empty() {
        out.insert("headers".into(), header_pairs(&r.headers));
    }
    put_filters(&mut out, &r.content_filters);
    match &r.body {
        ResponseBody::Empty => {
            out.insert("body".into(), "".into());
        }
        ResponseBody::Bytes(b) => put_content(&mut out, "body", "body-bin", b),
        ResponseBody::Patch(patch) => {
            let ops = serde_json::to_value(patch).unwrap_or(Value::Array(Vec::new()));
            out.insert("body-patch".into(), ops);
        }
    }
    Value::Object(out)
}

fn header_pairs(headers: &[(String, String)]) -> Value {
    // Pairs, not an object: keeps order and repeated names.
    headers
        .iter()
        .map(|(k, v)| Value::from(vec![k.clone(), v.clone()]))
        .collect()
}

fn http_request(r: &HttpRequestFormat) -> Value {
    let mut out = Map::new();
    out.insert("method".into(), r.method.clone().into());
    if !r.headers.is_empty() {
        out.insert("headers".into(), header_pairs(&r.headers));
    }
    put_content(&mut out, "body", "body-bin", &r.body);
    Value::Object(out)
}

fn http_stream(s: &HttpStreamFormat) -> Value {
    let mut out = with_action(s.action);
    if s.action == Action::Send {
        put_filters(&mut out, &s.content_filters);
        put_content(&mut out, "content", "content-bin", &s.content);
    }
    Value::Object(out)
}

fn ws_message(w: &WsMessageFormat) -> Value {
    let mut out = with_action(w.action);
    match w.action {
        Action::Send => {
            let kind = match w.message_type {
                MessageType::Text => "text",
                MessageType::Binary => "binary",
                MessageType::Ping => "ping",
                MessageType::Pong => "pong",
            };
            out.insert("type".into(), kind.into());
            put_filters(&mut out, &w.content_filters);
            put_content(&mut out, "content", "content-bin", &w.content);
        }
        Action::Close => {
            if let Some(code) = w.close_code {
                out.insert("code".into(), code.into());
            }
            if let Some(reason) = &w.close_reason {
                out.insert("reason".into(), reason.clone().into());
            }
        }
        Action::Hint | Action::Refresh => {}
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{parse_publish_body, parse_publish_item, ResponseBody};

    /// Every item of `body`, written and read again, is the same item.
    fn round_trips(body: serde_json::Value) {
        let items = parse_publish_body(body.to_string().as_bytes()).unwrap();
        assert!(!items.is_empty());
        for item in items {
            let json = item.to_json();
            let again = parse_publish_item(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
            assert_eq!(again, item, "{json}");
        }
    }

    #[test]
    fn every_field_round_trips() {
        round_trips(json!({"items": [
            {"channel": "c", "id": "2", "prev-id": "1", "size": 12, "no-seq": true,
             "meta": {"sender": "bob", "skip_users": "a,b"},
             "formats": {
                "http-response": {"code": 404, "reason": "Gone Fishing",
                    "headers": [["X-A", "1"], ["X-A", "2"]], "body": "nope",
                    "content-filters": ["skip-self"]},
                "http-stream": {"content": "data: hi\n\n", "content-filters": ["build-id"]},
                "ws-message": {"content": "hello"}
             }},
            {"channel": "bin", "formats": {
                "http-response": {"body-bin": "/wD+"},
                "http-stream": {"content-bin": "gIE="},
                "ws-message": {"content-bin": "AAEC"}
            }},
            {"channel": "patch", "http-response": {"body-patch": [
                {"op": "replace", "path": "/n", "value": 2},
                {"op": "remove", "path": "/old"}
            ]}},
            {"channel": "ctl", "formats": {
                "http-response": {"action": "hint"},
                "http-stream": {"action": "close"},
                "ws-message": {"action": "close", "code": 4001, "reason": "bye"}
            }},
            {"channel": "ws", "formats": {"ws-message": {"type": "ping"}}},
            {"channel": "ws", "formats": {"ws-message": {"type": "binary", "content": "text"}}},
            {"channel": "ws", "formats": {"ws-message": {"action": "refresh"}}},
            {"channel": "ws", "formats": {"ws-message": {"action": "close"}}},
            {"channel": "s", "formats": {"http-stream": {"action": "hint"}}}
        ]}));
    }

    #[test]
    fn binary_content_is_written_as_base64() {
        let items = parse_publish_body(
            br#"{"items": [{"channel": "c", "http-stream": {"content-bin": "/wA="}}]}"#,
        )
        .unwrap();
        let json = items[0].to_json();
        assert_eq!(json["formats"]["http-stream"]["content-bin"], "/wA=");
        assert!(json["formats"]["http-stream"].get("content").is_none());
        let patch = parse_publish_body(
            br#"{"items": [{"channel": "c", "http-response": {"body-patch": []}}]}"#,
        )
        .unwrap();
        assert!(matches!(
            patch[0].formats.http_response.as_ref().unwrap().body,
            ResponseBody::Patch(_)
        ));
        assert_eq!(
            patch[0].to_json()["formats"]["http-response"]["body-patch"],
            json!([])
        );
    }
}
