"""Remediation control state: the kill switch, holds on targets, one actor per target.

Everything that must hold across restarts and replicas. Transactions that read or
change a target's lock or hold begin with :meth:`ControlState.serialise`, a write to
the one control row: on PostgreSQL its row lock makes them take turns (SQLite has one
writer anyway), so two replicas never both take a target or both count a budget slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from service.clock import from_epoch
from service.store.database import Database
from service.store.tables import remediation_control, remediation_holds, remediation_locks


@dataclass(frozen=True, slots=True)
class Pause:
    paused: bool
    by: str | None = None
    at: datetime | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Hold:
    """Automation stopped on a target (an action did not bring recovery) until resumed."""

    target_key: str
    remediation_id: str
    reason: str
    since: datetime


class ControlState:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def start(self) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                self._db.insert_ignore(remediation_control), [{"id": 1, "paused": False, "reservations": 0}]
            )

    @staticmethod
    async def serialise(conn: AsyncConnection) -> None:
        ctl = remediation_control
        await conn.execute(update(ctl).where(ctl.c.id == 1).values(reservations=ctl.c.reservations + 1))

    # -- the kill switch -------------------------------------------------------------

    async def pause_state(self, conn: AsyncConnection | None = None) -> Pause:
        ctl = remediation_control
        query = select(ctl.c.paused, ctl.c.paused_by, ctl.c.paused_at, ctl.c.reason).where(ctl.c.id == 1)
        row = await self._db.first(query, conn)
        if row is None:
            return Pause(False)
        at = from_epoch(row.paused_at) if row.paused_at is not None else None
        return Pause(bool(row.paused), row.paused_by, at, row.reason)

    async def set_paused(self, paused: bool, by: str, reason: str | None, now: datetime) -> None:
        ctl = remediation_control
        async with self._db.write() as conn:
            await conn.execute(
                update(ctl)
                .where(ctl.c.id == 1)
                .values(paused=paused, paused_by=by, paused_at=now.timestamp(), reason=reason)
            )

    # -- holds -----------------------------------------------------------------------

    async def hold_of(self, target_key: str, conn: AsyncConnection | None = None) -> str | None:
        """Why automation is stopped on this target, or None."""
        h = remediation_holds
        query = select(h.c.reason).where(h.c.target_key == target_key)
        row = await self._db.first(query, conn)
        return str(row.reason) if row else None

    async def add_hold(self, conn: AsyncConnection, hold: Hold) -> None:
        row = {
            "target_key": hold.target_key,
            "remediation_id": hold.remediation_id,
            "reason": hold.reason,
            "since": hold.since.timestamp(),
        }
        await conn.execute(self._db.insert_ignore(remediation_holds), [row])

    async def holds(self) -> list[Hold]:
        h = remediation_holds
        async with self._db.read() as conn:
            rows = await conn.execute(select(h).order_by(h.c.since))
            return [Hold(r.target_key, r.remediation_id, r.reason, from_epoch(r.since)) for r in rows]

    async def clear_hold(self, target_key: str) -> bool:
        h = remediation_holds
        async with self._db.write() as conn:
            result = await conn.execute(h.delete().where(h.c.target_key == target_key))
            return bool(result.rowcount)

    # -- one actor per target ----------------------------------------------------------

    async def lock_of(self, target_key: str, conn: AsyncConnection | None = None) -> str | None:
        """The job that holds the target's lock (it may have ended since), or None."""
        lk = remediation_locks
        query = select(lk.c.remediation_id).where(lk.c.target_key == target_key)
        row = await self._db.first(query, conn)
        return str(row.remediation_id) if row else None

    @staticmethod
    async def take_lock(conn: AsyncConnection, target_key: str, job_id: str, until: datetime) -> None:
        lk = remediation_locks
        taken = await conn.execute(
            update(lk)
            .where(lk.c.target_key == target_key)
            .values(remediation_id=job_id, until=until.timestamp())
        )
        if taken.rowcount == 0:
            await conn.execute(
                insert(lk).values(target_key=target_key, remediation_id=job_id, until=until.timestamp())
            )

    @staticmethod
    async def unlock(conn: AsyncConnection, target_key: str, job_id: str) -> None:
        lk = remediation_locks
        await conn.execute(lk.delete().where(lk.c.target_key == target_key, lk.c.remediation_id == job_id))
