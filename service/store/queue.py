"""One leased work queue over a table: page jobs, timers, remediation jobs, the outbox.

A worker claims due rows with a lease and an owner token; only the holder of the
lease may record an outcome. Leases are short and renewed while this process lives
(``renew_held``), so a row whose holder died is claimed again within ``LEASE_SECONDS``;
a process that stops gives its rows back (``release_held``).

On PostgreSQL a claim is ``SELECT ... FOR UPDATE SKIP LOCKED`` then ``UPDATE ... RETURNING``
in one transaction, so replicas claiming at once never wait for or take each other's
rows; on SQLite writes are serialised in-process and the same statements, without the
row locks, do the same.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    Row,
    Select,
    Table,
    Update,
    and_,
    bindparam,
    case,
    delete,
    func,
    or_,
    select,
    text,
    true,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import KeyedColumnElement

from service.store.database import Database
from service.store.listener import notify

# Every owner token this process writes starts with this, so that it can renew and
# release all of its leases in one statement per table.
PROCESS = uuid.uuid4().hex[:12]
# How long a claim holds without renewal: the longest a dead process's rows wait.
LEASE_SECONDS = 10.0
RENEW_SECONDS = 2.0


def _owner() -> str:
    return PROCESS + uuid.uuid4().hex[:20]


# A claim's time (epoch seconds) in its statements and in the conditions that narrow it.
CLAIM_STAMP = bindparam("claim_stamp", type_=Float)
# The narrowing conditions a queue keeps statements for (the store's queues use up to four).
MAX_NARROWINGS = 16


@dataclass(frozen=True, slots=True)
class Narrowing:
    """A condition a claim or a next-due read adds, built once (the claim's time as
    CLAIM_STAMP, other values as bind parameters, given in ``values``): their statements are
    then built once per condition. Built per call, their construction and cache keys were
    most of a claim's CPU, 1.0-1.7 ms, and a storm's slice makes two claims."""

    condition: ColumnElement[bool]
    values: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class _ClaimStatements:
    pick: Select[Any]  # the ids, oldest first (params: claim_stamp, claim_limit)
    take: Update  # their leases (claim_stamp, claim_ids, claim_until, claim_owner)
    any_due: Select[Any]  # one claimable id (claim_stamp)
    next_due: Select[Any]  # when the next row can be claimed (claim_stamp if the narrowing uses it)


@dataclass(frozen=True, slots=True)
class Claiming:
    """How claims choose and take turns. ``rank``: rows claimed first when lower, before
    the due order (a SEV-1's page before a backlog of SEV-3s); ``serialise``: a PostgreSQL
    advisory-lock key that makes claims take turns, for queues whose claims must see each
    other (the outbox keeps order per key)."""

    rank: ColumnElement[Any] | None = None
    serialise: int | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """The rows one claim leased, oldest first, and the token that proves the lease."""

    owner: str
    rows: list[Row[Any]]


@dataclass(frozen=True, slots=True)
class Backlog:
    """What a queue holds undone: how many rows, and since when (epoch seconds) the oldest
    has been due; ``oldest`` is None when none is."""

    count: int
    oldest: float | None


class WorkQueue:
    def __init__(
        self,
        db: Database,
        table: Table,
        *,
        runnable: ColumnElement[bool],
        due: KeyedColumnElement[Any] | None = None,
        claiming: Claiming = Claiming(),
    ) -> None:
        """``runnable``: rows that still have work (by status); ``due``: the column that
        says when a row may run (none: as soon as it exists), earliest first, then by id;
        ``claiming``: :class:`Claiming`."""
        self._db = db
        self.table = table
        self._runnable = runnable
        self._due = due
        self._order = [table.c.id] if due is None else [due, table.c.id]
        self._rank = [] if claiming.rank is None else [claiming.rank]
        self._serialise = claiming.serialise
        # Claims made, and whether the last renewal found leases to renew: renewing
        # writes, and on SQLite every write is an fsync, so an idle queue does not renew.
        self._claims = 0
        self._holding = False
        # Per narrowing condition (by identity; kept alive here): its claim's and next-due's
        # statements.
        self._statements: dict[int, tuple[ColumnElement[bool] | None, _ClaimStatements]] = {}
        self._finishes: dict[tuple[str, ...], Update] = {}
        t = table
        # The ids alone too: SQLite finds the rows of a row-value IN only by a scan.
        self._delete = delete(t).where(
            t.c.id.in_(bindparam("delete_ids", expanding=True)),
            tuple_(t.c.id, t.c.lease_owner).in_(bindparam("delete_held", expanding=True)),
        )

    def _unleased(self, stamp: float | ColumnElement[float]) -> ColumnElement[bool]:
        t = self.table
        return or_(t.c.lease_until.is_(None), t.c.lease_until < stamp)

    def _due_by(self, stamp: float | ColumnElement[float]) -> ColumnElement[bool]:
        return true() if self._due is None else self._due <= stamp

    async def claim(
        self,
        now: datetime,
        limit: int,
        lease_seconds: float,
        where: Narrowing | None = None,
    ) -> Claim:
        """Lease up to ``limit`` due rows (``where`` narrows them) in a transaction of its own."""
        if limit <= 0:
            return Claim(_owner(), [])
        return await self._db.write_inline(lambda conn: self.claim_in(conn, now, limit, lease_seconds, where))

    async def claim_in(
        self,
        conn: AsyncConnection,
        now: datetime,
        limit: int,
        lease_seconds: float,
        where: Narrowing | None = None,
    ) -> Claim:
        """:meth:`claim` in ``conn``'s transaction: rows written in it can be leased as they are
        made (a first page handed to the page worker by the transaction that stored it)."""
        owner = _owner()
        if limit <= 0:
            return Claim(owner, [])
        stamp = now.timestamp()
        statements = self._claim_statements(where)
        if self._db.postgres and self._serialise is not None:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": self._serialise})
        # The ids first, then the UPDATE: as one statement PostgreSQL may evaluate the LIMIT
        # subquery again for every row and so take more than ``limit`` rows (measured).
        pick = _bound(where, claim_stamp=stamp, claim_limit=limit)
        ids = list((await conn.execute(statements.pick, pick)).scalars())
        if not ids:
            return Claim(owner, [])
        # Status and lease are checked again in the UPDATE: a row another process finished
        # or took between the SELECT and here (SQLite across processes) is not taken.
        lease = {
            "claim_stamp": stamp,
            "claim_ids": ids,
            "claim_until": stamp + lease_seconds,
            "claim_owner": owner,
        }
        rows = list((await conn.execute(statements.take, lease)).all())
        if rows:
            self._claims += 1
            self._holding = True
        names = [c.key for c in self._order]
        rows.sort(key=lambda r: tuple(getattr(r, n) for n in names))
        return Claim(owner, rows)

    def narrowings_kept(self) -> int:
        """How many narrowing conditions this queue keeps built statements for."""
        return len(self._statements)

    def _claim_statements(self, where: Narrowing | None) -> _ClaimStatements:
        condition = None if where is None else where.condition
        known = self._statements.get(id(condition))
        if known is not None:
            return known[1]
        t = self.table
        free = and_(self._runnable, self._unleased(CLAIM_STAMP))
        narrowed = [free, self._due_by(CLAIM_STAMP), true() if condition is None else condition]
        pick = (
            select(t.c.id)
            .where(*narrowed)
            .order_by(*self._rank, *self._order)
            .limit(bindparam("claim_limit", type_=Integer))
        )
        if self._db.postgres:
            pick = pick.with_for_update(skip_locked=True)
        take = (
            update(t)
            .where(t.c.id.in_(bindparam("claim_ids", expanding=True)), free)
            .values(lease_until=bindparam("claim_until"), lease_owner=bindparam("claim_owner"))
            .returning(*t.c)
        )
        lease = func.coalesce(t.c.lease_until, 0.0)
        due = self._due if self._due is not None else lease
        runnable_at = case((lease > due, lease), else_=due)
        next_due = select(func.min(runnable_at)).where(
            self._runnable, true() if condition is None else condition
        )
        made = _ClaimStatements(pick, take, select(t.c.id).where(*narrowed).limit(1), next_due)
        # A caller that builds its condition per call gets statements built per call, as
        # before, rather than a cache that grows with every call.
        if len(self._statements) < MAX_NARROWINGS:
            self._statements[id(condition)] = (condition, made)
        return made

    def held(self, row_id: Any, owner: str) -> ColumnElement[bool]:
        """The row, as long as ``owner`` still holds its lease."""
        t = self.table
        return and_(t.c.id == row_id, t.c.lease_owner == owner)

    async def finish(self, conn: AsyncConnection, row_id: Any, owner: str, **values: Any) -> bool:
        """Record a claimed row's outcome and end the lease; False if the lease was lost
        (it ran out and another worker took the row: that worker records the outcome)."""
        params = {f"finish_{k}": v for k, v in values.items()}
        params["finish_row"], params["finish_owner"] = row_id, owner
        result = await conn.execute(self._finish_statement(tuple(values)), params)
        return bool(result.rowcount == 1)

    def _finish_statement(self, columns: tuple[str, ...]) -> Update:
        # Built once per set of columns a caller records (a few per queue; past
        # MAX_NARROWINGS, per call): built per call, the statement and its cache key cost
        # more than the UPDATE itself.
        known = self._finishes.get(columns)
        if known is None:
            t = self.table
            values: dict[str, Any] = {c: bindparam(f"finish_{c}") for c in columns}
            known = (
                update(t)
                .where(t.c.id == bindparam("finish_row"), t.c.lease_owner == bindparam("finish_owner"))
                .values({**values, "lease_until": None, "lease_owner": None})
            )
            if len(self._finishes) < MAX_NARROWINGS:
                self._finishes[columns] = known
        return known

    async def release(self, row_ids: Sequence[Any], owner: str) -> None:
        """Give rows back at once (shutdown, a decision to redo) rather than at lease end."""
        if not row_ids:
            return
        t = self.table

        async def release(conn: AsyncConnection) -> None:
            await conn.execute(
                update(t)
                .where(t.c.id.in_(list(row_ids)), t.c.lease_owner == owner)
                .values(lease_until=None, lease_owner=None)
            )
            await self._released(conn)

        await self._db.write_inline(release)

    async def _released(self, conn: AsyncConnection) -> None:
        if self._db.postgres:
            await notify(conn, [self.table.name])

    def _ours(self) -> ColumnElement[bool]:
        return self.table.c.lease_owner.like(f"{PROCESS}%")

    async def renew_held(self, now: datetime, lease_seconds: float = LEASE_SECONDS) -> int:
        """Extend every lease this process holds that has not run out yet."""
        if not self._holding:
            return 0
        t, until, claims = self.table, now.timestamp() + lease_seconds, self._claims

        async def renew(conn: AsyncConnection) -> int:
            result = await conn.execute(
                update(t)
                .where(self._ours(), t.c.lease_until >= now.timestamp(), t.c.lease_until < until)
                .values(lease_until=until)
            )
            return int(result.rowcount)

        renewed = await self._db.write_inline(renew)
        if renewed == 0 and claims == self._claims:
            self._holding = False
        return renewed

    async def release_held(self) -> int:
        """Give back every row this process holds (at shutdown, once its work stopped)."""

        async def release(conn: AsyncConnection) -> int:
            # "Leased at all" first: the partial index of the leased rows (tables.leased_index)
            # answers it, where the owner's LIKE alone read every row the table ever held.
            held = self.table.c.lease_until.is_not(None)
            result = await conn.execute(
                update(self.table).where(held, self._ours()).values(lease_until=None, lease_owner=None)
            )
            if result.rowcount:
                await self._released(conn)
            return int(result.rowcount)

        return await self._db.write_inline(release)

    async def delete(self, conn: AsyncConnection, held: Sequence[tuple[Any, str]]) -> int:
        """Finish claimed rows by removing them (the outbox once published): each ``(row id,
        owner)`` only while that owner still holds it, in one statement."""
        if not held:
            return 0
        ids = [row_id for row_id, _ in held]
        result = await conn.execute(self._delete, {"delete_ids": ids, "delete_held": list(held)})
        return int(result.rowcount)

    async def next_due(self, where: Narrowing | None = None, now: datetime | None = None) -> float | None:
        """When the next row can be claimed (epoch seconds), a leased one from when its
        lease ends; None when nothing is left to do. ``now``: the time a narrowing's
        CLAIM_STAMP stands for."""
        query = self._claim_statements(where).next_due
        values = _bound(where) if now is None else _bound(where, claim_stamp=now.timestamp())

        async def read(conn: AsyncConnection) -> Any:
            return (await conn.execute(query, values)).scalar()

        # Inline: every worker asks after each batch that woke it (Database.read_inline).
        value = await self._db.read_inline(read)
        return float(value) if value is not None else None

    async def claim_if_due(
        self, now: datetime, limit: int, lease_seconds: float, where: Narrowing | None = None
    ) -> Claim:
        """:meth:`claim` after a read that finds something to claim: for queues whose
        workers are woken after every alert batch and nearly always find nothing due (a
        write transaction would queue behind the consumer's and, on SQLite, fsync)."""
        if not await self.any_due(now, where):
            return Claim("", [])
        return await self.claim(now, limit, lease_seconds, where)

    async def any_due(self, now: datetime, where: Narrowing | None = None) -> bool:
        """A read-only look: is anything claimable?"""
        query = self._claim_statements(where).any_due
        values = _bound(where, claim_stamp=now.timestamp())

        async def read(conn: AsyncConnection) -> bool:
            return (await conn.execute(query, values)).first() is not None

        return await self._db.read_inline(read)


def _bound(where: Narrowing | None, **values: Any) -> dict[str, Any]:
    """A narrowing's values with the statement's own."""
    return {**(where.values if where is not None else {}), **values}
