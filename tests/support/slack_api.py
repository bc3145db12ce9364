"""A real HTTP server standing in for a Slack incoming webhook.

It listens on a loopback port, in threads of its own, and behaves as Slack's
``hooks.slack.com/services/T.../B.../<secret>`` endpoint does: a valid post to the
hook's path is answered ``200 ok`` and lands in the channel (``messages``); any other
path is ``404 no_service`` (a revoked or mistyped webhook); a body that is not a JSON
message is ``400 invalid_payload``, one without text or blocks ``400 no_text``, and
blocks that break Block Kit's limits ``400 invalid_blocks``. Every Slack error body is
a short plain-text reason.

Tests script answers (a status and body, Retry-After, a held answer, a dropped
connection), read every request it received, and await what it has seen.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.fake_http import LoopbackServer

HEADER_LIMIT = 150
SECTION_LIMIT = 3000
BLOCKS_MAX = 50
BLOCK_TYPES = frozenset({"header", "section", "context", "divider", "actions", "image", "rich_text"})
# A held reply never waits longer than this: a test that forgets to release it fails, it does not hang.
HOLD_LIMIT_SECONDS = 20.0


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted answer. ``body=None`` is Slack's usual body for ``status``.

    A 2xx reply is still checked as Slack checks a post (and the message posted);
    any other status is answered as is, and nothing is posted.
    """

    status: int = 200
    body: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    hold: threading.Event | None = None  # answer only once this is set
    drop: bool = False  # close the connection without answering


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    raw: bytes
    body: Any  # the JSON document, or None when the body is not JSON

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True, slots=True)
class Answered:
    request: RecordedRequest
    status: int  # 0: the connection was closed without an answer
    body: str


@dataclass(slots=True)
class _Rule:
    when: Callable[[RecordedRequest], bool] | None
    replies: deque[Reply]


class FakeSlackWebhook(LoopbackServer):
    def __init__(self) -> None:
        super().__init__()
        token = secrets.token_urlsafe(18).replace("-", "x").replace("_", "y")
        self.hook_path = f"/services/T0INCIDENT/B0INCIDENT/{token}"
        self._requests: list[RecordedRequest] = []
        self._answers: list[Answered] = []
        self._messages: list[dict[str, Any]] = []
        self._rules: list[_Rule] = []

    # -- lifecycle -----------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return _handler_for(self)

    @property
    def webhook_url(self) -> str:
        """The incoming webhook's URL: the credential a notifier is configured with."""
        return self.base_url + self.hook_path

    # -- scripting -------------------------------------------------------------

    def script(self, *replies: Reply, when: Callable[[RecordedRequest], bool] | None = None) -> None:
        """Queue answers; with ``when``, only for the requests it selects.

        Rules are tried in the order they were added; an exhausted rule no longer applies.
        """
        with self.lock:
            self._rules.append(_Rule(when, deque(replies)))

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
    def messages(self) -> list[dict[str, Any]]:
        """Every message posted to the channel, in order."""
        with self.lock:
            return list(self._messages)

    def texts(self) -> list[str]:
        return [str(m.get("text", "")) for m in self.messages]

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
            if not rule.replies:
                continue
            if rule.when is not None and not _safe(rule.when, request):
                continue
            return rule.replies.popleft()
        return None

    def answer_request(self, request: RecordedRequest) -> tuple[int, dict[str, str], str] | None:
        """The answer to send, or None to hang up without one."""
        reply = self._record(request)
        if reply is not None and reply.hold is not None:
            reply.hold.wait(HOLD_LIMIT_SECONDS)
        if reply is not None and reply.drop:
            self._answered(request, 0, "")
            return None
        headers = dict(reply.headers) if reply is not None else {}
        if reply is not None and not 200 <= reply.status < 300:
            status = reply.status
            text = reply.body if reply.body is not None else _error_body(status)
        else:
            status, text = self._post(request)
            if reply is not None and status == 200:
                status = reply.status
                text = reply.body if reply.body is not None else text
        self._answered(request, status, text)
        return status, headers, text

    def _answered(self, request: RecordedRequest, status: int, text: str) -> None:
        with self.lock:
            self._answers.append(Answered(request, status, text))
        self.notify_waiters()

    def _post(self, request: RecordedRequest) -> tuple[int, str]:
        """What Slack does with a post to a webhook."""
        if request.method != "POST" or request.path != self.hook_path:
            return 404, "no_service"
        message = request.body
        if not isinstance(message, dict):
            return 400, "invalid_payload"
        text, blocks = message.get("text"), message.get("blocks")
        if not (isinstance(text, str) and text.strip()) and not blocks:
            return 400, "no_text"
        if blocks is not None and _blocks_problem(blocks):
            return 400, "invalid_blocks"
        with self.lock:
            self._messages.append(message)
        return 200, "ok"


def _blocks_problem(blocks: Any) -> str | None:
    if not isinstance(blocks, list) or not blocks or len(blocks) > BLOCKS_MAX:
        return "blocks must be a list of 1 to 50 blocks"
    for block in blocks:
        if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
            return "unknown block"
        kind, text = block["type"], block.get("text")
        if kind == "header":
            if not _text_ok(text, ("plain_text",), HEADER_LIMIT):
                return "header needs plain_text of 1 to 150 characters"
        elif kind == "section":
            if not _text_ok(text, ("plain_text", "mrkdwn"), SECTION_LIMIT):
                return "section needs text of 1 to 3000 characters"
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                return "context needs 1 to 10 elements"
            if not all(_text_ok(e, ("plain_text", "mrkdwn"), SECTION_LIMIT) for e in elements):
                return "context element needs text"
    return None


def _text_ok(obj: Any, kinds: tuple[str, ...], limit: int) -> bool:
    if not isinstance(obj, dict) or obj.get("type") not in kinds:
        return False
    text = obj.get("text")
    return isinstance(text, str) and 1 <= len(text) <= limit


def _safe(predicate: Callable[[RecordedRequest], bool], request: RecordedRequest) -> bool:
    try:
        return bool(predicate(request))
    except (KeyError, TypeError, AttributeError):
        return False


def _error_body(status: int) -> str:
    return {
        400: "invalid_payload",
        403: "action_prohibited",
        404: "no_service",
        410: "channel_is_archived",
        429: "rate_limited",
        500: "rollup_error",
    }.get(status, f"HTTP {status}")


def _handler_for(fake: FakeSlackWebhook) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as httpx's pool expects
        timeout = 30  # an idle keep-alive connection frees its thread eventually

        def do_POST(self) -> None:
            self._handle()

        def do_GET(self) -> None:
            self._handle()

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body: Any
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            request = RecordedRequest(
                method=self.command,
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                raw=raw,
                body=body,
            )
            answer = fake.answer_request(request)
            if answer is None:
                self.close_connection = True
                return
            status, headers, text = answer
            data = text.encode()
            # The client may have given up meanwhile (a held answer): nobody is left to read it.
            with contextlib.suppress(OSError):
                self.send_response(status)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


__all__ = ["Answered", "FakeSlackWebhook", "RecordedRequest", "Reply"]
