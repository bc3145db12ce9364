"""The loop every background worker runs (pages, timers, remediations, the outbox relay,
the gauges): work, then sleep until the next due time or until woken, and keep going
through store outages."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging

from aiokafka.errors import KafkaError
from sqlalchemy.exc import DBAPIError

from service.clock import Clock

# After a failure (the store or Kafka unreachable), the first retry; doubled up to the cap.
RETRY_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0
# Even with nothing due, look again now and then: another replica may have added work.
IDLE_SECONDS = 30.0


class DueWorker(abc.ABC):
    """A worker of due work. ``until_idle``: call :meth:`run_once` again until it does
    nothing; ``pace``: at least this many seconds between rounds, however often woken."""

    name = "worker"
    until_idle = False
    pace = 0.0

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._wake = asyncio.Event()
        self._log = logging.getLogger(type(self).__module__)
        # While sleeping: the epoch time it will look again unless woken; None while working.
        self._sleeping_until: float | None = None

    def wake(self) -> None:
        """New work may be due: look now rather than at the next due time."""
        self._wake.set()

    @property
    def sleeping_until(self) -> float | None:
        """When it will look again unless woken (epoch); None while working or once woken."""
        return None if self._wake.is_set() else self._sleeping_until

    def wake_by(self, due: float) -> None:
        """Work due at ``due`` (epoch) was added: wake only if the worker would otherwise
        look later (a storm's new incidents each add timers due in minutes, and a wake-up
        costs the store a claim and a next-due query). A working worker is always woken:
        the next-due time it is about to read may predate the new work."""
        if self._sleeping_until is None or due < self._sleeping_until:
            self._wake.set()

    @abc.abstractmethod
    async def run_once(self) -> int:
        """Do what is due; return how much was done."""

    @abc.abstractmethod
    async def next_due(self) -> float | None:
        """The epoch time the next work is due; None if none is."""

    async def run(self) -> None:
        retry = RETRY_SECONDS
        while True:
            self._wake.clear()
            try:
                while await self.run_once() and self.until_idle:
                    pass
                due = await self.next_due()
                now = self._clock.now().timestamp()
                delay = IDLE_SECONDS if due is None else min(IDLE_SECONDS, max(0.05, due - now))
                retry = RETRY_SECONDS
            except Exception as exc:
                # The store or Kafka is away (a bug would show here too: keep its traceback).
                expected = isinstance(exc, OSError | TimeoutError | DBAPIError | KafkaError)
                self._log.warning(
                    "%s: %s: %s; retrying in %.1fs",
                    self.name,
                    exc.__class__.__name__,
                    exc,
                    retry,
                    exc_info=not expected,
                )
                delay, retry = retry, min(retry * 2, RETRY_MAX_SECONDS)
            if self.pace:
                await asyncio.sleep(self.pace)  # a wake meanwhile stays set: the next round is not lost
            self._sleeping_until = self._clock.now().timestamp() + delay
            try:
                # Not asyncio.wait_for: on Python 3.11 a cancel that arrives as the wake-up is
                # set is lost there (the wait returns), and the worker outlives its shutdown.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
            finally:
                self._sleeping_until = None
