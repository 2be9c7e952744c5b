"""A real Django app using django-eventstream (database storage, sqlite) behind Holdfast.

The app (`eventstream_site`) runs under Django's runserver on a free port, routed to by
Holdfast, and publishes through Holdfast's publish API (`GRIP_URL`). Clients are `sseclient-py`
over `requests`, connected through Holdfast. django-eventstream relies on the proxy for its
event ids (the `build-id` filter renders `id: %I` from the subscription's `id_format` meta),
for `skip-users` and `require-sub` filters, for `prev-id` sequencing and for next links: to
resume a client and to page through more missed events than it renders at once.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import sseclient

HERE = Path(__file__).resolve().parent
CHANNEL = "test"
# django_eventstream.views.events renders at most this many events per response
# (eventstream.get_events(limit=100)); more are offered through a next link with no hold.
PAGE = 100
START_DEADLINE = 30.0


def event_data(n):
    # Every fifth event has a '%', which django-eventstream escapes as '%%' for the build-id
    # filter to turn back into '%'.
    return {"n": n, "text": f"event {n}" + (" is 100% delivered" if n % 5 == 0 else "")}


def expected(numbers):
    return [("message", f"{CHANNEL}:{n}", event_data(n)) for n in numbers]


def seen(events):
    out = []
    for e in events:
        try:
            data = json.loads(e.data) if e.data else e.data
        except ValueError:
            data = e.data
        out.append((e.event, e.id, data))
    return out


class EventStream:
    """An `sseclient-py` client on a django-eventstream URL through Holdfast."""

    def __init__(self, url, last_event_id=None):
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        self.resp = requests.get(url, headers=headers, stream=True, timeout=(5, 10))
        if self.resp.status_code != 200 or not self.resp.headers.get(
            "Content-Type", ""
        ).startswith("text/event-stream"):
            body = self.resp.content[:2000]
            self.resp.close()
            raise AssertionError(
                f"GET {url}: {self.resp.status_code} "
                f"{self.resp.headers.get('Content-Type')!r} {body!r}"
            )
        self._events = sseclient.SSEClient(self.resp.iter_content(chunk_size=None)).events()
        self.received = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.resp.close()

    def next(self):
        while True:
            try:
                e = next(self._events)
            except StopIteration:
                raise AssertionError(f"stream ended; received {self._summary()}") from None
            except requests.RequestException as err:
                raise AssertionError(
                    f"no event within 10 s ({err}); received {self._summary()}"
                ) from None
            if e.event == "keep-alive":
                continue
            self.received.append(e)
            return e

    def take(self, count):
        """Reads the next `count` events (keep-alives aside)."""
        return [self.next() for _ in range(count)]

    def _summary(self):
        ids = [e.id for e in self.received]
        shown = ids if len(ids) <= 12 else ids[:6] + ["..."] + ids[-6:]
        return f"{len(ids)} events, ids {shown}"


class DjangoSite:
    """The eventstream_site app under runserver, with Holdfast in front of it."""

    def __init__(self, start_holdfast, workdir):
        self.workdir = workdir
        self.db = workdir / "eventstream.sqlite3"
        self.request_log = workdir / "requests.jsonl"
        self.log_path = workdir / "django.log"
        self.proc = None
        self.holdfast = None
        for _ in range(3):
            # Hold the app's port while Holdfast picks its own free ports, so it cannot take it.
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as reserved:
                reserved.bind(("127.0.0.1", 0))
                self.port = reserved.getsockname()[1]
                self.holdfast = start_holdfast(self.port)
            if self._start():
                return
            self.holdfast.stop()
        raise AssertionError(f"the Django app did not start; log:\n{self.log()}")

    def _env(self):
        return {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
            "PYTHONUNBUFFERED": "1",
            "DJANGO_SETTINGS_MODULE": "eventstream_site.settings",
            "EVENTSTREAM_SITE_DB": str(self.db),
            "EVENTSTREAM_SITE_REQUEST_LOG": str(self.request_log),
            "GRIP_URL": self.holdfast.control_uri,
        }

    def _start(self):
        with open(self.log_path, "ab") as log:
            subprocess.run(
                [sys.executable, "-m", "django", "migrate", "--noinput", "-v", "0"],
                env=self._env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                timeout=60, check=True,
            )
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "django", "runserver", f"127.0.0.1:{self.port}",
                 "--noreload"],
                env=self._env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                time.sleep(0.05)
        self.stop()
        return False

    def events_url(self):
        return self.holdfast.url(f"/events/?channel={CHANNEL}")

    def stream(self, last_event_id=None):
        return EventStream(self.events_url(), last_event_id)

    def send(self, numbers):
        """Calls send_event() in the app for each event, straight to Django (not through
        Holdfast); returns the ids django-eventstream gave them."""
        numbers = list(numbers)
        ids = []
        for i in range(0, len(numbers), 50):
            resp = requests.post(
                f"http://127.0.0.1:{self.port}/send/",
                json={"channel": CHANNEL, "events": [event_data(n) for n in numbers[i : i + 50]]},
                timeout=30,
            )
            assert resp.status_code == 200, resp.text
            ids += resp.json()["ids"]
        assert ids == [f"{CHANNEL}:{n}" for n in numbers], "django-eventstream's own ids"
        return ids

    def requests_seen(self):
        try:
            text = self.request_log.read_text()
        except OSError:
            return []
        return [json.loads(line) for line in text.splitlines() if line]

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture
def site(start_holdfast, tmp_path):
    s = DjangoSite(start_holdfast, tmp_path)
    yield s
    s.stop()
    print(f"--- django log ({s.log_path}) ---\n{s.log()}")
    print("--- requests the Django app received ---")
    for entry in s.requests_seen():
        print(json.dumps(entry))


def open_stream(s):
    """A first event `stream-open` with empty data, as django-eventstream sends."""
    first = s.next()
    assert (first.event, first.data) == ("stream-open", ""), seen([first])


def test_send_event_reaches_an_sse_client_with_the_library_ids(site):
    with site.stream() as s:
        open_stream(s)
        # The events channel and the per-user channel django-eventstream subscribes to.
        site.holdfast.wait_subscriptions(2)
        site.send(range(1, 6))
        assert seen(s.take(5)) == expected(range(1, 6))


def test_client_resuming_with_last_event_id_gets_missed_events_then_live_ones(site):
    with site.stream() as s:
        open_stream(s)
        site.holdfast.wait_subscriptions(2)
        site.send([1, 2])
        assert seen(s.take(2)) == expected([1, 2])
    site.holdfast.wait_subscriptions(0)

    site.send([3, 4, 5])

    with site.stream(last_event_id=f"{CHANNEL}:2") as s:
        open_stream(s)
        assert seen(s.take(3)) == expected([3, 4, 5])
        site.holdfast.wait_subscriptions(2)
        site.send([6, 7])
        assert seen(s.take(2)) == expected([6, 7])

    resumed = [r for r in site.requests_seen() if r["last_event_id"] == f"{CHANNEL}:2"]
    assert resumed and resumed[0]["path"].startswith("/events/"), site.requests_seen()


def test_more_missed_events_than_a_page_arrive_through_next_links(site):
    missed = range(2, 2 * PAGE + 52)  # 250 events: two full pages and part of a third
    last_missed = missed[-1]
    with site.stream() as s:
        open_stream(s)
        site.holdfast.wait_subscriptions(2)
        site.send([1])
        assert seen(s.take(1)) == expected([1])
    site.holdfast.wait_subscriptions(0)

    site.send(missed)

    with site.stream(last_event_id=f"{CHANNEL}:1") as s:
        open_stream(s)
        got = seen(s.take(len(missed)))
        got_ids = [i for _, i, _ in got]
        want_ids = [f"{CHANNEL}:{n}" for n in missed]
        wrong = next((k for k, (g, w) in enumerate(zip(got_ids, want_ids)) if g != w), None)
        assert wrong is None, (
            f"resumed from {CHANNEL}:1, event {wrong + 1} of the stream is {got_ids[wrong]!r}, "
            f"expected {want_ids[wrong]!r} (ids {got_ids[max(0, wrong - 2) : wrong + 3]})"
        )
        assert got == expected(missed)
        site.holdfast.wait_subscriptions(2)
        live = last_missed + 1
        site.send([live])
        assert seen(s.take(1)) == expected([live])

    # The first response offered a page and a next link with no hold; Holdfast followed the
    # library's next links (`link=next&lastEventId=...`) to the last page, which held.
    log = site.requests_seen()
    first = next(r for r in log if r["last_event_id"] == f"{CHANNEL}:1")
    assert first["grip_hold"] is None and "rel=next" in (first["grip_link"] or ""), first
    pages = [r for r in log if "link=next" in r["path"] and "lastEventId=" in r["path"]]
    assert len(pages) >= 2, log
