//! `GET /metrics` as a Prometheus scraper reads it: held connections by transport and route,
//! the publish → write histogram, origin requests by status, and the Grafana dashboard in
//! `contrib/grafana/holdfast.json`, whose every expression must name a metric that exists.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures_util::SinkExt;
use grip::wsevents::{encode_events, parse_events, Event, EventKind};
use http_body_util::BodyExt;
use hyper::{Request, Response};
use serde_json::Value;
use support::ws::*;
use support::*;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

/// One scrape: every sample by its series (name and labels, as written), and the text.
struct Scrape {
    samples: HashMap<String, f64>,
    text: String,
}

impl Scrape {
    async fn of(proxy: &Proxy) -> Scrape {
        let resp = get(&proxy.publish_url("/metrics")).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"],
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        let text = text(resp).await;
        assert!(text.ends_with("# EOF\n"), "{text}");
        let samples = (text.lines())
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').unwrap();
                (series.to_string(), value.parse().unwrap())
            })
            .collect();
        Scrape { samples, text }
    }

    /// A sample's value; 0 when the series is not on the page (a label set not seen yet).
    fn get(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }

    /// Every metric name the page defines: sample names, and the family names of `# TYPE`
    /// lines with the suffixes their samples get (a family with no sample yet still counts).
    fn names(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for line in self.text.lines() {
            if let Some(t) = line.strip_prefix("# TYPE ") {
                let (name, kind) = t.split_once(' ').unwrap();
                names.insert(name.to_string());
                let suffixes: &[&str] = match kind {
                    "counter" => &["_total"],
                    "histogram" => &["_bucket", "_count", "_sum"],
                    _ => &[],
                };
                names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
            } else if !line.starts_with('#') {
                let end = line.find(['{', ' ']).unwrap();
                names.insert(line[..end].to_string());
            }
        }
        names
    }
}

fn connections(s: &Scrape, transport: &str, route: &str) -> f64 {
    s.get(&format!(
        "holdfast_connections{{transport=\"{transport}\",route=\"{route}\"}}"
    ))
}

/// An origin for every transport but the WebSocket: `/poll` holds a response on channel `p`,
/// `/stream` a stream on `s`, `/missing` is a 404, and a WebSocket-over-HTTP request (any path)
/// gets its `OPEN` accepted and a `CLOSE` answered.
async fn origin() -> Origin {
    Origin::start(|req: Request<hyper::body::Incoming>| async move {
        let is_events = req
            .headers()
            .get("content-type")
            .is_some_and(|v| v == "application/websocket-events");
        let path = req.uri().path().to_string();
        if is_events {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let events = parse_events(&body).unwrap();
            let answer: Vec<Event> = (events.iter())
                .filter(|e| matches!(e.kind, EventKind::Open | EventKind::Close))
                .map(|e| Event::new(e.kind))
                .collect();
            let mut out = Vec::new();
            encode_events(&answer, &mut out);
            return Response::builder()
                .header("content-type", "application/websocket-events")
                .body(full(out))
                .unwrap();
        }
        let resp = Response::builder();
        let resp = match path.as_str() {
            "/poll" => resp
                .header("Grip-Hold", "response")
                .header("Grip-Channel", "p"),
            "/stream" => resp
                .header("Grip-Hold", "stream")
                .header("Grip-Channel", "s")
                .header("Content-Type", "text/event-stream"),
            "/missing" => resp.status(404),
            _ => resp,
        };
        resp.body(full("start\n")).unwrap()
    })
    .await
}

#[tokio::test]
async fn connections_by_transport_rise_while_held_and_fall_when_they_end() {
    let origin = origin().await;
    let ws_origin = WsOrigin::start(None).await;
    let routes = format!(
        "*,path_beg=/ws,id=sock {}\n*,path_beg=/woh,id=woh {},over_http\n*,id=web {}\n",
        ws_origin.target(),
        origin.target(),
        origin.target()
    );
    let proxy = Proxy::start(&routes, quiet).await;
    let before = Scrape::of(&proxy).await;
    assert_eq!(connections(&before, "stream", "web"), 0.0);

    // One of each, held at once.
    let poll_url = proxy.url("/poll");
    let poll = tokio::spawn(async move { text(get(&poll_url).await).await });
    let resp = get(&proxy.url("/stream")).await;
    let mut stream = resp.into_body();
    read_until(&mut stream, "start\n").await;
    let mut ws_origin = ws_origin;
    let mut ws = connect(&proxy, "/ws").await;
    let (_, origin_side) = ws_origin.next().await;
    echo(origin_side);
    let mut woh = connect(&proxy, "/woh").await;
    // A round trip through the echo origin: the WebSocket session is running.
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(recv_text(&mut ws).await, "hi");

    let expected = [
        ("long-poll", "web"),
        ("stream", "web"),
        ("websocket", "sock"),
        ("ws-over-http", "woh"),
    ];
    let mut held = Scrape::of(&proxy).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while expected
        .iter()
        .any(|(t, r)| connections(&held, t, r) != 1.0)
    {
        assert!(tokio::time::Instant::now() < deadline, "{}", held.text);
        tokio::time::sleep(Duration::from_millis(10)).await;
        held = Scrape::of(&proxy).await;
    }

    // Each ends its own way: the long-poll gets its answer, the stream's client leaves, the
    // WebSocket clients close.
    proxy.publish_items([response_item("p", "done")]).await;
    assert_eq!(
        tokio::time::timeout(WAIT, poll).await.unwrap().unwrap(),
        "done"
    );
    drop(stream);
    ws.close(None).await.unwrap();
    woh.close(None).await.unwrap();
    eventually(
        WAIT,
        || "a connection is still counted after it ended".into(),
        || async {
            let now = Scrape::of(&proxy).await;
            expected.iter().all(|(t, r)| connections(&now, t, r) == 0.0)
        },
    )
    .await;
}

#[tokio::test]
async fn a_publish_is_counted_by_input_delivered_and_timed_to_its_write() {
    let origin = origin().await;
    let proxy = Proxy::routed_to(&origin, quiet).await;
    let series = [
        "holdfast_items_received_total{input=\"http\"}",
        "holdfast_deliveries_total",
        "holdfast_publish_write_seconds_count{path=\"direct\"}",
    ];
    let before = Scrape::of(&proxy).await;
    for s in series {
        assert_eq!(before.get(s), 0.0, "{s} in {}", before.text);
    }

    let mut stream = get(&proxy.url("/stream")).await.into_body();
    read_until(&mut stream, "start\n").await;
    // Idle, on a plain HTTP/1.1 connection: the hub writes to its socket itself.
    proxy.wait_direct_streams(1).await;
    proxy.publish_stream("s", None, None, "goal\n").await;
    read_until(&mut stream, "goal\n").await;

    let after = Scrape::of(&proxy).await;
    for s in series {
        assert_eq!(after.get(s), 1.0, "{s} in {}", after.text);
    }
    assert_eq!(
        after.get("holdfast_publish_write_seconds_bucket{le=\"+Inf\",path=\"direct\"}"),
        1.0,
        "{}",
        after.text
    );
    assert_eq!(
        after.get("holdfast_deliveries_dropped_total{reason=\"queue_full\"}"),
        0.0
    );
}

#[tokio::test]
async fn origin_requests_are_counted_by_status_and_timed() {
    let origin = origin().await;
    let dead = dead_port().await;
    let routes = format!("*,path_beg=/dead 127.0.0.1:{dead}\n* {}\n", origin.target());
    let proxy = Proxy::start(&routes, quiet).await;
    assert_eq!(get(&proxy.url("/")).await.status(), 200);
    assert_eq!(get(&proxy.url("/missing")).await.status(), 404);
    assert_eq!(get(&proxy.url("/")).await.status(), 200);
    assert_eq!(get(&proxy.url("/dead")).await.status(), 502);

    let s = Scrape::of(&proxy).await;
    let status = |class: &str| {
        s.get(&format!(
            "holdfast_origin_requests_total{{status=\"{class}\"}}"
        ))
    };
    assert_eq!(status("2xx"), 2.0, "{}", s.text);
    assert_eq!(status("4xx"), 1.0, "{}", s.text);
    assert_eq!(status("5xx"), 0.0, "{}", s.text);
    assert!(status("error") >= 1.0, "{}", s.text);
    let timed = s.get("holdfast_origin_request_seconds_count");
    assert_eq!(
        timed,
        status("2xx") + status("4xx") + status("error"),
        "{}",
        s.text
    );
}

/// Metric names in a PromQL expression: the identifiers this project's series start with,
/// outside quoted label values and `$variables`.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let (mut quoted, mut word, mut variable) = (false, String::new(), false);
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        let is_metric = word.starts_with("holdfast_") || word.starts_with("process_");
        if !quoted && !variable && is_metric {
            names.push(std::mem::take(&mut word));
        }
        word.clear();
        variable = c == '$';
        if c == '"' {
            quoted = !quoted;
        }
    }
    names
}

/// Every PromQL expression in the dashboard: panel targets and variable queries.
fn expressions(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    ("query", Value::String(s)) if s.contains('(') => out.push(s.clone()),
                    ("query", Value::Object(q)) => {
                        if let Some(Value::String(s)) = q.get("query") {
                            out.push(s.clone());
                        }
                    }
                    _ => expressions(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| expressions(v, out)),
        _ => {}
    }
}

/// Series documented as cluster mode only, from docs/configuration.md's Metrics table.
fn documented_cluster_series() -> BTreeSet<String> {
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/configuration.md"
    ))
    .unwrap();
    (docs.lines())
        .filter(|l| l.contains("| cluster mode:"))
        .filter_map(|l| l.strip_prefix("| `"))
        .map(|l| l[..l.find(['`', '{']).unwrap()].to_string())
        .collect()
}

#[tokio::test]
async fn every_expression_of_the_grafana_dashboard_names_a_metric_that_exists() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../contrib/grafana/holdfast.json"
    );
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(dashboard["title"].is_string() && dashboard["panels"].is_array());
    let mut exprs = Vec::new();
    expressions(&dashboard, &mut exprs);
    assert!(exprs.len() >= 15, "{exprs:?}");

    // A server with the optional parts on (ZeroMQ, the per-address caps) and traffic on every
    // family, so each has its samples. Cluster mode needs Redis: its series are checked
    // against the documented list instead.
    let origin = origin().await;
    let proxy = Proxy::routed_to(&origin, |c| {
        quiet(c);
        c.zmq.push_in_spec = "tcp://127.0.0.1:0".into();
        c.limits.max_connections_per_ip = 100;
    })
    .await;
    let mut stream = get(&proxy.url("/stream")).await.into_body();
    read_until(&mut stream, "start\n").await;
    proxy.publish_stream("s", None, None, "goal\n").await;
    read_until(&mut stream, "goal\n").await;
    let live = Scrape::of(&proxy).await.names();
    let cluster = documented_cluster_series();
    assert!(
        cluster.contains("holdfast_cluster_redis_connected"),
        "{cluster:?}"
    );

    for expr in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "no metric in {expr:?}");
        for name in names {
            assert!(
                live.contains(&name) || cluster.contains(&name),
                "{name} (in {expr:?}) is not on /metrics nor a documented cluster series; \
                 the page has {live:?}"
            );
        }
    }
}
