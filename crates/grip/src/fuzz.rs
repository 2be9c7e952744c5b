//! Entry points for fuzzing every parser here that sees untrusted bytes: one function per
//! parser, taking arbitrary bytes, checking what must hold for any input.
//!
//! Every entry point must return normally for every input: an `Err` from the parser is a fine
//! answer, a panic is a bug. Where a parser has an encoder, what parses must encode and parse
//! again to the same value. The cargo-fuzz targets in `fuzz/` call these for long runs, and the
//! smoke test `tests/fuzz_smoke.rs` calls them on the seed corpus and on random inputs in every
//! `cargo test`.

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName, HeaderValue};

/// The input split into lines; the first `n` are `Name: value` headers, the rest is the body.
fn headers_and_body(data: &[u8]) -> (HeaderMap, &[u8]) {
    let mut headers = HeaderMap::new();
    let mut rest = data;
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..end];
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            break;
        };
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) {
            headers.append(name, value);
        }
        rest = &rest[end + 1..];
    }
    (headers, rest)
}

/// GRIP instructions from response headers (`Grip-Hold`, `Grip-Channel`, `Grip-Timeout`,
/// `Grip-Keep-Alive`, `Grip-Link`, …) and the body they come with.
pub fn instruct_headers(data: &[u8]) {
    let status = data.first().map_or(200, |b| 100 + u16::from(*b) * 2);
    let (headers, body) = headers_and_body(data.get(1..).unwrap_or_default());
    if let Ok(ins) = crate::instruct::parse_instruction(status, &headers, body) {
        let _ = ins.client_headers(&headers);
    }
}

/// An `application/grip-instruct` JSON body.
pub fn instruct_json(data: &[u8]) {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grip-instruct"),
    );
    let _ = crate::instruct::parse_instruction(200, &headers, data);
}

/// A publish request body; every item it yields encodes to JSON and parses back to itself.
pub fn publish_body(data: &[u8]) {
    let Ok(items) = crate::publish::parse_publish_body(data) else {
        return;
    };
    for item in items {
        let again = crate::publish::parse_publish_item(&item.to_json())
            .expect("an encoded item parses again");
        assert_eq!(again, item, "publish item round trip");
        if let Some(f) = &item.formats.http_response {
            let _ = f.apply_patch(b"{\"a\": [1, 2, {\"b\": null}]}");
        }
    }
}

/// A WebSocket-over-HTTP events body; what parses encodes and parses back to the same events.
pub fn wsevents(data: &[u8]) {
    let Ok(events) = crate::wsevents::parse_events(data) else {
        return;
    };
    let mut out = Vec::new();
    crate::wsevents::encode_events(&events, &mut out);
    let again = crate::wsevents::parse_events(&out).expect("encoded events parse again");
    assert_eq!(again, events, "events round trip");
    for e in &events {
        let _ = e.close_code_and_reason();
    }
    let _ = crate::wsevents::parse_close_content(data);
}

/// A GRIP WebSocket control message (`c:` payload).
pub fn control_message(data: &[u8]) {
    let _ = crate::control::parse_control_message(data);
}

/// A `Grip-Sig` token checked against a key, and a `sig_key` setting parsed.
pub fn grip_sig(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let key = crate::sig::SigKey::parse("changeme").expect("a plain key parses");
    let _ = crate::sig::verify(&text, &key, 1_700_000_000);
    if let Ok(key) = crate::sig::SigKey::parse(&text) {
        let _ = crate::sig::SigKey::from_file_contents(data);
        let _ = crate::sig::sign("holdfast", &key, 1_700_000_000, 3600);
    }
}

/// Filters and `%(name)s` templates: the first line names filters (comma-separated), the second
/// is an `id_format`, the rest is the content they run over.
pub fn filters(data: &[u8]) {
    let mut lines = data.splitn(3, |&b| b == b'\n');
    let names = String::from_utf8_lossy(lines.next().unwrap_or_default());
    let id_format = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let content = lines.next().unwrap_or_default();
    let filters: Vec<String> = names.split(',').map(str::to_string).collect();
    let sub_meta = BTreeMap::from([
        ("user".to_string(), "u1".to_string()),
        ("id_format".to_string(), id_format.clone()),
    ]);
    let pub_meta = BTreeMap::from([
        ("sender".to_string(), "u2".to_string()),
        ("users".to_string(), "u1,u3".to_string()),
    ]);
    let positions = BTreeMap::from([("a".to_string(), "7".to_string())]);
    let subscribed = |c: &str| c == "a";
    let input = crate::filter::Input {
        sub_meta: &sub_meta,
        pub_meta: &pub_meta,
        positions: &positions,
        subscribed: &subscribed,
    };
    let _ = crate::filter::apply(&filters, &input, Some(&filters), content);
    let _ = crate::filter::apply(&filters, &input, None, content);
    let _ = crate::filter::build_id(&input, content);
    let _ = crate::filter::render_id(&id_format, &positions);
}

/// A tnetstring; what parses encodes and parses back to the same value.
pub fn tnetstring(data: &[u8]) {
    let Ok(value) = crate::tnetstring::parse(data) else {
        return;
    };
    let again = crate::tnetstring::parse(&value.to_bytes()).expect("an encoded value parses again");
    // NaN is the one value unequal to itself; the parser never yields it (no `nan` payload).
    assert_eq!(again, value, "tnetstring round trip");
}

/// A message of the ZeroMQ publish inputs (tnetstring, `T` + tnetstring or `J` + JSON), with
/// and without a SUB topic; every item it yields encodes to JSON and parses back to itself.
pub fn zmq_item(data: &[u8]) {
    for channel in [None, Some("topic")] {
        let Ok(item) = crate::publish::parse_zmq_item(data, channel) else {
            continue;
        };
        let again = crate::publish::parse_publish_item(&item.to_json())
            .expect("an encoded item parses again");
        assert_eq!(again, item, "zmq item round trip");
    }
}

/// A fuzzing entry point: arbitrary bytes in, a panic on a bug.
pub type Target = fn(&[u8]);

/// Every entry point by name, for the smoke test and the corpus layout (`fuzz/corpus/<name>`).
pub const TARGETS: [(&str, Target); 9] = [
    ("instruct_headers", instruct_headers),
    ("instruct_json", instruct_json),
    ("publish_body", publish_body),
    ("wsevents", wsevents),
    ("control_message", control_message),
    ("grip_sig", grip_sig),
    ("filters", filters),
    ("tnetstring", tnetstring),
    ("zmq_item", zmq_item),
];
