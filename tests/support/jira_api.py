"""A real HTTP server standing in for Jira's REST API v2: create issue, JQL search, comments.

``POST /rest/api/2/issue`` creates ``<PROJECT>-<n>`` and answers 201 ``{id, key, self}``;
``GET /rest/api/2/search/jql?jql=labels = "<label>"`` finds issues by label (the only JQL it
understands), with the ``fields`` asked for, as Jira Cloud does (``/rest/api/2/search`` with
``cloud=False``). ``POST /rest/api/2/issue/{key}/comment`` adds a comment (201 ``{id, body}``),
``GET`` on it lists them (``{comments, total}``). Requests without basic auth are a 401. Tests
script answers: a 5xx creates nothing, unless ``commit`` says the request took effect before
the answer was lost (a 504 from a proxy after Jira created the issue or the comment).
"""

from __future__ import annotations

import base64
import re
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.fake_http import LoopbackServer, Reply, read_json, send_json


@dataclass(frozen=True, slots=True)
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    body: dict[str, Any]
    auth: str | None  # "user:password" of the basic auth header


class FakeJira(LoopbackServer):
    def __init__(self, *, cloud: bool = True) -> None:
        """``cloud``: search at ``/rest/api/2/search/jql``; else at ``/rest/api/2/search``
        only, as Jira Data Center."""
        super().__init__()
        self.cloud = cloud
        self.requests: list[Seen] = []
        self.issues: list[dict[str, Any]] = []  # {"id", "key", "fields"}, in creation order
        self.comments: dict[str, list[dict[str, Any]]] = {}  # issue key -> {"id", "body"}
        self._replies: deque[tuple[str, Reply]] = deque()  # (method, reply)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return _handler_for(self)

    @property
    def url(self) -> str:
        return self.base_url

    def script(self, method: str, *replies: Reply) -> None:
        """The next requests with ``method`` (GET: search or comments, POST: create or comment)
        get these replies."""
        with self.lock:
            self._replies.extend((method, r) for r in replies)

    def creates(self) -> list[Seen]:
        with self.lock:
            return [r for r in self.requests if r.method == "POST" and r.path == "/rest/api/2/issue"]

    def comment_bodies(self, key: str) -> list[str]:
        with self.lock:
            return [str(c["body"]) for c in self.comments.get(key, [])]

    def answer(self, seen: Seen) -> tuple[int, dict[str, Any], tuple[tuple[str, str], ...]]:
        with self.lock:
            self.requests.append(seen)
            if seen.auth is None:
                return 401, {"errorMessages": ["You are not authenticated."]}, ()
            scripted = next((r for m, r in self._replies if m == seen.method), None)
            if scripted is not None:
                self._replies.remove((seen.method, scripted))
                if not scripted.commit:
                    return scripted.status, scripted.body or {"errorMessages": ["scripted"]}, scripted.headers
            status, body = self._do(seen)
            if scripted is not None:
                return scripted.status, scripted.body or {}, scripted.headers
            return status, body, ()

    def _do(self, seen: Seen) -> tuple[int, dict[str, Any]]:
        if seen.method == "POST" and seen.path == "/rest/api/2/issue":
            fields = seen.body.get("fields") or {}
            missing = [f for f in ("project", "issuetype", "summary") if not fields.get(f)]
            if missing:
                return 400, {"errorMessages": [], "errors": {f: f"{f} is required." for f in missing}}
            n = len(self.issues) + 1
            key = f"{fields['project']['key']}-{n}"
            self.issues.append({"id": str(10000 + n), "key": key, "fields": fields})
            return 201, {"id": str(10000 + n), "key": key, "self": f"{self.base_url}/rest/api/2/issue/{n}"}
        search = "/rest/api/2/search/jql" if self.cloud else "/rest/api/2/search"
        if seen.method == "GET" and seen.path == search:
            jql = (seen.query.get("jql") or [""])[0]
            match = re.fullmatch(r'\s*labels\s*=\s*"([^"]+)"\s*', jql)
            if match is None:
                return 400, {"errorMessages": [f"the stand-in does not understand {jql!r}"]}
            found = [i for i in self.issues if match.group(1) in i["fields"].get("labels", [])]
            wanted = [f for f in (seen.query.get("fields") or [""])[0].split(",") if f]
            issues = [
                {"id": i["id"], "key": i["key"], "fields": {f: i["fields"].get(f) for f in wanted}}
                for i in found
            ]
            return 200, {"issues": issues, "isLast": True}
        comment = re.fullmatch(r"/rest/api/2/issue/([^/]+)/comment", seen.path)
        if comment is not None and any(i["key"] == comment.group(1) for i in self.issues):
            comments = self.comments.setdefault(comment.group(1), [])
            if seen.method == "GET":
                return 200, {"comments": list(comments), "total": len(comments), "startAt": 0}
            if seen.method == "POST":
                if not seen.body.get("body"):
                    return 400, {"errorMessages": [], "errors": {"comment": "Comment body can not be empty!"}}
                comments.append({"id": str(20000 + len(comments)), "body": seen.body["body"]})
                return 201, comments[-1]
        return 404, {"errorMessages": ["not found"]}


def _handler_for(fake: FakeJira) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def _handle(self, method: str) -> None:
            body = read_json(self)
            parts = urlsplit(self.path)
            auth = self.headers.get("authorization", "")
            user = base64.b64decode(auth[6:]).decode() if auth.startswith("Basic ") else None
            seen = Seen(method, parts.path, parse_qs(parts.query), body, user)
            status, answer, headers = fake.answer(seen)
            fake.notify_waiters()
            send_json(self, status, answer, headers)
            fake.notify_waiters()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler
