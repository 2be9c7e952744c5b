use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    map
}

#[test]
fn detects_grip_responses() {
    let cases: &[(&[(&str, &str)], bool)] = &[
        (&[], false),
        (&[("Content-Type", "text/html")], false),
        (&[("X-Grip-Hold", "stream")], false),
        (&[("Grip-Hold", "stream")], true),
        (&[("GRIP-CHANNEL", "a")], true),
        (&[("grip-x-anything", "1")], true),
        (&[("Content-Type", "application/grip-instruct")], true),
        (
            &[("Content-Type", "Application/GRIP-Instruct; charset=utf-8")],
            true,
        ),
        (&[("Content-Type", "application/grip-instructions")], false),
    ];
    for (pairs, want) in cases {
        assert_eq!(
            is_grip_response(&headers(pairs)),
            *want,
            "headers {pairs:?}"
        );
    }
}

#[test]
fn defaults_and_clamps() {
    let plain = parse_instruction(200, &headers(&[("Grip-Channel", "a")]), b"").unwrap();
    assert_eq!(plain.hold, None);
    assert_eq!(plain.timeout_secs, 55);
    assert_eq!(plain.keep_alive, None);

    let short = headers(&[("Grip-Hold", "response"), ("Grip-Timeout", "2")]);
    assert_eq!(parse_instruction(200, &short, b"").unwrap().timeout_secs, 5);

    let zero = headers(&[("Grip-Keep-Alive", "ka; timeout=0")]);
    let keep_alive = parse_instruction(200, &zero, b"")
        .unwrap()
        .keep_alive
        .unwrap();
    assert_eq!(keep_alive.timeout_secs, 1);
}

#[test]
fn grip_instruct_requires_200() {
    let h = headers(&[("Content-Type", "application/grip-instruct")]);
    let err = parse_instruction(404, &h, b"{}").unwrap_err();
    assert_eq!(
        err.to_string(),
        "response code for application/grip-instruct content must be 200, not 404"
    );
}

#[test]
fn client_headers_strip_grip_and_apply_whitelist() {
    let origin = headers(&[
        ("Grip-Hold", "stream"),
        ("Server", "x"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
    ]);
    let all = parse_instruction(200, &origin, b"")
        .unwrap()
        .client_headers(&origin);
    assert_eq!(all.len(), 3);
    assert!(all.keys().all(|k| !k.as_str().starts_with("grip-")));

    let mut limited = origin.clone();
    limited.insert("grip-expose-headers", "set-cookie, X-None".parse().unwrap());
    let shown = parse_instruction(200, &limited, b"")
        .unwrap()
        .client_headers(&limited);
    assert_eq!(shown.get_all("set-cookie").iter().count(), 2);
    assert_eq!(shown.len(), 2);
}
