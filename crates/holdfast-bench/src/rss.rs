//! Resident memory of the processes under test.
//!
//! The figure is `VmRSS` from `/proc/PID/status`, summed over every process given, so that a
//! multi-process proxy (Pushpin's condure, proxy, handler and zurl) is measured as a whole.

use std::fs;

use anyhow::{bail, Context as _};

/// Returns the summed `VmRSS` of `pids` in KiB.
pub fn total_kib(pids: &[u32]) -> anyhow::Result<u64> {
    pids.iter().map(|&pid| process_kib(pid)).sum()
}

/// Returns the `VmRSS` of one process in KiB.
fn process_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    match parse_vmrss_kib(&status) {
        Some(kib) => Ok(kib),
        None => bail!("{path} has no VmRSS line"),
    }
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
    fn reads_own_process() {
        let kib = total_kib(&[std::process::id()]).unwrap();
        assert!(kib > 0);
    }
}
