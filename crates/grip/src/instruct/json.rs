//! `application/grip-instruct` bodies (reference §2.3).
//!
//! The JSON is applied on top of what the headers said: `hold` fields replace
//! the header values (its channels are added to the header channels), and the
//! origin response is replaced by `response`, or by an empty 200 when there is
//! none. As in Pushpin, a `keep-alive` object without content keeps the header's
//! data; unlike Pushpin it may carry a `mode`, which defaults to the header's
//! mode or `idle` (Pushpin leaves JSON keep-alives without a mode, which makes
//! them behave like `interval`).

use bytes::Bytes;
use serde_json::Value;

use super::{
    ChannelSpec, HoldMode, InstructError, InstructResponse, Instruction, KeepAlive, KeepAliveMode,
    DEFAULT_KEEP_ALIVE_TIMEOUT_SECS, MAX_FILTERS_PER_CHANNEL,
};
use crate::channel::check_channel_name;
use crate::fields::Obj;

pub(super) fn apply(instruction: &mut Instruction, body: &[u8]) -> Result<(), InstructError> {
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| InstructError::InstructJson(e.to_string()))?;
    let doc = Obj::new(&doc, "instruct").map_err(|_| invalid("instruct must be an object"))?;
    if let Some(hold) = doc
        .obj_opt("hold", "hold")
        .map_err(InstructError::InvalidInstruct)?
    {
        apply_hold(instruction, hold)?;
    }
    let status = instruction.status.clone();
    let mut response = InstructResponse {
        code: status.as_ref().map_or(200, |s| s.code),
        reason: status.and_then(|s| s.reason),
        headers: Vec::new(),
        body: Bytes::new(),
    };
    if let Some(r) = doc
        .obj_opt("response", "response")
        .map_err(InstructError::InvalidInstruct)?
    {
        apply_response(&mut response, r).map_err(InstructError::InvalidInstruct)?;
    }
    instruction.response = Some(response);
    Ok(())
}

fn invalid(message: &str) -> InstructError {
    InstructError::InvalidInstruct(message.to_string())
}

fn apply_hold(instruction: &mut Instruction, hold: Obj<'_>) -> Result<(), InstructError> {
    let field = InstructError::InvalidInstruct;
    instruction.hold = Some(match hold.str_opt("mode").map_err(field)? {
        None | Some("response") => HoldMode::Response,
        Some("stream") => HoldMode::Stream,
        Some(other) => {
            return Err(InstructError::InvalidInstruct(format!(
                "hold 'mode' must be set to either 'response' or 'stream', not '{other}'"
            )))
        }
    });
    let channels = hold
        .list_opt("channels")
        .map_err(field)?
        .ok_or_else(|| invalid("hold does not contain 'channels'"))?;
    for value in channels {
        instruction.channels.push(channel(value)?);
    }
    if let Some(timeout) = hold.seconds_opt("timeout").map_err(field)? {
        instruction.timeout_secs = timeout;
    }
    if let Some(ka) = hold.obj_opt("keep-alive", "keep-alive").map_err(field)? {
        apply_keep_alive(instruction, ka).map_err(field)?;
    }
    for (key, value) in hold
        .string_map_opt("meta")
        .map_err(field)?
        .unwrap_or_default()
    {
        instruction.meta.insert(key, value);
    }
    Ok(())
}

fn channel(value: &Value) -> Result<ChannelSpec, InstructError> {
    let field = InstructError::InvalidInstruct;
    let c = Obj::new(value, "channel").map_err(field)?;
    let name = c.str_req("name").map_err(field)?;
    if name.is_empty() {
        return Err(field(c.invalid_value("name", "''")));
    }
    check_channel_name(name).map_err(|error| InstructError::InvalidChannel {
        place: "invalid application/grip-instruct content: channel 'name'",
        error,
    })?;
    let filters = c
        .string_list_opt("filters", "filters contains value with wrong type")
        .map_err(field)?
        .unwrap_or_default();
    if filters.len() > MAX_FILTERS_PER_CHANNEL {
        return Err(InstructError::TooManyFilters {
            channel: name.to_string(),
            count: filters.len(),
        });
    }
    Ok(ChannelSpec {
        name: name.to_string(),
        prev_id: c.str_opt("prev-id").map_err(field)?.map(str::to_string),
        filters,
    })
}

fn apply_keep_alive(instruction: &mut Instruction, ka: Obj<'_>) -> Result<(), String> {
    let from_header = instruction.keep_alive.take();
    let mode = match ka.str_opt("mode")? {
        None => from_header.as_ref().map_or(KeepAliveMode::Idle, |h| h.mode),
        Some("idle") => KeepAliveMode::Idle,
        Some("interval") => KeepAliveMode::Interval,
        Some(other) => {
            return Err(format!(
                "keep-alive 'mode' must be set to either 'idle' or 'interval', not '{other}'"
            ))
        }
    };
    let content = match ka.content_opt("content", "content-bin")? {
        Some(content) => content,
        None => from_header.map(|h| h.content).unwrap_or_default(),
    };
    let timeout_secs = ka
        .seconds_opt("timeout")?
        .unwrap_or(DEFAULT_KEEP_ALIVE_TIMEOUT_SECS);
    // Writing empty data would end a chunked stream, so empty means none.
    instruction.keep_alive = (!content.is_empty()).then_some(KeepAlive {
        content,
        timeout_secs,
        mode,
    });
    Ok(())
}

fn apply_response(response: &mut InstructResponse, r: Obj<'_>) -> Result<(), String> {
    if let Some(code) = r.int_opt("code")? {
        response.code = u16::try_from(code)
            .ok()
            .filter(|c| *c <= 999)
            .ok_or_else(|| r.invalid_value("code", code))?;
        response.reason = None;
    }
    if let Some(reason) = r.str_opt("reason")?.filter(|s| !s.is_empty()) {
        response.reason = Some(reason.to_string());
    }
    if let Some(headers) = r.headers_opt("headers")? {
        response.headers = headers;
    }
    if let Some(body) = r.content_opt("body", "body-bin")? {
        response.body = body;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::instruct::{
        parse_instruction, HoldMode, InstructResponse, Instruction, KeepAliveMode,
    };
    use bytes::Bytes;
    use http::HeaderMap;

    fn parse(extra: &[(&str, &str)], body: &str) -> Result<Instruction, String> {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/grip-instruct".parse().unwrap());
        for (name, value) in extra {
            headers.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        parse_instruction(200, &headers, body.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn full_document() {
        let body = r#"{
            "hold": {
                "mode": "stream",
                "channels": [{"name": "c", "prev-id": "1", "filters": ["skip-self"]}, {"name": "d"}],
                "timeout": 30,
                "keep-alive": {"content-bin": "a2EK", "timeout": 10},
                "meta": {"user": "alice"}
            },
            "response": {"code": 202, "headers": {"X-A": "1"}, "body": "tmo\n"}
        }"#;
        let got = parse(&[], body).unwrap();
        assert_eq!(got.hold, Some(HoldMode::Stream));
        assert_eq!(got.channels.len(), 2);
        assert_eq!(got.channels[0].prev_id.as_deref(), Some("1"));
        assert_eq!(got.channels[0].filters, vec!["skip-self".to_string()]);
        assert_eq!(got.timeout_secs, 30);
        let ka = got.keep_alive.unwrap();
        assert_eq!((&ka.content[..], ka.timeout_secs), (&b"ka\n"[..], 10));
        assert_eq!(ka.mode, KeepAliveMode::Idle);
        assert_eq!(got.meta["user"], "alice");
        assert_eq!(
            got.response,
            Some(InstructResponse {
                code: 202,
                reason: None,
                headers: vec![("X-A".into(), "1".into())],
                body: Bytes::from_static(b"tmo\n"),
            })
        );
    }

    #[test]
    fn merges_with_headers() {
        let headers = [
            ("Grip-Channel", "from-header"),
            ("Grip-Status", "201 Made"),
            ("Grip-Keep-Alive", "hk; mode=interval"),
        ];
        let body = r#"{"hold": {"channels": [{"name": "j"}], "keep-alive": {"timeout": 7}}}"#;
        let got = parse(&headers, body).unwrap();
        let names: Vec<&str> = got.channels.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["from-header", "j"]);
        assert_eq!(got.hold, Some(HoldMode::Response));
        let ka = got.keep_alive.unwrap();
        assert_eq!(
            (&ka.content[..], ka.timeout_secs, ka.mode),
            (&b"hk"[..], 7, KeepAliveMode::Interval)
        );
        let response = got.response.unwrap();
        assert_eq!(
            (response.code, response.reason.as_deref()),
            (201, Some("Made"))
        );
        assert!(response.body.is_empty() && response.headers.is_empty());

        let recoded = parse(
            &[("Grip-Status", "201 Made")],
            r#"{"response": {"code": 404}}"#,
        )
        .unwrap();
        let response = recoded.response.unwrap();
        assert_eq!((response.code, response.reason), (404, None));
        assert_eq!(recoded.hold, None);
    }

    #[test]
    fn response_variants() {
        let got = parse(&[], r#"{"response": {"headers": [["A", "1"], ["A", "2"]], "body-bin": "AAE=", "reason": "Fine"}}"#)
            .unwrap()
            .response
            .unwrap();
        assert_eq!(got.headers.len(), 2);
        assert_eq!(&got.body[..], &[0, 1]);
        assert_eq!((got.code, got.reason.as_deref()), (200, Some("Fine")));
        assert_eq!(parse(&[], "{}").unwrap().response.unwrap().code, 200);
    }

    #[test]
    fn errors() {
        let cases = [
            ("not json", "failed to parse application/grip-instruct content as JSON: expected ident at line 1 column 2"),
            ("[]", "invalid application/grip-instruct content: instruct must be an object"),
            (r#"{"hold": 1}"#, "invalid application/grip-instruct content: instruct contains 'hold' with wrong type"),
            (r#"{"hold": {}}"#, "invalid application/grip-instruct content: hold does not contain 'channels'"),
            (
                r#"{"hold": {"mode": "poll", "channels": []}}"#,
                "invalid application/grip-instruct content: hold 'mode' must be set to either 'response' or 'stream', not 'poll'",
            ),
            (r#"{"hold": {"channels": [{}]}}"#, "invalid application/grip-instruct content: channel does not contain 'name'"),
            (r#"{"hold": {"channels": [{"name": ""}]}}"#, "invalid application/grip-instruct content: channel contains 'name' with invalid value ''"),
            (r#"{"hold": {"channels": ["c"]}}"#, "invalid application/grip-instruct content: channel is not an object"),
            (
                r#"{"hold": {"channels": [{"name": "c", "filters": [1]}]}}"#,
                "invalid application/grip-instruct content: filters contains value with wrong type",
            ),
            (
                r#"{"hold": {"channels": [{"name": "c", "filters": ["a","b","c","d","e","f"]}]}}"#,
                "too many filters for channel 'c': 6 given, at most 5 allowed",
            ),
            (r#"{"hold": {"channels": [], "timeout": "5"}}"#, "invalid application/grip-instruct content: hold contains 'timeout' with wrong type"),
            (r#"{"hold": {"channels": [], "timeout": -5}}"#, "invalid application/grip-instruct content: hold contains 'timeout' with invalid value -5"),
            (
                r#"{"hold": {"channels": [], "timeout": 2147483648}}"#,
                "invalid application/grip-instruct content: hold contains 'timeout' with invalid value 2147483648, more than 2147483647 seconds",
            ),
            (
                r#"{"hold": {"channels": [], "keep-alive": {"content": "k", "timeout": 9223372036854775807}}}"#,
                "invalid application/grip-instruct content: keep-alive contains 'timeout' with invalid value 9223372036854775807, more than 2147483647 seconds",
            ),
            (
                r#"{"hold": {"channels": [{"name": "a\u0000"}]}}"#,
                r"invalid application/grip-instruct content: channel 'name': channel name 'a\0' has the control character U+0000 at byte 1",
            ),
            (
                r#"{"hold": {"channels": [], "keep-alive": {"content": 5}}}"#,
                "invalid application/grip-instruct content: keep-alive contains 'content' with wrong type",
            ),
            (
                r#"{"hold": {"channels": [], "keep-alive": {"content-bin": "%"}}}"#,
                "invalid application/grip-instruct content: keep-alive contains 'content-bin' with invalid base64: Invalid symbol 37, offset 0.",
            ),
            (r#"{"hold": {"channels": [], "meta": {"user": 5}}}"#, "invalid application/grip-instruct content: 'meta' contains 'user' with wrong type"),
            (r#"{"response": []}"#, "invalid application/grip-instruct content: instruct contains 'response' with wrong type"),
            (r#"{"response": {"code": 1000}}"#, "invalid application/grip-instruct content: response contains 'code' with invalid value 1000"),
            (r#"{"response": {"code": "200"}}"#, "invalid application/grip-instruct content: response contains 'code' with wrong type"),
            (r#"{"response": {"body": 5}}"#, "invalid application/grip-instruct content: response contains 'body' with wrong type"),
            (r#"{"response": {"headers": "X"}}"#, "invalid application/grip-instruct content: response contains 'headers' with wrong type"),
        ];
        for (body, want) in cases {
            assert_eq!(parse(&[], body).unwrap_err(), want, "body {body}");
        }
    }
}
