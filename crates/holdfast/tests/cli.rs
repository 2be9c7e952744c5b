//! The `holdfast` binary itself: `--check-config`, logging, signals.

mod support;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use support::binary::Binary;
use support::*;

/// Runs `holdfast --config <config> [extra…] --check-config`: its exit code and stderr.
fn check_config(config: &Path, extra: &[&OsStr]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .arg("--config")
        .arg(config)
        .args(extra)
        .arg("--check-config")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_accepts_good_files_and_names_the_first_problem() {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes");
    let config = dir.path().join("holdfast.toml");
    let bad_routes = "* test\n*,path_beg=/api 127.0.0.1\n";
    let routes_line_2 = format!("{}:2:", routes.display());
    // (routes file, config file, exit code, what stderr must name)
    let cases: Vec<(&str, &str, i32, Vec<String>)> = vec![
        (
            "* test\n*,path_beg=/api 127.0.0.1:8000\n",
            "[server]\nroutes = \"routes\"\n",
            0,
            vec![],
        ),
        (
            bad_routes,
            "[server]\nroutes = \"routes\"\n",
            2,
            vec![routes_line_2.clone(), "'127.0.0.1'".into()],
        ),
        (
            bad_routes,
            "[server]\nroutes = \"routes\"\n\n[limits]\nmax_connections = 0\n",
            2,
            vec![format!("{}:5: limits.max_connections", config.display())],
        ),
        (
            bad_routes,
            "[server]\nlisten = \"not a list\"\n",
            2,
            vec![format!("{}:2:", config.display())],
        ),
    ];
    for (routes_text, config_text, code, names) in &cases {
        std::fs::write(&routes, routes_text).unwrap();
        std::fs::write(&config, config_text).unwrap();
        let (got, err) = check_config(&config, &[]);
        assert_eq!(got, Some(*code), "{config_text:?}: {err}");
        for name in names {
            assert!(err.contains(name.as_str()), "{config_text:?}: {err}");
        }
    }

    // Flags override the file: the --routes file (still broken) is the one checked.
    std::fs::write(&config, "[server]\nroutes = \"missing-file\"\n").unwrap();
    let (code, err) = check_config(&config, &["--routes".as_ref(), routes.as_ref()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&routes_line_2), "{err}");
}

#[tokio::test]
async fn json_access_log_sighup_reload_and_sigterm_exit() {
    use tokio::io::AsyncReadExt;
    let origin = Origin::start(|_| async { hyper::Response::new(full("from-origin")) }).await;
    // The routes path is a symlink into another folder. The reload watcher watches the folder
    // holding the path, so rewriting the file the link points to is invisible to it: only
    // SIGHUP can make Holdfast read the new routes.
    let watched = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let real = elsewhere.path().join("routes");
    std::fs::write(&real, "*,id=hello test\n").unwrap();
    let routes = watched.path().join("routes");
    std::os::unix::fs::symlink(&real, &routes).unwrap();
    let mut running = Binary::start([
        "--listen",
        "127.0.0.1:0",
        "--publish-listen",
        "127.0.0.1:0",
        "--routes",
        routes.to_str().unwrap(),
        "--log-level",
        "info",
    ]);
    let url = running.url("/");

    let mut stream = send_raw(
        running.client,
        b"GET /?from=log HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with(holdfast::testhandler::HELLO), "{answer}");
    let line = running.wait_for(|v| v["fields"]["message"] == "request");
    assert_eq!(line["target"], "holdfast::access");
    assert_eq!(line["level"], "INFO");
    let f = &line["fields"];
    assert_eq!(f["method"], "GET");
    assert_eq!(f["uri"], "/?from=log");
    assert_eq!(f["from"], stream.local_addr().unwrap().ip().to_string());
    assert_eq!(f["route"], "hello");
    assert_eq!(f["target"], "test");
    assert_eq!(f["status"], 200);
    assert_eq!(f["hold"], "-");
    assert_eq!(f["bytes"], holdfast::testhandler::HELLO.len());
    assert!(
        f["duration_ms"].is_f64(),
        "duration_ms is a number of milliseconds: {f}"
    );

    // Rewrite the file behind the link, then ask for a reload with SIGHUP.
    std::fs::write(&real, format!("*,id=origin {}\n", origin.target())).unwrap();
    running.signal("HUP");
    running.wait_for(|v| v["fields"]["message"] == "routes reloaded");
    assert_eq!(text(get(&url).await).await, "from-origin");
    let line = running.wait_for(|v| v["fields"]["message"] == "request");
    assert_eq!(line["fields"]["route"], "origin");

    running.signal("TERM");
    let status = running.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn sigusr1_logs_a_state_summary_and_the_process_keeps_serving() {
    let running = Binary::start([
        "--listen",
        "127.0.0.1:0",
        "--publish-listen",
        "127.0.0.1:0",
        "--log-level",
        "info",
    ]);
    // One held stream on the built-in test handler's channel.
    let resp = get(&running.url("/stream?channel=summary")).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    read_until(&mut body, "[stream opened]\n").await;
    running.signal("USR1");
    let line = running.wait_for(|v| v["fields"]["message"] == "state");
    assert_eq!(line["target"], "holdfast::state");
    let f = &line["fields"];
    assert_eq!(f["client_connections"], 1, "{f}");
    assert_eq!(f["channels"], 1, "{f}");
    assert_eq!(f["subscriptions"], 1, "{f}");
    assert_eq!(f["routes"], 1, "{f}");
    assert_eq!(f["cluster"], false, "{f}");
    assert_eq!(f["draining"], false, "{f}");
    // The signal did not end the process, and the stream is still served.
    running.signal("USR1");
    running.wait_for(|v| v["fields"]["message"] == "state");
    assert_eq!(get(&running.url("/")).await.status(), 200);
}

#[test]
fn signing_with_the_default_sig_key_is_warned_about_once_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes");
    let own_key = dir.path().join("own-key.toml");
    std::fs::write(&own_key, "[grip]\nsig_key = \"s3cret\"\n").unwrap();
    let default_key = dir.path().join("default-key.toml");
    std::fs::write(&default_key, "[grip]\nsig_iss = \"me\"\n").unwrap();
    // (routes file, config file, the routes the warning names; none when there is no warning)
    let cases: &[(&str, Option<&Path>, Option<&str>)] = &[
        (
            "* test\n*,path_beg=/api,id=api 127.0.0.1:9\n*,path_beg=/b 127.0.0.1:9,over_http\n",
            None,
            Some("api (line 2), *,/b,*,* (line 3)"),
        ),
        ("* 127.0.0.1:9\n", Some(&default_key), Some("line 1")),
        ("*,sig_key=other 127.0.0.1:9\n", None, None),
        ("* 127.0.0.1:9\n", Some(&own_key), None),
        (
            "*,sig_key=changeme 127.0.0.1:9\n",
            Some(&own_key),
            Some("line 1"),
        ),
        ("* test\n", None, None),
        ("*,no_grip 127.0.0.1:9\n", None, None),
    ];
    for (routes_text, config, names) in cases {
        std::fs::write(&routes, routes_text).unwrap();
        let mut args = vec![
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--publish-listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--routes".as_ref(),
            routes.as_os_str(),
        ];
        if let Some(config) = config {
            args.extend(["--config".as_ref(), config.as_os_str()]);
        }
        let running = Binary::start(args);
        let warnings: Vec<String> = running
            .startup
            .iter()
            .filter(|v| v["level"] == "WARN")
            .map(|v| {
                v["fields"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .filter(|m| m.contains("sig_key"))
            .collect();
        match names {
            None => assert!(warnings.is_empty(), "{routes_text:?}: {warnings:?}"),
            Some(names) => {
                assert_eq!(warnings.len(), 1, "{routes_text:?}: {warnings:?}");
                assert!(warnings[0].contains(names), "{routes_text:?}: {warnings:?}");
                assert!(warnings[0].contains("changeme"), "{warnings:?}");
            }
        }
    }
}
