"""HTTP streaming and Server-Sent Events (stream holds) with `gripcontrol` and `sseclient-py`."""

import requests
import sseclient
from gripcontrol import HttpStreamFormat, Response, create_grip_channel_header, create_hold_stream

from harness import Reply, StreamReader


def test_stream_appends_published_content_in_order_then_closes(origin, holdfast, publisher):
    initial = Response(headers={"Content-Type": "text/plain"}, body="stream open\n")
    origin.respond = lambda req: Reply(
        200, [("Content-Type", "application/grip-instruct")], create_hold_stream("st-1", initial)
    )

    with requests.get(holdfast.url("/stream"), stream=True, timeout=(5, 10)) as resp:
        assert resp.status_code == 200
        assert resp.headers["Content-Type"] == "text/plain"
        assert resp.headers.get("Transfer-Encoding") == "chunked"
        assert "Content-Length" not in resp.headers
        reader = StreamReader(resp)
        assert reader.read_until(b"stream open\n") == b"stream open\n"

        holdfast.wait_subscriptions(1)
        publisher.publish_http_stream("st-1", "data: x1\n\n", blocking=True)
        publisher.publish_http_stream("st-1", "data: x2\n\n", blocking=True)
        assert reader.read_until(b"data: x2\n\n") == b"stream open\ndata: x1\n\ndata: x2\n\n"

        publisher.publish_http_stream("st-1", HttpStreamFormat(close=True), blocking=True)
        assert reader.read_to_end() == b"stream open\ndata: x1\n\ndata: x2\n\n"
    holdfast.wait_subscriptions(0)


def sse_origin(channel, initial, extra_headers=()):
    return lambda req: Reply(
        200,
        [
            ("Content-Type", "text/event-stream"),
            ("Cache-Control", "no-cache"),
            ("Grip-Hold", "stream"),
            ("Grip-Channel", create_grip_channel_header(channel)),
            *extra_headers,
        ],
        initial,
    )


def test_sse_events_reach_an_sse_client(origin, holdfast, publisher):
    origin.respond = sse_origin("sse-1", "event: open\ndata: welcome\n\n")

    headers = {"Accept": "text/event-stream"}
    with requests.get(holdfast.url("/events"), stream=True, headers=headers, timeout=(5, 10)) as resp:
        assert resp.status_code == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        events = sseclient.SSEClient(resp).events()
        first = next(events)
        assert (first.event, first.data) == ("open", "welcome")

        holdfast.wait_subscriptions(1)
        publisher.publish_http_stream("sse-1", "event: update\nid: 1\ndata: hello\n\n", blocking=True)
        publisher.publish_http_stream(
            "sse-1", "event: update\nid: 2\ndata: line one\ndata: line two\n\n", blocking=True
        )
        e1, e2 = next(events), next(events)
        assert (e1.event, e1.id, e1.data) == ("update", "1", "hello")
        assert (e2.event, e2.id, e2.data) == ("update", "2", "line one\nline two")

    assert origin.seen()[0].headers["Accept"] == "text/event-stream"


def test_sse_keep_alive_is_sent_on_an_idle_stream(origin, holdfast):
    origin.respond = sse_origin(
        "sse-ka", ": open\n\n", [("Grip-Keep-Alive", ": ka\\n\\n; format=cstring; timeout=1")]
    )

    with requests.get(holdfast.url("/events"), stream=True, timeout=(5, 10)) as resp:
        reader = StreamReader(resp)
        assert reader.read_until(b": open\n\n") == b": open\n\n"
        assert reader.read_until(b": ka\n\n", timeout=10).startswith(b": open\n\n: ka\n\n")
