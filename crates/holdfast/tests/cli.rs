//! The `holdfast` binary itself: `--check-config`, logging, signals.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::*;

fn holdfast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_holdfast"))
}

#[test]
fn check_config_accepts_good_files_and_names_the_first_problem() {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes");
    let config = dir.path().join("holdfast.toml");
    std::fs::write(&routes, "* test\n*,path_beg=/api 127.0.0.1:8000\n").unwrap();
    std::fs::write(&config, "[server]\nroutes = \"routes\"\n").unwrap();
    let out = holdfast()
        .arg("--config")
        .arg(&config)
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    std::fs::write(&routes, "* test\n*,path_beg=/api 127.0.0.1\n").unwrap();
    let out = holdfast()
        .arg("--config")
        .arg(&config)
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:2:", routes.display())), "{err}");
    assert!(err.contains("'127.0.0.1'"), "{err}");

    std::fs::write(
        &config,
        "[server]\nroutes = \"routes\"\n\n[limits]\nmax_connections = 0\n",
    )
    .unwrap();
    let out = holdfast()
        .arg("--config")
        .arg(&config)
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:5: limits.max_connections", config.display())),
        "{err}"
    );

    std::fs::write(&config, "[server]\nlisten = \"not a list\"\n").unwrap();
    let out = holdfast()
        .arg("--config")
        .arg(&config)
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(":2:"));

    // Flags override the file.
    std::fs::write(&config, "[server]\nroutes = \"missing-file\"\n").unwrap();
    let out = holdfast()
        .arg("--config")
        .arg(&config)
        .arg("--routes")
        .arg(&routes)
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "the --routes file (still broken) was checked"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("{}:2:", routes.display())));
}

/// A running binary and the JSON log lines it prints.
struct Running {
    child: Child,
    lines: std::sync::mpsc::Receiver<serde_json::Value>,
    client: String,
}

impl Running {
    fn start(routes: &std::path::Path) -> Running {
        let mut child = holdfast()
            .args(["--listen", "127.0.0.1:0", "--publish-listen", "127.0.0.1:0"])
            .arg("--routes")
            .arg(routes)
            .args(["--log-format", "json", "--log-level", "info"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        let mut r = Running {
            child,
            lines: rx,
            client: String::new(),
        };
        let listening = r
            .wait_for(|v| v["fields"]["message"] == "listening" && v["fields"]["kind"] == "Client");
        r.client = listening["fields"]["addr"].as_str().unwrap().to_string();
        r
    }

    fn wait_for(&self, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        loop {
            let v = self
                .lines
                .recv_timeout(Duration::from_secs(10))
                .expect("expected log line within 10 s");
            if pred(&v) {
                return v;
            }
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn json_access_log_sighup_reload_and_sigterm_exit() {
    let origin = Origin::start(|_| async { hyper::Response::new(full("from-origin")) }).await;
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes");
    std::fs::write(&routes, "*,id=hello test\n").unwrap();
    let mut running = Running::start(&routes);
    let url = format!("http://{}/", running.client);

    let body = text(get(&url).await).await;
    assert_eq!(body, holdfast::testhandler::HELLO);
    let line = running.wait_for(|v| v["fields"]["message"] == "request");
    let f = &line["fields"];
    assert_eq!(f["method"], "GET");
    assert_eq!(f["uri"], "/");
    assert_eq!(f["route"], "hello");
    assert_eq!(f["target"], "test");
    assert_eq!(f["status"], 200);
    assert_eq!(f["bytes"], holdfast::testhandler::HELLO.len());
    assert!(f["duration_ms"].as_f64().unwrap() >= 0.0);

    // Rewrite the file in place and ask for a reload with SIGHUP.
    std::fs::write(&routes, format!("*,id=origin {}\n", origin.target())).unwrap();
    running.signal("HUP");
    running.wait_for(|v| v["fields"]["message"] == "routes reloaded");
    assert_eq!(text(get(&url).await).await, "from-origin");

    running.signal("TERM");
    let status = running.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}
