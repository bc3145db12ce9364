"""The page worker's claim rounds, counted, with its real loop running (``running``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from service.notify.worker import PageWorker
from service.store.store import Store


class Rounds:
    """Counts the page worker's claim rounds; ``planned`` is set as a round reads its next
    due time, after which the worker goes to sleep without another await."""

    def __init__(self, store: Store) -> None:
        self.claims = 0
        self.planned = asyncio.Event()
        claim_due, next_due = store.pages.claim_due, store.pages.next_due

        async def counted_claim(*args: Any, **kw: Any) -> Any:
            self.claims += 1
            return await claim_due(*args, **kw)

        async def noted_next_due(*args: Any, **kw: Any) -> Any:
            due = await next_due(*args, **kw)
            self.planned.set()
            return due

        store.pages.claim_due = counted_claim  # type: ignore[method-assign]
        store.pages.next_due = noted_next_due  # type: ignore[method-assign]

    async def next_sleep(self) -> None:
        self.planned.clear()
        await asyncio.wait_for(self.planned.wait(), 10)


@contextlib.asynccontextmanager
async def running(worker: PageWorker) -> AsyncIterator[None]:
    task = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await worker.drain()
