"""One clock for the whole service, so tests can drive time instead of sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


def iso(value: datetime) -> str:
    """RFC 3339 with a Z: how events, messages, the API and the store write times."""
    return value.isoformat().replace("+00:00", "Z")


def from_epoch(stamp: float) -> datetime:
    """The store keeps times it queries as epoch seconds (portable ordering)."""
    return datetime.fromtimestamp(stamp, UTC)


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        self._now += delta
