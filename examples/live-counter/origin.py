"""A counter everyone sees change live: GET /events is a Server-Sent Events stream that Holdfast
holds on channel "counter"; POST /increment adds one and publishes the new count to it."""

import json
import os
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PUBLISH_URL = os.environ.get("PUBLISH_URL", "http://127.0.0.1:5561")
PAGE = open(os.path.join(os.path.dirname(__file__), "index.html"), "rb").read()
count = 0
lock = threading.Lock()


def publish(channel, content):
    item = {"channel": channel, "formats": {"http-stream": {"content": content}}}
    req = urllib.request.Request(
        PUBLISH_URL + "/publish/",
        data=json.dumps({"items": [item]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(req).read()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/events":
            # Holdfast keeps this response open on channel "counter" and sends the body now.
            self.reply(200, "text/event-stream", f"event: count\ndata: {count}\n\n".encode(),
                       {"Grip-Hold": "stream", "Grip-Channel": "counter",
                        "Grip-Keep-Alive": ":\\n\\n; format=cstring; timeout=20"})
        else:
            self.reply(200, "text/html", PAGE)

    def do_POST(self):
        global count
        if self.path != "/increment":
            return self.reply(404, "text/plain", b"not found\n")
        with lock:
            count += 1
            publish("counter", f"event: count\ndata: {count}\n\n")
            self.reply(200, "application/json", json.dumps({"count": count}).encode())

    def reply(self, status, content_type, body, headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in dict(headers).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("ORIGIN_PORT", "8000"))), Handler).serve_forever()
