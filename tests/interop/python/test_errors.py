"""Bad input from publishers and origins gets a clear error, and the server keeps serving."""

import pytest
import requests
from gripcontrol import create_grip_channel_header

from harness import Background, Reply


def test_malformed_publish_json_is_rejected(holdfast):
    resp = requests.post(
        holdfast.pub_url("/publish/"),
        data=b'{"items": [',
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert resp.status_code == 400
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert resp.text.rstrip("\n") == "Body is not valid JSON."


def test_invalid_grip_hold_gives_502_and_the_server_keeps_serving(origin, holdfast, publisher):
    def respond(req):
        if req.path == "/bogus":
            return Reply(
                200,
                [("Content-Type", "text/plain"), ("Grip-Hold", "bogus"), ("Grip-Channel", "err")],
                "origin body\n",
            )
        return Reply(
            200,
            [
                ("Content-Type", "text/plain"),
                ("Grip-Hold", "response"),
                ("Grip-Channel", create_grip_channel_header("after-error")),
            ],
            "",
        )

    origin.respond = respond

    bad = requests.get(holdfast.url("/bogus"), timeout=10)
    assert bad.status_code == 502
    assert "origin body" not in bad.text
    assert holdfast.subscriptions() == 0

    poll = Background(requests.get, holdfast.url("/poll"), timeout=30)
    holdfast.wait_subscriptions(1)
    publisher.publish_http_response("after-error", "still serving", blocking=True)
    resp = poll.result(timeout=10)
    assert resp.status_code == 200
    assert resp.text == "still serving"
    assert holdfast.is_running()


@pytest.mark.parametrize("value", ["Response", "STREAM", "long-poll"])
def test_grip_hold_values_are_exact_and_case_sensitive(origin, holdfast, value):
    origin.respond = lambda req: Reply(200, [("Grip-Hold", value), ("Grip-Channel", "c")], "x\n")

    resp = requests.get(holdfast.url("/"), timeout=10)
    assert resp.status_code == 502
