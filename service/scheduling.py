"""The loop every durable worker (pages, timers, remediations) runs: work, then sleep
until the next due time or until woken, and keep going through store outages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from service.clock import Clock

OUTAGE_RETRY_SECONDS = 5.0
# Even with nothing due, look again now and then: another replica may have added work.
IDLE_SECONDS = 30.0


async def run_due_work(
    name: str,
    work: Callable[[], Awaitable[int]],
    next_due: Callable[[], Awaitable[float | None]],
    clock: Clock,
    wake: asyncio.Event,
    log: logging.Logger,
    *,
    until_idle: bool = False,
) -> None:
    """``work`` returns how much it did; with ``until_idle`` it is called again until it
    does nothing. ``next_due`` is the epoch time the next work is due, None if none is."""
    while True:
        wake.clear()
        try:
            while await work() and until_idle:
                pass
            due = await next_due()
            now = clock.now().timestamp()
            delay = IDLE_SECONDS if due is None else min(IDLE_SECONDS, max(0.05, due - now))
        except Exception:
            log.exception("%s: store unavailable, retrying", name)
            delay = OUTAGE_RETRY_SECONDS
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=delay)
