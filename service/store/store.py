"""The state store: a database and one repository per aggregate.

Every batch of alerts, every person's command, every fired timer and every step of
a page or remediation job is one transaction that writes the state change together
with everything it causes (:class:`Effects`); Kafka offsets are committed only after
the batch's. That is what makes processing at-least-once and side effects idempotent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from service.batch import RemediationRequest, TimerIntent
from service.models import Incident
from service.store import schema
from service.store.commands import CommandIds
from service.store.control import ControlState
from service.store.database import Database
from service.store.group_commit import GroupCommit, Rider
from service.store.heartbeats import Heartbeats
from service.store.incidents import ConcurrentUpdate, Incidents
from service.store.keys import Keys
from service.store.listener import notify
from service.store.outbox import Outbox, OutboxRecord
from service.store.pages import NewPage, PageJobs
from service.store.remediations import RemediationJobs
from service.store.silences import Silences
from service.store.tables import outbox, page_jobs, remediations, timers
from service.store.timers import Timers

# Not a work queue: what a batch that changed incidents reports besides its queues.
INCIDENTS = "incidents"


@dataclass(slots=True)
class Effects:
    """A state change and what it causes, stored together or not at all."""

    incidents: Sequence[Incident] = ()
    events: Sequence[OutboxRecord] = ()
    pages: Sequence[NewPage] = ()
    timers: Sequence[TimerIntent] = ()
    remediations: Sequence[RemediationRequest] = ()

    def __bool__(self) -> bool:
        return bool(self.incidents or self.events or self.pages or self.timers or self.remediations)

    def queues(self) -> list[str]:
        """The work queues (table names) these effects add work to."""
        parts = [
            (self.events, outbox.name),
            (self.pages, page_jobs.name),
            (self.timers, timers.name),
            (self.remediations, remediations.name),
        ]
        return [name for items, name in parts if items]


class Store:
    def __init__(self, url: str) -> None:
        self.db = Database(url)
        self.incidents = Incidents(self.db)
        self.outbox = Outbox(self.db)
        self.pages = PageJobs(self.db)
        self.timers = Timers(self.db)
        self.remediations = RemediationJobs(self.db)
        self.control = ControlState(self.db)
        self.commands = CommandIds(self.db)
        self.silences = Silences(self.db)
        self.heartbeats = Heartbeats(self.db)
        self.keys = Keys(self.db)
        self._group = GroupCommit[Effects](self.db, self._apply_some, rides=lambda e: bool(e.events))
        self._committed: list[Callable[[Effects], None]] = []

    def ride_with(self, rider: Rider) -> None:
        """On SQLite, every transaction that stores events takes ``rider`` along (the outbox
        relay removes what it published and claims what goes next in it), saving the relay
        two transactions, two fsyncs, per batch of events. Not on PostgreSQL: a claim there
        takes the outbox's advisory lock, which in every writer's transaction would make
        the replicas' writers take turns."""
        if not self.db.postgres:
            self._group.rider = rider

    def on_commit(self, observer: Callable[[Effects], None]) -> None:
        """Call ``observer`` with the effects of every :meth:`commit` once its transaction has
        committed: what must count a state change exactly once (a re-delivered cause
        changes nothing, commits nothing, and is not seen)."""
        self._committed.append(observer)

    async def start(self, migrate: bool = True) -> None:
        """Upgrade the schema (or, with ``migrate`` False, check it is current; raises
        :class:`SchemaError`), then the rows every replica expects."""
        if migrate:
            await schema.upgrade(self.db)
        else:
            await schema.check(self.db)
        await self.control.start()

    async def close(self) -> None:
        await self.db.close()

    async def ping(self) -> None:
        await self.db.ping()

    async def _apply_some(self, conn: AsyncConnection, writes: Sequence[tuple[Effects, datetime]]) -> None:
        if any(effects for effects, _ in writes):
            await self.apply_all(conn, writes)

    async def apply(self, conn: AsyncConnection, effects: Effects, now: datetime) -> None:
        """Write ``effects`` in ``conn``'s transaction; raises :class:`ConcurrentUpdate`
        when an incident changed since it was read."""
        await self.apply_all(conn, [(effects, now)])

    async def apply_all(self, conn: AsyncConnection, writes: Sequence[tuple[Effects, datetime]]) -> None:
        """:meth:`apply` for the effects of several commits (a group commit's), one statement
        per table rather than one per table and commit: each statement is a trip to the
        database. Each commit's rows keep its own time; their order is the commits' order."""
        await self.incidents.save_all(conn, [i for e, _ in writes for i in e.incidents])
        await self.outbox.add_all(conn, [(e.events, now) for e, now in writes])
        await self.pages.add_rows(conn, [r for e, now in writes for r in self.pages.rows(e.pages, now)])
        await self.timers.add(conn, [t for e, _ in writes for t in e.timers])
        await self.remediations.add_rows(
            conn, [r for e, now in writes for r in self.remediations.rows(e.remediations, now)]
        )
        if self.db.postgres:
            await notify(conn, sorted({q for e, _ in writes for q in e.queues()}))

    async def commit(
        self,
        effects: Effects,
        now: datetime,
        *,
        guard: Callable[[AsyncConnection], Awaitable[bool]] | None = None,
        then: Callable[[AsyncConnection], Awaitable[None]] | None = None,
    ) -> bool:
        """Store ``effects`` in one transaction. ``guard`` runs first in the same
        transaction (finishing a leased job, say); if it answers False nothing is
        written and False is returned. ``then`` runs last in it (leasing the page jobs
        just stored); it may run more than once, and only its last run was committed."""
        if not self.db.postgres:
            written = await self._group.commit(effects, now, guard, then)
        else:
            async with self.db.write() as conn:
                written = guard is None or await guard(conn)
                if written and effects:
                    await self.apply(conn, effects, now)
                if written and then is not None:
                    await then(conn)
        if written and effects:
            for observer in self._committed:
                observer(effects)
        return written


__all__ = ["ConcurrentUpdate", "Effects", "OutboxRecord", "Store"]
