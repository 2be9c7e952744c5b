//! Working the report's figures out: the workers' results added together, percentiles per
//! message and over every delivery, the same per proxy, memory and CPU time per process, and the
//! subscribe and delivery rates.

use std::collections::BTreeMap;

use super::{MessageStats, ProcessUsage, ProxyMessage, ProxyStats, Summary};
use crate::fanout::wire::{Counters, ProxyTally, WorkerResult};
use crate::usage::Sample;

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

/// Combines the driver's context, its publications and the workers' results.
pub fn summarize(ctx: Context, published: &[Publication], results: Vec<WorkerResult>) -> Summary {
    let mut merged = Merged::of(results, published.len(), ctx.proxies.len());
    let latencies = Latencies::sorted(std::mem::take(&mut merged.latencies));
    let per_message = message_stats(published, &latencies.per_message, ctx.subscribers);
    let per_proxy = proxy_stats(&ctx.proxies, ctx.subscribers, &merged.tallies, published);
    let processes = processes(&ctx);
    let rss_of = count_names(processes.iter().filter(|p| p.role == "proxy"));
    let [before, subscribed, after] = proxy_rss(&ctx);
    let [req_before, req_subscribed, req_after] = ctx.origin_requests;
    let since_start = |at: Option<u64>| Some(at?.saturating_sub(req_before?));
    let ready_secs = merged.ready_secs(&ctx);
    let subscribe_rate = subscribe_rate(&ctx, ready_secs);
    let delivered = latencies.all.len() as u64;
    let delivery_secs = merged.delivery_secs(delivered, ctx.publish_started_us);
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
        rss_per_connection_bytes: per_connection_bytes(before, subscribed, ctx.subscribed),
        origin_requests_subscribing: since_start(req_subscribed),
        origin_requests_total: since_start(req_after),
        delivered,
        lost: per_message.iter().map(|m| m.lost).sum(),
        p50_ms: ms(percentile(&latencies.all, 50.0)),
        p90_ms: ms(percentile(&latencies.all, 90.0)),
        p99_ms: ms(percentile(&latencies.all, 99.0)),
        max_last_ms: per_message
            .iter()
            .filter_map(|m| m.last_ms)
            .reduce(f64::max),
        median_last_ms: ms(percentile(&latencies.last, 50.0)),
        per_message,
        per_proxy,
        processes,
        duplicates: merged.duplicates,
        delivery_secs: delivery_secs.map(|s| (s * 1000.0).round() / 1000.0),
        deliveries_per_sec: delivery_secs.map(|s| (delivered as f64 / s).round()),
        counters: merged.counters,
        errors: merged.errors,
    }
}

/// The workers' results, added together.
struct Merged {
    counters: Counters,
    errors: BTreeMap<String, u64>,
    duplicates: u64,
    /// `latencies[slot]`: the latency of every delivery of the message in `slot`, in
    /// microseconds, in no particular order.
    latencies: Vec<Vec<u64>>,
    /// Per proxy, in `--proxy` order.
    tallies: Vec<ProxyTally>,
    /// Wall clock of the last delivery, in microseconds since the Unix epoch (0: none).
    last_delivery_us: u64,
    /// Wall clock of the earliest first connection attempt (`u64::MAX`: none).
    first_connect_us: u64,
    /// Wall clock when the last subscriber became ready (0: none).
    last_ready_us: u64,
}

impl Merged {
    /// Adds up `results` of a run of `messages` messages over `proxies` proxies.
    fn of(results: Vec<WorkerResult>, messages: usize, proxies: usize) -> Merged {
        let mut merged = Merged {
            counters: Counters::default(),
            errors: BTreeMap::new(),
            duplicates: 0,
            latencies: vec![Vec::new(); messages],
            tallies: vec![ProxyTally::new(messages); proxies],
            last_delivery_us: 0,
            first_connect_us: u64::MAX,
            last_ready_us: 0,
        };
        for r in results {
            merged.add(r);
        }
        merged
    }

    fn add(&mut self, r: WorkerResult) {
        self.counters.add(&r.counters);
        self.last_delivery_us = self.last_delivery_us.max(r.last_delivery_us);
        if r.first_connect_us > 0 {
            self.first_connect_us = self.first_connect_us.min(r.first_connect_us);
        }
        self.last_ready_us = self.last_ready_us.max(r.last_ready_us);
        self.duplicates += r.duplicates;
        for (t, w) in self.tallies.iter_mut().zip(&r.per_proxy) {
            t.add(w);
        }
        for (k, v) in r.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (slot, lat) in r.latencies_us.into_iter().enumerate() {
            if let Some(all) = self.latencies.get_mut(slot) {
                all.extend(lat);
            }
        }
    }

    /// See [`Summary::ready_secs`]: SSE and WebSocket only, and only when every subscriber
    /// became ready before publishing began.
    fn ready_secs(&self, ctx: &Context) -> Option<f64> {
        // A subscriber that only became ready once publishing had begun (an unsettled run) would
        // stretch the window into the publish phase.
        (matches!(ctx.mode.as_str(), "sse" | "woh")
            && self.counters.ready >= ctx.subscribers
            && self.last_ready_us > self.first_connect_us
            && self.last_ready_us <= ctx.publish_started_us)
            .then(|| (self.last_ready_us - self.first_connect_us) as f64 / 1e6)
    }

    /// Seconds from the start of publishing to the last of `delivered` deliveries, if any.
    fn delivery_secs(&self, delivered: u64, publish_started_us: u64) -> Option<f64> {
        (delivered > 0 && self.last_delivery_us > publish_started_us)
            .then(|| (self.last_delivery_us - publish_started_us) as f64 / 1e6)
    }
}

/// Delivery latencies in microseconds, each list ascending.
struct Latencies {
    /// `per_message[slot]`: every delivery of the message in `slot`.
    per_message: Vec<Vec<u64>>,
    /// Every delivery of every message.
    all: Vec<u64>,
    /// The slowest delivery of each message delivered at least once.
    last: Vec<u64>,
}

impl Latencies {
    fn sorted(mut per_message: Vec<Vec<u64>>) -> Latencies {
        let mut all = Vec::new();
        for lat in &mut per_message {
            lat.sort_unstable();
            all.extend_from_slice(lat);
        }
        all.sort_unstable();
        let mut last: Vec<u64> = per_message
            .iter()
            .filter_map(|l| l.last().copied())
            .collect();
        last.sort_unstable();
        Latencies {
            per_message,
            all,
            last,
        }
    }
}

/// Per-message figures: message `published[i]` was delivered with the ascending latencies
/// `latencies[i]`, out of `subscribers`.
fn message_stats(
    published: &[Publication],
    latencies: &[Vec<u64>],
    subscribers: u64,
) -> Vec<MessageStats> {
    published
        .iter()
        .zip(latencies)
        .map(|(p, lat)| {
            let delivered = lat.len() as u64;
            MessageStats {
                seq: p.seq,
                publish_ms: (p.publish_ms * 10.0).round() / 10.0,
                publish_error: p.error.clone(),
                delivered,
                lost: subscribers.saturating_sub(delivered),
                p50_ms: ms(percentile(lat, 50.0)),
                p90_ms: ms(percentile(lat, 90.0)),
                p99_ms: ms(percentile(lat, 99.0)),
                first_ms: ms(lat.first().copied()),
                last_ms: ms(lat.last().copied()),
            }
        })
        .collect()
}

/// Per-proxy figures, `tallies` in the order of `proxies`, which shared `subscribers`
/// round-robin.
fn proxy_stats(
    proxies: &[String],
    subscribers: u64,
    tallies: &[ProxyTally],
    published: &[Publication],
) -> Vec<ProxyStats> {
    proxies
        .iter()
        .zip(tallies)
        .enumerate()
        .map(|(p, (proxy, t))| {
            let subscribers = share(subscribers, proxies.len(), p);
            ProxyStats {
                proxy: proxy.clone(),
                subscribers,
                ready: t.ready,
                per_message: proxy_messages(t, subscribers, published),
            }
        })
        .collect()
}

/// Each message on one proxy with `subscribers` subscribers.
fn proxy_messages(
    t: &ProxyTally,
    subscribers: u64,
    published: &[Publication],
) -> Vec<ProxyMessage> {
    published
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
        .collect()
}

/// Subscribers of `n` that go to proxy `p` of `proxies` under the round-robin by global index.
fn share(n: u64, proxies: usize, p: usize) -> u64 {
    let proxies = proxies as u64;
    n / proxies + u64::from((p as u64) < n % proxies)
}

/// Every measured process: the `--proxy-pid` ones, then the `--watch-pid` ones and the workers.
fn processes(ctx: &Context) -> Vec<ProcessUsage> {
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
    processes
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

/// The proxy's resident memory in KiB (its processes summed) before subscribing, once
/// subscribed and at the end.
fn proxy_rss(ctx: &Context) -> [Option<u64>; 3] {
    [0, 1, 2].map(|k| Some(ctx.proxy_usage[k].as_ref()?.iter().map(|s| s.rss_kib).sum()))
}

/// See [`Summary::rss_per_connection_bytes`].
fn per_connection_bytes(before: Option<u64>, subscribed: Option<u64>, count: u64) -> Option<f64> {
    match (before, subscribed) {
        (Some(b), Some(s)) if count > 0 => {
            Some(((s as f64 - b as f64) * 1024.0 / count as f64).round())
        }
        _ => None,
    }
}

/// See [`Summary::subscribe_rate`].
fn subscribe_rate(ctx: &Context, ready_secs: Option<f64>) -> f64 {
    match ready_secs {
        Some(secs) => (ctx.subscribers as f64 / secs).round(),
        None if ctx.subscribe_secs > 0.0 => (ctx.subscribed as f64 / ctx.subscribe_secs).round(),
        None => 0.0,
    }
}

/// Nearest-rank percentile of an ascending slice.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn ms(us: Option<u64>) -> Option<f64> {
    us.map(|v| (v as f64 / 100.0).round() / 10.0)
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

    /// Two messages to the three subscribers of [`context`].
    fn two_messages() -> Summary {
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
        summarize(context(), &published, vec![result, other])
    }

    #[test]
    fn counts_losses_against_requested_subscribers() {
        let s = two_messages();
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
        assert_eq!(s.delivery_secs, Some(2.0));
        assert_eq!(s.deliveries_per_sec, Some(2.0));
    }

    #[test]
    fn sums_proxy_memory_and_counts_origin_requests_from_before_subscribing() {
        let s = two_messages();
        assert_eq!(s.rss_of, "1 holdfast + 1 redis-server");
        assert_eq!(s.rss_per_connection_bytes, Some(1024.0));
        assert_eq!(s.origin_requests_subscribing, Some(6));
        assert_eq!(s.origin_requests_total, Some(9));
    }

    #[test]
    fn splits_deliveries_by_proxy() {
        let s = two_messages();
        let [a, b] = [&s.per_proxy[0], &s.per_proxy[1]];
        assert_eq!(
            (a.subscribers, a.ready, b.subscribers, b.ready),
            (2, 2, 1, 1)
        );
        assert_eq!(a.per_message[0].last_ms, Some(3.0));
        assert_eq!((a.per_message[1].delivered, a.per_message[1].lost), (1, 1));
        assert_eq!((b.per_message[1].lost, b.per_message[1].last_ms), (1, None));
    }

    #[test]
    fn measures_cpu_time_per_process_and_role() {
        let s = two_messages();
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
