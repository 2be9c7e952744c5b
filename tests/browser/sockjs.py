#!/usr/bin/env python3
"""sockjs-client in a real browser: headless Chromium loads sockjs.html from one origin
(http://localhost:<page port>), with sockjs-client from tests/interop/node_modules (never a CDN),
and opens one SockJS session per transport (websocket, xhr-streaming, xhr-polling, eventsource)
to Holdfast on another origin (http://127.0.0.1:<port>, route `sockjs=/sockjs`). Behind Holdfast
is a WebSocket-over-HTTP origin that subscribes each session to `room` and echoes. Each client
must get its echo and one publish to `room`; the page posts what it saw back to its server.

    HOLDFAST_BIN=target/debug/holdfast CHROMIUM=/usr/bin/chromium tests/browser/sockjs.py

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
SOCKJS_JS = os.path.join(HERE, "..", "interop", "node_modules", "sockjs-client", "dist",
                         "sockjs.min.js")
TRANSPORTS = ["websocket", "xhr-streaming", "xhr-polling", "eventsource"]
DEADLINE = 60.0


def parse_events(body):
    """WebSocket-over-HTTP events: `NAME SIZEHEX\\r\\n<content>\\r\\n` or `NAME\\r\\n`."""
    events, i = [], 0
    while i < len(body):
        end = body.index(b"\r\n", i)
        head = body[i:end].decode()
        i = end + 2
        name, _, size = head.partition(" ")
        content = b""
        if size:
            n = int(size, 16)
            content = body[i:i + n]
            i += n + 2
        events.append((name, content))
    return events


def event(name, content=None):
    if content is None:
        return f"{name}\r\n".encode()
    return f"{name} {len(content):x}\r\n".encode() + content + b"\r\n"


class Origin:
    """A WebSocket-over-HTTP origin: accepts, subscribes each connection to `room`, echoes."""

    def __init__(self):
        self.opened = []
        self.lock = threading.Lock()
        self.server = serve(self.handle)
        self.port = self.server.server_address[1]

    def handle(self, req, body):
        out = b""
        for name, content in parse_events(body):
            if name == "OPEN":
                with self.lock:
                    self.opened.append(req.path)
                out += event("OPEN")
                out += event("TEXT", b'c:{"type":"subscribe","channel":"room"}')
            elif name == "TEXT":
                out += event("TEXT", b"m:echo " + content)
            elif name == "CLOSE":
                out += event("CLOSE", content)
        headers = [("Content-Type", "application/websocket-events"),
                   ("Sec-WebSocket-Extensions", "grip")]
        return 200, headers, out


class Page:
    """The other origin: serves sockjs.html and sockjs-client, and takes the page's report."""

    def __init__(self):
        self.report = None
        self.reported = threading.Event()
        with open(os.path.join(HERE, "sockjs.html"), "rb") as f:
            self.html = f.read()
        with open(SOCKJS_JS, "rb") as f:
            self.script = f.read()
        self.server = serve(self.handle)
        self.port = self.server.server_address[1]

    def handle(self, req, body):
        path = req.path.split("?")[0]
        if req.command == "GET" and path == "/":
            return 200, [("Content-Type", "text/html; charset=utf-8")], self.html
        if req.command == "GET" and path == "/sockjs.min.js":
            return 200, [("Content-Type", "application/javascript")], self.script
        if req.command == "POST" and path == "/report" and not self.reported.is_set():
            self.report = json.loads(body)
            self.reported.set()
        return 204, [], b""


def check(report, origin):
    failures = []
    if report.get("timedOut"):
        failures.append("the page timed out")
    for t in TRANSPORTS:
        r = report.get(t) or {}
        if r.get("transport") != t:
            failures.append(f"{t}: opened with {r.get('transport')!r}")
        got = r.get("messages") or []
        for want in (f"echo hi {t}", "pushed!"):
            if want not in got:
                failures.append(f"{t}: no {want!r} among {got!r}")
    if len(origin.opened) != len(TRANSPORTS):
        failures.append(f"the origin saw {len(origin.opened)} sessions: {origin.opened!r}")
    # The websocket transport reaches the origin at <prefix>/websocket, the others at the
    # prefix, with the client's query (sockjs-client adds ?t=<nonce> to xhr requests).
    paths = sorted(p.split("?")[0] for p in origin.opened)
    want_paths = sorted(["/sockjs/websocket"] + ["/sockjs"] * 3)
    if paths != want_paths:
        failures.append(f"origin paths {sorted(origin.opened)!r}, want {want_paths!r}")
    return failures


def main():
    binary, chromium = tools()
    if not chromium:
        return 2
    if not os.path.exists(SOCKJS_JS):
        print(f"browser: no {SOCKJS_JS}: run npm ci in tests/interop", file=sys.stderr)
        return 2
    origin = Origin()
    page = Page()
    work = tempfile.mkdtemp(prefix="holdfast-browser-sockjs-")
    routes = os.path.join(work, "routes")
    with open(routes, "w") as f:
        f.write(f"*,sockjs=/sockjs 127.0.0.1:{origin.port},over_http\n")
    port, publish = free_port(), free_port()
    procs = []
    try:
        procs.append(subprocess.Popen([binary, "--routes", routes,
                                       "--listen", f"127.0.0.1:{port}",
                                       "--publish-listen", f"127.0.0.1:{publish}",
                                       "--log-level", "error"]))
        wait_until(lambda: accepts(port) and accepts(publish), 15, "holdfast to listen")
        url = f"http://localhost:{page.port}/?holdfast=http://127.0.0.1:{port}"
        procs.append(start_chromium(chromium, url, work))
        wait_until(lambda: subscriptions(publish) == len(TRANSPORTS) or page.reported.is_set(),
                   DEADLINE, "a subscription for each of the page's SockJS sessions")
        if not page.reported.is_set():
            item = {"channel": "room", "formats": {"ws-message": {"content": "pushed!"}}}
            publish_item(publish, item)
        if not page_passes(page, check(page_report(page), origin)):
            return 1
        print(f"browser: {os.path.basename(chromium)} on http://localhost:{page.port} used "
              f"sockjs-client with Holdfast on http://127.0.0.1:{port} over "
              f"{', '.join(TRANSPORTS)}: echo and publish reached every session")
        return 0
    finally:
        stop(procs)
        origin.server.shutdown()
        page.server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
