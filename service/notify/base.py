"""The notifier interface every pager integration implements."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

from service.models import PageAction


@dataclass(frozen=True, slots=True)
class PageRequest:
    """One pager call. ``ack`` acknowledges a sent page (PagerDuty acknowledge, Opsgenie
    acknowledge); ``update`` is an [UPDATE] message for comms channels only."""

    action: PageAction
    incident: dict[str, Any]
    opening: int
    idempotency_key: str
    message: str
    description: str
    priority: str  # P1..P5, from the severity table
    target: str = "first"  # the first page, an escalation rule, or reminder:<n>
    roles: tuple[str, ...] = ()
    # This pager's contacts for the roles (contacts.yaml), e.g. Opsgenie responders.
    responders: tuple[dict[str, str], ...] = ()
    # The severity says the status page tells the public (severities.yaml `status_page`).
    public: bool = False

    @property
    def incident_id(self) -> str:
        return str(self.incident["id"])


class PageError(Exception):
    """A pager call that failed; ``retryable`` says whether trying again can help."""

    def __init__(self, reason: str, *, retryable: bool, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after


class Notifier(Protocol):
    name: str
    # True for pagers that carry the runbook's [UPDATE] messages (console, Slack).
    comms: bool
    # Optional, read with getattr: a pager with ``close_only = True`` (Jira's follow-up
    # ticket) gets only the close of each opening, whether or not a trigger went to it.

    async def send(self, request: PageRequest) -> str | None:
        """Deliver the page; return the pager's reference (request id) if it gives one."""
        ...

    async def aclose(self) -> None: ...


def idempotency_key(incident_id: str, opening: int, target: str = "first") -> str:
    """Stable per incident opening and page: Opsgenie ``alias``, PagerDuty ``dedup_key``.

    A reopened incident gets a new key, so a trigger is never sent for a key
    that was already resolved (the pager would otherwise revive or ignore it).
    Each escalation is a page of its own, to its own roles.
    """
    name = f"incidentd/{incident_id}/{opening}" + ("" if target == "first" else f"/{target}")
    digest = hashlib.sha256(name.encode()).hexdigest()
    return f"incidentd-{digest[:40]}"


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date (RFC 9110)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def retryable_status(status: int) -> bool:
    return status == 429 or status >= 500 or status == 408
