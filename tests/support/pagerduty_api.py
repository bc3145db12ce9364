"""A real HTTP server standing in for PagerDuty's Events API v2 (``POST /v2/enqueue``).

Like PagerDuty, it answers 202 ``{"status": "success", "dedup_key": ...}``, keeps one
open incident per (routing key, dedup key) however often it is triggered, and a
resolve closes it. As in PagerDuty, a trigger for a key whose incident was resolved
does not reopen it: it creates a new incident (and pages again), which ``created``
shows. An event without a routing key, action or summary is a 400 with PagerDuty's
``errors`` list. Tests script answers and await what it has seen.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.fake_http import LoopbackServer


@dataclass(frozen=True, slots=True)
class Reply:
    status: int = 202
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    hold: threading.Event | None = None  # answer only once set (20 s at most)


class FakePagerDuty(LoopbackServer):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []
        self.open: dict[tuple[str, str], int] = {}  # (routing key, dedup key) -> triggers seen
        self.resolved: set[tuple[str, str]] = set()
        self.created: list[tuple[str, str]] = []  # one entry per PagerDuty incident opened
        self._replies: deque[tuple[Callable[[dict[str, Any]], bool], Reply]] = deque()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return _handler_for(self)

    @property
    def url(self) -> str:
        return self.base_url

    def script(self, *replies: Reply, when: Callable[[dict[str, Any]], bool] = lambda e: True) -> None:
        with self.lock:
            self._replies.extend((when, r) for r in replies)

    def answer(self, event: dict[str, Any]) -> Reply:
        with self.lock:
            self.events.append(event)
            for i, (when, reply) in enumerate(self._replies):
                if when(event):
                    del self._replies[i]
                    return reply
            problems = [
                f"'{k}' is missing" for k in ("routing_key", "event_action", "dedup_key") if not event.get(k)
            ]
            if event.get("event_action") == "trigger" and not (event.get("payload") or {}).get("summary"):
                problems.append("'payload.summary' is missing")
            if problems:
                return Reply(
                    400, {"status": "invalid event", "message": "Event object is invalid", "errors": problems}
                )
            key = (event["routing_key"], event["dedup_key"])
            if event["event_action"] == "trigger":
                if key not in self.open:
                    self.created.append(key)  # no open incident for the key: a new one
                self.open[key] = self.open.get(key, 0) + 1
            elif event["event_action"] == "resolve":
                self.open.pop(key, None)
                self.resolved.add(key)
            return Reply(
                202, {"status": "success", "message": "Event processed", "dedup_key": event["dedup_key"]}
            )


def _handler_for(fake: FakePagerDuty) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.path != "/v2/enqueue":
                self._send(404, {"status": "not found"}, {})
                return
            try:
                event = json.loads(raw)
            except ValueError:
                self._send(400, {"status": "invalid event", "errors": ["body is not JSON"]}, {})
                return
            reply = fake.answer(event)
            fake.notify_waiters()
            if reply.hold is not None:
                with fake.lock:
                    fake.held.add(reply.hold)
                reply.hold.wait(20)
            self._send(reply.status, reply.body or {"status": "error"}, reply.headers)
            fake.notify_waiters()

        def _send(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
            data = json.dumps(body).encode()
            try:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler
