"""A real HTTP server standing in for the Atlassian Statuspage REST API v1 (incidents).

``POST /v1/pages/{page}/incidents`` creates an incident (201, with ``incident_updates``
holding the first body), ``GET .../incidents/unresolved`` lists those not resolved, and
``PATCH .../incidents/{id}`` changes status and adds an update. ``Authorization: OAuth
<key>`` is required (401 otherwise). Tests script answers per method: a 5xx does nothing,
unless ``commit`` says the request took effect before the answer was lost.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from tests.support.fake_http import LoopbackServer, Reply, read_json, send_json


@dataclass(frozen=True, slots=True)
class Seen:
    method: str
    path: str
    body: dict[str, Any]
    auth: str


class FakeStatuspage(LoopbackServer):
    def __init__(self, page_id: str = "pg1", api_key: str = "SP-KEY") -> None:
        super().__init__()
        self.page_id, self.api_key = page_id, api_key
        self.requests: list[Seen] = []
        self.incidents: list[dict[str, Any]] = []  # in creation order
        self._replies: deque[tuple[str, Reply]] = deque()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return _handler_for(self)

    @property
    def url(self) -> str:
        return self.base_url

    def script(self, method: str, *replies: Reply) -> None:
        with self.lock:
            self._replies.extend((method, r) for r in replies)

    def calls(self, method: str) -> list[Seen]:
        with self.lock:
            return [r for r in self.requests if r.method == method]

    def answer(self, seen: Seen) -> tuple[int, Any, tuple[tuple[str, str], ...]]:
        with self.lock:
            self.requests.append(seen)
            if seen.auth != f"OAuth {self.api_key}":
                return 401, {"error": "Could not authenticate"}, ()
            scripted = next((r for m, r in self._replies if m == seen.method), None)
            if scripted is not None:
                self._replies.remove((seen.method, scripted))
                if not scripted.commit:
                    return scripted.status, scripted.body or {"error": "scripted"}, scripted.headers
            status, body = self._do(seen)
            if scripted is not None:
                return scripted.status, scripted.body or {}, scripted.headers
            return status, body, ()

    def _do(self, seen: Seen) -> tuple[int, Any]:
        base = f"/v1/pages/{self.page_id}/incidents"
        if seen.method == "POST" and seen.path == base:
            new = seen.body.get("incident") or {}
            if not new.get("name"):
                return 422, {"error": "name can't be blank"}
            incident = {
                "id": f"sp{len(self.incidents) + 1}",
                "name": new["name"],
                "status": new.get("status", "investigating"),
                "impact": new.get("impact_override", "none"),
                "metadata": new.get("metadata") or {},
                "incident_updates": [{"status": new.get("status"), "body": new.get("body", "")}],
            }
            self.incidents.append(incident)
            return 201, incident
        if seen.method == "GET" and seen.path == f"{base}/unresolved":
            return 200, [i for i in self.incidents if i["status"] not in ("resolved", "postmortem")]
        match = re.fullmatch(re.escape(base) + r"/([^/]+)", seen.path)
        if seen.method == "PATCH" and match is not None:
            incident = next((i for i in self.incidents if i["id"] == match.group(1)), None)
            if incident is None:
                return 404, {"error": "not found"}
            change = seen.body.get("incident") or {}
            incident["status"] = change.get("status", incident["status"])
            incident["incident_updates"].append({"status": incident["status"], "body": change.get("body")})
            return 200, incident
        return 404, {"error": "not found"}


def _handler_for(fake: FakeStatuspage) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def do_PATCH(self) -> None:
            self._handle("PATCH")

        def _handle(self, method: str) -> None:
            body = read_json(self)
            seen = Seen(method, urlsplit(self.path).path, body, self.headers.get("authorization", ""))
            status, answer, headers = fake.answer(seen)
            fake.notify_waiters()
            send_json(self, status, answer, headers)
            fake.notify_waiters()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler
