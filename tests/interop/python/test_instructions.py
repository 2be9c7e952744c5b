"""GRIP response headers beyond the hold itself (reference §2.2)."""

import requests
from gripcontrol import Channel, create_grip_channel_header

from harness import Reply, StreamReader


def test_grip_status_sets_the_status_line_of_a_stream(origin, holdfast):
    origin.respond = lambda req: Reply(
        200,
        [
            ("Content-Type", "text/plain"),
            ("Grip-Hold", "stream"),
            ("Grip-Channel", "status"),
            ("Grip-Status", "404 Nope"),
        ],
        "init\n",
    )

    with requests.get(holdfast.url("/"), stream=True, timeout=(5, 10)) as resp:
        assert (resp.status_code, resp.reason) == (404, "Nope")
        assert StreamReader(resp).read_until(b"init\n") == b"init\n"
        assert [h for h in resp.headers if h.lower().startswith("grip-")] == []


def test_grip_expose_headers_lists_the_headers_the_client_gets(origin, holdfast):
    origin.respond = lambda req: Reply(
        200,
        [
            ("Grip-Channel", "expose"),
            ("Grip-Expose-Headers", "X-Shown"),
            ("X-Shown", "1"),
            ("X-Hidden", "2"),
        ],
        "body\n",
    )

    resp = requests.get(holdfast.url("/"), timeout=10)
    assert resp.status_code == 200
    assert resp.text == "body\n"
    assert resp.headers["X-Shown"] == "1"
    assert "X-Hidden" not in resp.headers
    assert [h for h in resp.headers if h.lower().startswith("grip-")] == []


def test_a_stream_subscribed_to_several_channels_gets_each(origin, holdfast, publisher):
    channels = create_grip_channel_header([Channel("multi-a"), Channel("multi-b")])
    origin.respond = lambda req: Reply(
        200,
        [
            ("Content-Type", "text/plain"),
            ("Grip-Hold", "stream"),
            ("Grip-Channel", channels),
            ("Grip-Channel", "multi-c"),
        ],
        "",
    )

    with requests.get(holdfast.url("/"), stream=True, timeout=(5, 10)) as resp:
        assert resp.status_code == 200
        holdfast.wait_subscriptions(3)
        reader = StreamReader(resp)
        for channel in ("multi-c", "multi-a", "multi-b"):
            publisher.publish_http_stream(channel, f"{channel}\n", blocking=True)
        assert reader.read_until(b"multi-b\n") == b"multi-c\nmulti-a\nmulti-b\n"
