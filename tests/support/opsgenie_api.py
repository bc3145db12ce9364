"""A real HTTP server standing in for the Opsgenie Alert API (v2), on a free loopback port.

It answers the two calls incidentd makes, the way Opsgenie does:

* ``POST /v2/alerts`` (create): 202 ``{"result": "Request will be processed", "took", "requestId"}``.
  Opsgenie deduplicates creates by ``alias`` while an alert with that alias is open:
  a second create for an open alias bumps that alert's ``count`` instead of creating
  (and paging for) a new one.
* ``POST /v2/alerts/{identifier}/close?identifierType=alias``: 202, same shape; closes the alert.

Requests without ``Authorization: GenieKey <key>`` get 401, payloads Opsgenie would
reject (no message, message over 130 characters, unknown priority) get 422.

Every request is recorded (method, path, query, headers, JSON body). Answers can be
scripted per endpoint, optionally only for the requests a predicate selects, as a
queue of :class:`Reply`; when no scripted reply applies the server behaves normally.
A reply can be held until a :class:`threading.Event` is set, which is how tests keep a
call in flight for as long as they need.

The server runs in its own threads, so a held answer never blocks the test's event
loop; :meth:`FakeOpsgenie.wait_for` lets async tests await what the server has seen.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from tests.support.fake_http import LoopbackServer

Endpoint = Literal["create", "acknowledge", "close"]

PRIORITIES = frozenset({"P1", "P2", "P3", "P4", "P5"})
MESSAGE_LIMIT = 130
ALIAS_LIMIT = 512
# A held reply never waits longer than this: a test that forgets to release it fails, it does not hang.
HOLD_LIMIT_SECONDS = 20.0


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted answer. ``body=None`` means Opsgenie's usual body for ``status``."""

    status: int = 202
    headers: Mapping[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    hold: threading.Event | None = None
    drop: bool = False  # close the connection without answering
    raw: bytes | None = None  # a body that is not Opsgenie's JSON (say, a proxy's HTML page)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: Any
    endpoint: Endpoint | None
    identifier: str | None  # the alias: from the body for a create, the path for a close

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True, slots=True)
class Answered:
    request: RecordedRequest
    status: int
    request_id: str

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


@dataclass(slots=True)
class FakeAlert:
    alias: str
    message: str
    priority: str
    payload: dict[str, Any]
    api_key: str
    status: Literal["open", "closed"] = "open"
    count: int = 1
    close_note: str | None = None
    acknowledged: bool = False


@dataclass(slots=True)
class _Rule:
    endpoint: Endpoint
    when: Callable[[RecordedRequest], bool] | None
    replies: deque[Reply]


class FakeOpsgenie(LoopbackServer):
    def __init__(self, api_keys: set[str] | None = None, prefix: str = "") -> None:
        """``api_keys``: the keys the API accepts (401 for others); ``None`` accepts any key.
        ``prefix``: where the API is mounted (Jira Service Management Ops serves it under
        ``/jsm/ops/integration``); any other path is a 404."""
        super().__init__()
        self.prefix = prefix.rstrip("/")
        self._api_keys = api_keys
        self._requests: list[RecordedRequest] = []
        self._answers: list[Answered] = []
        self._alerts: list[FakeAlert] = []
        self._rules: list[_Rule] = []

    # -- lifecycle -----------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return _handler_for(self)

    @property
    def url(self) -> str:
        return self.base_url + self.prefix

    # -- scripting -------------------------------------------------------------

    def script(
        self,
        endpoint: Endpoint,
        *replies: Reply,
        when: Callable[[RecordedRequest], bool] | None = None,
    ) -> None:
        """Queue answers for ``endpoint``; with ``when``, only for the requests it selects.

        Rules are tried in the order they were added; an exhausted rule no longer applies.
        """
        with self.lock:
            self._rules.append(_Rule(endpoint, when, deque(replies)))

    # -- what the server saw ---------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self.lock:
            return list(self._requests)

    @property
    def answers(self) -> list[Answered]:
        with self.lock:
            return list(self._answers)

    @property
    def alerts(self) -> list[FakeAlert]:
        """Every distinct alert ever created (a deduplicated create is not one)."""
        with self.lock:
            return list(self._alerts)

    def requests_to(self, endpoint: Endpoint, alias: str | None = None) -> list[RecordedRequest]:
        return [
            r for r in self.requests if r.endpoint == endpoint and (alias is None or r.identifier == alias)
        ]

    def accepted(self, endpoint: Endpoint, alias: str | None = None) -> list[Answered]:
        return [
            a
            for a in self.answers
            if a.accepted
            and a.request.endpoint == endpoint
            and (alias is None or a.request.identifier == alias)
        ]

    def open_alerts(self) -> list[FakeAlert]:
        return [a for a in self.alerts if a.status == "open"]

    def alerts_with(self, alias: str) -> list[FakeAlert]:
        return [a for a in self.alerts if a.alias == alias]

    # -- request handling (server threads) ---------------------------------------

    def _record(self, request: RecordedRequest) -> Reply | None:
        with self.lock:
            self._requests.append(request)
            reply = self._scripted(request)
            if reply is not None and reply.hold is not None:
                self.held.add(reply.hold)
        self.notify_waiters()
        return reply

    def _scripted(self, request: RecordedRequest) -> Reply | None:
        for rule in self._rules:
            if rule.endpoint != request.endpoint or not rule.replies:
                continue
            if rule.when is not None and not _safe(rule.when, request):
                continue
            return rule.replies.popleft()
        return None

    def answer_request(
        self, request: RecordedRequest
    ) -> tuple[int, dict[str, str], dict[str, Any] | bytes] | None:
        """The answer to send, or None to hang up without one."""
        request_id = str(uuid.uuid4())
        reply = self._record(request)
        if reply is not None and reply.hold is not None:
            reply.hold.wait(HOLD_LIMIT_SECONDS)
        if reply is not None and reply.drop:
            with self.lock:
                self._answers.append(Answered(request, 0, request_id))
            self.notify_waiters()
            return None
        body: dict[str, Any] | bytes
        if reply is not None and not 200 <= reply.status < 300:
            status, headers = reply.status, dict(reply.headers)
            body = reply.body if reply.body is not None else _error_body(status, request_id)
        else:
            status, body = self._apply(request, request_id)
            headers = dict(reply.headers) if reply is not None else {}
            if reply is not None and reply.body is not None:
                body = reply.body
        if reply is not None and reply.raw is not None:
            body = reply.raw
        with self.lock:
            self._answers.append(Answered(request, status, request_id))
        self.notify_waiters()
        return status, headers, body

    def _apply(self, request: RecordedRequest, request_id: str) -> tuple[int, dict[str, Any]]:
        """What Opsgenie does with a request it accepts (or rejects as invalid)."""
        if request.endpoint is None:
            return 404, _error_body(404, request_id, "No handler found for the requested path")
        auth = request.header("Authorization") or ""
        scheme, _, key = auth.partition(" ")
        if (
            scheme != "GenieKey"
            or not key.strip()
            or (self._api_keys is not None and key.strip() not in self._api_keys)
        ):
            return 401, _error_body(401, request_id, "Could not authenticate")
        if request.endpoint == "create":
            problem = _create_problem(request.body)
            if problem:
                return 422, {**_error_body(422, request_id, "Request has not been processed"), **problem}
            body = request.body
            with self.lock:
                existing = next(
                    (a for a in self._alerts if a.alias == body["alias"] and a.status == "open"), None
                )
                if existing is not None:
                    existing.count += 1
                else:
                    self._alerts.append(
                        FakeAlert(
                            alias=body["alias"],
                            message=body["message"],
                            priority=body.get("priority", "P3"),
                            payload=body,
                            api_key=key.strip(),
                        )
                    )
        else:
            if request.query.get("identifierType") != ["alias"]:
                return 422, _error_body(422, request_id, "this fake only acts by alias")
            note = request.body.get("note") if isinstance(request.body, dict) else None
            with self.lock:
                for alert in self._alerts:
                    if alert.alias == request.identifier and alert.status == "open":
                        if request.endpoint == "acknowledge":
                            alert.acknowledged = True
                        else:
                            alert.status = "closed"
                            alert.close_note = note
        return 202, {"result": "Request will be processed", "took": 0.01, "requestId": request_id}


def _safe(predicate: Callable[[RecordedRequest], bool], request: RecordedRequest) -> bool:
    try:
        return bool(predicate(request))
    except (KeyError, TypeError, AttributeError):
        return False


def _create_problem(body: Any) -> dict[str, Any] | None:
    if not isinstance(body, dict):
        return {"errors": {"body": "Invalid JSON body"}}
    errors: dict[str, str] = {}
    message = body.get("message")
    if not isinstance(message, str) or not message.strip():
        errors["message"] = "Message can not be empty."
    elif len(message) > MESSAGE_LIMIT:
        errors["message"] = f"Message can not be longer than {MESSAGE_LIMIT} characters."
    alias = body.get("alias")
    if not isinstance(alias, str) or not alias or len(alias) > ALIAS_LIMIT:
        errors["alias"] = "Alias is required here and must be at most 512 characters."
    if "priority" in body and body["priority"] not in PRIORITIES:
        errors["priority"] = "Priority should be one of [P1, P2, P3, P4, P5]"
    return {"errors": errors} if errors else None


def _error_body(status: int, request_id: str, message: str | None = None) -> dict[str, Any]:
    text = message or {
        400: "Invalid JSON body",
        422: "Request has not been processed",
        429: "You are making too many requests! To avoid errors, we recommend you limit requests.",
        500: "Internal Server Error",
        503: "Service Unavailable",
    }.get(status, f"HTTP {status}")
    return {"message": text, "took": 0.0, "requestId": request_id}


def _route(method: str, path: str) -> tuple[Endpoint | None, str | None]:
    parts = path.strip("/").split("/")
    if method == "POST" and parts == ["v2", "alerts"]:
        return "create", None
    if method == "POST" and len(parts) == 4 and parts[:2] == ["v2", "alerts"] and parts[3] == "close":
        return "close", unquote(parts[2])
    if method == "POST" and len(parts) == 4 and parts[:2] == ["v2", "alerts"] and parts[3] == "acknowledge":
        return "acknowledge", unquote(parts[2])
    return None, None


def _handler_for(fake: FakeOpsgenie) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as urllib3's pool expects
        timeout = 30  # an idle keep-alive connection frees its thread eventually

        def do_POST(self) -> None:
            self._handle()

        def do_GET(self) -> None:
            self._handle()

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            split = urlsplit(self.path)
            mounted = split.path.startswith(fake.prefix + "/")
            path = split.path.removeprefix(fake.prefix) if mounted else ""
            endpoint, identifier = _route(self.command, path)
            if endpoint == "create" and isinstance(body, dict):
                identifier = body.get("alias")
            request = RecordedRequest(
                method=self.command,
                path=split.path,
                query=parse_qs(split.query),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                endpoint=endpoint,
                identifier=identifier,
            )
            answer = fake.answer_request(request)
            if answer is None:
                self.close_connection = True
                return
            status, headers, payload = answer
            is_raw = isinstance(payload, bytes)
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html" if is_raw else "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


__all__ = ["Answered", "FakeAlert", "FakeOpsgenie", "RecordedRequest", "Reply"]
