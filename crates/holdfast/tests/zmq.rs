//! The ZeroMQ sockets (`[zmq]`): items pushed to the PULL input and published to the SUB input
//! reach held clients, the SUB socket's subscriptions follow the held channels (seen from an
//! XPUB publisher), the command socket answers as Pushpin 1.36 does, and the stats socket sends
//! `conn`, `sub` and `report` packets. The peers are the `zeromq` crate's sockets; the Python
//! interop tests do the same against libzmq (pyzmq) and pubcontrol.

mod support;

use std::time::Duration;

use bytes::Bytes;
use grip::tnetstring::{parse, Value};
use serde_json::json;
use support::*;
use zeromq::{Socket as _, SocketSend as _, ZmqMessage};

/// Bound of every wait here.
const DEADLINE: Duration = Duration::from_secs(10);

/// A tnetstring `http-stream` item for `channel` (none when `None`: the SUB topic names it).
fn stream_item(channel: Option<&str>, content: &[u8]) -> Value {
    let mut fields = Vec::new();
    if let Some(c) = channel {
        fields.push(("channel", Value::str(c)));
    }
    fields.push((
        "formats",
        Value::map([(
            "http-stream",
            Value::map([("content", Value::Bytes(Bytes::copy_from_slice(content)))]),
        )]),
    ));
    Value::map(fields)
}

fn prefixed(prefix: &[u8], rest: &[u8]) -> Bytes {
    let mut v = prefix.to_vec();
    v.extend_from_slice(rest);
    Bytes::from(v)
}

async fn recv(socket: &mut impl zeromq::SocketRecv) -> Vec<Bytes> {
    tokio::time::timeout(DEADLINE, socket.recv())
        .await
        .expect("a message within the deadline")
        .expect("a message")
        .into_vec()
}

/// Opens `/stream?channel=<channel>` on the test handler and waits until it is subscribed.
async fn hold_stream(proxy: &Proxy, channel: &str) -> hyper::body::Incoming {
    let resp = get(&proxy.url(&format!("/stream?channel={channel}"))).await;
    assert_eq!(resp.status(), 200);
    proxy.wait_subscribers(channel, 1).await;
    let mut body = resp.into_body();
    assert_eq!(
        read_until(&mut body, "[stream opened]\n").await,
        "[stream opened]\n"
    );
    body
}

async fn metrics(proxy: &Proxy) -> String {
    text(get(&proxy.publish_url("/metrics")).await).await
}

#[tokio::test]
async fn items_pushed_to_the_pull_input_reach_a_held_stream_and_bad_ones_are_skipped() {
    let proxy = Proxy::start("* test\n", |c| {
        c.zmq.push_in_spec = "tcp://127.0.0.1:0".into();
    })
    .await;
    let mut body = hold_stream(&proxy, "news").await;
    let mut push = zeromq::PushSocket::new();
    push.connect(proxy.zmq.publish_pull.as_deref().unwrap())
        .await
        .unwrap();

    let raw = stream_item(Some("news"), b"one\n").to_bytes();
    push.send(Bytes::from(raw).into()).await.unwrap();
    push.send(Bytes::from_static(b"Tgarbage").into())
        .await
        .unwrap();
    let two = stream_item(Some("news"), b"two \xff\n").to_bytes();
    push.send(prefixed(b"T", &two).into()).await.unwrap();
    let mut two_parts = ZmqMessage::from(Bytes::from_static(b"news"));
    two_parts.push_back(Bytes::from(
        stream_item(Some("news"), b"never\n").to_bytes(),
    ));
    push.send(two_parts).await.unwrap();
    let json = json!({"channel": "news", "formats": {"http-stream": {"content": "three\n"}}});
    push.send(prefixed(b"J", json.to_string().as_bytes()).into())
        .await
        .unwrap();

    let mut got = Vec::new();
    while !got.ends_with(b"three\n") {
        let chunk = tokio::time::timeout(DEADLINE, next_chunk(&mut body))
            .await
            .expect("a chunk within the deadline")
            .expect("the stream stays open");
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, b"one\ntwo \xff\nthree\n");
    let m = metrics(&proxy).await;
    assert!(
        m.contains("holdfast_zmq_items_received_total{input=\"pull\"} 5\n"),
        "{m}"
    );
    assert!(m.contains("holdfast_zmq_items_rejected_total 2\n"), "{m}");
    proxy.shutdown().await;
}

/// One request and its decoded reply.
async fn ask(req: &mut zeromq::ReqSocket, request: Value) -> Value {
    req.send(Bytes::from(request.to_bytes()).into())
        .await
        .unwrap();
    let reply = recv(req).await;
    assert_eq!(reply.len(), 1);
    parse(&reply[0]).unwrap()
}

fn refused(id: &str, condition: &str, reason: Option<&str>) -> Value {
    let mut fields = vec![
        ("id", Value::str(id)),
        ("success", Value::Bool(false)),
        ("condition", Value::str(condition)),
    ];
    if let Some(r) = reason {
        fields.push(("value", Value::str(r)));
    }
    Value::map(fields)
}

fn answered(id: &str, value: Value) -> Value {
    Value::map([
        ("id", Value::str(id)),
        ("success", Value::Bool(true)),
        ("value", value),
    ])
}

fn request(id: &str, method: &str, args: Option<Value>) -> Value {
    let mut fields = vec![("id", Value::str(id)), ("method", Value::str(method))];
    if let Some(a) = args {
        fields.push(("args", a));
    }
    Value::map(fields)
}

#[tokio::test]
async fn the_command_socket_answers_each_method_as_pushpin_does() {
    let proxy = Proxy::start("* test\n", |c| {
        c.zmq.push_in_spec = "tcp://127.0.0.1:0".into();
        c.zmq.command_spec = "tcp://127.0.0.1:0".into();
    })
    .await;
    let uris = proxy.zmq.clone();
    let mut req = zeromq::ReqSocket::new();
    req.connect(uris.command.as_deref().unwrap()).await.unwrap();

    let reply = ask(&mut req, request("u", "get-zmq-uris", None)).await;
    let want = Value::map([
        ("command", Value::str(uris.command.as_deref().unwrap())),
        (
            "publish-pull",
            Value::str(uris.publish_pull.as_deref().unwrap()),
        ),
    ]);
    assert_eq!(reply, answered("u", want));

    let mut body = hold_stream(&proxy, "cmd").await;
    let items = Value::List(vec![stream_item(Some("cmd"), b"by command\n")]);
    let reply = ask(
        &mut req,
        request("p", "publish", Some(Value::map([("items", items)]))),
    )
    .await;
    assert_eq!(reply, answered("p", Value::Null));
    assert_eq!(read_until(&mut body, "by command\n").await, "by command\n");

    let bad = Value::List(vec![Value::map([
        ("channel", Value::str("cmd")),
        ("formats", Value::map([("http-stream", Value::map([]))])),
    ])]);
    let reply = ask(
        &mut req,
        request("b", "publish", Some(Value::map([("items", bad)]))),
    )
    .await;
    let why = "Invalid format: 'http-stream' does not contain 'content' or 'content-bin'";
    assert_eq!(reply, refused("b", "bad-request", Some(why)));

    // The stream's connection is open here; an id nobody has is not.
    let open: Vec<String> = proxy
        .app
        .conns
        .all()
        .iter()
        .map(|c| c.id.to_string())
        .collect();
    assert_eq!(open.len(), 1, "{open:?}");
    let ids = Value::List(vec![Value::str(&open[0]), Value::str("nobody")]);
    let reply = ask(
        &mut req,
        request("c", "conncheck", Some(Value::map([("ids", ids)]))),
    )
    .await;
    assert_eq!(
        reply,
        answered("c", Value::List(vec![Value::str(&open[0])]))
    );

    let cid = Value::map([("cid", Value::str("nobody"))]);
    let reply = ask(&mut req, request("r1", "refresh", Some(cid))).await;
    assert_eq!(reply, refused("r1", "item-not-found", None));
    // An HTTP connection is not something `refresh` acts on.
    let cid = Value::map([("cid", Value::str(&open[0]))]);
    let reply = ask(&mut req, request("r2", "refresh", Some(cid))).await;
    assert_eq!(reply, refused("r2", "item-not-found", None));
    let channel = Value::map([("channel", Value::str("cmd"))]);
    let reply = ask(&mut req, request("r3", "refresh", Some(channel))).await;
    assert_eq!(reply, answered("r3", Value::Null));
    let reply = ask(&mut req, request("r4", "refresh", Some(Value::map([])))).await;
    let why = "refresh needs 'cid' or 'channel'";
    assert_eq!(reply, refused("r4", "bad-request", Some(why)));

    let reply = ask(&mut req, request("v", "recover", None)).await;
    assert_eq!(reply, answered("v", Value::Null));
    let reply = ask(&mut req, request("n", "nope", None)).await;
    assert_eq!(reply, refused("n", "method-not-found", None));

    // Not a tnetstring: an answer all the same, so the REQ socket can go on.
    req.send(Bytes::from_static(b"garbage").into())
        .await
        .unwrap();
    let reply = parse(&recv(&mut req).await[0]).unwrap();
    assert_eq!(
        reply,
        Value::map([
            ("success", Value::Bool(false)),
            ("condition", Value::str("bad-request")),
            (
                "value",
                Value::str("tnetstring has a bad length prefix at byte 0")
            ),
        ])
    );
    let reply = ask(&mut req, request("after", "recover", None)).await;
    assert_eq!(reply, answered("after", Value::Null));
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_sub_input_subscribes_to_held_channels_and_delivers_what_they_are_sent() {
    let proxy = Proxy::start("* test\n", |c| {
        c.zmq.push_in_sub_specs = vec!["tcp://127.0.0.1:0".into()];
        c.zmq.subscription_linger = 0;
    })
    .await;
    let mut xpub = zeromq::XPubSocket::new();
    xpub.connect(proxy.zmq.publish_sub.as_deref().unwrap())
        .await
        .unwrap();

    let mut body = hold_stream(&proxy, "topic").await;
    assert_eq!(recv(&mut xpub).await, [Bytes::from_static(b"\x01topic")]);
    let item = stream_item(None, b"via sub\n").to_bytes();
    let mut msg = ZmqMessage::from(Bytes::from_static(b"topic"));
    msg.push_back(prefixed(b"T", &item));
    xpub.send(msg).await.unwrap();
    assert_eq!(read_until(&mut body, "via sub\n").await, "via sub\n");

    drop(body);
    assert_eq!(recv(&mut xpub).await, [Bytes::from_static(b"\x00topic")]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_connecting_sub_input_reaches_a_publisher_that_binds() {
    let mut publisher = zeromq::XPubSocket::new();
    let endpoint = publisher.bind("tcp://127.0.0.1:0").await.unwrap();
    let proxy = Proxy::start("* test\n", |c| {
        c.zmq.push_in_sub_specs = vec![endpoint.to_string()];
        c.zmq.push_in_sub_connect = true;
    })
    .await;
    let mut body = hold_stream(&proxy, "outward").await;
    assert_eq!(
        recv(&mut publisher).await,
        [Bytes::from_static(b"\x01outward")]
    );
    let mut msg = ZmqMessage::from(Bytes::from_static(b"outward"));
    msg.push_back(Bytes::from_static(
        br#"J{"formats": {"http-stream": {"content": "pulled in\n"}}}"#,
    ));
    publisher.send(msg).await.unwrap();
    assert_eq!(read_until(&mut body, "pulled in\n").await, "pulled in\n");
    proxy.shutdown().await;
}

/// A subscriber to the stats socket; packets of other kinds than the one asked for are kept
/// for later, in order.
struct Stats {
    socket: zeromq::SubSocket,
    kept: Vec<(String, Value)>,
}

impl Stats {
    async fn connect(uri: &str) -> Stats {
        let mut socket = zeromq::SubSocket::new();
        socket.connect(uri).await.unwrap();
        socket.subscribe("").await.unwrap();
        Stats {
            socket,
            kept: Vec::new(),
        }
    }

    /// The next packet of `kind`, decoded, with its map keys sorted (JSON objects come sorted).
    async fn next(&mut self, kind: &str) -> Value {
        if let Some(i) = self.kept.iter().position(|(k, _)| k == kind) {
            return self.kept.remove(i).1;
        }
        loop {
            let msg = recv(&mut self.socket).await;
            let data = &msg[0];
            let space = data.iter().position(|&b| b == b' ').expect("a type");
            let body = &data[space + 1..];
            let value = match body[0] {
                b'T' => parse(&body[1..]).unwrap(),
                b'J' => {
                    let json: serde_json::Value = serde_json::from_slice(&body[1..]).unwrap();
                    json_to_tnet(&json)
                }
                other => panic!("unknown format {other}"),
            };
            let got = String::from_utf8_lossy(&data[..space]).into_owned();
            if got == kind {
                return sorted(value);
            }
            self.kept.push((got, sorted(value)));
        }
    }
}

/// `v` with its map keys in order, to compare packets whatever their key order.
fn sorted(v: Value) -> Value {
    match v {
        Value::Map(mut pairs) => {
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Map(pairs.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        other => other,
    }
}

fn json_to_tnet(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::String(s) => Value::str(s),
        serde_json::Value::Number(n) => Value::Int(n.as_i64().unwrap()),
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Object(m) => Value::Map(
            m.iter()
                .map(|(k, v)| (Bytes::copy_from_slice(k.as_bytes()), json_to_tnet(v)))
                .collect(),
        ),
        other => panic!("unexpected {other}"),
    }
}

fn field<'a>(v: &'a Value, name: &str) -> &'a Value {
    v.get(name).unwrap_or_else(|| panic!("no {name} in {v:?}"))
}

async fn stats_follow_a_held_stream(format: &str) {
    let proxy = Proxy::start("* test\n", |c| {
        c.zmq.stats_spec = "tcp://127.0.0.1:0".into();
        c.zmq.push_in_spec = "tcp://127.0.0.1:0".into();
        c.zmq.stats_report_interval = 1;
        c.zmq.stats_format = match format {
            "json" => holdfast::config::zmq::StatsFormat::Json,
            _ => holdfast::config::zmq::StatsFormat::Tnetstring,
        };
    })
    .await;
    let mut stats = Stats::connect(proxy.zmq.stats.as_deref().unwrap()).await;
    // A report shows the subscription has reached the publisher: nothing after it is missed.
    let first = stats.next("report").await;
    let from = field(&first, "from").clone();
    let instance = format!("holdfast_{}", std::process::id());
    assert_eq!(from.as_str(), Some(instance.as_str()));

    let mut body = hold_stream(&proxy, "watched").await;
    let conn = stats.next("conn").await;
    let id = field(&conn, "id").clone();
    assert!(id.as_str().unwrap().starts_with(&instance), "{id:?}");
    let packet = |pairs: Vec<(&str, Value)>| sorted(Value::map(pairs));
    assert_eq!(
        conn,
        packet(vec![
            ("from", from.clone()),
            ("id", id.clone()),
            ("type", Value::str("http")),
            ("peer-address", Value::str("127.0.0.1")),
            ("ttl", Value::Int(120)),
        ])
    );
    assert_eq!(
        stats.next("sub").await,
        packet(vec![
            ("from", from.clone()),
            ("mode", Value::str("stream")),
            ("channel", Value::str("watched")),
            ("subscribers", Value::Int(1)),
            ("ttl", Value::Int(60)),
        ])
    );

    let mut push = zeromq::PushSocket::new();
    push.connect(proxy.zmq.publish_pull.as_deref().unwrap())
        .await
        .unwrap();
    let item = stream_item(Some("watched"), b"counted\n").to_bytes();
    push.send(Bytes::from(item).into()).await.unwrap();
    assert_eq!(read_until(&mut body, "counted\n").await, "counted\n");
    // The report covering the publish counts it received and sent once, with the stream open.
    loop {
        let report = stats.next("report").await;
        if field(&report, "received") == &Value::Int(1) {
            assert_eq!(field(&report, "sent"), &Value::Int(1), "{report:?}");
            assert_eq!(field(&report, "http-response-sent"), &Value::Int(0));
            assert_eq!(field(&report, "connections"), &Value::Int(1), "{report:?}");
            break;
        }
        assert_eq!(field(&report, "received"), &Value::Int(0), "{report:?}");
    }

    drop(body);
    assert_eq!(
        stats.next("conn").await,
        packet(vec![
            ("from", from.clone()),
            ("id", id),
            ("unavailable", Value::Bool(true)),
        ])
    );
    assert_eq!(
        stats.next("sub").await,
        packet(vec![
            ("from", from),
            ("mode", Value::str("stream")),
            ("channel", Value::str("watched")),
            ("unavailable", Value::Bool(true)),
        ])
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_stats_socket_reports_connections_subscriptions_and_counts() {
    stats_follow_a_held_stream("tnetstring").await;
}

#[tokio::test]
async fn stats_packets_are_json_with_stats_format_json() {
    stats_follow_a_held_stream("json").await;
}

#[tokio::test]
async fn holdfast_publish_pushes_to_the_pull_input_given_as_its_spec() {
    let proxy = Proxy::start("* test\n", |c| {
        c.zmq.push_in_spec = "tcp://127.0.0.1:0".into();
    })
    .await;
    let mut body = hold_stream(&proxy, "cli").await;
    let spec = proxy.zmq.publish_pull.clone().unwrap();
    let run = |args: &[&str]| {
        let mut argv = vec![format!("--spec={spec}")];
        argv.extend(args.iter().map(|a| a.to_string()));
        support::binary::holdfast_publish(argv)
    };
    let (code, stdout, stderr) = run(&["--id=1", "cli", "pushed"]).await;
    assert_eq!(
        (code, stdout.as_str()),
        (Some(0), "Published\n"),
        "{stderr}"
    );
    assert_eq!(read_until(&mut body, "pushed\n").await, "pushed\n");

    // Credentials mean nothing to a PULL socket, and are refused rather than dropped.
    let (code, _, stderr) = run(&["--bearer=tok", "cli", "refused"]).await;
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("a ZeroMQ spec") && stderr.contains("takes no credentials"),
        "{stderr}"
    );
    let (code, _, _) = run(&["cli", "after"]).await;
    assert_eq!(code, Some(0));
    assert_eq!(read_until(&mut body, "after\n").await, "after\n");
}
