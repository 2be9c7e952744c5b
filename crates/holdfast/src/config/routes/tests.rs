//! The routes-file parser and route matching, table-driven.

use super::*;

fn parse(text: &str) -> Result<RouteTable, RoutesError> {
    RouteTable::parse(text, Path::new("routes"))
}

fn origin(host: &str, port: u16) -> TargetKind {
    TargetKind::Origin {
        host: host.into(),
        port,
    }
}

#[test]
fn parses_pushpin_examples() {
    let t = parse(
        "# comment\n\
         * localhost:8000\n\
         *,path_beg=/api/,replace_beg=/ api.internal:80,ssl,host=api.example.com\n\
         *,proto=ws localhost:8000,over_http\n\
         example.com,id=ex,prefix=p-,no_grip 127.0.0.1:1 [::1]:2,sub=a,sub=b,insecure\n\
         *,path_beg=/q,header=X-A:1,header=\"X-B: two words\",debug,sig_key=k,sig_iss=i,as_host=o:81,path_rem=2 test\n",
    )
    .unwrap();
    assert_eq!(t.routes.len(), 5);
    let r = &t.routes[0];
    assert_eq!(r.id, "*,*,*,*");
    assert_eq!(r.targets[0].kind, origin("localhost", 8000));
    let r = &t.routes[1];
    assert_eq!(r.condition.path_beg.as_deref(), Some("/api/"));
    assert_eq!(r.options.replace_beg.as_deref(), Some("/"));
    assert!(r.targets[0].ssl);
    assert_eq!(r.targets[0].host_header.as_deref(), Some("api.example.com"));
    assert_eq!(t.routes[2].condition.proto, Some(Proto::Ws));
    assert!(t.routes[2].targets[0].over_http);
    let r = &t.routes[3];
    assert_eq!(r.id, "ex");
    assert_eq!(r.condition.host.as_deref(), Some("example.com"));
    assert_eq!(r.options.channel_prefix, "p-");
    assert!(r.options.no_grip);
    assert_eq!(r.targets[1].kind, origin("::1", 2));
    assert_eq!(r.targets[1].subs, vec!["a", "b"]);
    assert!(r.targets[1].insecure);
    assert_eq!(r.targets[1].label(), "[::1]:2");
    let r = &t.routes[4];
    assert_eq!(
        r.options.headers,
        vec![
            ("X-A".to_string(), "1".to_string()),
            ("X-B".to_string(), "two words".to_string())
        ]
    );
    assert!(r.options.debug);
    assert_eq!(r.options.sig_key.as_deref(), Some("k"));
    assert_eq!(r.options.as_host.as_deref(), Some("o:81"));
    assert_eq!(r.options.path_rem, 2);
    assert_eq!(r.targets[0].kind, TargetKind::Test);
}

#[test]
fn errors_name_line_and_token() {
    let cases = [
        ("* localhost:8000\n*", 2, "no target"),
        ("*,proto=udp x:1", 1, "proto=\"udp\""),
        ("*,ssl=maybe x:1", 1, "ssl=\"maybe\""),
        ("*,colour=red x:1", 1, "unknown route option 'colour'"),
        ("* x:1,wat", 1, "unknown target param 'wat'"),
        ("* localhost", 1, "target 'localhost'"),
        ("* localhost:99999", 1, "is not a port"),
        ("* [zz]:1", 1, "not an IPv6 address"),
        ("\n\n*,path_beg=\"/a x:1", 3, "unterminated"),
        ("example.* x:1", 1, "exact host"),
        ("*,replace_beg=/x x:1", 1, "replace_beg needs path_beg"),
        ("*,path_rem=abc x:1", 1, "path_rem"),
        ("*,header=NoColon x:1", 1, "Name:Value"),
        ("* zhttpreq/tcp://127.0.0.1:1", 1, "ZeroMQ"),
    ];
    for (text, line, needle) in cases {
        let e = parse(text).unwrap_err();
        assert_eq!(e.line, line, "{text:?}: {e}");
        assert!(e.message.contains(needle), "{text:?}: {e}");
        assert!(e.to_string().starts_with(&format!("routes:{line}:")), "{e}");
    }
}

#[test]
fn duplicates_and_pushpin_only_options_warn() {
    let t = parse("* a:1\n* b:2\n*,session,path_beg=/x c:3,ipc_file_mode=600\n").unwrap();
    assert_eq!(t.routes.len(), 2);
    assert_eq!(t.warnings.len(), 3, "{:?}", t.warnings);
}

#[test]
fn cross_origin_and_pushpin_route_options() {
    let t = parse(
        "*,aco,path_beg=/a,jsonp_mode=basic,jsonp_cb=cb,jsonp_body=b,jsonp_defcb=window.f,jsonp_defmethod=PUT a:1\n\
         aco,id=flagfirst a:1\n\
         *,path_beg=/b,orig_headers,log_level=3 b:1,one_event,trust_connect_host,untrusted\n\
         *,path_beg=/c c:1\n",
    )
    .unwrap();
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    let a = &t.routes[0].options;
    assert!(a.auto_cross_origin);
    assert_eq!(a.jsonp.mode, JsonpMode::Basic);
    assert_eq!(a.jsonp.callback_param(), "cb");
    assert_eq!(a.jsonp.body_param.as_deref(), Some("b"));
    assert_eq!(a.jsonp.default_callback.as_deref(), Some("window.f"));
    assert_eq!(a.jsonp.default_method(), http::Method::PUT);
    assert!(t.routes[1].condition.id_only && t.routes[1].options.auto_cross_origin);
    let b = &t.routes[2];
    assert!(b.options.orig_headers);
    assert_eq!(b.options.log_level, Some(tracing::Level::DEBUG));
    let target = &b.targets[0];
    assert!(target.one_event && target.trust_connect_host && target.untrusted);
    // Pushpin's defaults: extended mode, `callback`, GET (POST in basic mode).
    let c = &t.routes[3].options;
    assert!(!c.auto_cross_origin && !c.orig_headers && c.log_level.is_none());
    assert_eq!(c.jsonp.mode, JsonpMode::Extended);
    assert_eq!(c.jsonp.callback_param(), "callback");
    assert_eq!(c.jsonp.default_method(), http::Method::GET);
    let basic = JsonpConfig {
        mode: JsonpMode::Basic,
        ..JsonpConfig::default()
    };
    assert_eq!(basic.default_method(), http::Method::POST);
}

#[test]
fn access_log_takes_off_on_or_a_share() {
    let t = parse(
        "*,path_beg=/a,access_log=off a:1\n*,path_beg=/b,access_log=0.01 a:1\n*,path_beg=/c,access_log=on a:1\n* a:1\n",
    )
    .unwrap();
    let shares: Vec<_> = t.routes.iter().map(|r| r.options.access_log).collect();
    assert_eq!(shares, [Some(0), Some(10_000), Some(1_000_000), None]);
}

#[test]
fn bad_cross_origin_options_name_the_value() {
    let cases = [
        ("*,jsonp_mode=full x:1", "jsonp_mode=\"full\""),
        ("*,jsonp_defmethod=\"GE T\" x:1", "jsonp_defmethod"),
        ("*,jsonp_defcb=alert(1) x:1", "jsonp_defcb=\"alert(1)\""),
        ("*,jsonp_cb= x:1", "jsonp_cb must not be empty"),
        ("*,log_level=9 x:1", "log_level=\"9\""),
        ("*,log_level x:1", "needs a value"),
        (
            "*,access_log=1.5 x:1",
            "access_log=\"1.5\": expected off, on, or a share",
        ),
        ("*,access_log=some x:1", "access_log=\"some\""),
    ];
    for (text, needle) in cases {
        let e = parse(text).unwrap_err();
        assert!(e.message.contains(needle), "{text:?}: {e}");
    }
}

#[test]
fn pushpin_route_picks_explicit_ids_only() {
    let t = parse(
        "a.example,id=one,path_beg=/only a:1\n\
         id=hidden h:1\n\
         b.example,id=twice b:1\n\
         c.example,id=twice c:1\n\
         * any:1\n",
    )
    .unwrap();
    let label = |r: PushpinRoute<'_>| match r {
        PushpinRoute::Found(route) => route.targets[0].label(),
        PushpinRoute::Shared => "shared".into(),
        PushpinRoute::Missing => "missing".into(),
    };
    assert_eq!(label(t.by_pushpin_route("one")), "a:1");
    assert_eq!(label(t.by_pushpin_route("hidden")), "h:1");
    assert_eq!(label(t.by_pushpin_route("twice")), "shared");
    assert_eq!(label(t.by_pushpin_route("nope")), "missing");
    // A derived id is not an id a client can name.
    assert_eq!(label(t.by_pushpin_route("*,*,*,*")), "missing");
}

#[test]
fn callback_names() {
    for ok in ["f", "jQuery3510_17", "angular.callbacks._0", "a[0].b", "$"] {
        assert!(is_callback_name(ok), "{ok}");
    }
    for bad in ["", "alert(1)//", "f;g", "a b", "<s>", "f\n"] {
        assert!(!is_callback_name(bad), "{bad:?}");
    }
}

#[test]
fn most_specific_route_wins() {
    let t = parse(
        "* any:1\n\
         *,path_beg=/a any-a:1\n\
         *,path_beg=/a/b any-ab:1\n\
         *,path_beg=/a,ssl=yes any-a-ssl:1\n\
         *,proto=ws any-ws:1\n\
         example.com ex:1\n\
         example.com,path_beg=/a ex-a:1\n\
         id=hidden hidden:1\n",
    )
    .unwrap();
    let cases = [
        ("other.org", Proto::Http, false, "/", "any"),
        ("other.org", Proto::Http, false, "/a/x", "any-a"),
        ("other.org", Proto::Http, false, "/a/b/c", "any-ab"),
        ("other.org", Proto::Http, true, "/a/x", "any-a-ssl"),
        ("other.org", Proto::Ws, false, "/a/b", "any-ws"),
        ("example.com:8080", Proto::Http, false, "/", "ex"),
        ("EXAMPLE.com", Proto::Http, false, "/a", "ex-a"),
        ("hidden", Proto::Http, false, "/", "any"),
    ];
    for (host, proto, ssl, path, want) in cases {
        let r = t.find(host, proto, ssl, path).unwrap();
        let got = match &r.targets[0].kind {
            TargetKind::Origin { host, .. } => host.clone(),
            TargetKind::Test => "test".into(),
        };
        assert_eq!(got, want, "{host} {proto:?} {ssl} {path}");
    }
    assert_eq!(t.by_id("hidden").unwrap().targets[0].label(), "hidden:1");
}

#[test]
fn falls_back_to_star_when_host_routes_do_not_match() {
    let t = parse("example.com,path_beg=/only ex:1\n* any:1\n").unwrap();
    let r = t.find("example.com", Proto::Http, false, "/else").unwrap();
    assert_eq!(r.targets[0].label(), "any:1");
    assert!(parse("example.com ex:1\n")
        .unwrap()
        .find("nope", Proto::Http, false, "/")
        .is_none());
}

#[test]
fn path_rewrites() {
    let t = parse(
        "*,path_beg=/api/,replace_beg=/v2/ a:1\n*,path_beg=/x,path_rem=2 b:1\n*,path_beg=/full,replace_beg=/ c:1\n",
    )
    .unwrap();
    let cases = [
        (0, "/api/items?q=1", "/v2/items?q=1"),
        (1, "/xyz/abc", "/yz/abc"),
        (2, "/full", "/"),
        (2, "/fullpath", "/path"),
    ];
    for (i, input, want) in cases {
        assert_eq!(t.routes[i].rewrite_path(input), want, "{input}");
    }
}

#[test]
fn sockjs_options() {
    let t = parse("*,sockjs=/sj,sockjs_as_path=/ws x:1\n*,path_beg=/b,sockjs_as_path=/ws y:1\n")
        .unwrap();
    assert_eq!(t.routes[0].options.sockjs.as_deref(), Some("/sj"));
    assert_eq!(t.routes[0].options.sockjs_as_path.as_deref(), Some("/ws"));
    assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);
    assert!(
        t.warnings[0].contains("without 'sockjs'"),
        "{:?}",
        t.warnings
    );
    for (text, needle) in [
        (
            "*,sockjs=sj x:1",
            "sockjs=\"sj\": expected a path starting with '/'",
        ),
        ("*,sockjs x:1", "'sockjs' needs a value"),
        ("*,sockjs=/a,sockjs_as_path=ws x:1", "sockjs_as_path=\"ws\""),
    ] {
        let e = parse(text).unwrap_err();
        assert!(e.message.contains(needle), "{text:?}: {e}");
    }
}

#[test]
fn bayeux_option() {
    let t = parse("*,bayeux=/bayeux,prefix=app: x:1\n").unwrap();
    assert_eq!(t.routes[0].options.bayeux.as_deref(), Some("/bayeux"));
    for (text, needle) in [
        (
            "*,bayeux=faye x:1",
            "bayeux=\"faye\": expected a path starting with '/'",
        ),
        ("*,bayeux x:1", "'bayeux' needs a value"),
    ] {
        let e = parse(text).unwrap_err();
        assert!(e.message.contains(needle), "{text:?}: {e}");
    }
}
