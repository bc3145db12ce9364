"""Opsgenie through the official ``opsgenie-sdk``.

The SDK is synchronous and its defaults fight us: its Configuration objects
share one ``api_key`` dict, and it retries for up to a minute on its own. So
each notifier builds a fresh Configuration, turns the SDK's retry off (the page
worker retries durably, with backoff, without blocking other incidents) and
runs every call in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

import opsgenie_sdk
import tenacity
from urllib3.exceptions import HTTPError

from service.config import Settings
from service.notify.base import PageError, PageRequest, retryable_status


class OpsgenieNotifier:
    name = "opsgenie"

    def __init__(self, api_key: str, api_url: str, timeout: float) -> None:
        conf = opsgenie_sdk.Configuration()
        conf.host = api_url.rstrip("/")
        conf.api_key = {"Authorization": api_key}
        conf.api_key_prefix = {"Authorization": "GenieKey"}
        conf.retry_enabled = False
        conf.retry_count = 0
        self._timeout = timeout
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
            else:
                result = self._alerts.close_alert(
                    identifier=request.idempotency_key,
                    identifier_type="alias",
                    close_alert_payload=opsgenie_sdk.CloseAlertPayload(
                        source="incidentd", note=request.message
                    ),
                    _request_timeout=self._timeout,
                )
        except tenacity.RetryError as exc:
            raise _page_error(exc.last_attempt.exception()) from None
        except Exception as exc:
            raise _page_error(exc) from None
        return getattr(result, "request_id", None)

    def _create_payload(self, request: PageRequest) -> Any:
        inc = request.incident
        return opsgenie_sdk.CreateAlertPayload(
            message=request.message.splitlines()[0][:130],
            alias=request.idempotency_key,
            description=request.description[:15000],
            priority=request.priority,
            source="incidentd",
            entity=inc["id"],
            tags=[inc["severity"], *(f"{k}:{v}" for k, v in sorted(inc["group_labels"].items()))][:20],
            details={
                "incident_id": inc["id"],
                "severity": inc["severity"],
                "response_due_at": str(inc["response_due_at"]),
                **{k: str(v)[:500] for k, v in inc["group_labels"].items()},
            },
        )

    async def aclose(self) -> None:
        pool = getattr(self._client, "_pool", None)
        if pool is not None:
            await asyncio.to_thread(pool.close)


def _page_error(exc: BaseException | None) -> PageError:
    if isinstance(exc, opsgenie_sdk.ApiException):
        status = int(exc.status or 0)
        retry_after = _retry_after(exc.headers)
        reason = f"opsgenie answered HTTP {status}: {_short(exc.body)}"
        return PageError(reason, retryable=retryable_status(status), retry_after=retry_after)
    if isinstance(exc, HTTPError | OSError):
        return PageError(f"opsgenie unreachable: {exc.__class__.__name__}: {exc}", retryable=True)
    return PageError(f"opsgenie call failed: {exc!r}", retryable=True)


def _retry_after(headers: Any) -> float | None:
    if not headers:
        return None
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _short(body: Any) -> str:
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
    return text[:300]
