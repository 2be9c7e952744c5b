//! Printing the report: the run and its subscribe phase, a row per message, the overall figures,
//! CPU time per process group, the per-proxy breakdown and the subscribers' counters and errors,
//! then one JSON line with every figure.

use super::{ProcessUsage, Summary};

/// Per-message rows printed (the JSON line has them all); a burst of thousands of messages
/// would otherwise bury the summary.
const MESSAGE_ROWS: usize = 20;

/// Prints the human summary, then the JSON line.
pub fn print(s: &Summary) {
    print_run(s);
    print_subscribing(s);
    print_messages(s);
    print_overall(s);
    print_cpu(s);
    print_per_proxy(s);
    print_subscribers(s);
    match serde_json::to_string(s) {
        Ok(line) => println!("{line}"),
        Err(e) => eprintln!("cannot encode the summary: {e}"),
    }
}

/// What was run: label, mode and sizes, and the proxies and publish addresses when several.
fn print_run(s: &Summary) {
    println!(
        "fanout {}: mode={} subscribers={} workers={} messages={} interval={}ms",
        s.label, s.mode, s.subscribers, s.workers, s.messages, s.interval_ms
    );
    if s.proxies.len() > 1 || s.publish.len() > 1 {
        println!(
            "{} proxies, round-robin; publish to {} of {} address(es)",
            s.proxies.len(),
            s.publish_to,
            s.publish.len()
        );
    }
}

/// The subscribe phase: its time and rate, the proxy's memory and the origin's requests.
fn print_subscribing(s: &Summary) {
    let (count, timing) = match s.ready_secs {
        Some(ready) => (
            s.subscribers,
            format!("{ready:.3} s from the first connect to the last ready"),
        ),
        None => (s.subscribed, format!("{:.2} s", s.subscribe_secs)),
    };
    println!(
        "subscribed: {count} in {timing} ({} subscribers/s), readiness by {} after {:.2} s{}",
        s.subscribe_rate,
        s.ready_by,
        s.subscribe_secs,
        if s.settled { "" } else { ", never settled" }
    );
    if s.rss_before_kib.is_some() {
        println!(
            "proxy memory ({}): {} before, {} subscribed, {} after; {} bytes per connection",
            s.rss_of,
            mib(s.rss_before_kib),
            mib(s.rss_subscribed_kib),
            mib(s.rss_after_kib),
            s.rss_per_connection_bytes
                .map_or_else(|| "-".into(), |b| format!("{b:.0}"))
        );
    }
    if let (Some(sub), Some(total)) = (s.origin_requests_subscribing, s.origin_requests_total) {
        println!(
            "origin requests: {sub} while subscribing ({:.2} per subscriber), {total} in all",
            sub as f64 / s.subscribers.max(1) as f64
        );
    }
}

/// A table row for each of the first [`MESSAGE_ROWS`] messages.
fn print_messages(s: &Summary) {
    println!(
        "{:>4} {:>10} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
        "seq",
        "delivered",
        "lost",
        "first ms",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "last ms",
        "publish ms"
    );
    for m in s.per_message.iter().take(MESSAGE_ROWS) {
        println!(
            "{:>4} {:>10} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10.1}{}",
            m.seq,
            m.delivered,
            m.lost,
            opt(m.first_ms),
            opt(m.p50_ms),
            opt(m.p90_ms),
            opt(m.p99_ms),
            opt(m.last_ms),
            m.publish_ms,
            m.publish_error
                .as_deref()
                .map(|e| format!("  ({e})"))
                .unwrap_or_default()
        );
    }
    if s.per_message.len() > MESSAGE_ROWS {
        println!(
            "  ({} more messages in the JSON line)",
            s.per_message.len() - MESSAGE_ROWS
        );
    }
}

/// All messages together: deliveries, losses, percentiles and the delivery rate.
fn print_overall(s: &Summary) {
    println!(
        "overall: delivered {} lost {} duplicates {}; p50 {} ms, p90 {} ms, p99 {} ms, \
         last delivery: median {} ms, worst {} ms",
        s.delivered,
        s.lost,
        s.duplicates,
        opt(s.p50_ms),
        opt(s.p90_ms),
        opt(s.p99_ms),
        opt(s.median_last_ms),
        opt(s.max_last_ms)
    );
    if let (Some(secs), Some(rate)) = (s.delivery_secs, s.deliveries_per_sec) {
        println!("deliveries: {rate} per second ({secs:.3} s from the first publish to the last delivery)");
    }
}

/// A line of CPU time per role and command name.
fn print_cpu(s: &Summary) {
    for g in cpu_groups(&s.processes) {
        println!(
            "cpu {} {} {}: {:.1} s subscribing ({:.1} s system), {:.2} s publish+drain ({:.2} s system; busiest process {:.2} s)",
            g.role,
            g.processes,
            g.name,
            g.subscribing,
            g.subscribing_system,
            g.messages,
            g.messages_system,
            g.busiest_messages
        );
    }
}

/// With several proxies, each one's slowest delivery and losses per message.
fn print_per_proxy(s: &Summary) {
    if s.per_proxy.len() <= 1 {
        return;
    }
    println!("per proxy, publish → last delivery ms / lost:");
    for p in &s.per_proxy {
        let cells: Vec<String> = p
            .per_message
            .iter()
            .map(|m| format!("#{} {}/{}", m.seq, opt(m.last_ms), m.lost))
            .collect();
        println!(
            "  {} ({} subscribers, {} ready): {}",
            p.proxy,
            p.subscribers,
            p.ready,
            cells.join(", ")
        );
    }
}

/// The subscribers' final counters and the errors they saw.
fn print_subscribers(s: &Summary) {
    let c = &s.counters;
    println!(
        "subscribers: connected {} ready {} failed {} closed {} reconnects {} polls {}",
        c.connected, c.ready, c.failed, c.closed, c.reconnects, c.polls
    );
    for (e, n) in &s.errors {
        println!("error x{n}: {e}");
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

/// CPU time of the processes of one role and command name, summed.
struct CpuGroup {
    role: String,
    name: String,
    processes: usize,
    subscribing: f64,
    subscribing_system: f64,
    messages: f64,
    messages_system: f64,
    /// The most one process of the group spent during the messages.
    busiest_messages: f64,
}

fn cpu_groups(processes: &[ProcessUsage]) -> Vec<CpuGroup> {
    let mut groups: Vec<CpuGroup> = Vec::new();
    for p in processes {
        let i = match groups
            .iter()
            .position(|g| g.role == p.role && g.name == p.name)
        {
            Some(i) => i,
            None => {
                groups.push(CpuGroup {
                    role: p.role.clone(),
                    name: p.name.clone(),
                    processes: 0,
                    subscribing: 0.0,
                    subscribing_system: 0.0,
                    messages: 0.0,
                    messages_system: 0.0,
                    busiest_messages: 0.0,
                });
                groups.len() - 1
            }
        };
        let g = &mut groups[i];
        let messages = p.cpu_messages_secs.unwrap_or(0.0);
        g.processes += 1;
        g.subscribing += p.cpu_subscribing_secs.unwrap_or(0.0);
        g.subscribing_system += p.system_subscribing_secs.unwrap_or(0.0);
        g.messages += messages;
        g.messages_system += p.system_messages_secs.unwrap_or(0.0);
        g.busiest_messages = g.busiest_messages.max(messages);
    }
    groups
}
