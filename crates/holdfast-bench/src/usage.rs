//! Resident memory and CPU time of the processes under test.
//!
//! Memory is `VmRSS` from `/proc/PID/status`; CPU time is `utime + stime` from `/proc/PID/stat`
//! (user plus system, in clock ticks of 1/100 s: Linux reports `/proc` times in `USER_HZ`, which
//! is 100 on every architecture it supports). A multi-process proxy (Pushpin's condure, proxy,
//! handler and zurl; a Holdfast cluster and its Redis) is measured by summing its processes.

use std::fs;

use anyhow::{bail, Context as _};
use serde::Serialize;

/// `/proc` clock ticks per second.
const TICKS_PER_SEC: f64 = 100.0;

/// One process at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Process id.
    pub pid: u32,
    /// Command name (`/proc/PID/comm`, at most 15 characters).
    pub name: String,
    /// Resident memory in KiB.
    pub rss_kib: u64,
    /// User plus system CPU time so far, in seconds.
    pub cpu_secs: f64,
    /// Of that, system (kernel) time: on loopback, mostly the TCP work of its sockets.
    pub system_secs: f64,
}

/// Samples every process of `pids`; fails if one has gone.
pub fn sample_all(pids: &[u32]) -> anyhow::Result<Vec<Sample>> {
    pids.iter().map(|&pid| sample(pid)).collect()
}

/// Samples one process.
pub fn sample(pid: u32) -> anyhow::Result<Sample> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let Some(rss_kib) = parse_vmrss_kib(&status) else {
        bail!("{path} has no VmRSS line");
    };
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let Some((name, user, system)) = parse_stat(&stat) else {
        bail!("{path} is not in the expected format");
    };
    Ok(Sample {
        pid,
        name,
        rss_kib,
        cpu_secs: (user + system) as f64 / TICKS_PER_SEC,
        system_secs: system as f64 / TICKS_PER_SEC,
    })
}

/// Extracts the `VmRSS:   1234 kB` value from the text of a `/proc/PID/status` file.
fn parse_vmrss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The command name, `utime` and `stime` (ticks) from the text of a `/proc/PID/stat` file.
/// The name is in parentheses and may itself hold spaces or parentheses, so the fields are
/// counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(String, u64, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_string();
    // After the name: state (field 3), then fields 4..; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime, stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vmrss_line() {
        let status = "Name:\tholdfast\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vmrss_kib(status), Some(12345));
    }

    #[test]
    fn kernel_threads_have_no_vmrss() {
        assert_eq!(parse_vmrss_kib("Name:\tkthreadd\nState:\tS\n"), None);
    }

    #[test]
    fn parses_stat_with_odd_names() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 3 0 99 \
                    1000 200 18446744073709551615\n";
        assert_eq!(parse_stat(stat), Some(("a (b) c".to_string(), 250, 31)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn samples_own_process() {
        let s = sample_all(&[std::process::id()]).unwrap();
        assert_eq!(s.len(), 1);
        assert!(s[0].rss_kib > 0);
        assert!(!s[0].name.is_empty());
    }
}
