#!/usr/bin/env python3
"""The status page in a real browser: headless Chromium, driven over the DevTools protocol on a
pipe (--remote-debugging-pipe), loads http://127.0.0.1:<publish port>/status from a Holdfast
whose publish API wants HTTP Basic credentials, answering the browser's credential challenge as
a user would. Then a client holds a stream on channel `test` and an item is published: the
page, updated over its own /status/events stream, must show the held session and the delivery,
with no error on the browser console. A screenshot of the page is kept in the output directory
(printed; set STATUS_OUT to choose it).

    HOLDFAST_BIN=target/debug/holdfast CHROMIUM=/usr/bin/chromium tests/browser/status.py

Standard library only. Every wait is bounded; nothing sleeps in place of waiting for an event.
"""

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading

from cross_origin import accepts, free_port, publish_item, stop, tools, wait_until

DEADLINE = 60.0
USER, PASS = "operator", "status-pass"


class Cdp:
    """The DevTools protocol over Chromium's pipe: NUL-terminated JSON messages, fd 3 into the
    browser and fd 4 out of it. A reader thread answers credential challenges and lets paused
    requests go on, and keeps every console error and uncaught exception."""

    def __init__(self, chromium, work):
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        self.proc = subprocess.Popen(
            ["sh", "-c", f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w}', chromium,
             "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions",
             "--remote-debugging-pipe", f"--user-data-dir={os.path.join(work, 'profile')}",
             "about:blank"],
            pass_fds=(to_browser_r, from_browser_w), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next = 0
        self._lock = threading.Lock()
        self._answers = {}
        self._answered = threading.Condition()
        self.errors = []
        self.auth_challenges = 0
        self.session = None
        threading.Thread(target=self._read, daemon=True).start()

    def _send(self, method, params=None, session=None):
        with self._lock:
            self._next += 1
            msg = {"id": self._next, "method": method, "params": params or {}}
            if session:
                msg["sessionId"] = session
            os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
            return self._next

    def call(self, method, params=None, session=None, timeout=15):
        n = self._send(method, params, session)
        with self._answered:
            if not self._answered.wait_for(lambda: n in self._answers, timeout):
                raise AssertionError(f"no answer to {method} within {timeout} s")
            answer = self._answers.pop(n)
        if "error" in answer:
            raise AssertionError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    def _read(self):
        buf = b""
        while True:
            try:
                data = os.read(self._from_browser, 65536)
            except OSError:
                data = b""
            if not data:
                with self._answered:
                    self._answered.notify_all()
                return
            buf += data
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                self._handle(json.loads(raw))

    def _handle(self, msg):
        if "id" in msg:
            with self._answered:
                self._answers[msg["id"]] = msg
                self._answered.notify_all()
            return
        method, params, session = msg.get("method"), msg.get("params", {}), msg.get("sessionId")
        if method == "Fetch.requestPaused":
            self._send("Fetch.continueRequest", {"requestId": params["requestId"]}, session)
        elif method == "Fetch.authRequired":
            self.auth_challenges += 1
            self._send("Fetch.continueWithAuth", {
                "requestId": params["requestId"],
                "authChallengeResponse": {"response": "ProvideCredentials",
                                          "username": USER, "password": PASS}}, session)
        elif method == "Runtime.exceptionThrown":
            self.errors.append("exception: " + json.dumps(params["exceptionDetails"]))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append("console: " + json.dumps(params.get("args")))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"log: {entry.get('text')} ({entry.get('url', '')})")

    def open(self, url):
        """A new page, attached, with every domain the test listens to on, loading `url`."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget",
                                 {"targetId": target, "flatten": True})["sessionId"]
        for method, params in [
            ("Runtime.enable", {}), ("Log.enable", {}), ("Page.enable", {}),
            ("Fetch.enable", {"handleAuthRequests": True, "patterns": [{"urlPattern": "*"}]}),
            ("Emulation.setDeviceMetricsOverride",
             {"width": 1100, "height": 1500, "deviceScaleFactor": 1, "mobile": False}),
        ]:
            self.call(method, params, self.session)
        self.call("Page.navigate", {"url": url}, self.session)

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                           self.session)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path):
        shot = self.call("Page.captureScreenshot", {"format": "png"}, self.session)
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))


# What the page shows, read from its DOM; null until the page has loaded.
SHOWN = """document.getElementById('live') && JSON.stringify({
  live: document.getElementById('live').textContent,
  clients: document.getElementById('clients').textContent,
  held: document.getElementById('held-total').textContent,
  delivered: document.getElementById('delivered').textContent,
  published: document.getElementById('published').textContent,
  busiest: Array.from(document.querySelectorAll('#busiest tr'), r => r.textContent),
  transports: Array.from(document.querySelectorAll('#transports tr'),
                         r => Array.from(r.cells, c => c.textContent)),
  chart: document.getElementById('line-delivered').getAttribute('points'),
  rate: document.getElementById('delivered-rate').textContent,
})"""


def shown(cdp):
    value = cdp.evaluate(SHOWN)
    return json.loads(value) if value else {"live": "not loaded"}


def main():
    binary, chromium = tools()
    if not chromium:
        return 2
    work = tempfile.mkdtemp(prefix="holdfast-browser-status-")
    out = os.environ.get("STATUS_OUT") or work
    os.makedirs(out, exist_ok=True)
    port, publish = free_port(), free_port()
    procs, client = [], None
    last = {}
    try:
        procs.append(subprocess.Popen([binary, "--listen", f"127.0.0.1:{port}",
                                       "--publish-listen", f"127.0.0.1:{publish}",
                                       "--publish-basic", f"{USER}:{PASS}",
                                       "--log-level", "error"]))
        wait_until(lambda: accepts(port) and accepts(publish), 15, "holdfast to listen")
        cdp = Cdp(chromium, work)
        procs.append(cdp.proc)
        cdp.open(f"http://127.0.0.1:{publish}/status")

        def page_shows(pred, what):
            def check():
                last.clear()
                last.update(shown(cdp))
                return last["live"] != "not loaded" and pred(last)
            wait_until(check, DEADLINE, f"the page to show {what} (it shows {last})")

        page_shows(lambda s: s["live"] == "live" and s["held"] == "0" and s["delivered"] == "0",
                   "a live stream with nothing held or delivered")
        if cdp.auth_challenges == 0:
            raise AssertionError("the browser was never asked for credentials")

        # A client holds a stream on channel `test` (the built-in test handler).
        client = socket.create_connection(("127.0.0.1", port), timeout=10)
        client.sendall(b"GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n")
        opened = b""
        while b"[stream opened]" not in opened:
            chunk = client.recv(4096)
            if not chunk:
                raise AssertionError(f"the stream closed: {opened!r}")
            opened += chunk
        page_shows(lambda s: s["held"] == "1" and int(s["clients"]) >= 1
                   and any(r.startswith("test") for r in s["busiest"]),
                   "the held stream and channel test")
        if ["stream / SSE", "1", "1"] not in last["transports"]:
            raise AssertionError(f"transport table: {last['transports']}")

        creds = base64.b64encode(f"{USER}:{PASS}".encode()).decode()
        item = {"channel": "test", "formats": {"http-stream": {"content": "hello\n"}}}
        publish_item(publish, item, f"Basic {creds}")
        got = b""
        while b"hello\n" not in got:
            chunk = client.recv(4096)
            if not chunk:
                raise AssertionError(f"the stream closed before the publish: {got!r}")
            got += chunk
        page_shows(lambda s: s["delivered"] == "1" and s["published"] == "1"
                   and s["chart"] != "", "the delivery, counted and charted")

        shot = os.path.join(out, "status.png")
        cdp.screenshot(shot)
        print(f"browser: screenshot of the status page: {shot}")
        if cdp.errors:
            for e in cdp.errors:
                print("browser: FAIL console " + e, file=sys.stderr)
            return 1
        print(f"browser: {os.path.basename(chromium)} showed /status on http://127.0.0.1:"
              f"{publish} behind Basic auth; a held stream and a delivery appeared live, "
              f"no console errors")
        return 0
    except AssertionError as e:
        print(f"browser: FAIL {e}", file=sys.stderr)
        return 1
    finally:
        if client:
            client.close()
        stop(procs)
        # Keep the screenshot, not the browser's profile.
        shutil.rmtree(work if out != work else os.path.join(work, "profile"), ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
