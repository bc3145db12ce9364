"""The transactional outbox and the incident timeline written with it.

Events are stored with the state change that caused them and published afterwards,
so a crash between the two loses nothing. The relay claims rows through the work
queue, so with several replicas each event is published by one of them (again only
after a crash); claims take turns and skip keys whose earlier events another replica
holds, so the events of one incident go out in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, exists, func, insert, select, true
from sqlalchemy.ext.asyncio import AsyncConnection

from service.clock import from_epoch
from service.store.database import Database
from service.store.listener import notify
from service.store.queue import CLAIM_STAMP, Backlog, Claiming, Narrowing, WorkQueue
from service.store.tables import outbox, timeline

# PostgreSQL advisory-lock key that makes relay claims take turns ("incidentd outbox").
OUTBOX_CLAIM_LOCK = 0x1D0B0C5


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    incident_id: str
    type: str  # the event suffix, such as incident.acknowledged
    summary: str


@dataclass(slots=True)
class OutboxRecord:
    """An encoded event, ready for Kafka."""

    topic: str
    key: bytes
    value: bytes
    # The incident timeline entry this event makes (none for records without one).
    timeline: TimelineEntry | None = None


@dataclass(frozen=True, slots=True)
class TimelineItem:
    at: datetime
    type: str
    summary: str


@dataclass(frozen=True, slots=True)
class OutboxClaim:
    owner: str
    records: list[tuple[int, OutboxRecord]]

    def sent(self) -> SentClaim:
        return SentClaim(self.owner, tuple(row_id for row_id, _ in self.records))


@dataclass(frozen=True, slots=True)
class SentClaim:
    """A claim once published: what its removal needs, without the events themselves
    (a storm's carry their incidents' alerts)."""

    owner: str
    ids: tuple[int, ...]


class Outbox:
    def __init__(self, db: Database) -> None:
        self._db = db
        self.queue = WorkQueue(db, outbox, runnable=true(), claiming=Claiming(serialise=OUTBOX_CLAIM_LOCK))
        self._claimable = Narrowing(self._not_behind_held(CLAIM_STAMP))

    @staticmethod
    async def add(conn: AsyncConnection, events: Sequence[OutboxRecord], now: datetime) -> None:
        await Outbox.add_all(conn, [(events, now)])

    @staticmethod
    async def add_all(
        conn: AsyncConnection, writes: Sequence[tuple[Sequence[OutboxRecord], datetime]]
    ) -> None:
        """The events of several commits, each stamped with its own time: one insert per table."""
        entries = [
            {"incident_id": t.incident_id, "type": t.type, "summary": t.summary, "at": now.timestamp()}
            for events, now in writes
            for e in events
            if (t := e.timeline) is not None
        ]
        if entries:
            await conn.execute(insert(timeline), entries)
        rows = [
            {"topic": e.topic, "key": e.key, "value": e.value, "created_at": now.timestamp()}
            for events, now in writes
            for e in events
        ]
        if rows:
            await conn.execute(insert(outbox), rows)

    @staticmethod
    def _not_behind_held(stamp: float | ColumnElement[float]) -> ColumnElement[bool]:
        """Rows no earlier row of the same key is leased ahead of: the others wait for the
        replica publishing that key to finish."""
        earlier = outbox.alias("earlier")
        held_earlier = exists().where(
            and_(
                earlier.c.key == outbox.c.key,
                earlier.c.id < outbox.c.id,
                earlier.c.lease_until >= stamp,
            )
        )
        return ~held_earlier

    async def claim(
        self, now: datetime, limit: int, lease_seconds: float, published: Sequence[SentClaim] = ()
    ) -> OutboxClaim:
        """:meth:`claim_in`, in a transaction of its own."""
        return await self._db.write_inline(
            lambda conn: self.claim_in(conn, now, limit, lease_seconds, published)
        )

    async def claim_in(
        self,
        conn: AsyncConnection,
        now: datetime,
        limit: int,
        lease_seconds: float,
        published: Sequence[SentClaim] = (),
    ) -> OutboxClaim:
        """The oldest unpublished events that are not waiting behind another replica, in
        ``conn``'s transaction (one that stores events, say), once ``published`` is removed
        (:meth:`remove_in`): the events of an incident queued behind those can be claimed in
        the same transaction."""
        await self.remove_in(conn, published)
        claim = await self.queue.claim_in(conn, now, limit, lease_seconds, where=self._claimable)
        records = [(r.id, OutboxRecord(r.topic, r.key, r.value)) for r in claim.rows]
        return OutboxClaim(claim.owner, records)

    async def next_due(self, now: datetime) -> float | None:
        """Now if anything can be claimed; else when a lease ahead of the rest ends."""
        return await self.queue.next_due(self._claimable, now)

    async def published(self, claims: Sequence[SentClaim]) -> int:
        """Remove what went out, in a transaction of its own (:meth:`remove_in`)."""
        return await self._db.write_inline(lambda conn: self.remove_in(conn, claims))

    async def remove_in(self, conn: AsyncConnection, claims: Sequence[SentClaim]) -> int:
        """Remove the rows of ``claims``, published, in ``conn``'s transaction; returns how
        many were still ours to remove. Events that waited behind these can go now: other
        replicas are told."""
        removed = await self.queue.delete(conn, [(row_id, c.owner) for c in claims for row_id in c.ids])
        if removed and self._db.postgres:
            await notify(conn, [outbox.name])
        return removed

    async def backlog(self) -> Backlog:
        """Events not yet published: one aggregate over a table that is empty when all is
        well (the metrics' scrape reads it)."""
        async with self._db.read() as conn:
            row = (await conn.execute(select(func.count(), func.min(outbox.c.created_at)))).one()
            return Backlog(int(row[0]), row[1])

    async def unpublished(self, limit: int) -> list[OutboxRecord]:
        """What waits to be published, oldest first; a read that claims nothing."""
        async with self._db.read() as conn:
            rows = await conn.execute(select(outbox).order_by(outbox.c.id).limit(limit))
            return [OutboxRecord(r.topic, r.key, r.value) for r in rows]

    async def timeline(self, incident_id: str) -> list[TimelineItem]:
        async with self._db.read() as conn:
            rows = await conn.execute(
                select(timeline.c.at, timeline.c.type, timeline.c.summary)
                .where(timeline.c.incident_id == incident_id)
                .order_by(timeline.c.id)
            )
            return [TimelineItem(from_epoch(r.at), r.type, r.summary) for r in rows]
