"""Opsgenie through the official ``opsgenie-sdk``.

The SDK is synchronous and its defaults fight us: its Configuration objects
share one ``api_key`` dict, and it retries for up to a minute on its own. So
each notifier builds a fresh Configuration, turns the SDK's retry off (the page
worker retries durably, with backoff, without blocking other incidents) and
runs every call in a worker thread, off the event loop.

Two more SDK traps are handled here. Only 429 and 5xx surface from its HTTP layer
by default; other errors are raised later as exception classes that do not derive
from ``ApiException`` (and a non-JSON error body raises a bare ``ValueError``), so
the notifier makes every status >= 400 surface from the HTTP layer, where status,
headers and body are all kept. And the SDK passes a float timeout to urllib3 as no
timeout at all (only an ``int`` or a ``(connect, read)`` pair is honoured), so the
timeout is always given as a pair.
"""

from __future__ import annotations

import asyncio
from typing import Any

import opsgenie_sdk
import tenacity
from opsgenie_sdk.exceptions import get_all_exceptions
from urllib3.exceptions import HTTPError

from service.config import Settings
from service.notify.base import PageError, PageRequest, parse_retry_after, retryable_status

# Opsgenie's documented field limits for a create.
MESSAGE_LIMIT = 130
DESCRIPTION_LIMIT = 15000
TAG_LIMIT = 50
TAGS_MAX = 20
DETAILS_LIMIT = 8000  # all keys and values together
DETAIL_VALUE_LIMIT = 500
NOTE_LIMIT = 25000

_API_ERRORS: tuple[type[BaseException], ...] = tuple(get_all_exceptions())


class OpsgenieNotifier:
    """Opsgenie's Alert API; :class:`service.notify.jsm.JsmNotifier` is the same API under
    Jira Service Management's base URL."""

    name = "opsgenie"
    label = "Opsgenie"
    comms = False

    def __init__(self, api_key: str, api_url: str, timeout: float) -> None:
        if not api_key.strip():
            raise ValueError(f"the {self.label} API key is empty")
        conf = opsgenie_sdk.Configuration()
        conf.host = api_url.rstrip("/")
        # Fresh dicts: Configuration() is a shallow copy of a process-wide default,
        # so writing into its api_key dict would hand this key to every notifier.
        conf.api_key = {"Authorization": api_key.strip()}
        conf.api_key_prefix = {"Authorization": "GenieKey"}
        conf.retry_enabled = False
        conf.retry_count = 0
        # Raise every HTTP error where the response is at hand (see the module docstring).
        conf.retry_http_response = ["4xx", "5xx"]
        self._timeout = (timeout, timeout)  # (connect, read): a bare float would mean "no timeout"
        self._client = opsgenie_sdk.ApiClient(configuration=conf)
        self._alerts = opsgenie_sdk.AlertApi(api_client=self._client)

    @classmethod
    def from_settings(cls, settings: Settings) -> OpsgenieNotifier:
        if settings.opsgenie_api_key is None:
            raise ValueError(
                "pager 'opsgenie' needs INCIDENTD_OPSGENIE_API_KEY or INCIDENTD_OPSGENIE_API_KEY_FILE"
            )
        return cls(
            settings.opsgenie_api_key.get_secret_value(),
            settings.opsgenie_api_url,
            settings.opsgenie_timeout_seconds,
        )

    async def send(self, request: PageRequest) -> str | None:
        return await asyncio.to_thread(self._send_blocking, request)

    def _send_blocking(self, request: PageRequest) -> str | None:
        try:
            if request.action == "trigger":
                result = self._alerts.create_alert(
                    create_alert_payload=self._create_payload(request),
                    _request_timeout=self._timeout,
                )
            elif request.action == "ack":
                result = self._alerts.acknowledge_alert(
                    identifier=request.idempotency_key,
                    identifier_type="alias",
                    acknowledge_alert_payload=opsgenie_sdk.AcknowledgeAlertPayload(
                        source="incidentd", note=request.description[:NOTE_LIMIT] or None
                    ),
                    _request_timeout=self._timeout,
                )
            else:
                result = self._alerts.close_alert(
                    identifier=request.idempotency_key,
                    identifier_type="alias",
                    close_alert_payload=opsgenie_sdk.CloseAlertPayload(
                        source="incidentd", note=request.message[:NOTE_LIMIT] or None
                    ),
                    _request_timeout=self._timeout,
                )
        except tenacity.RetryError as exc:
            raise _page_error(exc.last_attempt.exception(), self.name) from None
        except Exception as exc:
            raise _page_error(exc, self.name) from None
        return getattr(result, "request_id", None)

    def _create_payload(self, request: PageRequest) -> Any:
        inc = request.incident
        first_line = next(iter(request.message.splitlines()), "").strip()
        message = first_line or f"[INCIDENT] {inc['severity']}: {inc.get('title') or inc['id']}"
        labels = sorted(inc["group_labels"].items())
        tags = [inc["severity"], *(f"{k}:{v}" for k, v in labels)]
        return opsgenie_sdk.CreateAlertPayload(
            message=message[:MESSAGE_LIMIT],
            alias=request.idempotency_key,
            description=request.description[:DESCRIPTION_LIMIT],
            # The runbook roles this page is for, as contacts.yaml maps them (teams, users...).
            responders=[dict(r) for r in request.responders] or None,
            priority=request.priority,
            source="incidentd",
            entity=inc["id"],
            tags=[t[:TAG_LIMIT] for t in tags][:TAGS_MAX],
            details=_details(
                {
                    "incident_id": inc["id"],
                    "severity": inc["severity"],
                    "response_due_at": str(inc["response_due_at"]),
                },
                labels,
            ),
        )

    async def aclose(self) -> None:
        # The SDK's own ``_pool`` is a ThreadPool for async_req calls, never used here;
        # the connections live in the urllib3 pool manager.
        await asyncio.to_thread(self._client.rest_client.pool_manager.clear)


def _details(fixed: dict[str, str], labels: list[tuple[str, Any]]) -> dict[str, str]:
    """Fixed keys first, then labels while they fit Opsgenie's total size limit."""
    details = dict(fixed)
    used = sum(len(k) + len(v) for k, v in details.items())
    for key, value in labels:
        if key in details:
            continue
        text = str(value)[:DETAIL_VALUE_LIMIT]
        if used + len(key) + len(text) > DETAILS_LIMIT:
            break
        details[key] = text
        used += len(key) + len(text)
    return details


def _page_error(exc: BaseException | None, pager: str) -> PageError:
    if isinstance(exc, _API_ERRORS):
        status = int(getattr(exc, "status", 0) or 0)
        if status == 0:  # raised before any answer, e.g. a TLS failure
            return PageError(f"{pager} unreachable: {getattr(exc, 'reason', exc)}", retryable=True)
        body = _short(getattr(exc, "body", None))
        reason = f"{pager} answered HTTP {status}: {body}"
        return PageError(
            reason,
            retryable=retryable_status(status),
            retry_after=_retry_after(getattr(exc, "headers", None)),
        )
    if isinstance(exc, HTTPError | OSError):
        return PageError(f"{pager} unreachable: {exc.__class__.__name__}: {exc}", retryable=True)
    return PageError(f"{pager} call failed: {exc!r}", retryable=True)


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None and hasattr(headers, "get") else None
    return parse_retry_after(str(value)) if value is not None else None


def _short(body: Any) -> str:
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
    return text[:300]
