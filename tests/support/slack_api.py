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

:class:`SlackInteractivity` stands in for the other direction: Slack sending a person's
button press to the app's interactivity Request URL, as a form with one ``payload``
field (a ``block_actions`` document built from the posted message's button), signed as
Slack signs (``X-Slack-Signature: v0=<hex HMAC-SHA256(secret, "v0:<ts>:<body>")>`` with
``X-Slack-Request-Timestamp``).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlencode

import httpx

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
        problem = _block_problem(block["type"], block)
        if problem:
            return problem
    return None


def _block_problem(kind: str, block: dict[str, Any]) -> str | None:
    text = block.get("text")
    if kind == "header" and not _text_ok(text, ("plain_text",), HEADER_LIMIT):
        return "header needs plain_text of 1 to 150 characters"
    if kind == "section" and not _text_ok(text, ("plain_text", "mrkdwn"), SECTION_LIMIT):
        return "section needs text of 1 to 3000 characters"
    if kind == "actions":
        return _actions_problem(block.get("elements"))
    if kind == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
            return "context needs 1 to 10 elements"
        if not all(_text_ok(e, ("plain_text", "mrkdwn"), SECTION_LIMIT) for e in elements):
            return "context element needs text"
    return None


def _actions_problem(elements: Any) -> str | None:
    """Block Kit's rules for an actions block of buttons."""
    if not isinstance(elements, list) or not 1 <= len(elements) <= 25:
        return "actions needs 1 to 25 elements"
    ids = [e.get("action_id") for e in elements if isinstance(e, dict)]
    if len(ids) != len(elements) or len(set(ids)) != len(ids):
        return "action_ids must be unique"
    for e in elements:
        if e.get("type") != "button" or not _text_ok(e.get("text"), ("plain_text",), 75):
            return "a button needs plain_text of 1 to 75 characters"
        if not isinstance(e.get("action_id"), str) or not 1 <= len(e["action_id"]) <= 255:
            return "action_id must be 1 to 255 characters"
        if len(str(e.get("value", ""))) > 2000 or e.get("style", "primary") not in ("primary", "danger"):
            return "a button value is at most 2000 characters, its style primary or danger"
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


# -- Slack calling the app: interactivity -----------------------------------------------


def slack_signature(secret: str, timestamp: str, body: bytes) -> str:
    """What Slack sends in ``X-Slack-Signature`` (slack_sdk's ``generate_signature``)."""
    base = f"v0:{timestamp}:".encode() + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def button(message: dict[str, Any], action_id: str) -> tuple[str, dict[str, Any]]:
    """The ``(block_id, element)`` of the message's button with ``action_id``."""
    for block in message.get("blocks", []):
        if block.get("type") != "actions":
            continue
        for element in block.get("elements", []):
            if element.get("action_id") == action_id:
                return str(block.get("block_id", "")), element
    raise AssertionError(f"the message has no button {action_id!r}")


class SlackInteractivity:
    """Slack posting button presses to an app's interactivity Request URL.

    ``now`` is the clock Slack stamps requests with (wall time unless a test says
    otherwise); ``secret`` is the app's signing secret.
    """

    def __init__(self, url: str, secret: str, now: Callable[[], float] = time.time) -> None:
        self.url = url
        self.secret = secret
        self.now = now

    def block_actions(
        self, message: dict[str, Any], action_id: str, user: str, user_id: str = "U0PRESSER"
    ) -> dict[str, Any]:
        """The payload Slack sends when ``user`` presses the message's button."""
        block_id, element = button(message, action_id)
        return {
            "type": "block_actions",
            "user": {"id": user_id, "username": user, "name": user, "team_id": "T0INCIDENT"},
            "api_app_id": "A0INCIDENTD",
            "token": "deprecated-verification-token",
            "container": {"type": "message", "message_ts": "1764151200.000100", "channel_id": "C0INCIDENTS"},
            "trigger_id": "1234.5678.abcd",
            "team": {"id": "T0INCIDENT", "domain": "example"},
            "channel": {"id": "C0INCIDENTS", "name": "incidents"},
            "message": {"type": "message", "text": message.get("text", ""), "blocks": message.get("blocks")},
            "response_url": "https://hooks.slack.com/actions/T0INCIDENT/1/abc",
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": block_id,
                    "text": element.get("text"),
                    "value": element.get("value"),
                    "action_ts": f"{self.now():.6f}",
                }
            ],
        }

    @staticmethod
    def form(payload: dict[str, Any]) -> bytes:
        return urlencode({"payload": json.dumps(payload)}).encode()

    def headers(self, body: bytes, *, age: float = 0.0, secret: str | None = None) -> dict[str, str]:
        """Slack's headers for ``body`` sent ``age`` seconds ago (negative: from the future)."""
        stamp = str(int(self.now() - age))
        return {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": slack_signature(secret or self.secret, stamp, body),
        }

    async def send(self, client: httpx.AsyncClient, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return await client.post(self.url, content=body, headers=headers)

    async def press(
        self, client: httpx.AsyncClient, message: dict[str, Any], action_id: str, user: str, **how: Any
    ) -> httpx.Response:
        """``user`` presses the button; ``how``: ``age`` or ``secret`` for the signature."""
        body = self.form(self.block_actions(message, action_id, user))
        return await self.send(client, body, self.headers(body, **how))


__all__ = [
    "Answered",
    "FakeSlackWebhook",
    "RecordedRequest",
    "Reply",
    "SlackInteractivity",
    "button",
    "slack_signature",
]
