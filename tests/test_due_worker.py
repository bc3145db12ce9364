"""The background workers' loop: woken for new work only when it is due before they look."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from service.clock import ManualClock
from service.scheduling import DueWorker
from tests.support.time import T0


class Counting(DueWorker):
    def __init__(self, clock: ManualClock, due_in: timedelta) -> None:
        super().__init__(clock)
        self.rounds = 0
        self.ran = asyncio.Event()
        self.planned = asyncio.Event()  # it read its next due time: it goes to sleep at once
        self._due_in = due_in

    async def run_once(self) -> int:
        self.rounds += 1
        self.ran.set()
        return 0

    async def next_due(self) -> float | None:
        self.planned.set()
        return (self._clock.now() + self._due_in).timestamp()


async def test_work_due_after_the_worker_looks_leaves_it_asleep_and_sooner_wakes_it() -> None:
    clock = ManualClock(T0)
    worker = Counting(clock, timedelta(seconds=20))
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.planned.wait(), 5)
        until = worker.sleeping_until
        assert until == (T0 + timedelta(seconds=20)).timestamp()
        worker.ran.clear()
        worker.wake_by(until + 600)  # a response deadline in 10 minutes: nothing to do now
        assert worker.sleeping_until == until and worker.rounds == 1
        worker.wake_by(until - 1)  # due before it would look: it looks now
        assert worker.sleeping_until is None
        await asyncio.wait_for(worker.ran.wait(), 5)
        assert worker.rounds == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_cancel_that_meets_a_wake_up_still_stops_the_worker() -> None:
    """A job that ends as the service shuts down wakes its worker in the same step as the
    cancel: the cancel must win."""
    worker = Counting(ManualClock(T0), timedelta(seconds=20))
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.planned.wait(), 5)
    worker.wake()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert done == {task} and task.cancelled()
    assert worker.rounds == 1
