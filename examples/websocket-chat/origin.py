"""A chat room over WebSockets, served by a plain HTTP origin through WebSocket-over-HTTP:
Holdfast turns each client WebSocket into POSTs of `application/websocket-events`. On OPEN the
origin subscribes the connection to channel "room"; each TEXT message is published to the room,
so every connected client (the sender included) receives it."""

import json
import os
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PUBLISH_URL = os.environ.get("PUBLISH_URL", "http://127.0.0.1:5561")
PAGE = open(os.path.join(os.path.dirname(__file__), "index.html"), "rb").read()


def parse_events(body):
    """[(type, content)] from a websocket-events body."""
    events, i = [], 0
    while i < len(body):
        end = body.index(b"\r\n", i)
        head = body[i:end].decode()
        i = end + 2
        kind, _, size = head.partition(" ")
        content = b""
        if size:
            n = int(size, 16)
            content = body[i:i + n]
            i += n + 2
        events.append((kind, content))
    return events


def event(kind, content=None):
    if content is None:
        return f"{kind}\r\n".encode()
    return f"{kind} {len(content):x}\r\n".encode() + content + b"\r\n"


def publish(channel, text):
    item = {"channel": channel, "formats": {"ws-message": {"content": text}}}
    req = urllib.request.Request(
        PUBLISH_URL + "/publish/",
        data=json.dumps({"items": [item]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(req).read()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.reply(200, "text/html", PAGE)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        out = b""
        for kind, content in parse_events(self.rfile.read(length)):
            if kind == "OPEN":
                subscribe = json.dumps({"type": "subscribe", "channel": "room"})
                out += event("OPEN") + event("TEXT", b"c:" + subscribe.encode())
            elif kind == "TEXT":
                publish("room", content.decode())
            elif kind == "CLOSE":
                out += event("CLOSE", content)
        self.reply(200, "application/websocket-events", out, {"Sec-WebSocket-Extensions": "grip"})

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
