use proptest::prelude::*;

use super::super::{parse_publish_body, parse_publish_body_general};
use super::parse;

/// What a parse gave, errors as their messages, for comparing the two parsers.
fn outcome(
    got: Result<Vec<super::PublishItem>, super::super::PublishError>,
) -> Result<Vec<super::PublishItem>, String> {
    got.map_err(|e| e.to_string())
}

#[test]
fn the_shapes_grip_libraries_send_take_the_fast_path() {
    let bodies: &[&[u8]] = &[
        // gripcontrol / django-eventstream: an SSE event with its id and predecessor.
        br#"{"items": [{"channel": "room", "id": "2", "prev-id": "1",
            "formats": {"http-stream": {"content": "event: message\ndata: {\"n\": 2}\n\n"}}}]}"#,
        br#"{"items": [{"channel": "a", "formats": {"ws-message": {"content": "hi"}}},
            {"channel": "b", "formats": {"http-response": {"body": "ok\n"}}}]}"#,
        br#"{"items": [{"channel": "c", "id": null, "formats": {
            "http-stream": {"content": "x"}, "ws-message": {"content": "x"},
            "http-response": {"body": "x"}}}]}"#,
        br#"{"items": []}"#,
    ];
    for body in bodies {
        let fast = parse(body).unwrap_or_else(|| {
            panic!(
                "not taken by the fast path: {}",
                String::from_utf8_lossy(body)
            )
        });
        assert_eq!(
            Ok(fast),
            outcome(parse_publish_body_general(body)),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn anything_else_is_left_to_the_general_parser() {
    let bodies: &[&[u8]] = &[
        br#"{"items": [{"channel": "c", "formats": {"http-stream": {"action": "close"}}}]}"#,
        br#"{"items": [{"channel": "c", "formats": {"http-stream": {"content-bin": "eA=="}}}]}"#,
        br#"{"items": [{"channel": "c", "meta": {"sender": "a"},
            "formats": {"http-stream": {"content": "x"}}}]}"#,
        br#"{"items": [{"channel": "c", "http-stream": {"content": "x"}}]}"#,
        br#"{"items": [{"channel": "", "formats": {"http-stream": {"content": "x"}}}]}"#,
        br#"{"items": [{"channel": "a\rb", "formats": {"http-stream": {"content": "x"}}}]}"#,
        br#"{"items": [{"channel": "c", "channel": "d", "formats": {"http-stream": {"content": "x"}}}]}"#,
        br#"{"items": [{"channel": "c", "formats": {}}]}"#,
        br#"{"items": [{"channel": "c", "formats": {"http-stream": null}}]}"#,
        br#"{"items": [], "extra": 1}"#,
    ];
    for body in bodies {
        assert!(
            parse(body).is_none(),
            "taken by the fast path: {}",
            String::from_utf8_lossy(body)
        );
    }
}

/// A JSON string: plain, with characters that need escapes, or spelled with `\u` escapes.
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[a-z0-9:/]{0,8}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        2 => any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
        1 => "[a-c]{1,3}".prop_map(|s| {
            let escaped: String = s.chars().map(|c| format!("\\u{:04x}", c as u32)).collect();
            format!("\"{escaped}\"")
        }),
        1 => Just("\"a\\u0000b\"".to_string()),
        1 => Just(format!("\"{}\"", "x".repeat(513))),
    ]
    .boxed()
}

/// Any JSON value of a few kinds, as text.
fn scalar() -> BoxedStrategy<String> {
    prop_oneof![
        4 => text(),
        1 => Just("null".to_string()),
        1 => Just("true".to_string()),
        1 => (-3i64..1000).prop_map(|n| n.to_string()),
        1 => Just("[]".to_string()),
        1 => Just("[\"x\"]".to_string()),
        1 => Just("{}".to_string()),
    ]
    .boxed()
}

fn object(pairs: Vec<(String, String)>) -> String {
    let fields: Vec<String> = pairs
        .into_iter()
        .map(|(k, v)| format!("\"{k}\": {v}"))
        .collect();
    format!("{{{}}}", fields.join(", "))
}

/// Mostly the pairs a fast-path object has, sometimes one more, one less, or a repeat.
fn pairs(
    wanted: Vec<(&'static str, BoxedStrategy<String>)>,
    others: BoxedStrategy<(String, String)>,
) -> BoxedStrategy<Vec<(String, String)>> {
    let wanted: Vec<_> = wanted
        .into_iter()
        .map(|(k, v)| {
            (
                prop_oneof![12 => Just(true), 1 => Just(false)],
                v.prop_map(move |v| (k.to_string(), v)),
            )
        })
        .collect();
    (
        wanted,
        prop::collection::vec(others, 0..2),
        prop_oneof![1 => Just(true), 12 => Just(false)],
    )
        .prop_map(|(wanted, others, extra)| {
            let mut out: Vec<(String, String)> = wanted
                .into_iter()
                .filter(|(keep, _)| *keep)
                .map(|(_, pair)| pair)
                .collect();
            // Other keys only now and then, so that most objects stay in the fast shapes.
            if extra {
                out.extend(others);
            }
            out
        })
        .boxed()
}

fn format_object(field: &'static str) -> BoxedStrategy<String> {
    let other = (
        prop::sample::select(vec![
            "content",
            "body",
            "content-bin",
            "action",
            "type",
            "code",
        ]),
        scalar(),
    )
        .prop_map(|(k, v)| (k.to_string(), v))
        .boxed();
    prop_oneof![
        12 => pairs(vec![(field, text())], other).prop_map(object),
        1 => scalar(),
    ]
    .boxed()
}

fn formats() -> BoxedStrategy<String> {
    let other = (
        prop::sample::select(vec!["http-stream", "ws-message", "json-object", "x"]),
        format_object("content"),
    )
        .prop_map(|(k, v)| (k.to_string(), v))
        .boxed();
    pairs(
        vec![
            ("http-stream", format_object("content")),
            ("ws-message", format_object("content")),
            ("http-response", format_object("body")),
        ],
        other,
    )
    .prop_map(object)
    .boxed()
}

/// A channel name: mostly one that can be subscribed to.
fn channel() -> BoxedStrategy<String> {
    prop_oneof![
        12 => "[a-z0-9:/]{1,8}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        1 => text(),
    ]
    .boxed()
}

/// `id` and `prev-id`: mostly a string or `null`.
fn id() -> BoxedStrategy<String> {
    prop_oneof![8 => text(), 3 => Just("null".to_string()), 1 => scalar()].boxed()
}

fn item() -> BoxedStrategy<String> {
    let other = (
        prop::sample::select(vec![
            "channel",
            "id",
            "meta",
            "size",
            "no-seq",
            "http-stream",
        ]),
        scalar(),
    )
        .prop_map(|(k, v)| (k.to_string(), v))
        .boxed();
    prop_oneof![
        12 => pairs(
            vec![
                ("channel", channel()),
                ("id", id()),
                ("prev-id", id()),
                ("formats", formats()),
            ],
            other,
        )
        .prop_map(object),
        1 => scalar(),
    ]
    .boxed()
}

fn body() -> BoxedStrategy<String> {
    prop_oneof![
        10 => prop::collection::vec(item(), 0..4)
            .prop_map(|items| format!("{{\"items\": [{}]}}", items.join(", "))),
        1 => scalar(),
        1 => prop::collection::vec(item(), 0..2)
            .prop_map(|items| format!("{{\"items\": [{}], \"x\": 1}}", items.join(", "))),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Whatever the body, the parser with its fast path answers as the general parser does.
    #[test]
    fn the_fast_path_answers_as_the_general_parser(body in body()) {
        let body = body.as_bytes();
        prop_assert_eq!(
            outcome(parse_publish_body(body)),
            outcome(parse_publish_body_general(body)),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

/// The bodies above exercise both sides: many are taken by the fast path, many are not.
#[test]
fn the_generated_bodies_reach_both_parsers() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = body();
    let total = 2000;
    let fast = (0..total)
        .filter(|_| {
            let body = strategy.new_tree(&mut runner).unwrap().current();
            parse(body.as_bytes()).is_some_and(|items| !items.is_empty())
        })
        .count();
    assert!(
        (total / 10..total * 4 / 5).contains(&fast),
        "{fast} of {total} generated bodies had items and took the fast path"
    );
}
