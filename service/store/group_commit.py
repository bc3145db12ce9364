"""Group commit for SQLite: the commits that queue while one is being written are written
together, in the next transaction.

SQLite has one writer, so every commit waits for the one before it; in a storm the page
worker's outcomes, the outbox and the consumer's slices made hundreds of small transactions,
each holding the write lock across its awaits (measured: 20,000 alerts, 400 page outcomes of
18 ms each, 7 s of the 15 the consumer ran). One transaction for all that queued keeps each
one's guard and its all-or-nothing: if the group fails, each is written again alone, so only
the one at fault fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from service.store.database import Database

E = TypeVar("E")
Guard = Callable[[AsyncConnection], Awaitable[bool]]
Then = Callable[[AsyncConnection], Awaitable[None]]
# Work that rides a group's transaction once, after every commit's own (the outbox
# relay's: service/emit/relay.py). What it answers is called once the transaction ended,
# with whether it committed.
Rider = Callable[[AsyncConnection], Awaitable[Callable[[bool], None]]]
# Writes the effects of every commit of a group whose guard let it through, in order.
Apply = Callable[[AsyncConnection, Sequence[tuple[E, datetime]]], Awaitable[None]]


@dataclass(slots=True)
class _Request(Generic[E]):
    effects: E
    now: datetime
    guard: Guard | None
    then: Then | None
    done: asyncio.Future[bool] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class GroupCommit(Generic[E]):
    def __init__(self, db: Database, apply: Apply[E], rides: Callable[[E], bool] = lambda _: False) -> None:
        """``rides``: whether a transaction writing these effects takes the rider along."""
        self._db = db
        self._apply = apply
        self._rides = rides
        self._queue: list[_Request[E]] = []
        self._task: asyncio.Task[None] | None = None
        self.rider: Rider | None = None

    async def commit(self, effects: E, now: datetime, guard: Guard | None, then: Then | None = None) -> bool:
        """As :meth:`Store.commit`: True once written, False if ``guard`` said no."""
        req = _Request(effects, now, guard, then)
        # A caller that gives up (cancelled) leaves its request to be written all the same.
        req.done.add_done_callback(_retrieve)
        self._queue.append(req)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="group commit")
        return await asyncio.shield(req.done)

    async def _drain(self) -> None:
        group: list[_Request[E]] = []
        try:
            while self._queue:
                group, self._queue = self._queue, []
                try:
                    written = await self._write(group)
                except Exception:
                    # Someone's effects failed the transaction: each alone, so only that one fails.
                    for req in group:
                        await self._alone(req)
                    continue
                for req, ok in zip(group, written, strict=True):
                    _settle(req, ok)
        finally:
            # Cancelled (a shutdown): nobody waits for ever, for the group in hand or the next.
            for req in [*group, *self._queue]:
                if not req.done.done():
                    req.done.set_exception(asyncio.CancelledError())
            self._queue = []

    async def _alone(self, req: _Request[E]) -> None:
        try:
            [ok] = await self._write([req])
        except Exception as exc:
            if not req.done.done():
                req.done.set_exception(exc)
            return
        _settle(req, ok)

    async def _write(self, group: list[_Request[E]]) -> list[bool]:
        rides: list[Callable[[bool], None]] = []
        try:
            out = await self._db.write_inline(lambda conn: self._write_in(conn, group, rides))
        except BaseException:
            for ended in rides:
                ended(False)
            raise
        for ended in rides:
            # Only the last run committed (a run the database answered busy is run again).
            ended(ended is rides[-1])
        return out

    async def _write_in(
        self, conn: AsyncConnection, group: list[_Request[E]], rides: list[Callable[[bool], None]]
    ) -> list[bool]:
        # Guards first, then every kept commit's effects in one statement per table, then
        # what runs after them (a then sees its own effects and those of the group), then
        # the rider. Each runs again if the group is written again: the last run counts.
        out = [req.guard is None or await req.guard(conn) for req in group]
        kept = [req for req, ok in zip(group, out, strict=True) if ok]
        await self._apply(conn, [(req.effects, req.now) for req in kept])
        for req in kept:
            if req.then is not None:
                await req.then(conn)
        if self.rider is not None and any(self._rides(req.effects) for req in kept):
            rides.append(await self.rider(conn))
        return out


def _settle(req: _Request[E], ok: bool) -> None:
    if not req.done.done():
        req.done.set_result(ok)


def _retrieve(fut: asyncio.Future[bool]) -> None:
    # An exception for a caller that gave up is not an "exception never retrieved".
    if not fut.cancelled():
        fut.exception()
