use super::*;

#[test]
fn defaults_match_pushpin() {
    let c = Config::parse("", Path::new("x.toml")).unwrap();
    assert_eq!(c.server.listen, vec!["0.0.0.0:7999".parse().unwrap()]);
    assert_eq!(c.server.publish_listen, "127.0.0.1:5561".parse().unwrap());
    assert_eq!(c.limits.max_connections, 50_000);
    assert_eq!(c.grip.sig_iss, "pushpin");
    assert_eq!(c.xff_rules().unwrap(), vec![XffRule::Append]);
    assert_eq!(c.xff_trusted_rules().unwrap(), vec![XffRule::Append]);
    assert!(c.grip.upstream_key.is_none());
    assert!(!c.server.auto_cross_origin && !c.server.accept_pushpin_route);
    c.validate(Path::new("x.toml")).unwrap();
}

#[test]
fn unknown_field_names_its_line() {
    let err = Config::parse(
        "[server]\nlisten = []\nlisten_typo = 1\n",
        Path::new("h.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("h.toml:3:"), "{err}");
    assert!(err.contains("listen_typo"), "{err}");
}

#[test]
fn bad_values_are_named() {
    let cases = [
        (
            "[limits]\nmax_header_size = 100\n",
            "limits.max_header_size",
        ),
        ("[forwarding]\nx_forwarded_for = [\"prepend\"]\n", "prepend"),
        (
            "[forwarding]\nx_forwarded_for = [\"truncate:x\"]\n",
            "truncate:x",
        ),
        ("[log]\nlevel = \"=bad=\"\n", "log.level"),
        (
            "[log]\naccess_sample = 1.5\n",
            "log.access_sample: 1.5: expected a share",
        ),
        ("[server]\nlisten = []\n", "server.listen"),
        ("[limits]\nmax_headers = 0\n", "limits.max_headers"),
        (
            "[limits]\nhttp2_max_concurrent_streams = 0\n",
            "limits.http2_max_concurrent_streams: must be at least 1",
        ),
        (
            "[limits]\nhttp2_stream_window = 2147483648\n",
            "limits.http2_stream_window: 2147483648 is above HTTP/2's largest window, 2147483647",
        ),
        (
            "[limits]\nhttp2_connection_window = 0\n",
            "limits.http2_connection_window",
        ),
        (
            "[limits]\nhttp2_max_send_buffer = 4294967295\n",
            "limits.http2_max_send_buffer: 4294967295 is above",
        ),
        (
            "[limits]\nmax_publish_connections = 0\n",
            "limits.max_publish_connections",
        ),
        (
            "[timeouts]\nclient_header_secs = 0\n",
            "timeouts.client_header_secs",
        ),
        (
            "[timeouts]\npublish_idle_secs = 0\n",
            "timeouts.publish_idle_secs",
        ),
        ("[cluster]\nredis = [\"http://r:1\"]\n", "cluster.redis"),
        (
            "[cluster]\ncommand_timeout_secs = 0\n",
            "cluster.command_timeout_secs: must be at least 1",
        ),
        (
            "[cluster]\nconnect_timeout_secs = 0\n",
            "cluster.connect_timeout_secs: must be at least 1",
        ),
        (
            "[cluster]\nredis = [\"redis://a:1\", \"redis://a:1\"]\n",
            "listed twice",
        ),
    ];
    for (text, needle) in cases {
        let mut c = Config::parse(text, Path::new("c.toml")).unwrap();
        c.source = Source::Toml(text.to_string());
        let err = c.validate(Path::new("c.toml")).unwrap_err().to_string();
        assert!(err.contains(needle), "{text:?}: {err}");
    }
}

#[test]
fn flags_override_file() {
    let mut c = Config::parse(
        "[server]\nlisten = [\"127.0.0.1:1\"]\n[log]\nlevel = \"warn\"\n",
        Path::new("c.toml"),
    )
    .unwrap();
    c.apply(Overrides {
        listen: vec!["127.0.0.1:2".parse().unwrap()],
        log_level: Some("debug".into()),
        ..Default::default()
    });
    assert_eq!(c.server.listen, vec!["127.0.0.1:2".parse().unwrap()]);
    assert_eq!(c.log.level, "debug");
}
