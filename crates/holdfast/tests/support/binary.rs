//! The `holdfast` binary as a child process, read through its JSON log lines.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// A running `holdfast` binary and the JSON log lines it prints.
pub struct Binary {
    pub child: Child,
    /// The client listener, as its "listening" log line gives it.
    pub client: SocketAddr,
    /// The log lines printed before the client listener's, startup warnings among them.
    pub startup: Vec<Value>,
    // Kept while the child runs: the reader stops when this is dropped, and the child's writes
    // to stdout would then fail.
    lines: mpsc::Receiver<Value>,
}

impl Binary {
    /// Runs `holdfast <args> --log-format json` and waits for its client listener.
    pub fn start<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> Binary {
        let mut child = Command::new(env!("CARGO_BIN_EXE_holdfast"))
            .args(args)
            .args(["--log-format", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        let mut binary = Binary {
            child,
            client: SocketAddr::from(([0, 0, 0, 0], 0)),
            startup: Vec::new(),
            lines,
        };
        let listening = loop {
            let v = binary.next_line();
            if v["fields"]["message"] == "listening" && v["fields"]["kind"] == "Client" {
                break v;
            }
            binary.startup.push(v);
        };
        binary.client = listening["fields"]["addr"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        binary
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.client, path)
    }

    /// The next log line that `pred` accepts, skipping the others (bounded: 15 s a line).
    pub fn wait_for(&self, mut pred: impl FnMut(&Value) -> bool) -> Value {
        loop {
            let v = self.next_line();
            if pred(&v) {
                return v;
            }
        }
    }

    /// The next log line (bounded: 15 s).
    fn next_line(&self) -> Value {
        self.lines
            .recv_timeout(Duration::from_secs(15))
            .expect("expected log line within 15 s")
    }

    /// Sends the signal named `sig` (`HUP`, `TERM`, …) with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the real `holdfast publish` with `args`: exit code, stdout, stderr.
pub async fn holdfast_publish(args: Vec<String>) -> (Option<i32>, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_holdfast"))
            .arg("publish")
            .args(args)
            .env_remove("GRIP_URL")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}
