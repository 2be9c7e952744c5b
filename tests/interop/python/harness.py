"""The pieces the Python interop tests are built from: the holdfast binary as a subprocess, an
origin written in the test, and helpers to read streams and wait for conditions.

Every test gets its own Holdfast on free loopback ports and its own origin; nothing is shared
between tests. Waits poll for a condition against a deadline, never a fixed sleep.
"""

import os
import re
import signal
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

START_DEADLINE = 15.0
SUBSCRIPTIONS = re.compile(r"^holdfast_subscriptions (\d+)\s*$", re.MULTILINE)


def wait_until(predicate, timeout, what):
    """Polls `predicate` until it returns a truthy value or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OriginRequest:
    """What the origin saw: method, path, headers (case-insensitive) and body."""

    def __init__(self, handler, body):
        self.method = handler.command
        self.path = handler.path
        self.headers = handler.headers
        self.body = body


class Reply:
    """What the origin answers: status, a list of (name, value) headers, and a body."""

    def __init__(self, status=200, headers=(), body=b""):
        self.status = status
        self.headers = list(headers)
        self.body = body.encode() if isinstance(body, str) else body


class Origin:
    """An HTTP/1.1 origin in a thread. `respond(request) -> Reply` decides each answer."""

    def __init__(self):
        self.respond = lambda req: Reply(200, [("Content-Type", "text/plain")], "origin\n")
        self.requests = []
        self._lock = threading.Lock()
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                req = OriginRequest(self, self.rfile.read(length) if length else b"")
                with origin._lock:
                    origin.requests.append(req)
                reply = origin.respond(req)
                self.send_response(reply.status)
                for name, value in reply.headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = do_POST = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def seen(self):
        with self._lock:
            return list(self.requests)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Holdfast:
    """The holdfast binary as a subprocess on free ports, routing everything to one origin.

    `config`, when given, is the text of a TOML configuration file passed with `--config`;
    `args` are more command-line arguments. `auth`, when given, is the `Authorization` header
    value this harness sends to the publish API's `/metrics` (when publish auth is configured).
    """

    # Class defaults, for subclasses that set up their own routes and skip __init__.
    config_path = None
    args = ()
    metrics_headers = None

    def __init__(self, binary, workdir, origin_port, config=None, args=(), auth=None):
        self.binary = binary
        self.workdir = workdir
        self.args = list(args)
        self.metrics_headers = {"Authorization": auth} if auth else None
        self.routes = workdir / "routes"
        self.routes.write_text(f"* 127.0.0.1:{origin_port}\n")
        if config is not None:
            self.config_path = workdir / "holdfast.toml"
            self.config_path.write_text(config)
        self.log_path = workdir / "holdfast.log"
        self.proc = None
        self._start()

    def _start(self):
        # A port found free can be taken before Holdfast binds it: retry with new ports.
        for _ in range(3):
            self.port, self.pub_port = free_port(), free_port()
            args = [
                str(self.binary),
                "--listen", f"127.0.0.1:{self.port}",
                "--publish-listen", f"127.0.0.1:{self.pub_port}",
                "--routes", str(self.routes),
                "--log-level", "info",
            ]
            if self.config_path is not None:
                args += ["--config", str(self.config_path)]
            args += list(self.args)
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "NO_COLOR": "1"},
            )
            log.close()
            if self._wait_ready():
                return
        raise AssertionError(f"holdfast did not start; log:\n{self.log()}")

    def _wait_ready(self):
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                metrics = requests.get(
                    self.pub_url("/metrics"), headers=self.metrics_headers, timeout=2
                )
                if metrics.status_code == 200:
                    return True
            except (OSError, requests.RequestException):
                pass
            time.sleep(0.02)
        self.stop()
        return False

    def url(self, path="/"):
        return f"http://127.0.0.1:{self.port}{path}"

    def pub_url(self, path="/"):
        return f"http://127.0.0.1:{self.pub_port}{path}"

    @property
    def control_uri(self):
        return f"http://127.0.0.1:{self.pub_port}"

    def subscriptions(self):
        text = requests.get(self.pub_url("/metrics"), headers=self.metrics_headers, timeout=5).text
        m = SUBSCRIPTIONS.search(text)
        assert m, f"no holdfast_subscriptions in /metrics:\n{text}"
        return int(m.group(1))

    def wait_subscriptions(self, n, timeout=10.0):
        last = []

        def reached():
            last.append(self.subscriptions())
            return last[-1] == n

        try:
            wait_until(reached, timeout, f"holdfast_subscriptions == {n}")
        except AssertionError as e:
            raise AssertionError(f"{e} (last value {last[-1] if last else None})") from None

    def is_running(self):
        return self.proc.poll() is None

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


class Background:
    """Runs a blocking call in a thread; `result()` waits for it with a deadline."""

    def __init__(self, fn, *args, **kwargs):
        self._value = None
        self._error = None
        self._done = threading.Event()

        def run():
            try:
                self._value = fn(*args, **kwargs)
            except BaseException as e:  # noqa: BLE001 - re-raised in result()
                self._error = e
            finally:
                self._done.set()

        threading.Thread(target=run, daemon=True).start()

    def done(self):
        return self._done.is_set()

    def result(self, timeout):
        if not self._done.wait(timeout):
            raise AssertionError(f"call did not finish within {timeout}s")
        if self._error is not None:
            raise self._error
        return self._value




class StreamReader:
    """Reads a streaming `requests` response as it arrives, chunk by chunk."""

    def __init__(self, resp):
        self.resp = resp
        self.data = b""
        self._chunks = resp.iter_content(chunk_size=None)
        self.ended = False

    def read_until(self, expected, timeout=10.0):
        """Reads until the body received so far contains `expected`; returns all of it."""
        deadline = time.monotonic() + timeout
        while expected not in self.data:
            if self.ended:
                raise AssertionError(f"stream ended before {expected!r}; got {self.data!r}")
            if time.monotonic() >= deadline:
                raise AssertionError(f"no {expected!r} within {timeout}s; got {self.data!r}")
            self._next()
        return self.data

    def read_to_end(self, timeout=10.0):
        """Reads until the server ends the response; returns the whole body."""
        deadline = time.monotonic() + timeout
        while not self.ended:
            if time.monotonic() >= deadline:
                raise AssertionError(f"stream still open after {timeout}s; got {self.data!r}")
            self._next()
        return self.data

    def _next(self):
        # Each read is bounded by the read timeout the request was made with.
        try:
            self.data += next(self._chunks)
        except StopIteration:
            self.ended = True
        except requests.RequestException as e:
            raise AssertionError(f"reading the stream failed ({e}); got {self.data!r}") from e
