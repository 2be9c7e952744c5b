use super::*;

fn parse(json: &str) -> Result<ControlMessage, String> {
    parse_control_message(json.as_bytes()).map_err(|e| e.to_string())
}

fn keep_alive(
    message_type: MessageType,
    content: &'static [u8],
    timeout_secs: u64,
    mode: KeepAliveMode,
) -> ControlMessage {
    ControlMessage::KeepAlive(Some(WsKeepAlive {
        message_type,
        content: Bytes::from_static(content),
        timeout_secs,
        mode,
    }))
}

#[test]
fn good_messages() {
    let cases = vec![
        (
            r#"{"type": "subscribe", "channel": "w1"}"#,
            ControlMessage::Subscribe {
                channel: "w1".into(),
                filters: vec![],
            },
        ),
        (
            r#"{"type": "subscribe", "channel": "w1", "filters": ["skip-self", "var-subst"]}"#,
            ControlMessage::Subscribe {
                channel: "w1".into(),
                filters: vec!["skip-self".into(), "var-subst".into()],
            },
        ),
        (
            r#"{"type": "unsubscribe", "channel": "w1"}"#,
            ControlMessage::Unsubscribe {
                channel: "w1".into(),
            },
        ),
        (r#"{"type": "detach"}"#, ControlMessage::Detach),
        (
            r#"{"type": "session", "id": "s1"}"#,
            ControlMessage::Session {
                id: Some("s1".into()),
            },
        ),
        (
            r#"{"type": "session"}"#,
            ControlMessage::Session { id: None },
        ),
        (
            r#"{"type": "set-meta", "name": "user", "value": "alice"}"#,
            ControlMessage::SetMeta {
                name: "user".into(),
                value: Some("alice".into()),
            },
        ),
        (
            r#"{"type": "set-meta", "name": "user", "value": null}"#,
            ControlMessage::SetMeta {
                name: "user".into(),
                value: None,
            },
        ),
        (
            r#"{"type": "set-meta", "name": "user"}"#,
            ControlMessage::SetMeta {
                name: "user".into(),
                value: None,
            },
        ),
        (
            r#"{"type": "keep-alive", "content": "{}"}"#,
            keep_alive(MessageType::Text, b"{}", 55, KeepAliveMode::Idle),
        ),
        (
            r#"{"type": "keep-alive", "content-bin": "AAE=", "timeout": 30, "mode": "interval"}"#,
            keep_alive(
                MessageType::Binary,
                b"\x00\x01",
                30,
                KeepAliveMode::Interval,
            ),
        ),
        (
            r#"{"type": "keep-alive", "content": "", "message-type": "ping", "timeout": 0}"#,
            keep_alive(MessageType::Ping, b"", 1, KeepAliveMode::Idle),
        ),
        (r#"{"type": "keep-alive"}"#, ControlMessage::KeepAlive(None)),
        (
            r#"{"type": "keep-alive", "timeout": 20}"#,
            ControlMessage::KeepAlive(None),
        ),
        (
            r#"{"type": "send-delayed", "content": "bye"}"#,
            ControlMessage::SendDelayed(DelayedMessage {
                message_type: MessageType::Text,
                content: Bytes::from_static(b"bye"),
                timeout_secs: 1,
            }),
        ),
        (
            r#"{"type": "send-delayed", "message-type": "binary", "content": "x", "timeout": 5}"#,
            ControlMessage::SendDelayed(DelayedMessage {
                message_type: MessageType::Binary,
                content: Bytes::from_static(b"x"),
                timeout_secs: 5,
            }),
        ),
        (r#"{"type": "flush-delayed"}"#, ControlMessage::FlushDelayed),
    ];
    for (json, want) in cases {
        assert_eq!(parse(json).unwrap(), want, "json {json}");
    }
}

#[test]
fn bad_messages() {
    let cases = [
        ("", "grip control packet is not valid JSON: EOF while parsing a value at line 1 column 0"),
        ("[]", "invalid grip control message: grip control packet is not an object"),
        ("{}", "invalid grip control message: grip control object does not contain 'type'"),
        (r#"{"type": 1}"#, "invalid grip control message: grip control object contains 'type' with wrong type"),
        (r#"{"type": "publish"}"#, "invalid grip control message: 'type' contains unknown value 'publish'"),
        (r#"{"type": "subscribe"}"#, "invalid grip control message: grip control object does not contain 'channel'"),
        (r#"{"type": "subscribe", "channel": ""}"#, "invalid grip control message: grip control object contains 'channel' with invalid value ''"),
        (r#"{"type": "unsubscribe", "channel": 5}"#, "invalid grip control message: grip control object contains 'channel' with wrong type"),
        (
            r#"{"type": "subscribe", "channel": "c", "filters": "skip-self"}"#,
            "invalid grip control message: grip control object contains 'filters' with wrong type",
        ),
        (
            r#"{"type": "subscribe", "channel": "c", "filters": [1]}"#,
            "invalid grip control message: filters contains value with wrong type",
        ),
        (
            r#"{"type": "subscribe", "channel": "c", "filters": ["a", "b", "c", "d", "e", "f"]}"#,
            "too many filters for channel 'c': 6 given, at most 5 allowed",
        ),
        (r#"{"type": "session", "id": 1}"#, "invalid grip control message: grip control object contains 'id' with wrong type"),
        (r#"{"type": "set-meta", "value": "x"}"#, "invalid grip control message: grip control object does not contain 'name'"),
        (r#"{"type": "set-meta", "name": ""}"#, "invalid grip control message: grip control object contains 'name' with invalid value ''"),
        (r#"{"type": "set-meta", "name": "a", "value": 2}"#, "invalid grip control message: grip control object contains 'value' with wrong type"),
        (
            r#"{"type": "keep-alive", "content": "x", "message-type": "close"}"#,
            "invalid grip control message: grip control object contains 'message-type' with unknown value 'close'",
        ),
        (
            r#"{"type": "keep-alive", "content": "x", "mode": "busy"}"#,
            "invalid grip control message: grip control object contains 'mode' with unknown value 'busy'",
        ),
        (
            r#"{"type": "keep-alive", "content": "x", "timeout": -1}"#,
            "invalid grip control message: grip control object contains 'timeout' with invalid value -1",
        ),
        (
            r#"{"type": "keep-alive", "content": 7}"#,
            "invalid grip control message: grip control object contains 'content' with wrong type",
        ),
        (
            r#"{"type": "send-delayed", "content-bin": "@@"}"#,
            "invalid grip control message: grip control object contains 'content-bin' with invalid base64: Invalid symbol 64, offset 0.",
        ),
        (
            r#"{"type": "send-delayed", "content": "x", "timeout": "1"}"#,
            "invalid grip control message: grip control object contains 'timeout' with wrong type",
        ),
        (
            r#"{"type": "keep-alive", "content": "x", "timeout": 9223372036854775807}"#,
            "invalid grip control message: grip control object contains 'timeout' with invalid value 9223372036854775807, more than 2147483647 seconds",
        ),
        (
            r#"{"type": "send-delayed", "content": "x", "timeout": 2147483648}"#,
            "invalid grip control message: grip control object contains 'timeout' with invalid value 2147483648, more than 2147483647 seconds",
        ),
        (
            r#"{"type": "subscribe", "channel": "bell\u0007"}"#,
            r"invalid grip control message: channel name 'bell\u{7}' has the control character U+0007 at byte 4",
        ),
        (
            r#"{"type": "unsubscribe", "channel": "a\nb"}"#,
            r"invalid grip control message: channel name 'a\nb' has the control character U+000A at byte 1",
        ),
    ];
    for (json, want) in cases {
        assert_eq!(parse(json).unwrap_err(), want, "json {json}");
    }
    let long = format!(
        r#"{{"type": "subscribe", "channel": "{}"}}"#,
        "x".repeat(513)
    );
    assert_eq!(
        parse(&long).unwrap_err(),
        "invalid grip control message: channel name 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…' is 513 bytes, over the limit of 512"
    );
}
