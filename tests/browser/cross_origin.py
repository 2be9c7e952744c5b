#!/usr/bin/env python3
"""A real browser using Holdfast across origins: headless Chromium loads page.html from one
origin (http://localhost:<page port>) and reaches Holdfast on another (http://127.0.0.1:<port>)
with JSON-P script tags (extended and basic mode), CORS fetches (a simple GET reading an exposed
header, a preflighted PUT with JSON and a custom header) and two held long-polls (one fetch, one
JSON-P) answered by a publish; a fetch to a route without cross-origin support must be refused by
the browser. The page posts what it saw back to its own server, and this script checks it.

    HOLDFAST_BIN=target/debug/holdfast CHROMIUM=/usr/bin/chromium tests/browser/cross_origin.py

Standard library only. Every wait is bounded; nothing sleeps in place of waiting for an event.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
DEADLINE = 60.0
SUBSCRIPTIONS = re.compile(r"^holdfast_subscriptions (\d+)\s*$", re.MULTILINE)


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(handle):
    """An HTTP/1.1 server on 127.0.0.1 calling `handle(handler, body) -> (status, headers, body)`."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _serve(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, headers, out = handle(self, body)
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = do_PUT = do_OPTIONS = _serve

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):
            pass  # the browser going away mid-connection at the end

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


class Origin:
    """The backend behind Holdfast. It knows nothing about CORS or JSON-P."""

    def __init__(self):
        self.seen = []
        self.lock = threading.Lock()
        self.server = serve(self.handle)
        self.port = self.server.server_address[1]

    def handle(self, req, body):
        with self.lock:
            self.seen.append((req.command, req.path, {k.lower(): v for k, v in req.headers.items()}))
        json_type = ("Content-Type", "application/json")
        if req.path == "/data":
            return 200, [json_type, ("X-Data", "from-origin")], b'{"n": 1}\n'
        if req.path == "/items" and req.command == "OPTIONS":
            return 204, [("Allow", "GET, PUT")], b""
        if req.path == "/items" and req.command == "PUT":
            got = {"got": json.loads(body), "token": req.headers.get("X-Token")}
            return 200, [json_type, ("X-Data", "put")], json.dumps(got).encode()
        if req.path == "/lp":
            headers = [json_type, ("Grip-Hold", "response"), ("Grip-Channel", "browser")]
            return 200, headers, b'{"timeout": true}\n'
        return 404, [("Content-Type", "text/plain")], b"not found\n"


class Page:
    """The other origin: serves page.html and takes the page's report."""

    def __init__(self):
        self.report = None
        self.reported = threading.Event()
        with open(os.path.join(HERE, "page.html"), "rb") as f:
            self.html = f.read()
        self.server = serve(self.handle)
        self.port = self.server.server_address[1]

    def handle(self, req, body):
        if req.command == "GET" and req.path.split("?")[0] == "/":
            return 200, [("Content-Type", "text/html; charset=utf-8")], self.html
        if req.command == "POST" and req.path == "/report":
            self.report = json.loads(body)
            self.reported.set()
            return 204, [], b""
        return 204, [], b""


def chromium_binary():
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if not name:
            continue
        path = shutil.which(name)
        if path:
            return path
    return None


def start_chromium(chromium, url, work):
    """Headless Chromium loading `url`, with a fresh profile under `work`. It leads its own
    session, so that `stop_chromium` ends its renderers too."""
    return subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--no-default-browser-check", "--disable-extensions",
         f"--user-data-dir={os.path.join(work, 'profile')}", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def stop(procs):
    """Stops Holdfast and the browser (the last, when there are two), bounded."""
    for p in reversed(procs):
        if p is procs[-1] and len(procs) == 2:
            # The browser and its renderers: the session it leads.
            os.killpg(p.pid, signal.SIGTERM)
        else:
            p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def subscriptions(publish_port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{publish_port}/metrics", timeout=2) as r:
            m = SUBSCRIPTIONS.search(r.read().decode())
            return int(m.group(1)) if m else 0
    except OSError:
        return 0


def accepts(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def check(report, origin):
    failures = []

    def expect(what, got, want):
        if got != want:
            failures.append(f"{what}: got {got!r}, want {want!r}")

    ext = report["jsonpExtended"]
    expect("JSON-P extended called back", ext.get("called"), True)
    value = ext.get("value") or {}
    expect("JSON-P extended code", value.get("code"), 200)
    expect("JSON-P extended X-Data", (value.get("headers") or {}).get("X-Data"), "from-origin")
    expect("JSON-P extended body", value.get("body"), '{"n": 1}\n')
    basic = report["jsonpBasic"]
    expect("JSON-P basic called back with the body", basic, {"called": True, "value": {"n": 1}})
    simple = report["simple"]
    expect("CORS GET", simple, {"status": 200, "exposed": "from-origin", "body": '{"n": 1}\n'})
    put = report["preflighted"]
    expect("preflighted PUT status", put.get("status"), 200)
    expect("preflighted PUT exposed header", put.get("exposed"), "put")
    expect("preflighted PUT body", json.loads(put.get("body") or "null"),
           {"got": {"item": 7}, "token": "t0k"})
    preflights = [h for (m, p, h) in origin.seen if m == "OPTIONS" and p == "/items"]
    expect("preflights the origin saw", len(preflights), 1)
    if preflights:
        expect("preflight method", preflights[0].get("access-control-request-method"), "PUT")
        asked = (preflights[0].get("access-control-request-headers") or "").lower()
        expect("preflight headers", sorted(h.strip() for h in asked.split(",")),
               ["content-type", "x-token"])
    no_aco = report["noAco"]
    expect("fetch without aco refused by the browser", "error" in no_aco and "status" not in no_aco,
           True)
    held = report["heldFetch"]
    expect("held fetch", held, {"status": 200, "exposed": "published",
                                "body": '{"published": true}'})
    poll = report["heldJsonp"]
    expect("held JSON-P called back", poll.get("called"), True)
    value = poll.get("value") or {}
    expect("held JSON-P code", value.get("code"), 200)
    expect("held JSON-P body", value.get("body"), '{"published": true}')
    expect("held JSON-P X-Data", (value.get("headers") or {}).get("X-Data"), "published")
    return failures


def tools():
    """The holdfast binary (HOLDFAST_BIN) and Chromium; (None, None) after saying which is
    missing."""
    binary = os.environ.get("HOLDFAST_BIN")
    if not binary or not os.access(binary, os.X_OK):
        print("browser: HOLDFAST_BIN must name the holdfast binary", file=sys.stderr)
        return None, None
    chromium = chromium_binary()
    if not chromium:
        print("browser: no Chromium (set CHROMIUM, or apt-get install chromium)", file=sys.stderr)
        return None, None
    return binary, chromium


def publish_item(publish_port, item, authorization=None):
    """Publishes one item through the publish API on `publish_port`."""
    headers = {"Content-Type": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    req = urllib.request.Request(f"http://127.0.0.1:{publish_port}/publish/",
                                 data=json.dumps({"items": [item]}).encode(), headers=headers)
    urllib.request.urlopen(req, timeout=5).read()


def page_report(page):
    """The report the test page posts back, once it has (bounded by DEADLINE)."""
    if not page.reported.wait(DEADLINE):
        raise AssertionError("the page did not report within %d s" % DEADLINE)
    if "failed" in page.report:
        raise AssertionError("the page failed: " + page.report["failed"])
    return page.report


def page_passes(page, failures):
    """Prints each failure and the page's report when there are any; whether there were none."""
    for f in failures:
        print("browser: FAIL " + f, file=sys.stderr)
    if failures:
        print("browser: the page reported " + json.dumps(page.report, indent=2), file=sys.stderr)
    return not failures


def main():
    binary, chromium = tools()
    if not chromium:
        return 2
    origin = Origin()
    page = Page()
    work = tempfile.mkdtemp(prefix="holdfast-browser-")
    routes = os.path.join(work, "routes")
    target = f"127.0.0.1:{origin.port}"
    with open(routes, "w") as f:
        f.write(f"*,aco {target}\n")
        f.write(f"*,aco,path_beg=/basic/,replace_beg=/,jsonp_mode=basic {target}\n")
        f.write(f"*,path_beg=/plain/,replace_beg=/ {target}\n")
    config = os.path.join(work, "holdfast.toml")
    with open(config, "w") as f:
        f.write("[reliability]\nupdate_on_first_subscription = false\n")
    port, publish = free_port(), free_port()
    procs = []
    try:
        hf = subprocess.Popen([binary, "--config", config, "--routes", routes,
                               "--listen", f"127.0.0.1:{port}",
                               "--publish-listen", f"127.0.0.1:{publish}",
                               "--log-level", "error"])
        procs.append(hf)
        wait_until(lambda: accepts(port) and accepts(publish), 15, "holdfast to listen")
        url = f"http://localhost:{page.port}/?holdfast=http://127.0.0.1:{port}"
        procs.append(start_chromium(chromium, url, work))
        # Both long-polls are held: one publish answers them.
        wait_until(lambda: subscriptions(publish) == 2 or page.reported.is_set(), DEADLINE,
                   "the page's two long-polls to be held")
        if not page.reported.is_set():
            item = {"channel": "browser", "formats": {"http-response": {
                "headers": {"Content-Type": "application/json", "X-Data": "published"},
                "body": '{"published": true}'}}}
            publish_item(publish, item)
        if not page_passes(page, check(page_report(page), origin)):
            return 1
        print(f"browser: {os.path.basename(chromium)} on http://localhost:{page.port} used "
              f"Holdfast on http://127.0.0.1:{port}: JSON-P (extended, basic, held), CORS "
              f"(simple, preflighted, held, refused without aco) all as expected")
        return 0
    finally:
        stop(procs)
        origin.server.shutdown()
        page.server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
