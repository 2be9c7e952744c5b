"""Long-polling (response holds) with origins and publishers built on the `gripcontrol` library."""

import requests
from gripcontrol import HttpResponseFormat, Response, create_grip_channel_header, create_hold_response

from harness import Background, Reply


def grip_instruct(body):
    return Reply(200, [("Content-Type", "application/grip-instruct")], body)


def test_long_poll_receives_published_body(origin, holdfast, publisher):
    timeout_response = Response(code=200, headers={"Content-Type": "text/plain"}, body="timed out\n")
    origin.respond = lambda req: grip_instruct(create_hold_response("lp-hello", timeout_response, 55))

    poll = Background(requests.get, holdfast.url("/poll"), timeout=30)
    holdfast.wait_subscriptions(1)
    assert not poll.done(), "a response hold answered before anything was published"
    publisher.publish_http_response("lp-hello", "hello", blocking=True)

    resp = poll.result(timeout=10)
    assert resp.status_code == 200
    assert resp.text == "hello"
    assert resp.headers["Content-Type"] == "text/plain"
    assert resp.headers["Content-Length"] == "5"
    holdfast.wait_subscriptions(0)


def test_published_response_sets_status_and_merges_headers(origin, holdfast, publisher):
    timeout_response = Response(code=200, headers={"X-Orig": "kept", "X-Both": "original"}, body="")
    origin.respond = lambda req: grip_instruct(create_hold_response("lp-merge", timeout_response))

    poll = Background(requests.get, holdfast.url("/poll"), timeout=30)
    holdfast.wait_subscriptions(1)
    published = HttpResponseFormat(
        code=201,
        reason="Made",
        headers={"X-Pub": "published", "X-Both": "published"},
        body="made\n",
    )
    publisher.publish_http_response("lp-merge", published, blocking=True)

    resp = poll.result(timeout=10)
    assert (resp.status_code, resp.reason) == (201, "Made")
    assert resp.headers["X-Orig"] == "kept"
    assert resp.headers["X-Pub"] == "published"
    assert resp.headers["X-Both"] == "published"
    assert resp.text == "made\n"


def test_long_poll_timeout_returns_the_original_response(origin, holdfast):
    origin.respond = lambda req: Reply(
        202,
        [
            ("Content-Type", "text/plain"),
            ("X-Foo", "bar"),
            ("Grip-Hold", "response"),
            ("Grip-Channel", create_grip_channel_header("lp-timeout")),
            ("Grip-Timeout", "5"),
        ],
        "timeout-body\n",
    )

    poll = Background(requests.get, holdfast.url("/poll"), timeout=30)
    holdfast.wait_subscriptions(1)
    assert not poll.done(), "a response hold answered before its timeout"

    resp = poll.result(timeout=20)
    assert (resp.status_code, resp.reason) == (202, "Accepted")
    assert resp.text == "timeout-body\n"
    assert resp.headers["Content-Type"] == "text/plain"
    assert resp.headers["X-Foo"] == "bar"
    assert [h for h in resp.headers if h.lower().startswith("grip-")] == []
    holdfast.wait_subscriptions(0)
