"""A realtime leaderboard API on PostgreSQL. It reads and writes the database and tells Holdfast
what to hold; it never publishes: a trigger writes each new board to the outbox, and Holdfast's
PostgreSQL source publishes it (see schema.sql).

    GET  /scores             the board: {"version": N, "scores": [{"player", "score"}, ...]}
    GET  /scores?after=N     long-poll: the board once its version is past N
    GET  /scores/events      Server-Sent Events: the board now, then each new one
    WS   /scores/ws          WebSocket (through WebSocket-over-HTTP): the board now, then each new one
    POST /scores             {"player": "alice", "points": 3} adds points; answers the player's row

The database is reached through `psql` (no driver needed), at DATABASE_URL."""

import json
import os
import subprocess
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

DATABASE_URL = os.environ["DATABASE_URL"]
PAGE = open(os.path.join(os.path.dirname(__file__), "index.html"), "rb").read()


def sql(query, **params):
    """Runs one statement with psql variables (:'name' quotes a value), returning its output."""
    args = ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", DATABASE_URL]
    for name, value in params.items():
        args += ["-v", f"{name}={value}"]
    out = subprocess.run(args, input=query, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def board():
    return json.loads(sql("SELECT current_board();"))


def parse_events(body):
    """[(type, content)] from an application/websocket-events body."""
    events, i = [], 0
    while i < len(body):
        end = body.index(b"\r\n", i)
        kind, _, size = body[i:end].decode().partition(" ")
        i = end + 2
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


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/":
            return self.reply(200, "text/html", PAGE)
        if url.path == "/scores":
            b = board()
            after = parse_qs(url.query).get("after", [None])[0]
            body = (json.dumps(b) + "\n").encode()
            if after is None or str(b["version"]) != after:
                return self.reply(200, "application/json", body)
            # Nothing newer yet: Holdfast holds the request until the next board is published
            # (or answers this body after the timeout).
            return self.reply(200, "application/json", body, {
                "Grip-Hold": "response",
                "Grip-Channel": f"scores; prev-id={b['version']}",
                "Grip-Timeout": "55",
            })
        if url.path == "/scores/events":
            b = board()
            first = f"id: {b['version']}\nevent: scores\ndata: {json.dumps(b)}\n\n"
            return self.reply(200, "text/event-stream", first.encode(), {
                "Grip-Hold": "stream",
                "Grip-Channel": f"scores; prev-id={b['version']}",
                "Grip-Keep-Alive": ":\\n\\n; format=cstring; timeout=20",
            })
        self.reply(404, "text/plain", b"not found\n")

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if self.headers.get("Content-Type") == "application/websocket-events":
            return self.websocket(body)
        if self.path != "/scores":
            return self.reply(404, "text/plain", b"not found\n")
        try:
            change = json.loads(body)
            player, points = change["player"], int(change["points"])
            if not isinstance(player, str) or not player:
                raise ValueError("player must be a non-empty string")
        except (ValueError, KeyError, TypeError) as e:
            return self.reply(400, "text/plain", f"expected {{\"player\": \"…\", \"points\": 1}}: {e}\n".encode())
        row = sql(
            "INSERT INTO scores (player, score) VALUES (:'player', :'points')"
            " ON CONFLICT (player) DO UPDATE SET score = scores.score + excluded.score"
            " RETURNING json_build_object('player', player, 'score', score);",
            player=player, points=points,
        )
        self.reply(200, "application/json", (row + "\n").encode())

    def websocket(self, body):
        """WebSocket-over-HTTP: on OPEN, subscribe the connection and send the board now."""
        out = b""
        for kind, content in parse_events(body):
            if kind == "OPEN":
                subscribe = json.dumps({"type": "subscribe", "channel": "scores"})
                out += event("OPEN") + event("TEXT", b"c:" + subscribe.encode())
                # With the `grip` extension, messages for the client carry the "m:" prefix.
                out += event("TEXT", b"m:" + json.dumps(board()).encode())
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
