use super::*;

fn ev(kind: EventKind, content: &[u8]) -> Event {
    Event::with_content(kind, content.to_vec())
}

#[test]
fn parses_good_bodies() {
    let cases: Vec<(&[u8], Vec<Event>)> = vec![
        (b"", vec![]),
        (b"OPEN\r\n", vec![Event::new(EventKind::Open)]),
        (
            b"TEXT e\r\nhi from client\r\n",
            vec![ev(EventKind::Text, b"hi from client")],
        ),
        (
            b"TEXT E\r\nhi from client\r\n",
            vec![ev(EventKind::Text, b"hi from client")],
        ),
        (b"TEXT 0\r\n\r\n", vec![Event::new(EventKind::Text)]),
        (
            b"BINARY 3\r\n\x00\r\n\r\nPING\r\nPONG 1\r\np\r\n",
            vec![
                ev(EventKind::Binary, b"\x00\r\n"),
                Event::new(EventKind::Ping),
                ev(EventKind::Pong, b"p"),
            ],
        ),
        (
            b"CLOSE 5\r\n\x0f\xa1bye\r\nDISCONNECT\r\n",
            vec![
                ev(EventKind::Close, b"\x0f\xa1bye"),
                Event::new(EventKind::Disconnect),
            ],
        ),
        (
            b"OPEN\r\nFUTURE 2\r\nxx\r\ntext\r\nTEXT 1\r\na\r\n",
            vec![Event::new(EventKind::Open), ev(EventKind::Text, b"a")],
        ),
        (b"OPEN 0\r\n\r\n", vec![Event::new(EventKind::Open)]),
    ];
    for (body, want) in cases {
        assert_eq!(
            parse_events(body).unwrap(),
            want,
            "body {:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn rejects_malformed_bodies() {
    let cases: &[(&[u8], &str)] = &[
        (
            b"OPEN",
            "event at byte 0 has no CRLF at the end of its line 'OPEN'",
        ),
        (
            b"OPEN\r\nTEXT 2\r\nhi\r\nCLOSE\n",
            "event at byte 18 has no CRLF at the end of its line 'CLOSE\\n'",
        ),
        (
            b"TEXT zz\r\nhi\r\n",
            "event 'TEXT' at byte 0 has invalid hex size 'zz'",
        ),
        (
            b"TEXT \r\n\r\n",
            "event 'TEXT' at byte 0 has invalid hex size ''",
        ),
        (
            b"TEXT -1\r\n\r\n",
            "event 'TEXT' at byte 0 has invalid hex size '-1'",
        ),
        (
            b"TEXT 0x2\r\nhi\r\n",
            "event 'TEXT' at byte 0 has invalid hex size '0x2'",
        ),
        (
            b"TEXT ffffffffffffffffff\r\n",
            "event 'TEXT' at byte 0 has invalid hex size 'ffffffffffffffffff'",
        ),
        (
            b"OPEN\r\nTEXT 5\r\nhi",
            "event 'TEXT' at byte 6 declares 5 bytes of content but only 2 remain",
        ),
        (
            b"TEXT 2\r\nhi",
            "event 'TEXT' at byte 0 has no CRLF after its 2 bytes of content",
        ),
        (
            b"TEXT 2\r\nhiX\r\n",
            "event 'TEXT' at byte 0 has no CRLF after its 2 bytes of content",
        ),
    ];
    for (body, want) in cases {
        assert_eq!(parse_events(body).unwrap_err().to_string(), *want);
    }
}

#[test]
fn encodes_like_pushpin() {
    let cases: Vec<(Vec<Event>, &[u8])> = vec![
        (vec![Event::new(EventKind::Open)], b"OPEN\r\n"),
        (vec![ev(EventKind::Text, b"hi from client")], b"TEXT e\r\nhi from client\r\n"),
        (vec![Event::new(EventKind::Text)], b"TEXT 0\r\n\r\n"),
        (vec![Event::new(EventKind::Binary)], b"BINARY 0\r\n\r\n"),
        (vec![Event::new(EventKind::Ping)], b"PING\r\n"),
        (vec![ev(EventKind::Pong, b"x")], b"PONG 1\r\nx\r\n"),
        (vec![Event::new(EventKind::Close)], b"CLOSE\r\n"),
        (vec![Event::close(4001, "bye")], b"CLOSE 5\r\n\x0f\xa1bye\r\n"),
        (vec![Event::new(EventKind::Disconnect)], b"DISCONNECT\r\n"),
        (vec![ev(EventKind::Binary, &[7; 26])], b"BINARY 1a\r\n\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\r\n"),
    ];
    for (events, want) in cases {
        let mut out = Vec::new();
        encode_events(&events, &mut out);
        assert_eq!(out, want, "events {events:?}");
        assert_eq!(
            parse_events(&out).unwrap(),
            events,
            "round trip of {events:?}"
        );
    }
}

#[test]
fn encode_appends() {
    let mut out = b"OPEN\r\n".to_vec();
    encode_events(&[ev(EventKind::Text, b"a")], &mut out);
    assert_eq!(out, b"OPEN\r\nTEXT 1\r\na\r\n");
}

#[test]
fn shared_parse_does_not_copy() {
    let body = Bytes::from_static(b"TEXT 3\r\nabc\r\n");
    let events = parse_events_shared(&body).unwrap();
    assert_eq!(events[0].content.as_ptr(), body[8..].as_ptr());
}

#[test]
fn close_content() {
    assert_eq!(&encode_close_content(1000, "done")[..], b"\x03\xe8done");
    type Case = (&'static [u8], Option<(u16, &'static str)>);
    let cases: &[Case] = &[
        (b"", None),
        (b"\x03", None),
        (b"\x03\xe8", Some((1000, ""))),
        (b"\x0f\xa1bye", Some((4001, "bye"))),
        (b"\x0f\xa1\xff", Some((4001, "\u{fffd}"))),
    ];
    for (content, want) in cases {
        let got = parse_close_content(content);
        assert_eq!(got.as_ref().map(|(c, r)| (*c, r.as_str())), *want);
    }
    assert_eq!(
        Event::close(1001, "x").close_code_and_reason(),
        Some((1001, "x".into()))
    );
    assert_eq!(
        ev(EventKind::Text, b"\x03\xe8").close_code_and_reason(),
        None
    );
}

#[test]
fn names() {
    for kind in [
        EventKind::Open,
        EventKind::Text,
        EventKind::Binary,
        EventKind::Ping,
        EventKind::Pong,
        EventKind::Close,
        EventKind::Disconnect,
    ] {
        assert_eq!(EventKind::from_name(kind.as_str().as_bytes()), Some(kind));
    }
    assert_eq!(EventKind::from_name(b"text"), None);
}
