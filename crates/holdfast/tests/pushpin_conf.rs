//! Debian's own `/etc/pushpin/pushpin.conf`, as the `pushpin` package ships it, read by the
//! `holdfast` binary: every key mapped or warned about once at its line, the include of
//! `{libdir}/internal.conf` followed, the routes file and `runner/certs/` found beside the
//! config, the proxy answering (over HTTPS too) and publishes arriving.
//!
//! The files come from the `pushpin` package: installed (`/etc/pushpin/pushpin.conf`,
//! `/usr/lib/pushpin/internal.conf`), or unpacked under `HOLDFAST_PUSHPIN_ROOT`, as
//! `scripts/test` does with `apt-get download pushpin` when it is not installed (the package
//! carries the file as `/usr/share/pushpin/pushpin.conf.condure`, which its postinst installs as
//! `/etc/pushpin/pushpin.conf`; the script does the same under the root). Without either the
//! tests skip, saying so, unless `HOLDFAST_REQUIRE_PUSHPIN_CONF` is set or they run under CI
//! (`CI=true`), where they fail.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use hyper::Response;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use support::binary::Binary;
use support::tls::TestCa;
use support::*;

/// Where Debian's `pushpin` package is, installed (`/`) or unpacked; `None` (after saying why)
/// when it is in neither place.
fn pushpin_root() -> Option<PathBuf> {
    if let Some(root) = std::env::var_os("HOLDFAST_PUSHPIN_ROOT") {
        let root = PathBuf::from(root);
        assert!(
            root.join("etc/pushpin/pushpin.conf").is_file(),
            "HOLDFAST_PUSHPIN_ROOT={} has no etc/pushpin/pushpin.conf",
            root.display()
        );
        return Some(root);
    }
    if Path::new("/etc/pushpin/pushpin.conf").is_file() {
        return Some(PathBuf::from("/"));
    }
    let required = std::env::var_os("HOLDFAST_REQUIRE_PUSHPIN_CONF").is_some()
        || std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !required,
        "Debian's pushpin.conf is neither installed nor unpacked under HOLDFAST_PUSHPIN_ROOT, \
         and HOLDFAST_REQUIRE_PUSHPIN_CONF or CI is set"
    );
    eprintln!("skipping: Debian's pushpin.conf is not here (scripts/test fetches it)");
    None
}

/// Runs `holdfast --config <config> <extra…> --check-config`: exit code, stdout, stderr.
fn check_config(config: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .arg("--config")
        .arg(config)
        .args(extra)
        .arg("--check-config")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The `key=value` lines of an INI file: `(section, key)` to line number.
fn key_lines(path: &Path) -> HashMap<(String, String), usize> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut section = String::new();
    let mut keys = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
        } else if !line.starts_with('#') && !line.starts_with(';') {
            if let Some((key, _)) = line.split_once('=') {
                keys.insert((section.clone(), key.trim().to_string()), i + 1);
            }
        }
    }
    keys
}

/// The keys of the shipped file that set a field of Holdfast's configuration (or say where
/// other values come from) with the shipped value, so they get no warning.
const MAPPED: &[&str] = &[
    "include",
    "port_offset",
    "http_port",
    "log_level",
    "client_buffer_size",
    "client_maxconn",
    "routesfile",
    "debug",
    "auto_cross_origin",
    "accept_pushpin_route",
    "accept_x_forwarded_protocol",
    "set_x_forwarded_protocol",
    "x_forwarded_for",
    "x_forwarded_for_trusted",
    "sig_iss",
    "sig_key",
    "upstream_key",
    "push_in_http_addr",
    "push_in_http_port",
    "push_in_http_max_body_size",
    "message_wait",
    "id_cache_ttl",
    "connection_subscription_max",
    "rundir",
    "ipc_prefix",
    "stats_connection_ttl",
    "push_in_spec",
    "push_in_sub_specs",
    "push_in_sub_connect",
    "stats_spec",
    "command_spec",
    "message_rate",
    "message_hwm",
    "subscription_linger",
    "stats_subscription_ttl",
    "stats_report_interval",
    "stats_format",
    "sockjs_url",
    "log_user_agent",
    "push_in_http_max_headers_size",
];

#[test]
fn the_shipped_pushpin_conf_loads_as_it_is() {
    let Some(root) = pushpin_root() else { return };
    let conf = root.join("etc/pushpin/pushpin.conf");
    let internal = root.join("usr/lib/pushpin/internal.conf");
    assert!(internal.is_file(), "{} is missing", internal.display());
    let (code, stdout, stderr) = check_config(&conf, &[]);
    assert_eq!(code, Some(0), "{stderr}");

    // The effective configuration: Pushpin's values, and its defaults where Holdfast's differ.
    assert!(
        stdout.contains(&format!("including {}", internal.display())),
        "{stdout}"
    );
    let effective: toml::Value = toml::from_str(&stdout).unwrap();
    let field = |section: &str, key: &str| effective[section][key].clone();
    let expected = [
        ("server", "listen", toml::Value::from(vec!["0.0.0.0:7999"])),
        ("server", "publish_listen", "127.0.0.1:5561".into()),
        (
            "server",
            "routes",
            root.join("etc/pushpin/routes").display().to_string().into(),
        ),
        ("server", "debug", false.into()),
        ("limits", "max_connections", 50_000.into()),
        ("limits", "max_header_size", 8192.into()),
        ("limits", "max_publish_body", 1_000_000.into()),
        ("limits", "max_channels_per_connection", 20.into()),
        ("forwarding", "x_forwarded_for", toml::Value::Array(vec![])),
        (
            "forwarding",
            "x_forwarded_for_trusted",
            toml::Value::Array(vec![]),
        ),
        ("forwarding", "set_x_forwarded_proto", "proto-only".into()),
        ("forwarding", "accept_x_forwarded_proto", false.into()),
        ("grip", "sig_iss", "pushpin".into()),
        ("grip", "sig_key", "changeme".into()),
        ("grip", "id_cache_ttl_secs", 60.into()),
        ("reliability", "message_wait_ms", 5000.into()),
        ("tls", "listen", toml::Value::Array(vec![])),
        ("log", "level", "info".into()),
    ];
    for (section, key, want) in expected {
        assert_eq!(field(section, key), want, "{section}.{key}\n{stdout}");
    }
    assert!(effective["grip"].get("upstream_key").is_none(), "{stdout}");

    // One warning for every key Holdfast does not use, at its line, in both files; none for
    // the others.
    let mut warned: HashMap<String, usize> = HashMap::new();
    for line in stderr.lines() {
        if let Some(w) = line.strip_prefix("holdfast: warning: ") {
            let at: Vec<&str> = w.splitn(3, ':').take(2).collect();
            *warned.entry(at.join(":")).or_default() += 1;
        }
    }
    let main_keys = key_lines(&conf);
    let mut want: Vec<String> = main_keys
        .iter()
        .filter(|((_, key), _)| !MAPPED.contains(&key.as_str()))
        .map(|(_, line)| format!("{}:{line}", conf.display()))
        .collect();
    want.extend(
        key_lines(&internal)
            .iter()
            .filter(|(key, _)| !main_keys.contains_key(*key))
            .map(|(_, line)| format!("{}:{line}", internal.display())),
    );
    want.sort();
    let mut got: Vec<String> = warned.keys().cloned().collect();
    got.sort();
    assert_eq!(got, want, "{stderr}");
    assert!(warned.values().all(|&n| n == 1), "{stderr}");
    assert_eq!(
        effective["server"]["auto_cross_origin"],
        toml::Value::Boolean(false),
        "{stdout}"
    );
}

/// The shipped file with its ports moved to free ones (port 0; a test never takes a fixed port),
/// its runtime folder (where the stats socket goes) to `rundir`, and the `more` lines changed;
/// each line changed must be in the file exactly once.
fn on_free_ports(shipped: &str, rundir: &Path, more: &[(&str, &str)]) -> String {
    let rundir = format!("\nrundir={}\n", rundir.display());
    let mut text = shipped.to_string();
    for (line, changed) in [
        ("\nhttp_port=7999\n", "\nhttp_port=127.0.0.1:0\n"),
        ("\npush_in_http_port=5561\n", "\npush_in_http_port=0\n"),
        (
            "\npush_in_spec=tcp://127.0.0.1:5560\n",
            "\npush_in_spec=tcp://127.0.0.1:0\n",
        ),
        (
            "\npush_in_sub_specs=tcp://127.0.0.1:5562\n",
            "\npush_in_sub_specs=tcp://127.0.0.1:0\n",
        ),
        (
            "\ncommand_spec=tcp://127.0.0.1:5563\n",
            "\ncommand_spec=tcp://127.0.0.1:0\n",
        ),
        ("\nrundir=/var/run/pushpin\n", rundir.as_str()),
    ]
    .into_iter()
    .chain(more.iter().copied())
    {
        assert_eq!(
            text.matches(line).count(),
            1,
            "{line:?} in the shipped file"
        );
        text = text.replace(line, changed);
    }
    text
}

#[tokio::test]
async fn the_shipped_pushpin_conf_serves_routes_beside_it_and_publishes() {
    let Some(root) = pushpin_root() else { return };
    // A copy laid out as the package is, with only the ports changed to free ones (port 0),
    // since a test never takes a fixed port, and the runtime folder (where the stats socket
    // goes) moved into the test's own.
    let dir = tempfile::tempdir().unwrap();
    let rundir = dir.path().join("run");
    let shipped = std::fs::read_to_string(root.join("etc/pushpin/pushpin.conf")).unwrap();
    let text = on_free_ports(&shipped, &rundir, &[]);
    let conf = dir.path().join("etc/pushpin/pushpin.conf");
    let lib = dir.path().join("usr/lib/pushpin");
    std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::write(&conf, &text).unwrap();
    std::fs::copy(
        root.join("usr/lib/pushpin/internal.conf"),
        lib.join("internal.conf"),
    )
    .unwrap();

    // The origin holds every request as a stream on channel "shipped", and reports what it saw.
    let (seen_tx, mut seen) = tokio::sync::mpsc::channel::<hyper::HeaderMap>(16);
    let origin = Origin::start(move |req| {
        let seen_tx = seen_tx.clone();
        async move {
            let _ = seen_tx.try_send(req.headers().clone());
            Response::builder()
                .header("Grip-Hold", "stream")
                .header("Grip-Channel", "shipped")
                .body(full("ready\n"))
                .unwrap()
        }
    })
    .await;
    // `routesfile=routes` is relative to the config file's folder, not the working directory.
    std::fs::write(
        dir.path().join("etc/pushpin/routes"),
        format!("* {}\n", origin.target()),
    )
    .unwrap();

    let running = Binary::start(["--config".as_ref(), conf.as_os_str()]);
    let publish = running
        .wait_for(|v| v["fields"]["message"] == "listening" && v["fields"]["kind"] == "Publish");
    let publish = publish["fields"]["addr"].as_str().unwrap().to_string();
    assert!(running.client.ip().is_loopback(), "{}", running.client);
    let warnings: Vec<String> = (running.startup.iter())
        .filter(|v| v["level"] == "WARN")
        .filter_map(|v| v["fields"]["message"].as_str().map(str::to_string))
        .collect();
    let acao = format!("{}:", conf.display());
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with(&acao) && w.contains("services: means nothing to Holdfast")),
        "{warnings:#?}"
    );

    let resp = get(&running.url("/events")).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    read_until(&mut body, "ready\n").await;
    let (status, answer) = publish_json_to(
        &format!("http://{publish}/publish/"),
        json!({"items": [stream_item("shipped", None, None, "published\n")]}),
    )
    .await;
    assert_eq!((status, answer.as_str()), (200, "Published\n"));
    read_until(&mut body, "published\n").await;

    // What the file says about proxied requests: no X-Forwarded-For added (`x_forwarded_for=`
    // is empty), and a Grip-Sig signed with `sig_key=changeme` for `sig_iss=pushpin`.
    let headers = seen.recv().await.unwrap();
    assert!(headers.get("x-forwarded-for").is_none(), "{headers:?}");
    let token = headers["grip-sig"].to_str().unwrap();
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&["pushpin"]);
    let claims =
        jsonwebtoken::decode::<Value>(token, &DecodingKey::from_secret(b"changeme"), &validation)
            .unwrap()
            .claims;
    assert_eq!(claims["iss"], "pushpin");
}

#[tokio::test]
async fn https_ports_serve_the_certificates_in_runner_certs_beside_the_config() {
    let Some(root) = pushpin_root() else { return };
    let shipped = std::fs::read_to_string(root.join("etc/pushpin/pushpin.conf")).unwrap();
    // Pushpin takes no port 0 for HTTPS, so a free one is asked of the system.
    let https_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let https = format!("\nhttps_ports=127.0.0.1:{https_port}\n");
    let dir = tempfile::tempdir().unwrap();
    let rundir = dir.path().join("run");
    let conf_text = on_free_ports(&shipped, &rundir, &[("\n#https_ports=443\n", &https)]);
    std::fs::write(dir.path().join("pushpin.conf"), conf_text).unwrap();
    std::fs::write(dir.path().join("routes"), "* test\n").unwrap();
    let certs = dir.path().join("runner/certs");
    std::fs::create_dir_all(&certs).unwrap();
    let ca = TestCa::new("pushpin.conf test CA");
    ca.server_cert(&["localhost"], &certs, "localhost");

    // Started from another folder: the paths are the config file's, not the working directory's.
    let conf = dir.path().join("pushpin.conf");
    let running = Binary::start(["--config".as_ref(), conf.as_os_str()]);
    let tls =
        running.wait_for(|v| v["fields"]["message"] == "listening" && v["fields"]["tls"] == true);
    let addr: std::net::SocketAddr = tls["fields"]["addr"].as_str().unwrap().parse().unwrap();

    let mut roots = rustls::RootCertStore::empty();
    let ca_der = der_of(&ca.cert_pem);
    roots.add(ca_der).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let stream = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .expect("handshake within 10 s")
    .expect("the certificate from runner/certs, verified against the test CA");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            hyper::Request::get("/")
                .header("host", "localhost")
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(text(resp).await, holdfast::testhandler::HELLO);
}

/// The DER of the one certificate in a PEM text.
fn der_of(pem: &str) -> CertificateDer<'static> {
    let block = pem::parse(pem).unwrap();
    CertificateDer::from(block.contents().to_vec())
}

#[test]
fn an_open_push_in_http_addr_starts_with_a_warning_where_a_flag_is_refused() {
    let Some(root) = pushpin_root() else { return };
    let shipped = std::fs::read_to_string(root.join("etc/pushpin/pushpin.conf")).unwrap();
    let line = "\npush_in_http_addr=127.0.0.1\n";
    assert_eq!(shipped.matches(line).count(), 1);
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("pushpin.conf");
    std::fs::write(
        &conf,
        shipped.replace(line, "\npush_in_http_addr=0.0.0.0\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("routes"), "* test\n").unwrap();
    let addr_line = key_lines(&conf)[&("handler".to_string(), "push_in_http_addr".to_string())];

    let (code, _, stderr) = check_config(&conf, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let want = format!(
        "holdfast: warning: {}:{addr_line}: push_in_http_addr: the publish API listens on \
         0.0.0.0:5561 with NO AUTHENTICATION",
        conf.display()
    );
    assert!(stderr.contains(&want), "{stderr}");

    // Authentication turns the warning off; the same address given as a flag is refused.
    let (code, _, stderr) = check_config(&conf, &["--publish-token", "s3cret"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("NO AUTHENTICATION"), "{stderr}");
    let (code, _, stderr) = check_config(&conf, &["--publish-listen", "0.0.0.0:5562"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--publish-allow-unauthenticated"),
        "{stderr}"
    );
}
