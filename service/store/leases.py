"""Renews the leases this process holds, so that a live worker keeps its rows however
long the work takes and a dead one loses them within ``LEASE_SECONDS``."""

from __future__ import annotations

from collections.abc import Sequence

from service.clock import Clock
from service.scheduling import DueWorker
from service.store.queue import RENEW_SECONDS, WorkQueue


class LeaseKeeper(DueWorker):
    name = "lease keeper"

    def __init__(self, queues: Sequence[tuple[WorkQueue, Clock]], clock: Clock) -> None:
        """``queues``: each queue with the clock its workers lease by."""
        super().__init__(clock)
        self._queues = list(queues)

    async def run_once(self) -> int:
        renewed = 0
        for queue, clock in self._queues:
            renewed += await queue.renew_held(clock.now())
        return renewed

    async def next_due(self) -> float:
        return self._clock.now().timestamp() + RENEW_SECONDS

    async def release_all(self) -> int:
        """Give back every row this process holds (shutdown, once the workers stopped)."""
        released = 0
        for queue, _ in self._queues:
            released += await queue.release_held()
        return released
