//! The worker processes of one fan-out run, seen from the parent.
//!
//! Each worker is this binary re-executed as `fanout-worker`. A reader task per worker turns its
//! stdout lines into [`Report`]s on one bounded queue; the parent drains that queue while it
//! waits ([`Pool::pump_until`]), so a worker only blocks if the parent stops listening.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::wire::{self, Counters, Report, WorkerResult};

/// Reports buffered between the reader tasks and the parent.
const QUEUE: usize = 1024;
/// How long workers get to print their results and exit once asked.
const FINISH_TIMEOUT: Duration = Duration::from_secs(60);

/// Running worker processes and what they last reported.
pub struct Pool {
    children: Vec<Child>,
    stdins: Vec<Option<ChildStdin>>,
    reports: mpsc::Receiver<(usize, Report)>,
    progress: Vec<Counters>,
    results: Vec<Option<WorkerResult>>,
}

impl Pool {
    /// Starts one worker per argument list (each list follows `fanout-worker`).
    pub fn spawn(worker_args: Vec<Vec<String>>) -> anyhow::Result<Pool> {
        let exe = std::env::current_exe().context("locating this executable")?;
        let (tx, reports) = mpsc::channel(QUEUE);
        let mut children = Vec::new();
        let mut stdins = Vec::new();
        for (i, args) in worker_args.into_iter().enumerate() {
            let mut child = Command::new(&exe)
                .arg("fanout-worker")
                .args(&args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting worker {i}"))?;
            stdins.push(child.stdin.take());
            let stdout = child.stdout.take().context("worker stdout")?;
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<Report>(&line) {
                        Ok(report) => {
                            if tx.send((i, report)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => eprintln!("worker {i}: unreadable report ({e}): {line:.200}"),
                    }
                }
            });
            children.push(child);
        }
        let n = children.len();
        Ok(Pool {
            children,
            stdins,
            reports,
            progress: vec![Counters::default(); n],
            results: vec![None; n],
        })
    }

    /// The workers' process ids (those still running).
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().filter_map(Child::id).collect()
    }

    /// The workers' latest counters, summed.
    pub fn totals(&self) -> Counters {
        let mut sum = Counters::default();
        for (i, c) in self.progress.iter().enumerate() {
            match &self.results[i] {
                Some(r) => sum.add(&r.counters),
                None => sum.add(c),
            }
        }
        sum
    }

    /// Processes reports until `deadline`.
    pub async fn pump_until(&mut self, deadline: Instant) {
        loop {
            match tokio::time::timeout_at(deadline, self.reports.recv()).await {
                Ok(Some((i, report))) => self.apply(i, report),
                Ok(None) => {
                    // Every reader has ended; there is nothing left to wait for but the clock.
                    tokio::time::sleep_until(deadline).await;
                    return;
                }
                Err(_) => return,
            }
        }
    }

    /// Processes reports for `period`.
    pub async fn pump_for(&mut self, period: Duration) {
        self.pump_until(Instant::now() + period).await;
    }

    fn apply(&mut self, i: usize, report: Report) {
        match report {
            Report::Progress(c) => self.progress[i] = c,
            Report::Result(r) => self.results[i] = Some(r),
        }
    }

    /// Asks every worker for its result, waits for them to exit and returns the results
    /// received (a worker that died reports nothing).
    pub async fn finish(mut self) -> Vec<WorkerResult> {
        for stdin in &mut self.stdins {
            if let Some(mut s) = stdin.take() {
                let line = format!("{}\n", wire::FINISH);
                // A worker that already exited has closed its stdin; its absence shows below.
                let _ = s.write_all(line.as_bytes()).await;
            }
        }
        let deadline = Instant::now() + FINISH_TIMEOUT;
        while self.results.iter().any(Option::is_none) && Instant::now() < deadline {
            match tokio::time::timeout_at(deadline, self.reports.recv()).await {
                Ok(Some((i, report))) => self.apply(i, report),
                Ok(None) | Err(_) => break,
            }
        }
        for (i, child) in self.children.iter_mut().enumerate() {
            match tokio::time::timeout_at(deadline, child.wait()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => eprintln!("worker {i} exited with {status}"),
                Ok(Err(e)) => eprintln!("worker {i}: {e}"),
                Err(_) => {
                    eprintln!("worker {i} did not exit in time; killing it");
                    let _ = child.kill().await;
                }
            }
        }
        for (i, r) in self.results.iter().enumerate() {
            if r.is_none() {
                eprintln!("worker {i} sent no result");
            }
        }
        self.results.into_iter().flatten().collect()
    }
}
