//! Turning worker results into the fan-out report: per-message and overall latency, loss,
//! the same per proxy, subscribe rate, memory per connection and CPU time per phase, printed for
//! people and as one JSON line.

use std::collections::BTreeMap;

use serde::Serialize;

use super::wire::{Counters, ProxyTally, WorkerResult};
use crate::usage::Sample;

/// How one published message fared.
#[derive(Debug, Clone, Serialize)]
pub struct MessageStats {
    /// Sequence number.
    pub seq: u64,
    /// Round trip of the publish request, in milliseconds.
    pub publish_ms: f64,
    /// Publish error, if the publish API refused or failed.
    pub publish_error: Option<String>,
    /// Subscribers that received it.
    pub delivered: u64,
    /// Subscribers that did not (of the requested number).
    pub lost: u64,
    /// Median publish → delivery latency, in milliseconds.
    pub p50_ms: Option<f64>,
    /// 90th percentile publish → delivery latency, in milliseconds.
    pub p90_ms: Option<f64>,
    /// 99th percentile publish → delivery latency, in milliseconds.
    pub p99_ms: Option<f64>,
    /// Publish → first delivery, in milliseconds.
    pub first_ms: Option<f64>,
    /// Publish → last delivery, in milliseconds.
    pub last_ms: Option<f64>,
}

/// How the subscribers of one proxy fared.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyStats {
    /// The proxy's address.
    pub proxy: String,
    /// Subscribers sent to it.
    pub subscribers: u64,
    /// Of those, how many were ready (see [`Counters::ready`]).
    pub ready: u64,
    /// Per message: deliveries, losses and the slowest delivery.
    pub per_message: Vec<ProxyMessage>,
}

/// One message on one proxy.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyMessage {
    /// Sequence number.
    pub seq: u64,
    /// Subscribers of this proxy that received it.
    pub delivered: u64,
    /// Subscribers of this proxy that did not.
    pub lost: u64,
    /// Publish → last delivery through this proxy, in milliseconds.
    pub last_ms: Option<f64>,
}

/// Resources one measured process used.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessUsage {
    /// Process id.
    pub pid: u32,
    /// Command name.
    pub name: String,
    /// `proxy` (a `--proxy-pid`: memory counted), `watched` (`--watch-pid`) or `worker` (the
    /// load generator's own worker processes).
    pub role: String,
    /// Resident memory before subscribing, once subscribed and at the end, in KiB.
    pub rss_kib: [Option<u64>; 3],
    /// CPU seconds (user + system) spent while the subscribers subscribed.
    pub cpu_subscribing_secs: Option<f64>,
    /// CPU seconds spent from then until the end of the drain (publishing and delivery).
    pub cpu_messages_secs: Option<f64>,
    /// Of `cpu_subscribing_secs`, system (kernel) time.
    pub system_subscribing_secs: Option<f64>,
    /// Of `cpu_messages_secs`, system (kernel) time.
    pub system_messages_secs: Option<f64>,
}

/// What the parent measured around the workers.
#[derive(Debug, Clone)]
pub struct Publication {
    /// Sequence number.
    pub seq: u64,
    /// Publish request round trip, in milliseconds.
    pub publish_ms: f64,
    /// Why publishing failed, if it did.
    pub error: Option<String>,
}

/// The whole run, as printed.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Free-form label given with `--label`.
    pub label: String,
    /// `sse`, `longpoll`, `longpoll-reliable` or `woh`.
    pub mode: String,
    /// Requested subscribers.
    pub subscribers: u64,
    /// Worker processes.
    pub workers: usize,
    /// Messages published.
    pub messages: usize,
    /// Pause between publishes, in milliseconds.
    pub interval_ms: u64,
    /// How readiness was decided (`metrics` or `settle`).
    pub ready_by: String,
    /// Proxy addresses the subscribers were spread over, round-robin.
    pub proxies: Vec<String>,
    /// `one` (each message posted to the first publish address) or `each` (to all of them).
    pub publish_to: String,
    /// Publish addresses.
    pub publish: Vec<String>,
    /// Subscribers counted as subscribed when publishing started.
    pub subscribed: u64,
    /// Seconds from starting the workers until the readiness signal (`ready_by`) showed every
    /// subscriber, as polled every 50 ms.
    pub subscribe_secs: f64,
    /// SSE and WebSocket, when every subscriber became ready before publishing began: seconds
    /// from the first connection attempt to the last subscriber's first body bytes or completed
    /// handshake, as the clients saw them. (A long-poll subscriber counts as ready once
    /// connected, before its request reaches the origin, so long-poll runs have none.)
    pub ready_secs: Option<f64>,
    /// `subscribers / ready_secs` where there is one, else `subscribed / subscribe_secs`.
    pub subscribe_rate: f64,
    /// False when the readiness signals never stayed still before the subscribe cap (the proxy
    /// kept failing or re-asking): `subscribe_rate` then only says when every subscriber had been
    /// answered once, not that all were subscribed.
    pub settled: bool,
    /// The processes whose memory is summed in the `rss_*` figures, by command name, e.g.
    /// `7 holdfast + 1 redis-server`.
    pub rss_of: String,
    /// Proxy resident memory before subscribing, in KiB (summed over `--proxy-pid`).
    pub rss_before_kib: Option<u64>,
    /// Proxy resident memory once subscribed, in KiB.
    pub rss_subscribed_kib: Option<u64>,
    /// Proxy resident memory after the messages were delivered, in KiB.
    pub rss_after_kib: Option<u64>,
    /// `(rss_subscribed - rss_before) / subscribed`, in bytes.
    pub rss_per_connection_bytes: Option<f64>,
    /// Requests the origin received while the subscribers subscribed (`--origin` only).
    pub origin_requests_subscribing: Option<u64>,
    /// Requests the origin received during the whole run (`--origin` only).
    pub origin_requests_total: Option<u64>,
    /// Per-message figures.
    pub per_message: Vec<MessageStats>,
    /// Per-proxy figures, in `--proxy` order.
    pub per_proxy: Vec<ProxyStats>,
    /// Memory and CPU time of every measured process.
    pub processes: Vec<ProcessUsage>,
    /// Deliveries, all messages together.
    pub delivered: u64,
    /// Missing deliveries, all messages together.
    pub lost: u64,
    /// Median latency over every delivery, in milliseconds.
    pub p50_ms: Option<f64>,
    /// 90th percentile latency over every delivery, in milliseconds.
    pub p90_ms: Option<f64>,
    /// 99th percentile latency over every delivery, in milliseconds.
    pub p99_ms: Option<f64>,
    /// Worst publish → last delivery over the messages, in milliseconds.
    pub max_last_ms: Option<f64>,
    /// Median over the messages of publish → last delivery, in milliseconds (nearest rank, over
    /// the messages delivered at least once).
    pub median_last_ms: Option<f64>,
    /// Deliveries of a message a subscriber had already received.
    pub duplicates: u64,
    /// Seconds from the start of the first publish to the last delivery (any subscriber).
    pub delivery_secs: Option<f64>,
    /// `delivered / delivery_secs`: with one subscriber and `--burst`, the messages per second
    /// that client received.
    pub deliveries_per_sec: Option<f64>,
    /// Workers' final counters, summed.
    pub counters: Counters,
    /// Errors seen by subscribers, by description.
    pub errors: BTreeMap<String, u64>,
}

/// Memory and subscription figures gathered by the driver.
#[derive(Debug, Clone)]
pub struct Context {
    /// See [`Summary::label`].
    pub label: String,
    /// See [`Summary::mode`].
    pub mode: String,
    /// See [`Summary::subscribers`].
    pub subscribers: u64,
    /// See [`Summary::workers`].
    pub workers: usize,
    /// See [`Summary::interval_ms`].
    pub interval_ms: u64,
    /// See [`Summary::ready_by`].
    pub ready_by: String,
    /// See [`Summary::proxies`].
    pub proxies: Vec<String>,
    /// See [`Summary::publish_to`].
    pub publish_to: String,
    /// See [`Summary::publish`].
    pub publish: Vec<String>,
    /// See [`Summary::subscribed`].
    pub subscribed: u64,
    /// See [`Summary::subscribe_secs`].
    pub subscribe_secs: f64,
    /// See [`Summary::settled`].
    pub settled: bool,
    /// The `--proxy-pid` processes before subscribing, once subscribed, and at the end (`None`
    /// when one of them could not be read).
    pub proxy_usage: [Option<Vec<Sample>>; 3],
    /// The other processes measured at the same moments (`--watch-pid`, then the workers).
    pub other_usage: [Vec<Sample>; 3],
    /// The origin's request counter at the same three moments.
    pub origin_requests: [Option<u64>; 3],
    /// Wall clock when publishing began, in microseconds since the Unix epoch.
    pub publish_started_us: u64,
}

/// Nearest-rank percentile of an ascending slice.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn ms(us: Option<u64>) -> Option<f64> {
    us.map(|v| (v as f64 / 100.0).round() / 10.0)
}

/// Per-process usage from the three sets of samples; a process missing from an earlier set had
/// not started yet (a worker before subscribing) and counts from zero.
fn process_usage(
    samples: [&[Sample]; 3],
    role: impl Fn(&Sample) -> &'static str,
) -> Vec<ProcessUsage> {
    let find = |k: usize, pid: u32| samples[k].iter().find(|s| s.pid == pid);
    let mut pids: Vec<&Sample> = Vec::new();
    for set in samples {
        for s in set {
            if !pids.iter().any(|p| p.pid == s.pid) {
                pids.push(s);
            }
        }
    }
    pids.into_iter()
        .map(|first| {
            let at = |k: usize| find(k, first.pid);
            let cpu = |k: usize| at(k).map(|s| s.cpu_secs);
            let sys = |k: usize| at(k).map(|s| s.system_secs);
            let secs = |from: Option<f64>, to: Option<f64>| {
                to.map(|t| ((t - from.unwrap_or(0.0)) * 100.0).round() / 100.0)
            };
            ProcessUsage {
                pid: first.pid,
                name: first.name.clone(),
                role: role(first).into(),
                rss_kib: [0, 1, 2].map(|k| at(k).map(|s| s.rss_kib)),
                cpu_subscribing_secs: secs(cpu(0), cpu(1)),
                cpu_messages_secs: secs(cpu(1), cpu(2)),
                system_subscribing_secs: secs(sys(0), sys(1)),
                system_messages_secs: secs(sys(1), sys(2)),
            }
        })
        .collect()
}

/// `7 holdfast + 1 redis-server`: the command names of `processes`, counted.
fn count_names<'a>(processes: impl Iterator<Item = &'a ProcessUsage>) -> String {
    let mut names: Vec<(String, usize)> = Vec::new();
    for p in processes {
        match names.iter_mut().find(|(n, _)| *n == p.name) {
            Some((_, c)) => *c += 1,
            None => names.push((p.name.clone(), 1)),
        }
    }
    names
        .iter()
        .map(|(n, c)| format!("{c} {n}"))
        .collect::<Vec<_>>()
        .join(" + ")
}

/// Subscribers of `n` that go to proxy `p` of `proxies` under the round-robin by global index.
fn share(n: u64, proxies: usize, p: usize) -> u64 {
    let proxies = proxies as u64;
    n / proxies + u64::from((p as u64) < n % proxies)
}

/// Combines the driver's context, its publications and the workers' results.
pub fn summarize(ctx: Context, published: &[Publication], results: Vec<WorkerResult>) -> Summary {
    let mut counters = Counters::default();
    let mut errors = BTreeMap::new();
    let mut duplicates = 0;
    let mut per_seq: Vec<Vec<u64>> = vec![Vec::new(); published.len()];
    let mut last_delivery_us = 0;
    let mut first_connect_us = u64::MAX;
    let mut last_ready_us = 0;
    let mut tallies = vec![ProxyTally::new(published.len()); ctx.proxies.len()];
    for r in results {
        counters.add(&r.counters);
        last_delivery_us = last_delivery_us.max(r.last_delivery_us);
        if r.first_connect_us > 0 {
            first_connect_us = first_connect_us.min(r.first_connect_us);
        }
        last_ready_us = last_ready_us.max(r.last_ready_us);
        duplicates += r.duplicates;
        for (t, w) in tallies.iter_mut().zip(&r.per_proxy) {
            t.add(w);
        }
        for (k, v) in r.errors {
            *errors.entry(k).or_default() += v;
        }
        for (slot, lat) in r.latencies_us.into_iter().enumerate() {
            if let Some(all) = per_seq.get_mut(slot) {
                all.extend(lat);
            }
        }
    }
    let mut everything = Vec::new();
    let per_message: Vec<MessageStats> = published
        .iter()
        .zip(per_seq.iter_mut())
        .map(|(p, lat)| {
            lat.sort_unstable();
            everything.extend_from_slice(lat);
            let delivered = lat.len() as u64;
            MessageStats {
                seq: p.seq,
                publish_ms: (p.publish_ms * 10.0).round() / 10.0,
                publish_error: p.error.clone(),
                delivered,
                lost: ctx.subscribers.saturating_sub(delivered),
                p50_ms: ms(percentile(lat, 50.0)),
                p90_ms: ms(percentile(lat, 90.0)),
                p99_ms: ms(percentile(lat, 99.0)),
                first_ms: ms(lat.first().copied()),
                last_ms: ms(lat.last().copied()),
            }
        })
        .collect();
    everything.sort_unstable();
    let mut last_us: Vec<u64> = per_seq.iter().filter_map(|l| l.last().copied()).collect();
    last_us.sort_unstable();
    let per_proxy = ctx
        .proxies
        .iter()
        .zip(&tallies)
        .enumerate()
        .map(|(p, (proxy, t))| {
            let subscribers = share(ctx.subscribers, ctx.proxies.len(), p);
            ProxyStats {
                proxy: proxy.clone(),
                subscribers,
                ready: t.ready,
                per_message: published
                    .iter()
                    .enumerate()
                    .map(|(slot, m)| {
                        let delivered = t.delivered.get(slot).copied().unwrap_or(0);
                        ProxyMessage {
                            seq: m.seq,
                            delivered,
                            lost: subscribers.saturating_sub(delivered),
                            last_ms: ms((delivered > 0).then(|| t.last_us[slot])),
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    let rss_sum = |k: usize| Some(ctx.proxy_usage[k].as_ref()?.iter().map(|s| s.rss_kib).sum());
    let [before, subscribed, after] = [0, 1, 2].map(rss_sum);
    let empty = Vec::new();
    let proxy_sets = [0, 1, 2].map(|k| ctx.proxy_usage[k].as_ref().unwrap_or(&empty).as_slice());
    let mut processes = process_usage(proxy_sets, |_| "proxy");
    // Only the `--watch-pid` processes exist before the workers are started.
    let watched: Vec<u32> = ctx.other_usage[0].iter().map(|s| s.pid).collect();
    processes.extend(process_usage(
        [0, 1, 2].map(|k| ctx.other_usage[k].as_slice()),
        |s| {
            if watched.contains(&s.pid) {
                "watched"
            } else {
                "worker"
            }
        },
    ));
    let rss_of = count_names(processes.iter().filter(|p| p.role == "proxy"));
    let [req_before, req_subscribed, req_after] = ctx.origin_requests;
    let since_start = |at: Option<u64>| Some(at?.saturating_sub(req_before?));
    let rss_per_connection_bytes = match (before, subscribed) {
        (Some(b), Some(s)) if ctx.subscribed > 0 => {
            Some(((s as f64 - b as f64) * 1024.0 / ctx.subscribed as f64).round())
        }
        _ => None,
    };
    // A subscriber that only became ready once publishing had begun (an unsettled run) would
    // stretch the window into the publish phase.
    let ready_secs = (matches!(ctx.mode.as_str(), "sse" | "woh")
        && counters.ready >= ctx.subscribers
        && last_ready_us > first_connect_us
        && last_ready_us <= ctx.publish_started_us)
        .then(|| (last_ready_us - first_connect_us) as f64 / 1e6);
    let subscribe_rate = match ready_secs {
        Some(secs) => (ctx.subscribers as f64 / secs).round(),
        None if ctx.subscribe_secs > 0.0 => (ctx.subscribed as f64 / ctx.subscribe_secs).round(),
        None => 0.0,
    };
    let delivered = everything.len() as u64;
    let delivery_secs = (delivered > 0 && last_delivery_us > ctx.publish_started_us)
        .then(|| (last_delivery_us - ctx.publish_started_us) as f64 / 1e6);
    Summary {
        label: ctx.label,
        mode: ctx.mode,
        subscribers: ctx.subscribers,
        workers: ctx.workers,
        messages: published.len(),
        interval_ms: ctx.interval_ms,
        ready_by: ctx.ready_by,
        proxies: ctx.proxies,
        publish_to: ctx.publish_to,
        publish: ctx.publish,
        subscribed: ctx.subscribed,
        subscribe_secs: (ctx.subscribe_secs * 100.0).round() / 100.0,
        ready_secs: ready_secs.map(|s| (s * 1000.0).round() / 1000.0),
        settled: ctx.settled,
        subscribe_rate,
        rss_of,
        rss_before_kib: before,
        rss_subscribed_kib: subscribed,
        rss_after_kib: after,
        rss_per_connection_bytes,
        origin_requests_subscribing: since_start(req_subscribed),
        origin_requests_total: since_start(req_after),
        delivered,
        lost: per_message.iter().map(|m| m.lost).sum(),
        p50_ms: ms(percentile(&everything, 50.0)),
        p90_ms: ms(percentile(&everything, 90.0)),
        p99_ms: ms(percentile(&everything, 99.0)),
        max_last_ms: per_message
            .iter()
            .filter_map(|m| m.last_ms)
            .reduce(f64::max),
        median_last_ms: ms(percentile(&last_us, 50.0)),
        per_message,
        per_proxy,
        processes,
        duplicates,
        delivery_secs: delivery_secs.map(|s| (s * 1000.0).round() / 1000.0),
        deliveries_per_sec: delivery_secs.map(|s| (delivered as f64 / s).round()),
        counters,
        errors,
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

/// Per-message rows printed (the JSON line has them all); a burst of thousands of messages
/// would otherwise bury the summary.
const MESSAGE_ROWS: usize = 20;

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

/// Prints the human summary, then the JSON line.
pub fn print(s: &Summary) {
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
    if s.per_proxy.len() > 1 {
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
    let c = &s.counters;
    println!(
        "subscribers: connected {} ready {} failed {} closed {} reconnects {} polls {}",
        c.connected, c.ready, c.failed, c.closed, c.reconnects, c.polls
    );
    for (e, n) in &s.errors {
        println!("error x{n}: {e}");
    }
    match serde_json::to_string(s) {
        Ok(line) => println!("{line}"),
        Err(e) => eprintln!("cannot encode the summary: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 90.0), Some(90));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    fn sample(pid: u32, name: &str, rss_kib: u64, cpu_secs: f64) -> Sample {
        Sample {
            pid,
            name: name.into(),
            rss_kib,
            cpu_secs,
            system_secs: cpu_secs / 2.0,
        }
    }

    /// Three subscribers over two proxies, subscribed in 1.5 s by the readiness signal.
    fn context() -> Context {
        let proxies = |rss: [u64; 2], cpu: [f64; 2]| {
            Some(vec![
                sample(1, "holdfast", rss[0], cpu[0]),
                sample(2, "redis-server", rss[1], cpu[1]),
            ])
        };
        Context {
            label: "t".into(),
            mode: "sse".into(),
            subscribers: 3,
            workers: 1,
            interval_ms: 1000,
            ready_by: "metrics".into(),
            proxies: vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
            publish_to: "one".into(),
            publish: vec!["127.0.0.1:3".into()],
            subscribed: 3,
            subscribe_secs: 1.5,
            settled: true,
            proxy_usage: [
                proxies([900, 100], [1.0, 0.5]),
                proxies([902, 101], [3.0, 0.5]),
                proxies([902, 101], [3.5, 0.75]),
            ],
            other_usage: [
                vec![sample(7, "holdfast-bench", 10, 1.0)],
                vec![
                    sample(7, "holdfast-bench", 10, 2.0),
                    sample(8, "holdfast-bench", 10, 4.0),
                ],
                vec![
                    sample(7, "holdfast-bench", 10, 2.0),
                    sample(8, "holdfast-bench", 10, 5.0),
                ],
            ],
            origin_requests: [Some(10), Some(16), Some(19)],
            publish_started_us: 1_000_000,
        }
    }

    #[test]
    fn counts_losses_against_requested_subscribers() {
        let ctx = context();
        let published = [
            Publication {
                seq: 1,
                publish_ms: 1.0,
                error: None,
            },
            Publication {
                seq: 2,
                publish_ms: 1.0,
                error: None,
            },
        ];
        // Subscribers 0 and 2 on the first proxy, 1 on the second; message 2 reached only one.
        let mut first = ProxyTally::new(2);
        first.ready = 2;
        first.record(0, 3000);
        first.record(0, 1000);
        first.record(1, 5000);
        let mut second = ProxyTally::new(2);
        second.ready = 1;
        second.record(0, 2000);
        let result = WorkerResult {
            latencies_us: vec![vec![3000, 1000], vec![5000]],
            last_delivery_us: 3_000_000,
            per_proxy: vec![first, ProxyTally::new(2)],
            ..WorkerResult::default()
        };
        let other = WorkerResult {
            latencies_us: vec![vec![2000], vec![]],
            last_delivery_us: 2_500_000,
            per_proxy: vec![ProxyTally::new(2), second],
            ..WorkerResult::default()
        };
        let s = summarize(ctx, &published, vec![result, other]);
        assert_eq!(s.per_message[0].delivered, 3);
        assert_eq!(s.per_message[0].lost, 0);
        assert_eq!(s.per_message[0].last_ms, Some(3.0));
        // Message 1 took 1, 2 and 3 ms.
        assert_eq!(
            (s.per_message[0].p50_ms, s.per_message[0].p90_ms),
            (Some(2.0), Some(3.0))
        );
        // All four deliveries: 1, 2, 3 and 5 ms.
        assert_eq!(
            (s.p50_ms, s.p90_ms, s.p99_ms),
            (Some(2.0), Some(5.0), Some(5.0))
        );
        assert_eq!(s.per_message[1].lost, 2);
        assert_eq!(s.lost, 2);
        assert_eq!(s.delivered, 4);
        // Last deliveries 3.0 and 5.0 ms: the nearest-rank median is the lower one.
        assert_eq!(s.median_last_ms, Some(3.0));
        assert_eq!(s.max_last_ms, Some(5.0));
        assert_eq!(s.subscribe_rate, 2.0);
        assert_eq!(s.rss_of, "1 holdfast + 1 redis-server");
        assert_eq!(s.rss_per_connection_bytes, Some(1024.0));
        assert_eq!(s.origin_requests_subscribing, Some(6));
        assert_eq!(s.origin_requests_total, Some(9));
        assert_eq!(s.delivery_secs, Some(2.0));
        assert_eq!(s.deliveries_per_sec, Some(2.0));

        let [a, b] = [&s.per_proxy[0], &s.per_proxy[1]];
        assert_eq!(
            (a.subscribers, a.ready, b.subscribers, b.ready),
            (2, 2, 1, 1)
        );
        assert_eq!(a.per_message[0].last_ms, Some(3.0));
        assert_eq!((a.per_message[1].delivered, a.per_message[1].lost), (1, 1));
        assert_eq!((b.per_message[1].lost, b.per_message[1].last_ms), (1, None));

        let roles: Vec<(&str, &str)> = s
            .processes
            .iter()
            .map(|p| (p.role.as_str(), p.name.as_str()))
            .collect();
        assert_eq!(
            roles,
            [
                ("proxy", "holdfast"),
                ("proxy", "redis-server"),
                ("watched", "holdfast-bench"),
                ("worker", "holdfast-bench"),
            ]
        );
        assert_eq!(s.processes[0].cpu_subscribing_secs, Some(2.0));
        assert_eq!(s.processes[1].cpu_messages_secs, Some(0.25));
        assert_eq!(s.processes[0].system_subscribing_secs, Some(1.0));
        // A worker started after the first sample counts from zero.
        assert_eq!(s.processes[3].cpu_subscribing_secs, Some(4.0));
        assert_eq!(s.processes[3].cpu_messages_secs, Some(1.0));
    }

    #[test]
    fn subscribe_rate_is_timed_at_the_clients_when_all_became_ready() {
        let ready = |n: u64, first_connect_us: u64, last_ready_us: u64| WorkerResult {
            counters: Counters {
                ready: n,
                ..Counters::default()
            },
            first_connect_us,
            last_ready_us,
            ..WorkerResult::default()
        };
        // Publishing starts at 1.0 s. From the earliest first connect (0.3 s) to the latest
        // ready (0.9 s); a worker with no connection attempt (0) does not move the start.
        let all = || {
            vec![
                ready(2, 400_000, 800_000),
                ready(1, 300_000, 900_000),
                ready(0, 0, 0),
            ]
        };
        let s = summarize(context(), &[], all());
        assert_eq!(s.ready_secs, Some(0.6));
        assert_eq!(s.subscribe_rate, 5.0);
        assert_eq!(s.subscribe_secs, 1.5);

        // The last subscriber became ready only after publishing began.
        let late = vec![ready(2, 400_000, 800_000), ready(1, 300_000, 1_200_000)];
        let s = summarize(context(), &[], late);
        assert_eq!(s.ready_secs, None);
        assert_eq!(s.subscribe_rate, 2.0);

        // One subscriber never became ready: the readiness signal's time is used.
        let s = summarize(context(), &[], vec![ready(2, 2_000_000, 2_400_000)]);
        assert_eq!(s.ready_secs, None);
        assert_eq!(s.subscribe_rate, 2.0);

        // A long-poll subscriber is "ready" before its request reaches the origin.
        let mut ctx = context();
        ctx.mode = "longpoll".into();
        let s = summarize(ctx, &[], all());
        assert_eq!(s.ready_secs, None);
        assert_eq!(s.subscribe_rate, 2.0);
    }

    #[test]
    fn round_robin_shares() {
        let shares: Vec<u64> = (0..3).map(|p| share(100, 3, p)).collect();
        assert_eq!(shares, [34, 33, 33]);
    }
}
