#!/usr/bin/env python3
"""Faye in a real browser: headless Chromium loads faye.html from one origin
(http://localhost:<page port>), with Faye's browser client from tests/interop/node_modules (never
a CDN), and opens one Faye client per connection type (websocket, cross-origin-long-polling,
callback-polling) to Holdfast's Bayeux endpoint on another origin (http://127.0.0.1:<port>, route
`bayeux=/bayeux`). Behind Holdfast is an origin that allows every subscription (Grip-Channel) and
republishes what clients publish as a json-object item. Each client must get a publish from the
publish API and the line the websocket client published; the page posts what it saw back.

    HOLDFAST_BIN=target/debug/holdfast CHROMIUM=/usr/bin/chromium tests/browser/faye.py

Standard library only. Every wait is bounded; nothing sleeps in place of waiting for an event.
"""

import json
import os
import subprocess
import sys
import tempfile
import threading

from cross_origin import (accepts, free_port, page_passes, page_report, publish_item, serve,
                          start_chromium, stop, subscriptions, tools, wait_until)

HERE = os.path.dirname(os.path.abspath(__file__))
FAYE_JS = os.path.join(HERE, "..", "interop", "node_modules", "faye", "client",
                       "faye-browser-min.js")
TYPES = ["websocket", "cross-origin-long-polling", "callback-polling"]
DEADLINE = 60.0


class Origin:
    """The application: allows every subscription, republishes client publishes."""

    def __init__(self, publish_port):
        self.publish_port = publish_port
        self.seen = []
        self.lock = threading.Lock()
        self.server = serve(self.handle)
        self.port = self.server.server_address[1]

    def handle(self, req, body):
        m = json.loads(body)
        with self.lock:
            self.seen.append(m)
        if m["channel"] == "/meta/subscribe":
            subs = m["subscription"] if isinstance(m["subscription"], list) else [m["subscription"]]
            return 200, [("Grip-Channel", ", ".join(subs))], b""
        if not m["channel"].startswith("/meta/"):
            item = {"channel": m["channel"], "formats": {"json-object": {"data": m["data"]}}}
            publish_item(self.publish_port, item)
        return 200, [], b""


class Page:
    """The other origin: serves faye.html and Faye's browser client, and takes the report."""

    def __init__(self):
        self.report = None
        self.reported = threading.Event()
        with open(os.path.join(HERE, "faye.html"), "rb") as f:
            self.html = f.read()
        with open(FAYE_JS, "rb") as f:
            self.script = f.read()
        self.server = serve(self.handle)
        self.port = self.server.server_address[1]

    def handle(self, req, body):
        path = req.path.split("?")[0]
        if req.command == "GET" and path == "/":
            return 200, [("Content-Type", "text/html; charset=utf-8")], self.html
        if req.command == "GET" and path == "/faye-browser-min.js":
            return 200, [("Content-Type", "application/javascript")], self.script
        if req.command == "POST" and path == "/report" and not self.reported.is_set():
            self.report = json.loads(body)
            self.reported.set()
        return 204, [], b""


def check(report, origin):
    failures = []
    if report.get("timedOut"):
        failures.append("the page timed out")
    for t in TYPES:
        r = report.get(t) or {}
        if r.get("types") != [t]:
            failures.append(f"{t}: connected with {r.get('types')!r}")
        for want in ("pushed!", "from the page"):
            if want not in (r.get("got") or []):
                failures.append(f"{t}: no {want!r} among {r.get('got')!r}")
    handshakes = [m for m in origin.seen if m["channel"] == "/meta/handshake"]
    if len(handshakes) != len(TYPES):
        failures.append(f"the origin saw {len(handshakes)} handshakes")
    return failures


def main():
    binary, chromium = tools()
    if not chromium:
        return 2
    if not os.path.exists(FAYE_JS):
        print(f"browser: no {FAYE_JS}: run npm ci in tests/interop", file=sys.stderr)
        return 2
    port, publish = free_port(), free_port()
    origin = Origin(publish)
    page = Page()
    work = tempfile.mkdtemp(prefix="holdfast-browser-faye-")
    routes = os.path.join(work, "routes")
    with open(routes, "w") as f:
        f.write(f"*,bayeux=/bayeux 127.0.0.1:{origin.port}\n")
    procs = []
    try:
        procs.append(subprocess.Popen([binary, "--routes", routes,
                                       "--listen", f"127.0.0.1:{port}",
                                       "--publish-listen", f"127.0.0.1:{publish}",
                                       "--log-level", "error"]))
        wait_until(lambda: accepts(port) and accepts(publish), 15, "holdfast to listen")
        url = f"http://localhost:{page.port}/?holdfast=http://127.0.0.1:{port}"
        procs.append(start_chromium(chromium, url, work))
        wait_until(lambda: subscriptions(publish) == len(TYPES) or page.reported.is_set(),
                   DEADLINE, "a subscription for each of the page's Faye clients")
        if not page.reported.is_set():
            publish_item(publish, {"channel": "/room",
                                   "formats": {"json-object": {"data": {"text": "pushed!"}}}})
        if not page_passes(page, check(page_report(page), origin)):
            return 1
        print(f"browser: {os.path.basename(chromium)} on http://localhost:{page.port} used "
              f"Faye with Holdfast on http://127.0.0.1:{port} over {', '.join(TYPES)}: "
              f"the publish and the page's own line reached every client")
        return 0
    finally:
        stop(procs)
        origin.server.shutdown()
        page.server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
