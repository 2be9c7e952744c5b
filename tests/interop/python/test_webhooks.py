"""Webhook subscribers with a receiver written in Python: every delivery's `Holdfast-Signature`
is checked with PyJWT by `webhook_verify.py` (the snippet docs/webhooks.md shows); the receiver is
stopped and started again and gets every item, in order, from the retries; and a receiver that
stops answering fills its queue, after which items are dropped and counted in the API and
/metrics."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
import requests

from harness import Holdfast, free_port, wait_until
from webhook_verify import verify_holdfast_webhook

KEY = "python-receiver-secret"
CONFIG = f"""
[grip]
sig_key = "not-the-webhook-key"
[outbound]
allow = ["127.0.0.0/8"]
[webhooks]
sig_key = "{KEY}"
queue = 3
retry_min_ms = 50
retry_max_ms = 200
"""


class Receiver:
    """A webhook receiver on a fixed port, so it can be stopped and started again there. Each
    request is verified; `hold` (a threading.Event), when set, keeps every answer back until it
    is set."""

    def __init__(self, port):
        self.port = port
        self.got = []
        self.refused = []
        self.lock = threading.Lock()
        self.hold = None
        self.arrived = threading.Event()
        self.server = None

    def start(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    claims = verify_holdfast_webhook(self.headers, body, KEY)
                except jwt.InvalidTokenError as e:
                    with receiver.lock:
                        receiver.refused.append(str(e))
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with receiver.lock:
                    receiver.got.append(
                        (claims, json.loads(body), {k.lower(): v for k, v in self.headers.items()})
                    )
                receiver.arrived.set()
                if receiver.hold is not None:
                    receiver.hold.wait(30)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                # Stopping the server closes no open connection: close each one, so that a
                # stopped receiver is unreachable.
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def items(self):
        with self.lock:
            return [body["id"] for _, body, _ in self.got]


@pytest.fixture
def receiver():
    r = Receiver(free_port())
    r.start()
    yield r
    if r.hold is not None:
        r.hold.set()
    r.stop()


@pytest.fixture
def hooked(holdfast_bin, tmp_path, origin):
    hf = Holdfast(holdfast_bin, tmp_path, origin.port, config=CONFIG)
    yield hf
    hf.stop()
    print(f"--- holdfast log ---\n{hf.log()}")


def register(hf, channel, url):
    resp = requests.post(hf.pub_url("/webhooks"), json={"channel": channel, "url": url}, timeout=5)
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def view(hf, hook):
    resp = requests.get(hf.pub_url(f"/webhooks/{hook}"), timeout=5)
    assert resp.status_code == 200, resp.text
    return resp.json()


def publish(hf, channel, *ids):
    items = [{"channel": channel, "id": i, "formats": {"http-stream": {"content": f"item {i}\n"}}}
             for i in ids]
    resp = requests.post(hf.pub_url("/publish/"), json={"items": items}, timeout=5)
    assert resp.status_code == 200, resp.text


def test_deliveries_are_signed_and_verify_with_pyjwt(hooked, receiver):
    hook = register(hooked, "orders", f"http://127.0.0.1:{receiver.port}/hook")
    publish(hooked, "orders", "o1")
    wait_until(lambda: receiver.items() == ["o1"], 10, "the delivery")
    claims, body, headers = receiver.got[0]
    assert claims["iss"] == "holdfast" and claims["sub"] == hook and claims["channel"] == "orders"
    assert body["formats"]["http-stream"]["content"] == "item o1\n"
    assert headers["holdfast-attempt"] == "1"
    assert not receiver.refused
    # The snippet refuses a wrong key and a changed body.
    token_headers = {"Holdfast-Signature": headers["holdfast-signature"],
                     "Holdfast-Delivery": headers["holdfast-delivery"]}
    raw = json.dumps(body).encode()
    with pytest.raises(jwt.InvalidTokenError):
        verify_holdfast_webhook(token_headers, raw, "not-the-key")
    with pytest.raises(jwt.InvalidTokenError):
        verify_holdfast_webhook(token_headers, raw + b" ", KEY)


def test_a_receiver_stopped_and_started_again_gets_every_item_in_order(hooked, receiver):
    hook = register(hooked, "feed", f"http://127.0.0.1:{receiver.port}/")
    publish(hooked, "feed", "1")
    wait_until(lambda: receiver.items() == ["1"], 10, "the first delivery")
    receiver.stop()
    publish(hooked, "feed", "2", "3", "4")
    wait_until(lambda: view(hooked, hook)["failed_attempts"] >= 2, 10, "retries while it is down")
    down = view(hooked, hook)
    assert down["last_error"]["message"].startswith("client error (Connect)"), down
    receiver.start()
    wait_until(lambda: view(hooked, hook)["delivered"] == 4, 15, "every item delivered")
    assert receiver.items() == ["1", "2", "3", "4"]
    assert view(hooked, hook)["given_up"] == 0
    metrics = requests.get(hooked.pub_url("/metrics"), timeout=5).text
    assert 'holdfast_webhook_deliveries_total{outcome="delivered"} 4' in metrics
    assert 'holdfast_webhook_deliveries_total{outcome="failed"}' in metrics


def test_a_slow_receiver_fills_its_queue_and_the_drops_are_counted(hooked, receiver):
    receiver.hold = threading.Event()
    hook = register(hooked, "busy", f"http://127.0.0.1:{receiver.port}/")
    publish(hooked, "busy", "1")
    assert receiver.arrived.wait(10), "the first delivery did not arrive"
    # Item 1 is held by the receiver; the queue (webhooks.queue = 3) takes 2, 3 and 4.
    publish(hooked, "busy", "2", "3", "4", "5", "6", "7")
    state = view(hooked, hook)
    assert (state["dropped"], state["queued"]) == (3, 4), state
    metrics = requests.get(hooked.pub_url("/metrics"), timeout=5).text
    assert "holdfast_webhook_dropped_total 3" in metrics
    receiver.hold.set()
    wait_until(lambda: view(hooked, hook)["delivered"] == 4, 15, "the queued items delivered")
    assert receiver.items() == ["1", "2", "3", "4"]


def test_the_docs_show_this_snippet():
    here = Path(__file__).resolve().parent
    docs = (here.parents[2] / "docs" / "webhooks.md").read_text()
    assert (here / "webhook_verify.py").read_text() in docs
    assert (here.parent / "node" / "webhook_verify.mjs").read_text() in docs
