"""A message feed over Server-Sent Events, with resume, from a Flask origin using `gripcontrol`.

GET /events answers with the messages the client has not seen (after its Last-Event-ID) and
asks Holdfast to hold the stream on channel "messages"; POST /messages stores a message and
publishes it to the channel as an SSE event carrying its id. A browser's EventSource that
reconnects sends the last id it saw, so it gets exactly what it missed."""

import json
import os
import threading

from flask import Flask, Response, request
from gripcontrol import GripPubControl, create_grip_channel_header

PUBLISH_URL = os.environ.get("PUBLISH_URL", "http://127.0.0.1:5561")
PAGE = open(os.path.join(os.path.dirname(__file__), "index.html"), "rb").read()

app = Flask(__name__)
pub = GripPubControl({"control_uri": PUBLISH_URL})
messages = []  # [(id, text)], ids 1, 2, 3, ...
lock = threading.Lock()


def sse(msg_id, text):
    return f"id: {msg_id}\nevent: message\ndata: {json.dumps({'text': text})}\n\n"


@app.get("/")
def page():
    return Response(PAGE, mimetype="text/html")


@app.get("/events")
def events():
    last = request.headers.get("Last-Event-ID") or request.args.get("lastEventId") or "0"
    try:
        last = int(last)
    except ValueError:
        return Response(f"Last-Event-ID must be a number, got {last!r}\n", status=400)
    with lock:
        missed = "".join(sse(i, text) for i, text in messages if i > last)
    return Response(missed, headers={
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-cache",
        "Grip-Hold": "stream",
        "Grip-Channel": create_grip_channel_header("messages"),
    })


@app.post("/messages")
def post_message():
    text = (request.get_json(silent=True) or {}).get("text")
    if not isinstance(text, str) or not text:
        return {"error": 'the body must be JSON with a non-empty "text"'}, 400
    with lock:
        msg_id = len(messages) + 1
        messages.append((msg_id, text))
        # Published under the lock, so the channel sees the messages in id order.
        pub.publish_http_stream("messages", sse(msg_id, text), id=str(msg_id),
                                prev_id=str(msg_id - 1) if msg_id > 1 else None, blocking=True)
    return {"id": msg_id, "text": text}


if __name__ == "__main__":
    app.run("127.0.0.1", int(os.environ.get("ORIGIN_PORT", "8000")), threaded=True)
