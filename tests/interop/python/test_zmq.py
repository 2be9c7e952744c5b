"""The ZeroMQ sockets (`[zmq]`) against libzmq: `pubcontrol`'s ZeroMQ publisher (discovery
through the command socket, then PUSH, or XPUB with `require_subscribers`), and raw pyzmq
sockets for the command socket's replies, the PULL input's `J` messages and the stats socket's
packets. Replies and packets are compared with what Pushpin 1.36 sends for the same requests."""

import json
import threading
import time

import pytest
import requests
import tnetstring
import websocket
import zmq
from gripcontrol import (
    GripPubControl,
    Response,
    WebSocketEvent,
    create_hold_response,
    create_hold_stream,
    decode_websocket_events,
    encode_websocket_events,
)

from harness import Reply, StreamReader, free_port, wait_until

EVENTS = "application/websocket-events"
TIMEOUT_MS = 10_000


def zmq_config(linger=60, stats=True):
    ports = {name: free_port() for name in ("pull", "sub", "command", "stats")}
    uris = {name: f"tcp://127.0.0.1:{port}" for name, port in ports.items()}
    text = f"""
[zmq]
push_in_spec = "{uris['pull']}"
push_in_sub_specs = "{uris['sub']}"
command_spec = "{uris['command']}"
subscription_linger = {linger}
stats_report_interval = 1
"""
    if stats:
        text += f'stats_spec = "{uris["stats"]}"\n'
    return text, uris


def stream_origin(channel):
    initial = Response(headers={"Content-Type": "text/plain"}, body="open\n")
    return lambda req: Reply(
        200, [("Content-Type", "application/grip-instruct")], create_hold_stream(channel, initial)
    )


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def socket(ctx, kind, uri, subscribe=None):
    s = ctx.socket(kind)
    s.linger = 0
    s.rcvtimeo = TIMEOUT_MS
    s.sndtimeo = TIMEOUT_MS
    if subscribe is not None:
        s.setsockopt(zmq.SUBSCRIBE, subscribe)
    s.connect(uri)
    return s


def next_packet(stats, kind, timeout=10.0):
    """The next stats packet of `kind` (`b"conn"`, `b"sub"`, `b"report"`), decoded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got, _, body = stats.recv().partition(b" ")
        if got == kind:
            assert body[:1] == b"T", body
            return tnetstring.loads(body[1:])
    raise AssertionError(f"no {kind!r} packet within {timeout}s")


def stats_socket(ctx, uri):
    """A subscriber to the stats socket, once its subscription is in place: reports come every
    second, so the first one to arrive shows nothing sent after it is missed."""
    s = socket(ctx, zmq.SUB, uri, subscribe=b"")
    next_packet(s, b"report")
    return s


def ask(req, request):
    req.send(tnetstring.dumps(request))
    return tnetstring.loads(req.recv())


def test_pubcontrol_discovers_the_pull_input_and_its_publish_reaches_a_stream(
    origin, start_holdfast
):
    config, uris = zmq_config()
    hf = start_holdfast(origin.port, config)
    origin.respond = stream_origin("zq")
    pub = GripPubControl({"control_zmq_uri": uris["command"]})
    try:
        with requests.get(hf.url("/s"), stream=True, timeout=(5, 10)) as resp:
            reader = StreamReader(resp)
            assert reader.read_until(b"open\n") == b"open\n"
            hf.wait_subscriptions(1)
            # Discovery asks the command socket for `get-zmq-uris`, then PUSHes a tnetstring.
            pub.publish_http_stream("zq", "over zmq\n", blocking=True)
            assert reader.read_until(b"over zmq\n") == b"open\nover zmq\n"
    finally:
        pub.close()


def test_pubcontrol_with_require_subscribers_sees_interest_and_publishes_through_xpub(
    origin, start_holdfast
):
    config, uris = zmq_config(linger=0)
    hf = start_holdfast(origin.port, config)
    origin.respond = stream_origin("interest")
    events = []
    seen = threading.Condition()

    def on_sub(kind, channel):
        with seen:
            events.append((kind, channel))
            seen.notify_all()

    def wait_event(event):
        with seen:
            assert seen.wait_for(lambda: event in events, timeout=10), events

    pub = GripPubControl(
        {"control_zmq_uri": uris["command"], "require_subscribers": True}, sub_callback=on_sub
    )
    try:
        with requests.get(hf.url("/s"), stream=True, timeout=(5, 10)) as resp:
            reader = StreamReader(resp)
            assert reader.read_until(b"open\n") == b"open\n"
            # Holdfast's SUB socket subscribes to the held channel; the XPUB hears it.
            wait_event(("sub", "interest"))
            pub.publish_http_stream("interest", "to those listening\n", blocking=True)
            assert reader.read_until(b"listening\n") == b"open\nto those listening\n"
        wait_event(("unsub", "interest"))
        assert events == [("sub", "interest"), ("unsub", "interest")]
    finally:
        pub.close()


def test_command_socket_replies_as_pushpin(origin, start_holdfast, ctx):
    config, uris = zmq_config()
    hf = start_holdfast(origin.port, config)
    req = socket(ctx, zmq.REQ, uris["command"])

    assert ask(req, {b"id": b"abc", b"method": b"get-zmq-uris"}) == {
        b"id": b"abc",
        b"success": True,
        b"value": {
            b"command": uris["command"].encode(),
            b"publish-pull": uris["pull"].encode(),
            b"publish-sub": uris["sub"].encode(),
        },
    }
    assert ask(req, {b"id": b"x1", b"method": b"nope"}) == {
        b"id": b"x1",
        b"success": False,
        b"condition": b"method-not-found",
    }
    assert ask(req, {b"id": b"x2", b"method": b"conncheck", b"args": {b"ids": [b"foo"]}}) == {
        b"id": b"x2",
        b"success": True,
        b"value": [],
    }
    assert ask(req, {b"id": b"x3", b"method": b"recover"}) == {
        b"id": b"x3",
        b"success": True,
        b"value": None,
    }
    assert ask(req, {b"id": b"x4", b"method": b"refresh", b"args": {b"cid": b"none"}}) == {
        b"id": b"x4",
        b"success": False,
        b"condition": b"item-not-found",
    }
    bad = {b"items": [{b"channel": b"a", b"formats": {b"http-stream": {}}}]}
    assert ask(req, {b"id": b"x8", b"method": b"publish", b"args": bad}) == {
        b"id": b"x8",
        b"success": False,
        b"condition": b"bad-request",
        b"value": b"Invalid format: 'http-stream' does not contain 'content' or 'content-bin'",
    }

    # A long-poll's connection id is reported open until the publish answers it.
    origin.respond = lambda r: Reply(
        200,
        [("Content-Type", "application/grip-instruct")],
        create_hold_response("lp", Response(body="timeout\n"), timeout=30),
    )
    stats = stats_socket(ctx, uris["stats"])
    result = {}
    poll = threading.Thread(target=lambda: result.update(r=requests.get(hf.url("/lp"), timeout=20)))
    poll.start()
    conn = next_packet(stats, b"conn")
    cid = conn[b"id"]
    ids = {b"ids": [cid, b"gone"]}
    assert ask(req, {b"id": b"c", b"method": b"conncheck", b"args": ids}) == {
        b"id": b"c",
        b"success": True,
        b"value": [cid],
    }
    items = {b"items": [{b"channel": b"lp", b"formats": {b"http-response": {b"body": b"pub\n"}}}]}
    assert ask(req, {b"id": b"p", b"method": b"publish", b"args": items}) == {
        b"id": b"p",
        b"success": True,
        b"value": None,
    }
    poll.join(20)
    assert result["r"].text == "pub\n"
    gone = next_packet(stats, b"conn")
    assert gone == {b"from": conn[b"from"], b"id": cid, b"unavailable": True}
    assert ask(req, {b"id": b"c2", b"method": b"conncheck", b"args": ids})[b"value"] == []


def test_pull_input_takes_json_and_tnetstring_and_skips_garbage(origin, start_holdfast, ctx):
    config, uris = zmq_config(stats=False)
    hf = start_holdfast(origin.port, config)
    origin.respond = stream_origin("pj")
    push = socket(ctx, zmq.PUSH, uris["pull"])
    with requests.get(hf.url("/s"), stream=True, timeout=(5, 10)) as resp:
        reader = StreamReader(resp)
        reader.read_until(b"open\n")
        hf.wait_subscriptions(1)
        push.send(b"J" + json.dumps({"channel": "pj", "formats": {"http-stream": {"content": "j\n"}}}).encode())
        push.send(b"Tnot a tnetstring")
        item = {b"channel": b"pj", b"formats": {b"http-stream": {b"content": b"t\xff\n"}}}
        push.send(b"T" + tnetstring.dumps(item))
        assert reader.read_until(b"t\xff\n") == b"open\nj\nt\xff\n"
    metrics = requests.get(hf.pub_url("/metrics"), timeout=5).text
    assert "holdfast_zmq_items_rejected_total 1\n" in metrics


def test_stats_socket_sends_sub_packets_per_mode(origin, start_holdfast, ctx):
    config, uris = zmq_config(linger=0)
    hf = start_holdfast(origin.port, config)
    origin.respond = stream_origin("st")
    stats = stats_socket(ctx, uris["stats"])
    with requests.get(hf.url("/s"), stream=True, timeout=(5, 10)) as resp:
        StreamReader(resp).read_until(b"open\n")
        packet = next_packet(stats, b"sub")
        assert packet == {
            b"from": packet[b"from"],
            b"mode": b"stream",
            b"channel": b"st",
            b"subscribers": 1,
            b"ttl": 60,
        }
        assert packet[b"from"].startswith(b"holdfast_")
    packet = next_packet(stats, b"sub")
    assert packet == {
        b"from": packet[b"from"],
        b"mode": b"stream",
        b"channel": b"st",
        b"unavailable": True,
    }


def test_refresh_command_makes_a_websocket_over_http_origin_ask_again(
    holdfast_bin, origin, tmp_path, ctx
):
    from test_websocket_over_http import OverHttpHoldfast

    config, uris = zmq_config()
    refreshed = threading.Event()

    def respond(req):
        events = decode_websocket_events(req.body)
        if events and events[0].type == "OPEN":
            return Reply(
                200,
                [("Content-Type", EVENTS), ("Sec-WebSocket-Extensions", "grip")],
                encode_websocket_events([WebSocketEvent("OPEN")]),
            )
        if not events:
            # The refresh request: no events; the origin answers with a message for the client.
            refreshed.set()
            return Reply(
                200,
                [("Content-Type", EVENTS)],
                encode_websocket_events([WebSocketEvent("TEXT", "m:refreshed")]),
            )
        return Reply(200, [("Content-Type", EVENTS)], b"")

    origin.respond = respond

    class ZmqOverHttp(OverHttpHoldfast):
        config_path = tmp_path / "holdfast.toml"

    ZmqOverHttp.config_path.write_text(config)
    hf = ZmqOverHttp(holdfast_bin, tmp_path, origin.port)
    try:
        ws = websocket.create_connection(hf.ws_url("/chat"), timeout=10)
        try:
            wait_until(lambda: origin.seen(), 10, "the OPEN request")
            cid = origin.seen()[0].headers["Connection-Id"].encode()
            req = socket(ctx, zmq.REQ, uris["command"])
            reply = ask(req, {b"id": b"r", b"method": b"refresh", b"args": {b"cid": cid}})
            assert reply == {b"id": b"r", b"success": True, b"value": None}
            assert refreshed.wait(10)
            assert ws.recv() == "refreshed"
            assert origin.seen()[-1].headers["Connection-Id"].encode() == cid
        finally:
            ws.close()
    finally:
        hf.stop()
