"""Publishing through a Holdfast whose publish API requires authentication, with each library's
own settings: `gripcontrol` with `control_iss` and `key` (a JWT), django-grip's `GRIP_URL` with
`iss` and `key`, a `key` without an `iss` (a Bearer token), and pubcontrol's `set_auth_basic`.
Each publish must reach a held client; a wrong key must get a 401 and reach no one."""

import base64
import contextlib
import subprocess
import sys
import time

import jwt
import pytest
import requests
from gripcontrol import GripPubControl, HttpStreamFormat
from pubcontrol import Item, PubControlClient

from harness import Reply, StreamReader

# A binary key, as GRIP URLs carry them: base64 with '+', '/' and '='.
KEY = bytes(range(250, 256)) + b"holdfast-publish-key-for-interop-tests>?"
KEY_B64 = base64.b64encode(KEY).decode()
ISS = "realm"
CHANNEL = "auth"


def metrics_jwt():
    return "Bearer " + jwt.encode({"iss": ISS, "exp": int(time.time()) + 3600}, KEY, "HS256")


@pytest.fixture
def jwt_holdfast(origin, start_holdfast):
    return start_holdfast(
        origin.port,
        args=["--publish-jwt-key", f"base64:{KEY_B64}", "--publish-jwt-iss", ISS],
        auth=metrics_jwt(),
    )


@contextlib.contextmanager
def held_stream(origin, holdfast):
    """A client holding a stream on CHANNEL through `holdfast`; yields its reader."""
    origin.respond = lambda req: Reply(
        200,
        [("Content-Type", "text/plain"), ("Grip-Hold", "stream"), ("Grip-Channel", CHANNEL)],
        "open\n",
    )
    with requests.get(holdfast.url("/stream"), stream=True, timeout=(5, 10)) as resp:
        assert resp.status_code == 200
        reader = StreamReader(resp)
        assert reader.read_until(b"open\n") == b"open\n"
        holdfast.wait_subscriptions(1)
        yield reader


def refused(publish, reason):
    """Runs `publish` and checks the library reports Holdfast's 401 with `reason`."""
    with pytest.raises(ValueError) as e:
        publish()
    assert "received failed status code 401" in str(e.value)
    assert reason in str(e.value)


def test_gripcontrol_with_control_iss_and_key_publishes_with_a_jwt(origin, jwt_holdfast):
    def pub(key, iss=ISS):
        return GripPubControl({"control_uri": jwt_holdfast.control_uri, "control_iss": iss, "key": key})

    with held_stream(origin, jwt_holdfast) as reader:
        refused(lambda: pub(b"wrong").publish_http_stream(CHANNEL, "x\n", blocking=True), "bad signature")
        refused(
            lambda: pub(KEY, iss="other").publish_http_stream(CHANNEL, "x\n", blocking=True),
            "issuer does not match",
        )
        pub(KEY).publish_http_stream(CHANNEL, "one\n", blocking=True)
        assert reader.read_until(b"one\n") == b"open\none\n"


DJANGO_PUBLISH = """
import sys
from django.conf import settings
settings.configure(GRIP_URL=sys.argv[1])
import django_grip
from gripcontrol import HttpStreamFormat
django_grip.publish(sys.argv[2], HttpStreamFormat(sys.argv[3]), blocking=True)
"""


def django_publish(grip_url, content):
    """Publishes with django-grip configured by GRIP_URL alone, in a fresh interpreter (django-grip
    reads its settings once, at import)."""
    return subprocess.run(
        [sys.executable, "-c", DJANGO_PUBLISH, grip_url, CHANNEL, content],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_django_grip_grip_url_with_iss_and_key_publishes_with_a_jwt(origin, jwt_holdfast):
    url = f"{jwt_holdfast.control_uri}?iss={ISS}&key=base64:{KEY_B64}"
    wrong = f"{jwt_holdfast.control_uri}?iss={ISS}&key=base64:{base64.b64encode(b'nope').decode()}"
    with held_stream(origin, jwt_holdfast) as reader:
        bad = django_publish(wrong, "x\n")
        assert bad.returncode != 0
        assert "received failed status code 401 with message: bad signature" in bad.stderr
        good = django_publish(url, "django\n")
        assert good.returncode == 0, good.stderr
        assert reader.read_until(b"django\n") == b"open\ndjango\n"


def test_a_key_without_iss_is_sent_as_a_bearer_token(origin, start_holdfast):
    token = "static-publish-token"
    hf = start_holdfast(
        origin.port, args=["--publish-token", token], auth=f"Bearer {token}"
    )

    def pub(key):
        return GripPubControl({"control_uri": hf.control_uri, "key": key})

    with held_stream(origin, hf) as reader:
        refused(lambda: pub("other-token").publish_http_stream(CHANNEL, "x\n", blocking=True), "unknown token")
        pub(token).publish_http_stream(CHANNEL, "bearer\n", blocking=True)
        assert reader.read_until(b"bearer\n") == b"open\nbearer\n"


def test_pubcontrol_auth_basic(origin, start_holdfast):
    hf = start_holdfast(
        origin.port,
        args=["--publish-basic", "publisher:s3cret"],
        auth="Basic " + base64.b64encode(b"publisher:s3cret").decode(),
    )

    def publish(user, password, content):
        client = PubControlClient(hf.control_uri)
        client.set_auth_basic(user, password)
        client.publish(CHANNEL, Item(HttpStreamFormat(content)), blocking=True)

    with held_stream(origin, hf) as reader:
        refused(lambda: publish("publisher", "guess", "x\n"), "bad user or password")
        publish("publisher", "s3cret", "basic\n")
        assert reader.read_until(b"basic\n") == b"open\nbasic\n"


def test_without_credentials_the_publish_api_answers_401_with_a_challenge(jwt_holdfast):
    resp = requests.post(jwt_holdfast.pub_url("/publish/"), json={"items": []}, timeout=5)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="holdfast"'
    assert resp.text == "missing Authorization\n"
    assert requests.get(jwt_holdfast.pub_url("/"), timeout=5).text == "Holdfast API\n"
