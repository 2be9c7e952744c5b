"""A bounded, seeded soak of Holdfast's per-channel history with a real SSE client.

The origin knows nothing about past events: it answers every request with a stream hold on
channel `soak`, adding `prev-id=<Last-Event-ID>` when the client sent one, and gives no next
link. A publisher sends 1,000 SSE events with `id`/`prev-id` while an `sseclient-py` client
disconnects at seeded-random points and resumes with `Last-Event-ID`. Every gap must be filled
from Holdfast's history, so the client sees each event exactly once, in order, and the origin
sees one request per connection and nothing more.
"""

import random
import threading
import time

import requests
import sseclient
from gripcontrol import GripPubControl

from harness import Background, Origin, Reply, wait_until

EVENTS = 1000
SEED = 1234
CHANNEL = "soak"
# History big enough for the whole run, so no gap can fall outside it.
CONFIG = """
[reliability]
history_items = 2000
history_max_age_secs = 300
"""
# Pause between publishes, so the run lasts a few seconds and the client's disconnects fall
# while events are still being published live: each resume then hands over from history
# replay to live delivery, the part most likely to lose or repeat an event.
PUBLISH_PACE = 0.003
RUN_DEADLINE = 45.0


def event_data(n):
    # Varying lengths, so events straddle chunk boundaries at different offsets.
    return f"event {n} " + "x" * (n * 7 % 113)


def soak_origin(req):
    last = req.headers.get("Last-Event-ID")
    channel = f"{CHANNEL}; prev-id={last}" if last else CHANNEL
    return Reply(
        200,
        [
            ("Content-Type", "text/event-stream"),
            ("Cache-Control", "no-cache"),
            ("Grip-Hold", "stream"),
            ("Grip-Channel", channel),
        ],
        b"",
    )


class Publisher:
    """Publishes events 1..EVENTS in order through the publish API, counting what it sent."""

    def __init__(self, control_uri):
        self.control_uri = control_uri
        self.published = 0
        self._stop = threading.Event()

    def run(self):
        pub = GripPubControl({"control_uri": self.control_uri})
        try:
            for n in range(1, EVENTS + 1):
                if self._stop.is_set():
                    return
                pub.publish_http_stream(
                    CHANNEL,
                    f"id: {n}\ndata: {event_data(n)}\n\n",
                    id=str(n),
                    prev_id=str(n - 1),
                    blocking=True,
                )
                self.published = n
                time.sleep(PUBLISH_PACE)
        finally:
            pub.close()

    def stop(self):
        self._stop.set()


def test_sse_client_resuming_with_last_event_id_gets_every_event_once_in_order(
    start_holdfast,
):
    rng = random.Random(SEED)
    # Disconnect right after receiving each of these event ids, then wait until the publisher
    # is `gap` events further on (0 to 40 events missed) before resuming.
    cuts = sorted(rng.sample(range(1, EVENTS), rng.randint(10, 30)))
    gaps = [rng.randint(0, 40) for _ in cuts]

    origin = Origin()
    origin.respond = soak_origin
    holdfast = start_holdfast(origin.port, CONFIG)
    publisher = Publisher(holdfast.control_uri)
    publishing = None
    received = []
    resumed_from = []
    try:
        deadline = time.monotonic() + RUN_DEADLINE
        last_id = None
        cut_index = 0
        while last_id != str(EVENTS):
            assert time.monotonic() < deadline, (
                f"soak still running after {RUN_DEADLINE}s: {len(received)} events received, "
                f"last id {last_id}"
            )
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
                resumed_from.append(last_id)
            with requests.get(
                holdfast.url("/soak"), headers=headers, stream=True, timeout=(5, 10)
            ) as resp:
                assert resp.status_code == 200, resp.text
                assert resp.headers["Content-Type"] == "text/event-stream"
                if publishing is None:
                    holdfast.wait_subscriptions(1)
                    publishing = Background(publisher.run)
                try:
                    for event in sseclient.SSEClient(resp.iter_content(chunk_size=None)).events():
                        received.append((event.id, event.data))
                        expected = 1 if last_id is None else int(last_id) + 1
                        assert event.id == str(expected), (
                            f"after event {last_id} the client got event {event.id!r}, "
                            f"expected {expected} (connection {len(resumed_from) + 1}, "
                            f"resumed from {resumed_from[-1:] or None})"
                        )
                        last_id = event.id
                        n = int(event.id)
                        if n == EVENTS:
                            break
                        if cut_index < len(cuts) and n >= cuts[cut_index]:
                            break
                    else:
                        raise AssertionError(f"stream ended after event {last_id}")
                except requests.RequestException as e:
                    if publishing.done():
                        publishing.result(timeout=0)
                    raise AssertionError(
                        f"no further event within 10 s after id {last_id} "
                        f"({len(received)} received, {publisher.published} published): {e}"
                    ) from None
            if last_id == str(EVENTS):
                break
            target = min(EVENTS, int(last_id) + gaps[cut_index])
            cut_index += 1
            wait_until(
                lambda: publisher.published >= target or publishing.done(),
                15,
                f"the publisher to reach event {target}",
            )

        publishing.result(timeout=15)
        assert publisher.published == EVENTS

        # Each id was checked on arrival; this checks the data too.
        assert received == [(str(n), event_data(n)) for n in range(1, EVENTS + 1)]
        assert len(resumed_from) == len(cuts)

        # One origin request per client connection: every gap came from Holdfast's history.
        seen = [r.headers.get("Last-Event-ID") for r in origin.seen()]
        assert seen == [None] + resumed_from
    finally:
        publisher.stop()
        origin.stop()
