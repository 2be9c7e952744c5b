use super::*;
use crate::instruct::parse_instruction;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn parse_ok(pairs: &[(&str, &str)]) -> Instruction {
    parse_instruction(200, &headers(pairs), b"").unwrap()
}

fn parse_err(pairs: &[(&str, &str)]) -> String {
    parse_instruction(200, &headers(pairs), b"")
        .unwrap_err()
        .to_string()
}

fn channel(name: &str, prev_id: Option<&str>, filters: &[&str]) -> ChannelSpec {
    ChannelSpec {
        name: name.to_string(),
        prev_id: prev_id.map(str::to_string),
        filters: filters.iter().map(|f| f.to_string()).collect(),
    }
}

#[test]
fn hold_values() {
    assert_eq!(
        parse_ok(&[("Grip-Hold", "response")]).hold,
        Some(HoldMode::Response)
    );
    assert_eq!(
        parse_ok(&[("grip-hold", "stream")]).hold,
        Some(HoldMode::Stream)
    );
    assert_eq!(parse_ok(&[("Grip-Channel", "a")]).hold, None);
    for bad in ["Response", "STREAM", "", "none"] {
        assert_eq!(
            parse_err(&[("Grip-Hold", bad)]),
            format!("Grip-Hold must be set to either 'response' or 'stream', not '{bad}'")
        );
    }
}

#[test]
fn channel_lists() {
    type Case = (Vec<(&'static str, &'static str)>, Vec<ChannelSpec>);
    let cases: Vec<Case> = vec![
        (vec![("Grip-Channel", "a")], vec![channel("a", None, &[])]),
        (
            vec![("Grip-Channel", "a, b; prev-id=3")],
            vec![channel("a", None, &[]), channel("b", Some("3"), &[])],
        ),
        // One trailing comma closes the list, as in Pushpin.
        (
            vec![("Grip-Channel", "a, b,")],
            vec![channel("a", None, &[]), channel("b", None, &[])],
        ),
        (
            vec![("Grip-Channel", "a"), ("Grip-Channel", "b")],
            vec![channel("a", None, &[]), channel("b", None, &[])],
        ),
        (
            vec![(
                "Grip-Channel",
                "events-a; prev-id=1; filter=build-id; filter=skip-users, user-42; filter=require-sub",
            )],
            vec![
                channel("events-a", Some("1"), &["build-id", "skip-users"]),
                channel("user-42", None, &["require-sub"]),
            ],
        ),
        (
            vec![("Grip-Channel", "c; prev-id=\"a,b;c\"; Filter=skip-self")],
            vec![channel("c", Some("a,b;c"), &["skip-self"])],
        ),
    ];
    for (pairs, want) in cases {
        assert_eq!(parse_ok(&pairs).channels, want, "headers {pairs:?}");
    }
}

#[test]
fn channel_errors() {
    let six = "c; filter=a; filter=b; filter=c; filter=d; filter=e; filter=f";
    let cases = [
        (
            six,
            "too many filters for channel 'c': 6 given, at most 5 allowed",
        ),
        (
            "a, ; prev-id=1",
            "Grip-Channel value 'a, ; prev-id=1' has an item with an empty channel name",
        ),
        (
            "",
            "Grip-Channel value '' has an item with an empty channel name",
        ),
        (
            "a,,b",
            "Grip-Channel value 'a,,b' has an item with an empty channel name",
        ),
        (
            ", a",
            "Grip-Channel value ', a' has an item with an empty channel name",
        ),
        (
            "a\tb",
            "Grip-Channel: channel name 'a\\tb' has the control character U+0009 at byte 1",
        ),
        (
            "a; prev-id=\"x",
            "Grip-Channel value 'a; prev-id=\"x' is malformed: quoted string at byte 11 is not terminated",
        ),
    ];
    for (value, want) in cases {
        assert_eq!(parse_err(&[("Grip-Channel", value)]), want);
    }
    let long = format!("ok, {}", "x".repeat(513));
    assert_eq!(
        parse_err(&[("Grip-Channel", &long)]),
        "Grip-Channel: channel name 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…' is 513 bytes, over the limit of 512"
    );
}

#[test]
fn timeouts() {
    let cases = [
        ("30", 30),
        (" 120 ", 120),
        ("5", 5),
        ("0", 5),
        ("4", 5),
        ("2147483647", 2147483647),
    ];
    for (value, want) in cases {
        assert_eq!(parse_ok(&[("Grip-Timeout", value)]).timeout_secs, want);
    }
    // Past a 32-bit int, as in Pushpin: the clock could not hold the deadline.
    for bad in [
        "-1",
        "abc",
        "1.5",
        "",
        "2147483648",
        "18446744073709551615",
        "18446744073709551616",
    ] {
        assert_eq!(
            parse_err(&[("Grip-Timeout", bad)]),
            format!(
                "Grip-Timeout must be a whole number of seconds from 0 to 2147483647, not '{bad}'"
            )
        );
    }
}

#[test]
fn keep_alives() {
    let cases: &[(&str, &[u8], u64, KeepAliveMode)] = &[
        ("ka", b"ka", 55, KeepAliveMode::Idle),
        ("ka, more; timeout=3", b"ka, more", 3, KeepAliveMode::Idle),
        (
            r":\n\n; format=cstring; timeout=20",
            b":\n\n",
            20,
            KeepAliveMode::Idle,
        ),
        (
            r"a\\b\r\t\x41\x7e; format=cstring",
            b"a\\b\r\tA~",
            55,
            KeepAliveMode::Idle,
        ),
        (
            "aGVsbG8=; format=base64; mode=interval",
            b"hello",
            55,
            KeepAliveMode::Interval,
        ),
        (
            "x; format=raw; mode=idle; timeout=0",
            b"x",
            1,
            KeepAliveMode::Idle,
        ),
    ];
    for (value, content, timeout_secs, mode) in cases {
        let ka = parse_ok(&[("Grip-Keep-Alive", value)]).keep_alive.unwrap();
        assert_eq!(&ka.content[..], *content, "value {value:?}");
        assert_eq!(ka.timeout_secs, *timeout_secs, "value {value:?}");
        assert_eq!(ka.mode, *mode, "value {value:?}");
    }
}

#[test]
fn keep_alive_errors() {
    let cases = [
        ("; timeout=5", "Grip-Keep-Alive cannot be empty"),
        (
            "x; format=hex",
            "Grip-Keep-Alive format must be 'raw', 'cstring' or 'base64', not 'hex'",
        ),
        (
            "x; mode=often",
            "Grip-Keep-Alive mode must be 'idle' or 'interval', not 'often'",
        ),
        (
            "x; timeout=-2",
            "Grip-Keep-Alive timeout must be a whole number of seconds from 0 to 2147483647, not '-2'",
        ),
        (
            "x; timeout=18446744073709551615",
            "Grip-Keep-Alive timeout must be a whole number of seconds from 0 to 2147483647, not '18446744073709551615'",
        ),
        (
            r"a\q; format=cstring",
            r"Grip-Keep-Alive data 'a\q' is not valid cstring: unknown escape '\q' at byte 1",
        ),
        (
            r"a\x4; format=cstring",
            r"Grip-Keep-Alive data 'a\x4' is not valid cstring: '\x' at byte 1 needs two hex digits",
        ),
        (
            r"a\; format=cstring",
            r"Grip-Keep-Alive data 'a\' is not valid cstring: lone '\' at byte 1",
        ),
        (
            "!!; format=base64",
            "Grip-Keep-Alive data '!!' is not valid base64: Invalid symbol 33, offset 0.",
        ),
    ];
    for (value, want) in cases {
        assert_eq!(
            parse_err(&[("Grip-Keep-Alive", value)]),
            want,
            "value {value:?}"
        );
    }
}

#[test]
fn set_meta() {
    let got = parse_ok(&[
        (
            "Grip-Set-Meta",
            "user=\"42\", id_format=\"a:%(events-a)s,b:%(events-b)s\"",
        ),
        ("Grip-Set-Meta", "user=43; url=/check"),
    ])
    .meta;
    let want: Vec<(&str, &str)> = vec![
        ("id_format", "a:%(events-a)s,b:%(events-b)s"),
        ("url", "/check"),
        ("user", "43"),
    ];
    let got: Vec<(&str, &str)> = got.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(got, want);
    assert_eq!(
        parse_err(&[("Grip-Set-Meta", "")]),
        "Grip-Set-Meta cannot be empty"
    );
    assert_eq!(
        parse_err(&[("Grip-Set-Meta", " , ")]),
        "Grip-Set-Meta cannot be empty"
    );
}

#[test]
fn links() {
    let got = parse_ok(&[(
        "Grip-Link",
        "</next?a=1,2>; rel=next; timeout=30, </gone/1>; rel=gone, <http://x/>; rel=prev",
    )]);
    assert_eq!(
        got.next_link,
        Some(NextLink {
            uri: "/next?a=1,2".into(),
            timeout_secs: 30
        })
    );
    assert_eq!(got.gone_link.as_deref(), Some("/gone/1"));

    let repeated = parse_ok(&[
        ("Grip-Link", "</a>; rel=next"),
        ("Grip-Link", "</b>"),
        ("Grip-Link", "</c>; rel=gone"),
    ]);
    assert_eq!(repeated.next_link.unwrap().timeout_secs, 120);
    assert_eq!(repeated.gone_link.as_deref(), Some("/c"));

    let cases = [
        ("/next; rel=next", "Grip-Link value '/next' must start with a URL in angle brackets, like '</next>; rel=next'"),
        ("<>; rel=next", "Grip-Link value '<>' must start with a URL in angle brackets, like '</next>; rel=next'"),
        (
            "</n>; rel=next; timeout=soon",
            "Grip-Link timeout must be a whole number of seconds from 0 to 2147483647, not 'soon'",
        ),
        (
            "</n>; rel=next; timeout=2147483648",
            "Grip-Link timeout must be a whole number of seconds from 0 to 2147483647, not '2147483648'",
        ),
        ("</n; rel=next", "Grip-Link value '</n; rel=next' is malformed: '<' at byte 0 has no closing '>'"),
    ];
    for (value, want) in cases {
        assert_eq!(parse_err(&[("Grip-Link", value)]), want, "value {value:?}");
    }
}

#[test]
fn status_overrides() {
    let cases = [
        ("404", 404, None),
        ("404 Nope", 404, Some("Nope")),
        ("200 Very Good", 200, Some("Very Good")),
        ("0", 0, None),
        ("999 x", 999, Some("x")),
    ];
    for (value, code, reason) in cases {
        let status = parse_ok(&[("Grip-Status", value)]).status.unwrap();
        assert_eq!(status.code, code, "value {value:?}");
        assert_eq!(status.reason.as_deref(), reason, "value {value:?}");
    }
    for bad in ["1000", "abc", "-1", "+20", "20x OK"] {
        assert_eq!(
            parse_err(&[("Grip-Status", bad)]),
            format!(
                "Grip-Status must be a status code from 0 to 999, optionally followed by a reason, not '{bad}'"
            )
        );
    }
}

#[test]
fn expose_headers() {
    let got = parse_ok(&[
        ("Grip-Expose-Headers", "X-A, X-B"),
        ("Grip-Expose-Headers", "Content-Type"),
    ]);
    assert_eq!(
        got.expose_headers,
        Some(vec!["X-A".into(), "X-B".into(), "Content-Type".into()])
    );
    assert_eq!(
        parse_ok(&[("Grip-Expose-Headers", "")]).expose_headers,
        None
    );
}

#[test]
fn non_utf8_header() {
    let mut map = HeaderMap::new();
    map.insert("grip-channel", HeaderValue::from_bytes(b"\xff").unwrap());
    assert_eq!(
        parse_instruction(200, &map, b"").unwrap_err().to_string(),
        "Grip-Channel header is not valid UTF-8"
    );
}
