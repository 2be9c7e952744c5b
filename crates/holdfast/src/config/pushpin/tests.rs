use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::*;
use crate::config::{Overrides, XffRule};

/// Writes `text` as `pushpin.conf` in a new folder and reads it.
fn load_text(
    text: &str,
) -> (
    tempfile::TempDir,
    PathBuf,
    Result<(Config, Report), ConfigError>,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pushpin.conf");
    std::fs::write(&path, text).unwrap();
    let loaded = load(&path, text);
    (dir, path, loaded)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn pushpin_conf_is_told_from_toml_by_its_first_section() {
    let cases = [
        ("[global]\ninclude={libdir}/internal.conf\n", true),
        ("# comment\n\n  [runner]\nhttp_port=7999\n", true),
        ("; comment\n[proxy]\n", true),
        ("[handler]\npush_in_http_port=5561\n", true),
        ("[server]\nlisten = [\"0.0.0.0:7999\"]\n[proxy]\n", false),
        ("[[server]]\n", false),
        ("[limits]\nmax_connections = 1\n", false),
        ("", false),
        ("# only a comment\n", false),
        ("[ global ]\n", true),
    ];
    for (text, pushpin) in cases {
        assert_eq!(is_pushpin_conf(text), pushpin, "{text:?}");
    }
}

#[test]
fn every_supported_key_is_mapped() {
    let text = "\
[global]
port_offset=10
[runner]
http_port=7999,127.0.0.1:8000,[::1]:8001
https_ports=443
client_maxconn=1000
client_buffer_size=16384
log_level=3
[proxy]
routesfile=my-routes
debug=true
accept_x_forwarded_protocol=true
set_x_forwarded_protocol=true
x_forwarded_for=truncate:0,append
x_forwarded_for_trusted=append
sig_iss=me
sig_key=file:keys/sig.hex
upstream_key=base64:dXA=
log_from=true
[handler]
push_in_http_addr=127.0.0.2
push_in_http_port=5561
push_in_http_max_body_size=2000
message_wait=100
id_cache_ttl=30
update_on_first_subscription=false
connection_subscription_max=7
";
    let (dir, _, loaded) = load_text(text);
    let (c, report) = loaded.unwrap();
    let d = dir.path();
    assert_eq!(
        c.server.listen,
        [
            addr("0.0.0.0:7999"),
            addr("127.0.0.1:8000"),
            addr("[::1]:8001")
        ]
    );
    assert_eq!(c.tls.listen, [addr("0.0.0.0:443")]);
    assert_eq!(
        c.tls.certs.as_deref(),
        Some(d.join("runner/certs").as_path())
    );
    assert_eq!(c.limits.max_connections, 1000);
    assert_eq!(c.limits.max_header_size, 16384);
    assert_eq!(c.log.level, "debug");
    assert_eq!(
        c.server.routes.as_deref(),
        Some(d.join("my-routes").as_path())
    );
    assert!(c.server.debug);
    assert!(c.forwarding.accept_x_forwarded_proto);
    assert_eq!(c.forwarding.set_x_forwarded_proto, ForwardedProto::Both);
    assert_eq!(
        c.xff_rules().unwrap(),
        [XffRule::Truncate(0), XffRule::Append]
    );
    assert_eq!(c.xff_trusted_rules().unwrap(), [XffRule::Append]);
    assert_eq!(c.grip.sig_iss, "me");
    assert_eq!(
        c.grip.sig_key,
        format!("file:{}", d.join("keys/sig.hex").display())
    );
    assert_eq!(c.grip.upstream_key.as_deref(), Some("base64:dXA="));
    // port_offset moves the publish port, as Pushpin's does.
    assert_eq!(c.server.publish_listen, addr("127.0.0.2:5571"));
    assert_eq!(c.limits.max_publish_body, 2000);
    assert_eq!(c.reliability.message_wait_ms, 100);
    assert_eq!(c.grip.id_cache_ttl_secs, 30);
    assert!(!c.reliability.update_on_first_subscription);
    assert_eq!(c.limits.max_channels_per_connection, 7);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert!(!c.server.auto_cross_origin);
}

#[test]
fn x_forwarded_for_rules_apply_in_pushpin_order() {
    // Pushpin truncates (by the last truncate rule) and then appends, whatever the order written.
    let cases = [
        (
            "append,truncate:0",
            vec![XffRule::Truncate(0), XffRule::Append],
        ),
        (
            "truncate:3,append,truncate:1",
            vec![XffRule::Truncate(1), XffRule::Append],
        ),
        ("append,append", vec![XffRule::Append]),
        ("truncate:2", vec![XffRule::Truncate(2)]),
        ("", vec![]),
    ];
    for (rules, want) in cases {
        let (_dir, _, loaded) = load_text(&format!("[proxy]\nx_forwarded_for={rules}\n"));
        let (c, _) = loaded.unwrap();
        assert_eq!(c.xff_rules().unwrap(), want, "{rules:?}");
    }
}

#[test]
fn absent_keys_mean_what_they_mean_to_pushpin() {
    let (_dir, _, loaded) = load_text("[proxy]\n");
    let (c, report) = loaded.unwrap();
    // Where Pushpin's default differs from Holdfast's.
    assert!(c.forwarding.x_forwarded_for.is_empty());
    assert!(c.forwarding.x_forwarded_for_trusted.is_empty());
    assert_eq!(c.forwarding.set_x_forwarded_proto, ForwardedProto::None);
    assert_eq!(c.grip.id_cache_ttl_secs, 0);
    // Where they agree.
    let native = Config::default();
    assert_eq!(c.server.listen, native.server.listen);
    assert_eq!(c.server.publish_listen, native.server.publish_listen);
    assert_eq!(c.server.routes, None);
    assert_eq!(c.limits.max_connections, 50_000);
    assert_eq!(c.grip.sig_key, DEFAULT_SIG_KEY_FOR_TESTS);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(report.include, None);
}

const DEFAULT_SIG_KEY_FOR_TESTS: &str = crate::config::DEFAULT_SIG_KEY;

#[test]
fn values_holdfast_cannot_accept_fail_at_their_line() {
    // (the [section] and line, what the error must say after `FILE:2: `)
    let cases = [
        (
            "[runner]\nhttp_port=eighty",
            "http_port: \"eighty\" is not a port number",
        ),
        (
            "[runner]\nhttp_port=localhost:80",
            "http_port: \"localhost:80\" is not [address:]port",
        ),
        (
            "[runner]\nhttp_port=",
            "http_port: no port; Holdfast needs at least one",
        ),
        (
            "[runner]\nhttps_ports=0",
            "https_ports: \"0\": port 0 is not allowed here",
        ),
        (
            "[runner]\nclient_maxconn=0",
            "client_maxconn: 0 is below the minimum of 1",
        ),
        (
            "[runner]\nclient_maxconn=-5",
            "client_maxconn: \"-5\" is not a whole number",
        ),
        (
            "[runner]\nclient_maxconn=",
            "client_maxconn: \"\" is not a whole number",
        ),
        (
            "[runner]\nlog_level=loud",
            "log_level: \"loud\" is not a level from 0",
        ),
        (
            "[runner]\nlog_level=:3",
            "log_level: \":3\" has no service name",
        ),
        ("[proxy]\nrouteSfile=x\nroutesfile=", "routesfile: empty"),
        ("[proxy]\ndebug=yes", "debug: \"yes\" is not true or false"),
        (
            "[proxy]\nset_x_forwarded_protocol=proto",
            "set_x_forwarded_protocol: \"proto\" is not true, proto-only or false",
        ),
        (
            "[proxy]\nx_forwarded_for=prepend",
            "x_forwarded_for: unknown rule \"prepend\"",
        ),
        (
            "[proxy]\nx_forwarded_for_trusted=truncate:x",
            "x_forwarded_for_trusted: \"truncate:x\": truncate needs a number",
        ),
        ("[proxy]\nsig_iss=a,b", "sig_iss: one value is expected"),
        (
            "[proxy]\nauto_cross_origin=maybe",
            "auto_cross_origin: \"maybe\" is not true or false",
        ),
        (
            "[handler]\npush_in_http_addr=localhost",
            "push_in_http_addr: \"localhost\" is not an IP address",
        ),
        (
            "[handler]\npush_in_http_port=70000",
            "push_in_http_port: 70000 is too large",
        ),
        (
            "[global]\nport_offset=70000\n[handler]\npush_in_http_port=5561",
            "push_in_http_port: 5561 plus port_offset 70000 is not a port",
        ),
        (
            "[handler]\nmessage_wait=soon",
            "message_wait: \"soon\" is not a whole number",
        ),
        (
            "[handler]\nconnection_subscription_max=0",
            "connection_subscription_max: 0 is below the minimum of 1",
        ),
        // Keys Holdfast does not act on are still checked.
        (
            "[handler]\npush_in_spec=tcp://127.0.0.1",
            "push_in_spec: \"tcp://127.0.0.1\": a tcp:// spec needs a port (tcp://host:port)",
        ),
        (
            "[handler]\nmessage_rate=fast",
            "message_rate: \"fast\" is not a whole number",
        ),
        (
            "[handler]\nstats_format=xml",
            "stats_format: \"xml\" is not tnetstring or json",
        ),
        (
            "[handler]\nprometheus_port=nine",
            "prometheus_port: \"nine\" is not a port number",
        ),
        (
            "[runner]\nallow_compression=2",
            "allow_compression: \"2\" is not true or false",
        ),
    ];
    for (text, want) in cases {
        let (_dir, path, loaded) = load_text(&format!("{text}\n"));
        let line = text.lines().count();
        let err = loaded.unwrap_err().to_string();
        let want = format!("{}:{line}: {want}", path.display());
        assert!(err.starts_with(&want), "{text:?}:\n got {err}\nwant {want}");
    }
}

#[test]
fn keys_holdfast_does_not_act_on_get_one_warning_each() {
    let text = "\
[global]
rundir=/var/run/pushpin
ipc_prefix=pushpin-
stats_connection_ttl=120
[runner]
services=condure,pushpin-proxy,pushpin-handler
condure_bin=condure
log_level=2,proxy:3
client_buffer_size=4096
[proxy]
auto_cross_origin=true
sockjs_url=http://cdn.example/sockjs.js
condure_in_specs=ipc://{rundir}/{ipc_prefix}condure-out
log_from=false
colour=blue
[handler]
push_in_spec=tcp://127.0.0.1:5560
push_in_http_addr=127.0.0.1
message_rate=2500
[extra]
key=value
";
    let (_dir, path, loaded) = load_text(text);
    let (c, report) = loaded.unwrap();
    let at = |line: usize, rest: &str| format!("{}:{line}: {rest}", path.display());
    let want = [
        at(6, "services: means nothing to Holdfast (Holdfast is one process"),
        at(7, "condure_bin: means nothing to Holdfast (a program Pushpin starts)"),
        at(8, "log_level: the levels of Pushpin's services (proxy:3) are ignored"),
        at(9, "client_buffer_size: 4096 is below Holdfast's minimum of 8192"),
        at(13, "condure_in_specs: means nothing to Holdfast (the ZeroMQ wiring between Pushpin's own processes); ignored"),
        at(14, "log_from: false has no effect: Holdfast's access log always has the client's address"),
        at(15, "colour: not a Pushpin setting Holdfast knows; ignored"),
        at(18, "push_in_http_addr: without push_in_http_port Pushpin serves no HTTP publish API"),
        at(21, "key: in [extra], which is not a section of Pushpin's; ignored"),
    ];
    assert_eq!(report.warnings.len(), want.len(), "{:#?}", report.warnings);
    for (got, want) in report.warnings.iter().zip(&want) {
        assert!(got.starts_with(want.as_str()), "\n got {got}\nwant {want}");
    }
    // The values Holdfast can use were still used.
    assert_eq!(c.limits.max_header_size, 8192);
    assert_eq!(c.sockjs.url, "http://cdn.example/sockjs.js");
    assert_eq!(c.log.level, "info");
    assert_eq!(c.server.publish_listen, addr("127.0.0.1:5561"));
    assert!(c.server.auto_cross_origin);
    assert_eq!(c.zmq.push_in_spec, "tcp://127.0.0.1:5560");
    assert_eq!(c.zmq.message_rate, 2500);
}

#[test]
fn zeromq_sockets_are_on_when_the_file_names_them() {
    let (_dir, _path, loaded) = load_text(
        "[global]
rundir=/run/pp
ipc_prefix=x-
port_offset=10
stats_connection_ttl=30
         [handler]
push_in_spec=tcp://127.0.0.1:5560
         push_in_sub_specs=tcp://127.0.0.1:5562,ipc://{rundir}/{ipc_prefix}sub
         push_in_sub_connect=true
command_spec=tcp://127.0.0.1:5563
         stats_spec=ipc://{rundir}/{ipc_prefix}stats
stats_format=json
         stats_report_interval=5
message_hwm=100
",
    );
    let (c, report) = loaded.unwrap();
    let z = &c.zmq;
    // port_offset moves tcp:// ports, as Pushpin's does; templates are filled in.
    assert_eq!(z.push_in_spec, "tcp://127.0.0.1:5570");
    assert_eq!(
        z.push_in_sub_specs,
        vec![
            "tcp://127.0.0.1:5572".to_string(),
            "ipc:///run/pp/x-sub".to_string()
        ]
    );
    assert!(z.push_in_sub_connect);
    assert_eq!(z.command_spec, "tcp://127.0.0.1:5573");
    assert_eq!(z.stats_spec, "ipc:///run/pp/x-stats");
    assert_eq!(z.stats_format, crate::config::zmq::StatsFormat::Json);
    assert_eq!(z.stats_report_interval, 5);
    assert_eq!(z.stats_connection_ttl, 30);
    assert_eq!(z.message_hwm, 100);
    assert!(
        !report
            .warnings
            .iter()
            .any(|w| w.contains("spec") || w.contains("stats_")),
        "{:?}",
        report.warnings
    );
}

#[test]
fn an_open_publish_api_from_pushpin_conf_starts_with_a_warning() {
    let (_dir, path, loaded) =
        load_text("[handler]\npush_in_http_addr=0.0.0.0\npush_in_http_port=5561\n");
    let (config, _) = loaded.unwrap();
    assert_eq!(config.server.publish_listen, addr("0.0.0.0:5561"));
    config.validate(&path).unwrap();
    assert!(config.publish_open_by_pushpin());
    let warning = config.open_publish_api_warning().unwrap();
    assert!(
        warning.starts_with(&format!("{}:2: push_in_http_addr: ", path.display())),
        "{warning}"
    );
    assert!(warning.contains("NO AUTHENTICATION"), "{warning}");

    // With authentication there is nothing to warn about.
    let mut authed = config.clone();
    authed.apply(Overrides {
        publish: crate::config::PublishOverrides {
            token: vec!["t".into()],
            ..Default::default()
        },
        ..Default::default()
    });
    authed.validate(&path).unwrap();
    assert_eq!(authed.open_publish_api_warning(), None);

    // The same address from the command line, or from Holdfast's TOML, is refused.
    let mut flagged = config.clone();
    flagged.apply(Overrides {
        publish_listen: Some(addr("0.0.0.0:5562")),
        ..Default::default()
    });
    let err = flagged.validate(&path).unwrap_err().to_string();
    assert!(err.contains("--publish-allow-unauthenticated"), "{err}");
    let toml = Config::parse(
        "[server]\npublish_listen = \"0.0.0.0:5561\"\n",
        Path::new("h.toml"),
    )
    .unwrap();
    assert!(toml.validate(Path::new("h.toml")).is_err());

    // No push_in_http_addr but a port: Pushpin listens on every address.
    let (_dir, _, loaded) = load_text("[handler]\npush_in_http_port=5561\n");
    let (config, _) = loaded.unwrap();
    assert_eq!(config.server.publish_listen, addr("0.0.0.0:5561"));
    assert!(config.open_publish_api_warning().is_some());
}

#[test]
fn validation_errors_name_the_pushpin_key_and_line() {
    let (dir, path, loaded) = load_text("[proxy]\n\nsig_key=file:missing.hex\n");
    let (config, _) = loaded.unwrap();
    let err = config.validate(&path).unwrap_err().to_string();
    let want = format!(
        "{}:3: sig_key: cannot read key file {}",
        path.display(),
        dir.path().join("missing.hex").display()
    );
    assert!(err.starts_with(&want), "\n got {err}\nwant {want}");
}

#[test]
fn prometheus_ports_of_both_processes_serve_one_page() {
    let (_dir, _path, loaded) = load_text(
        "[proxy]\nprometheus_port=9090\nprometheus_prefix=pushpin_\n\
         [handler]\nprometheus_port=127.0.0.1:9091\n",
    );
    let (config, report) = loaded.unwrap();
    assert_eq!(
        config.server.prometheus_listen,
        vec![addr("0.0.0.0:9090"), addr("127.0.0.1:9091")]
    );
    assert_eq!(config.server.prometheus_prefix, "pushpin_");
    assert!(
        !report.warnings.iter().any(|w| w.contains("prometheus")),
        "{:?}",
        report.warnings
    );
    // The same port in both sections is one listener.
    let (_dir, _path, loaded) =
        load_text("[proxy]\nprometheus_port=9090\n[handler]\nprometheus_port=9090\n");
    assert_eq!(
        loaded.unwrap().0.server.prometheus_listen,
        vec![addr("0.0.0.0:9090")]
    );
}
