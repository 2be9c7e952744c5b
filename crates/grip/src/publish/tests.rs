use super::*;
use serde_json::json;

fn one(item: Value) -> Result<PublishItem, String> {
    let body = serde_json::to_vec(&json!({ "items": [item] })).unwrap();
    parse_publish_body(&body)
        .map(|mut items| items.remove(0))
        .map_err(|e| e.to_string())
}

#[test]
fn body_shape_errors() {
    let cases: &[(&[u8], &str)] = &[
        (b"{", "Body is not valid JSON."),
        (b"", "Body is not valid JSON."),
        (b"[]", "Invalid format: body is not an object"),
        (b"{}", "Invalid format: object does not contain 'items'"),
        (
            br#"{"items": {}}"#,
            "Invalid format: 'items' is not an array",
        ),
        (
            br#"{"items": [1]}"#,
            "Invalid format: publish item object is not an object",
        ),
    ];
    for (body, want) in cases {
        assert_eq!(parse_publish_body(body).unwrap_err().to_string(), *want);
    }
    assert_eq!(parse_publish_body(br#"{"items": []}"#).unwrap(), vec![]);
}

#[test]
fn item_fields() {
    let item = one(json!({
        "channel": "c",
        "id": "2",
        "prev-id": "1",
        "meta": {"sender": "bob", "skip_users": "a,b"},
        "size": 12,
        "no-seq": true,
        "formats": {"http-stream": {"content": "x"}}
    }))
    .unwrap();
    assert_eq!(item.channel, "c");
    assert_eq!(item.id.as_deref(), Some("2"));
    assert_eq!(item.prev_id.as_deref(), Some("1"));
    assert_eq!(item.meta["sender"], "bob");
    assert_eq!(item.meta["skip_users"], "a,b");
    assert_eq!(item.size, Some(12));
    assert!(item.no_seq);

    let minimal = one(json!({"channel": "c", "id": null, "ws-message": {"content": "x"}})).unwrap();
    assert_eq!(minimal.id, None);
    assert!(!minimal.no_seq);
    assert!(
        minimal.formats.ws_message.is_some(),
        "legacy formats on the item"
    );
}

#[test]
fn item_errors() {
    let stream = json!({"http-stream": {"content": "x"}});
    let cases = [
        (
            json!({"formats": stream}),
            "publish item object does not contain 'channel'",
        ),
        (
            json!({"channel": 5, "formats": stream}),
            "publish item object contains 'channel' with wrong type",
        ),
        (
            json!({"channel": "", "formats": stream}),
            "publish item object contains 'channel' with invalid value ''",
        ),
        (
            json!({"channel": "x".repeat(513), "formats": stream}),
            "channel name 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…' is 513 bytes, over the limit of 512",
        ),
        (
            json!({"channel": "a\rb", "formats": stream}),
            r"channel name 'a\rb' has the control character U+000D at byte 1",
        ),
        (
            json!({"channel": "c", "id": 3, "formats": stream}),
            "publish item object contains 'id' with wrong type",
        ),
        (
            json!({"channel": "c", "prev-id": [], "formats": stream}),
            "publish item object contains 'prev-id' with wrong type",
        ),
        (
            json!({"channel": "c", "formats": []}),
            "publish item object contains 'formats' with wrong type",
        ),
        (
            json!({"channel": "c", "formats": {}}),
            "no formats specified",
        ),
        (json!({"channel": "c"}), "no formats specified"),
        (
            json!({"channel": "c", "formats": stream, "meta": {"user": 1}}),
            "'meta' contains 'user' with wrong type",
        ),
        (
            json!({"channel": "c", "formats": stream, "meta": "x"}),
            "publish item object contains 'meta' with wrong type",
        ),
        (
            json!({"channel": "c", "formats": stream, "size": -1}),
            "publish item object contains 'size' with invalid value -1",
        ),
        (
            json!({"channel": "c", "formats": stream, "no-seq": "yes"}),
            "publish item object contains 'no-seq' with wrong type",
        ),
        (
            json!({"channel": "c", "formats": {"http-stream": "x"}}),
            "'http-stream' is not an object",
        ),
    ];
    for (item, want) in cases {
        let shown = item.to_string();
        assert_eq!(
            one(item).unwrap_err(),
            format!("Invalid format: {want}"),
            "item {shown}"
        );
    }
}

fn formats(formats: Value) -> Result<Formats, String> {
    one(json!({"channel": "c", "formats": formats})).map(|item| item.formats)
}

#[test]
fn http_response_formats() {
    let got = formats(json!({"http-response": {
        "code": 201, "reason": "Made", "headers": [["X-Pub", "1"]], "body": "hi\n",
        "content-filters": ["build-id"]
    }}))
    .unwrap()
    .http_response
    .unwrap();
    assert_eq!(
        got,
        HttpResponseFormat {
            action: Action::Send,
            code: 201,
            reason: Some("Made".into()),
            headers: vec![("X-Pub".into(), "1".into())],
            body: ResponseBody::Bytes(Bytes::from_static(b"hi\n")),
            content_filters: Some(vec!["build-id".into()]),
        }
    );

    let bin = formats(json!({"http-response": {"body-bin": "AAE=", "body": "ignored"}})).unwrap();
    let bin = bin.http_response.unwrap();
    assert_eq!((bin.code, bin.reason), (200, None));
    assert_eq!(bin.body, ResponseBody::Bytes(Bytes::from_static(&[0, 1])));

    let hint = formats(json!({"http-response": {"action": "hint"}})).unwrap();
    let hint = hint.http_response.unwrap();
    assert_eq!(
        (hint.action, hint.body),
        (Action::Hint, ResponseBody::Empty)
    );

    let patch = formats(
        json!({"http-response": {"body-patch": [{"op": "add", "path": "/a", "value": 1}]}}),
    );
    assert!(matches!(
        patch.unwrap().http_response.unwrap().body,
        ResponseBody::Patch(_)
    ));
}

#[test]
fn stream_and_ws_formats() {
    let got = formats(json!({
        "http-stream": {"content-bin": "aGk="},
        "ws-message": {"content-bin": "aGk="}
    }))
    .unwrap();
    assert_eq!(&got.http_stream.unwrap().content[..], b"hi");
    let ws = got.ws_message.unwrap();
    assert_eq!(
        (ws.message_type, &ws.content[..]),
        (MessageType::Binary, &b"hi"[..])
    );

    let cases = [
        (json!({"content": "x"}), MessageType::Text),
        (
            json!({"content": "x", "type": "binary"}),
            MessageType::Binary,
        ),
        (json!({"type": "ping"}), MessageType::Ping),
        (json!({"type": "pong", "content": "p"}), MessageType::Pong),
    ];
    for (ws, want) in cases {
        let got = formats(json!({ "ws-message": ws }))
            .unwrap()
            .ws_message
            .unwrap();
        assert_eq!(got.message_type, want);
    }

    let close = formats(json!({
        "http-stream": {"action": "close"},
        "ws-message": {"action": "close", "code": 4001, "reason": "bye"}
    }))
    .unwrap();
    assert_eq!(close.http_stream.unwrap().action, Action::Close);
    let ws = close.ws_message.unwrap();
    assert_eq!(
        (ws.close_code, ws.close_reason.as_deref()),
        (Some(4001), Some("bye"))
    );

    let refresh = formats(json!({"ws-message": {"action": "refresh"}})).unwrap();
    assert_eq!(refresh.ws_message.unwrap().action, Action::Refresh);
}

#[test]
fn format_errors() {
    let cases = [
        (json!({"http-stream": {}}), "'http-stream' does not contain 'content' or 'content-bin'"),
        (json!({"http-stream": {"content": 1}}), "'http-stream' contains 'content' with wrong type"),
        (json!({"http-stream": {"content-bin": "*"}}), "'http-stream' contains 'content-bin' with invalid base64: Invalid symbol 42, offset 0."),
        (json!({"http-stream": {"action": "shout"}}), "'http-stream' contains 'action' with unknown value 'shout'"),
        (json!({"http-stream": {"action": 1}}), "'http-stream' contains 'action' with wrong type"),
        (json!({"http-stream": {"content": "x", "content-filters": "a"}}), "'http-stream' contains 'content-filters' with wrong type"),
        (json!({"http-stream": {"content": "x", "content-filters": [1]}}), "content-filters contains element with wrong type"),
        (json!({"http-response": {}}), "'http-response' does not contain 'body', 'body-bin', or 'body-patch'"),
        (json!({"http-response": {"body": "x", "code": 1000}}), "'http-response' contains 'code' with invalid value 1000"),
        (json!({"http-response": {"body": "x", "code": "200"}}), "'http-response' contains 'code' with wrong type"),
        (json!({"http-response": {"body": "x", "reason": 5}}), "'http-response' contains 'reason' with wrong type"),
        (json!({"http-response": {"body": "x", "headers": 5}}), "'http-response' contains 'headers' with wrong type"),
        (json!({"http-response": {"body-patch": {}}}), "'http-response' contains 'body-patch' with wrong type"),
        (
            json!({"http-response": {"body-patch": [{"op": "jump"}]}}),
            "'http-response' contains 'body-patch' with invalid operations: unknown variant `jump`, expected one of `add`, `remove`, `replace`, `move`, `copy`, `test`",
        ),
        (json!({"ws-message": {}}), "'ws-message' does not contain 'content' or 'content-bin'"),
        (json!({"ws-message": {"type": "binary"}}), "'ws-message' does not contain 'content' or 'content-bin'"),
        (json!({"ws-message": {"type": "frame", "content": "x"}}), "'ws-message' contains 'type' with unknown value 'frame'"),
        (json!({"ws-message": {"action": "close", "code": -1}}), "'ws-message' contains 'code' with invalid value -1"),
        (json!({"ws-message": {"action": "close", "code": 70000}}), "'ws-message' contains 'code' with invalid value 70000"),
        (json!({"http-request": {"method": "GE T"}}), "'http-request' contains 'method' with invalid value 'GE T'"),
        (json!({"http-request": {"method": 1}}), "'http-request' contains 'method' with wrong type"),
        (json!({"http-request": {"body-bin": "*"}}), "'http-request' contains 'body-bin' with invalid base64: Invalid symbol 42, offset 0."),
        (json!({"http-request": {"headers": 5}}), "'http-request' contains 'headers' with wrong type"),
    ];
    for (f, want) in cases {
        let shown = f.to_string();
        assert_eq!(
            formats(f).unwrap_err(),
            format!("Invalid format: {want}"),
            "formats {shown}"
        );
    }
}

fn response_format(format: Value) -> HttpResponseFormat {
    formats(json!({ "http-response": format }))
        .unwrap()
        .http_response
        .unwrap()
}

#[test]
fn patches() {
    let patch = response_format(json!({"body-patch": [
        {"op": "replace", "path": "/count", "value": 2},
        {"op": "add", "path": "/items/-", "value": "b"},
        {"op": "remove", "path": "/old"}
    ]}));
    let body = patch
        .apply_patch(br#"{"count": 1, "items": ["a"], "old": true}"#)
        .unwrap();
    assert_eq!(&body[..], br#"{"count":2,"items":["a","b"]}"#);

    assert_eq!(
        patch.apply_patch(b"not json").unwrap_err().to_string(),
        "original response body is not valid JSON, so 'body-patch' cannot be applied: expected ident at line 1 column 2"
    );
    assert_eq!(
        patch.apply_patch(br#"{"items": []}"#).unwrap_err().to_string(),
        "'body-patch' could not be applied: operation '/0' failed at path '/count': path is invalid"
    );

    let plain = response_format(json!({"body": "new"}));
    assert_eq!(&plain.apply_patch(b"whatever").unwrap()[..], b"new");
    let hint = response_format(json!({"action": "hint"}));
    assert!(hint.apply_patch(b"x").unwrap().is_empty());
}

#[test]
fn json_object_format() {
    let f = formats(json!({"json-object": {"data": {"text": "hi", "n": [1, 2]}}})).unwrap();
    let j = f.json_object.unwrap();
    assert_eq!(&j.data[..], br#"{"n":[1,2],"text":"hi"}"#);
    let f = formats(json!({"json-object": {"data": null}})).unwrap();
    assert_eq!(&f.json_object.unwrap().data[..], b"null");
    assert_eq!(
        formats(json!({"json-object": {}})).unwrap_err(),
        "Invalid format: 'json-object' does not contain 'data'"
    );
    assert_eq!(
        formats(json!({"json-object": "x"})).unwrap_err(),
        "Invalid format: 'json-object' is not an object"
    );
    assert_eq!(
        formats(json!({"json-object": {"data": 1, "channel": "/a/*"}})).unwrap_err(),
        "Invalid format: 'json-object' contains 'channel' with invalid value '/a/*'"
    );
    let item = one(json!({"channel": "/a/*", "id": "1",
        "formats": {"json-object": {"data": {"x": "é\n"}, "channel": "/a/b"}}}))
    .unwrap();
    assert_eq!(parse_publish_item(&item.to_json()).unwrap(), item);
}

#[test]
fn http_request_format() {
    let f = formats(json!({"http-request": {}})).unwrap();
    let r = f.http_request.unwrap();
    assert_eq!(
        (r.method.as_str(), r.headers.len(), r.body.len()),
        ("POST", 0, 0)
    );
    let f = formats(json!({"http-request": {
        "method": "PUT", "headers": {"X-A": "1"}, "body-bin": "/wA="}}))
    .unwrap();
    let r = f.http_request.as_ref().unwrap();
    assert_eq!(r.method, "PUT");
    assert_eq!(r.headers, vec![("X-A".to_string(), "1".to_string())]);
    assert_eq!(&r.body[..], b"\xff\x00");
    // The JSON rendering reads back as the same format.
    let item = one(json!({"channel": "c", "formats": {"http-request": {
        "method": "PUT", "headers": [["X-A", "1"]], "body": "hi"}}}))
    .unwrap();
    assert_eq!(parse_publish_item(&item.to_json()).unwrap(), item);
}
