"""Durable timers: escalations and reminders fire from here, after restarts too."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncConnection

from service.batch import TimerIntent
from service.clock import from_epoch
from service.store.database import Database
from service.store.queue import Narrowing, WorkQueue
from service.store.tables import timers

# The name prefix of [UPDATE] reminders (escalate/policy.py names them).
REMINDER = "reminder:"
# The timer that runs the triage probes of an opening (service/triage/worker.py fires it).
TRIAGE = "triage"


class TimerStatus(StrEnum):
    PENDING = "pending"
    FIRED = "fired"
    SKIPPED = "skipped"  # no longer applied when it came due


@dataclass(frozen=True, slots=True)
class TimerJob:
    """A claimed timer; ``lease`` must accompany its outcome."""

    id: int
    incident_id: str
    opening: int
    name: str
    due_at: datetime
    lease: str


class Timers:
    def __init__(self, db: Database) -> None:
        self._db = db
        self.queue = WorkQueue(
            db,
            timers,
            runnable=timers.c.status == TimerStatus.PENDING,
            due=timers.c.due_at,
        )
        self._claimable = {triage: Narrowing(self._named(triage)) for triage in (False, True)}

    async def add(self, conn: AsyncConnection, intents: Sequence[TimerIntent]) -> None:
        """Schedule timers; one already scheduled under the same name is left as it is."""
        if not intents:
            return
        await conn.execute(self._db.insert_ignore(timers), self.rows(intents))

    @staticmethod
    def rows(intents: Sequence[TimerIntent]) -> list[dict[str, object]]:
        return [
            {
                "incident_id": t.incident_id,
                "opening": t.opening,
                "name": t.name,
                "due_at": t.due_at.timestamp(),
                "status": TimerStatus.PENDING.value,
            }
            for t in intents
        ]

    def _named(self, triage: bool) -> ColumnElement[bool]:
        """Triage timers or every other timer: each has its own worker, so slow probes
        never hold up an escalation."""
        return timers.c.name == TRIAGE if triage else timers.c.name != TRIAGE

    async def claim_due(
        self, now: datetime, limit: int, lease_seconds: float, *, triage: bool = False
    ) -> list[TimerJob]:
        claim = await self.queue.claim_if_due(now, limit, lease_seconds, self._claimable[triage])
        return [
            TimerJob(r.id, r.incident_id, r.opening, r.name, from_epoch(r.due_at), claim.owner)
            for r in claim.rows
        ]

    async def finish(
        self, conn: AsyncConnection, timer: TimerJob, status: TimerStatus, now: datetime
    ) -> bool:
        """False if the lease was lost (another replica fires it)."""
        return await self.queue.finish(
            conn, timer.id, timer.lease, status=status.value, fired_at=now.timestamp()
        )

    async def release(self, timer: TimerJob) -> None:
        await self.queue.release([timer.id], timer.lease)

    async def latest_reminder(self, incident_id: str, opening: int) -> int:
        """The highest [UPDATE] reminder sequence scheduled for the opening (0: none)."""
        query = select(timers.c.name).where(
            timers.c.incident_id == incident_id,
            timers.c.opening == opening,
            timers.c.name.like(f"{REMINDER}%"),
        )
        async with self._db.read() as conn:
            names = (await conn.execute(query)).scalars().all()
        return max((int(n.removeprefix(REMINDER)) for n in names), default=0)

    async def next_due(self, *, triage: bool = False) -> float | None:
        return await self.queue.next_due(self._claimable[triage])
