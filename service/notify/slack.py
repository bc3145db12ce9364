"""Slack: the runbook's #incidents channel, through an incoming webhook.

One ``POST`` of a JSON message per page, with ``httpx.AsyncClient``. Slack answers
``200 ok``; a throttled post is ``429`` with ``Retry-After``; a webhook that was
revoked, or a payload Slack refuses, is a 4xx with a short text reason
(``no_service``, ``invalid_payload``, ``channel_not_found``, ...). The notifier makes
exactly one request per ``send``: the page worker retries durably, with backoff.

The webhook URL is the credential (anyone holding it can post to the channel), so
it never appears in a log line, an error reason or a ``repr``. httpx logs every
request's URL at INFO on the ``httpx`` logger; a filter on that logger redacts the
URLs of live Slack notifiers.

Slack incoming webhooks do not deduplicate: a post that timed out may still have
reached the channel, and its retry then shows the message twice. That is the price
of at-least-once delivery; the worker never sends a job it recorded as sent again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import httpx

from service.config import Settings
from service.notify.base import PageError, PageRequest, parse_retry_after, retryable_status

# Slack's documented limits (Block Kit and chat messages).
TEXT_LIMIT = 40000
HEADER_LIMIT = 150  # a header block's plain_text
SECTION_LIMIT = 3000  # a section's mrkdwn text
CONTEXT_LIMIT = 3000
REASON_BODY_LIMIT = 300
REDACTED = "<slack webhook URL>"
# The buttons of an [INCIDENT] message; service/http/inbound/slack.py reads them back.
ACK_ACTION = "incidentd_ack"
RESOLVE_ACTION = "incidentd_resolve"


class SlackNotifier:
    name = "slack"
    comms = True  # the channel also carries the runbook's [UPDATE] messages

    def __init__(self, webhook_url: str, timeout: float) -> None:
        url = webhook_url.strip()
        if not url:
            raise ValueError("the Slack webhook URL is empty")
        _check_url(url)
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError("the Slack timeout must be a positive number of seconds")
        self._url = url
        self._timeout = timeout
        self._secrets = _secrets_of(url)
        _REDACTOR.add(self._secrets)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,  # a redirect would carry the page somewhere we did not configure
            headers={"User-Agent": "incidentd"},
        )
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> SlackNotifier:
        secret = settings.slack_webhook_url
        if secret is None:
            raise ValueError(
                "pager 'slack' needs INCIDENTD_SLACK_WEBHOOK_URL or INCIDENTD_SLACK_WEBHOOK_URL_FILE"
            )
        if not secret.get_secret_value().strip():
            raise ValueError("pager 'slack': INCIDENTD_SLACK_WEBHOOK_URL is empty")
        try:
            return cls(secret.get_secret_value(), settings.slack_timeout_seconds)
        except ValueError as exc:
            raise ValueError(f"pager 'slack': {exc}") from None

    def __repr__(self) -> str:
        return f"SlackNotifier(webhook_url={REDACTED!r}, timeout={self._timeout!r})"

    async def send(self, request: PageRequest) -> str | None:
        try:
            # httpx's timeout is per phase (connect, write, read); this bounds the whole call.
            async with asyncio.timeout(self._timeout):
                response = await self._client.post(self._url, json=slack_message(request))
        except (TimeoutError, httpx.TimeoutException) as exc:
            name = "TimeoutError" if isinstance(exc, TimeoutError) else exc.__class__.__name__
            raise PageError(
                f"slack unreachable: timed out after {self._timeout:g}s ({name})", retryable=True
            ) from None
        except httpx.TransportError as exc:
            raise PageError(
                f"slack unreachable: {exc.__class__.__name__}: {self._redact(str(exc))}", retryable=True
            ) from None
        except Exception as exc:
            raise PageError(
                f"slack call failed: {exc.__class__.__name__}: {self._redact(str(exc))}", retryable=True
            ) from None
        status = response.status_code
        if 200 <= status < 300:
            return None  # an incoming webhook gives no message reference
        body = self._redact(response.text.strip()[:REASON_BODY_LIMIT]) or "(no body)"
        raise PageError(
            f"slack answered HTTP {status}: {body}",
            retryable=retryable_status(status),
            retry_after=_retry_after(response.headers.get("Retry-After")) if status == 429 else None,
        )

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._client.aclose()
        _REDACTOR.remove(self._secrets)

    def _redact(self, text: str) -> str:
        return _redact(text, self._secrets)


def slack_message(request: PageRequest) -> dict[str, Any]:
    """The incoming-webhook body: the full runbook text, and blocks for display.

    The roles' ``mention``s (contacts.yaml ``slack: {mention: ...}``) lead the text, as
    written, so ``<!subteam^S0ONCALL>`` or ``<@U0LEAD>`` notifies them. An ``[INCIDENT]``
    (trigger) message carries the Acknowledge and Resolve buttons; Slack sends a press to
    ``/api/v1/inbound/slack/interactivity`` (``service/http/inbound/slack.py``).
    """
    inc = request.incident
    headline = request.message.strip() or _fallback_headline(request)
    full = "\n".join(part for part in (headline, request.description.strip()) if part)
    mentions = _mentions(request)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(headline, HEADER_LIMIT)}}
    ]
    if mentions:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(mentions, SECTION_LIMIT)}})
    if request.description.strip():
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _cut(_escape(request.description.strip()), SECTION_LIMIT)},
            }
        )
    if request.action == "trigger":
        blocks.append(_buttons(request))
    context = f"Incident `{_escape(str(inc['id']))}` · key `{_escape(request.idempotency_key)}`"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(context, CONTEXT_LIMIT)}]})
    # ``text`` is the notification and fallback; Slack reads it as mrkdwn too, so it is
    # escaped: a label value like "<!channel>" must not ping the whole channel. The
    # mentions come from contacts.yaml (configuration, not alerts) and are meant to ping.
    text = _escape(full) if not mentions else f"{mentions}\n{_escape(full)}"
    return {"text": _cut(text, TEXT_LIMIT), "blocks": blocks}


def button_value(incident_id: str, opening: int) -> str:
    """What a button carries back: the incident and the opening the message was for."""
    return json.dumps({"incident": incident_id, "opening": opening}, separators=(",", ":"))


def _buttons(request: PageRequest) -> dict[str, Any]:
    value = button_value(request.incident_id, request.opening)
    confirm = {
        "title": {"type": "plain_text", "text": "Resolve the incident?"},
        "text": {"type": "plain_text", "text": "It is closed in incidentd and on every pager."},
        "confirm": {"type": "plain_text", "text": "Resolve"},
        "deny": {"type": "plain_text", "text": "Cancel"},
    }
    return {
        "type": "actions",
        "block_id": "incidentd",
        "elements": [
            {
                "type": "button",
                "action_id": ACK_ACTION,
                "text": {"type": "plain_text", "text": "Acknowledge"},
                "style": "primary",
                "value": value,
            },
            {
                "type": "button",
                "action_id": RESOLVE_ACTION,
                "text": {"type": "plain_text", "text": "Resolve"},
                "style": "danger",
                "value": value,
                "confirm": confirm,
            },
        ],
    }


def _mentions(request: PageRequest) -> str:
    found = [r["mention"].strip() for r in request.responders if r.get("mention", "").strip()]
    return " ".join(dict.fromkeys(found))


def _fallback_headline(request: PageRequest) -> str:
    inc = request.incident
    title = inc.get("title") or inc["id"]
    if request.action == "trigger":
        return f"[INCIDENT] {inc.get('severity', '')}: {title}"
    if request.action == "close":
        return f"[UPDATE] {inc.get('severity', '')}: {title} - Resolved"
    return f"[UPDATE] {inc.get('severity', '')}: {title}"


def _escape(text: str) -> str:
    """Slack's mrkdwn control characters, escaped as Slack documents."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_url(url: str) -> None:
    """http(s) with a host; the messages never quote the URL, which is a credential."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018  # raises on a port that is not a number
        httpx.URL(url)
    except (ValueError, httpx.InvalidURL):
        raise ValueError("the Slack webhook URL is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(
            "the Slack webhook URL must be an http(s) URL, like https://hooks.slack.com/services/..."
        )
    if not host:
        raise ValueError("the Slack webhook URL has no host")


def _secrets_of(url: str) -> tuple[str, ...]:
    """Every spelling of the URL that could show up in text; longest first."""
    parsed = httpx.URL(url)
    found = {url, str(parsed)}
    target = parsed.raw_path.decode("ascii", errors="replace")  # path and query: the token
    if len(target) > 1:
        found.add(target)
    return tuple(sorted(found, key=len, reverse=True))


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


class _Redactor(logging.Filter):
    """Redacts live webhook URLs from the ``httpx`` logger's records."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._live: Counter[tuple[str, ...]] = Counter()
        self._installed = False

    def add(self, secrets: tuple[str, ...]) -> None:
        with self._lock:
            self._live[secrets] += 1
            if not self._installed:
                logging.getLogger("httpx").addFilter(self)
                self._installed = True

    def remove(self, secrets: tuple[str, ...]) -> None:
        with self._lock:
            self._live[secrets] -= 1
            if self._live[secrets] <= 0:
                del self._live[secrets]

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            secrets = tuple(sorted({s for group in self._live for s in group}, key=len, reverse=True))
        if not secrets:
            return True
        message = record.getMessage()
        cleaned = _redact(message, secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_REDACTOR = _Redactor()


def _retry_after(value: str | None) -> float | None:
    return parse_retry_after(value)
