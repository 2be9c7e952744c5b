"""WebSocket-over-HTTP (target `over_http`): an origin built on `gripcontrol`'s websocket-events
helpers serves a real WebSocket client (`websocket-client`) through Holdfast, and a publish with
`GripPubControl` reaches that client."""

import pytest
import websocket
from gripcontrol import (
    GripPubControl,
    WebSocketEvent,
    WebSocketMessageFormat,
    decode_websocket_events,
    encode_websocket_events,
    validate_sig,
    websocket_control_message,
)
from pubcontrol import Item

from harness import Holdfast, Reply, wait_until

EVENTS = "application/websocket-events"


class OverHttpHoldfast(Holdfast):
    """Holdfast routing everything to the origin with WebSocket-over-HTTP."""

    def __init__(self, binary, workdir, origin_port):
        self.binary = binary
        self.workdir = workdir
        self.routes = workdir / "routes"
        self.routes.write_text(f"* 127.0.0.1:{origin_port},over_http\n")
        self.log_path = workdir / "holdfast.log"
        self.proc = None
        self._start()

    def ws_url(self, path="/"):
        return f"ws://127.0.0.1:{self.port}{path}"


@pytest.fixture
def woh(holdfast_bin, origin, tmp_path):
    hf = OverHttpHoldfast(holdfast_bin, tmp_path, origin.port)
    yield hf
    hf.stop()
    print(f"--- holdfast log ({hf.log_path}) ---\n{hf.log()}")


@pytest.fixture
def woh_publisher(woh):
    pub = GripPubControl({"control_uri": woh.control_uri})
    yield pub
    pub.close()


def chat(req):
    """Accepts with GRIP, subscribes to `room`, sets meta `user`, echoes TEXT, answers CLOSE."""
    out = []
    headers = [("Content-Type", EVENTS)]
    for e in decode_websocket_events(req.body):
        if e.type == "OPEN":
            out.append(WebSocketEvent("OPEN"))
            out.append(
                WebSocketEvent("TEXT", "c:" + websocket_control_message("subscribe", {"channel": "room"}))
            )
            headers += [("Sec-WebSocket-Extensions", "grip"), ("Set-Meta-User", "alice")]
        elif e.type == "TEXT":
            out.append(WebSocketEvent("TEXT", b"m:echo " + e.content))
        elif e.type == "CLOSE":
            out.append(WebSocketEvent("CLOSE", e.content))
    return Reply(200, headers, encode_websocket_events(out))


def events_seen(origin):
    return [(r, [(e.type, e.content) for e in decode_websocket_events(r.body)]) for r in origin.seen()]


def test_open_subscribe_publish_echo_and_close(origin, woh, woh_publisher):
    origin.respond = chat
    ws = websocket.create_connection(woh.ws_url("/chat"), timeout=10)
    try:
        woh.wait_subscriptions(1)
        woh_publisher.publish("room", Item(WebSocketMessageFormat("pushed!")), blocking=True)
        assert ws.recv() == "pushed!"

        ws.send("hi")
        assert ws.recv() == "echo hi"

        ws.send_close(status=4000, reason=b"done")
        wait_until(
            lambda: any(("CLOSE", b"\x0f\xa0done") in evs for _, evs in events_seen(origin)),
            10,
            "the CLOSE event at the origin",
        )
    finally:
        ws.close()

    seen = events_seen(origin)
    assert seen[0][1] == [("OPEN", None)]
    assert seen[0][0].path == "/chat"
    ids = {r.headers["Connection-Id"] for r, _ in seen}
    assert len(ids) == 1, ids
    for r, _ in seen:
        assert r.method == "POST"
        assert r.headers["Content-Type"] == EVENTS
        assert validate_sig(r.headers["Grip-Sig"], "changeme")
    text = [r for r, evs in seen if ("TEXT", b"hi") in evs]
    assert text and text[0].headers["Meta-User"] == "alice"
    woh.wait_subscriptions(0)


def test_publish_close_reaches_the_client_with_code_and_reason(origin, woh, woh_publisher):
    origin.respond = chat
    ws = websocket.create_connection(woh.ws_url("/"), timeout=10)
    try:
        woh.wait_subscriptions(1)
        woh_publisher.publish(
            "room",
            Item(WebSocketMessageFormat(action="close", code=4001, reason="bye")),
            blocking=True,
        )
        opcode, data = ws.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert (int.from_bytes(data[:2], "big"), data[2:]) == (4001, b"bye")
    finally:
        ws.close()


def test_a_refused_open_is_the_clients_http_answer(origin, woh):
    origin.respond = lambda req: Reply(403, [("Content-Type", "text/plain"), ("X-Why", "nope")], "go away\n")
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(woh.ws_url("/"), timeout=10)
    assert refused.value.status_code == 403
    assert refused.value.resp_headers["x-why"] == "nope"
    assert refused.value.resp_body == b"go away\n"


def test_a_vanished_client_is_reported_with_disconnect(origin, woh):
    origin.respond = chat
    ws = websocket.create_connection(woh.ws_url("/"), timeout=10)
    woh.wait_subscriptions(1)
    ws.sock.close()  # no close frame: the client just goes away
    wait_until(
        lambda: any(("DISCONNECT", None) in evs for _, evs in events_seen(origin)),
        10,
        "a DISCONNECT event at the origin",
    )
    woh.wait_subscriptions(0)
