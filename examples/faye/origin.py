"""The application behind a Bayeux endpoint: it serves the page and Faye's browser client, and
Holdfast asks it about every handshake, subscribe and publish (a POST to /bayeux with the Bayeux
message as JSON). Subscriptions to /chat/... are allowed by naming the channel in Grip-Channel;
a client's publish to /chat/... is accepted and published to everyone as a json-object item."""

import json
import os
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
PUBLISH_URL = os.environ.get("PUBLISH_URL", "http://127.0.0.1:5561")
FAYE_JS = os.path.join(HERE, "..", "node_modules", "faye", "client", "faye-browser-min.js")


def publish(channel, data):
    item = {"channel": channel, "formats": {"json-object": {"data": data}}}
    req = urllib.request.Request(
        PUBLISH_URL + "/publish/",
        data=json.dumps({"items": [item]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(req).read()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/faye-browser-min.js":
            with open(FAYE_JS, "rb") as f:
                self.reply(200, "application/javascript", f.read())
        else:
            with open(os.path.join(HERE, "index.html"), "rb") as f:
                self.reply(200, "text/html", f.read())

    def do_POST(self):
        if self.path != "/bayeux":
            return self.reply(404, "text/plain", b"not found\n")
        message = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        channel = message["channel"]
        if channel == "/meta/handshake":
            return self.reply(200)
        if channel == "/meta/subscribe":
            wanted = message["subscription"]
            wanted = wanted if isinstance(wanted, list) else [wanted]
            allowed = [c for c in wanted if c.startswith("/chat/")]
            # Holdfast subscribes the client to the channels named here, and refuses the rest.
            return self.reply(200, headers={"Grip-Channel": ", ".join(allowed)} if allowed else {})
        if channel.startswith("/chat/"):
            data = message.get("data") or {}
            text = str(data.get("text", ""))[:500] if isinstance(data, dict) else ""
            publish(channel, {"text": text})
            return self.reply(200)
        self.reply(403)

    def reply(self, status, content_type="text/plain", body=b"", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("ORIGIN_PORT", "8000"))), Handler).serve_forever()
