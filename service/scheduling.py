"""The loop both durable workers (pages, timers) run: work, then sleep until the
next due time or until woken, and keep going through store outages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

OUTAGE_RETRY_SECONDS = 5.0


async def run_due_work(
    name: str,
    work: Callable[[], Awaitable[object]],
    seconds_until_due: Callable[[], Awaitable[float]],
    wake: asyncio.Event,
    log: logging.Logger,
) -> None:
    while True:
        wake.clear()
        try:
            await work()
            delay = await seconds_until_due()
        except Exception:
            log.exception("%s: store unavailable, retrying", name)
            delay = OUTAGE_RETRY_SECONDS
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=delay)
