"""An inbox read by long-polling: GET /messages?after=N answers at once with the messages after
N, or, when there are none, asks Holdfast to hold the request on channel "inbox" for up to 20 s.
POST /messages stores a message and publishes it, as the whole response, to the held requests."""

import json
import os
import threading
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PUBLISH_URL = os.environ.get("PUBLISH_URL", "http://127.0.0.1:5561")
messages = []
lock = threading.Lock()


def publish(channel, body):
    item = {
        "channel": channel,
        "formats": {"http-response": {"headers": [["Content-Type", "application/json"]], "body": body}},
    }
    req = urllib.request.Request(
        PUBLISH_URL + "/publish/",
        data=json.dumps({"items": [item]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(req).read()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        if url.path != "/messages":
            return self.reply(404, b"[]")
        after = int(urllib.parse.parse_qs(url.query).get("after", ["0"])[0])
        with lock:
            newer = [m for m in messages if m["id"] > after]
        if newer:
            return self.reply(200, json.dumps(newer).encode())
        # Nothing new: Holdfast holds the request. A publish answers it; after 20 s without one
        # the client gets this empty list and asks again.
        self.reply(200, b"[]", {"Grip-Hold": "response", "Grip-Channel": "inbox", "Grip-Timeout": "20"})

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        text = json.loads(self.rfile.read(length) or b"{}").get("text", "")
        with lock:
            message = {"id": len(messages) + 1, "text": text}
            messages.append(message)
            publish("inbox", json.dumps([message]))
        self.reply(200, json.dumps(message).encode())

    def reply(self, status, body, headers=()):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in dict(headers).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("ORIGIN_PORT", "8000"))), Handler).serve_forever()
