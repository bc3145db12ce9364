"""Pages before events: whether the alert consumers are working through a backlog.

A poll that brings more than one slice means Kafka had more waiting than the consumer takes
at once: a storm. While one is in hand, and for ``SETTLE_SECONDS`` after (the next poll of a
storm comes within milliseconds), the outbox relay lets events wait, so the storm's pages do
not share the event loop with publishing its events: the relay's claims and sends were a
fifth of a storm's processing (measured: the storm was paged in 3.7-4.0 s without them,
against 4.4-4.9 s). Events wait at most ``INCIDENTD_EVENTS_MAX_DELAY_SECONDS``
(``emit/relay.py``); nothing is dropped, only ordered after the pages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from service.clock import Clock

# How long a backlog is taken to last after its last poll of several slices.
SETTLE_SECONDS = 0.1


class AlertBacklog:
    def __init__(self, clock: Clock, settle: float = SETTLE_SECONDS) -> None:
        self._clock = clock
        self._settle = settle
        self._polls = 0  # polls of several slices in hand
        self._until = 0.0  # epoch

    @contextlib.contextmanager
    def poll(self, slices: int) -> Iterator[None]:
        """Around a consumer's poll of ``slices`` slices: one of several is a backlog."""
        if slices <= 1:
            yield
            return
        self._polls += 1
        try:
            yield
        finally:
            self._polls -= 1
            self._until = self._clock.now().timestamp() + self._settle

    def active(self) -> bool:
        return self._polls > 0 or self._clock.now().timestamp() < self._until
