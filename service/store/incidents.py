"""Incidents: one row per incident, its state as JSON, optimistic versions."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Sequence

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from service.models import Incident
from service.store.codec import dump_incident, load_incident
from service.store.database import Database, chunks
from service.store.tables import IS_CURRENT, incidents


class ConcurrentUpdate(Exception):
    """Another worker changed an incident this transaction read; redo the work."""


class Incidents:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def load_current(self, group_keys: Iterable[str]) -> dict[str, Incident]:
        """group key -> the group's current incident (open, or resolved and reopenable)."""
        keys = list(set(group_keys))

        async def current(conn: AsyncConnection) -> dict[str, Incident]:
            found: dict[str, Incident] = {}
            for chunk in chunks(keys):
                rows = await conn.execute(
                    select(incidents).where(incidents.c.group_key.in_(chunk), IS_CURRENT)
                )
                for row in rows:
                    found[row.group_key] = load_incident(row)
            return found

        return await self._db.read_inline(current)

    async def get(self, incident_id: str) -> Incident | None:
        async with self._db.read() as conn:
            row = (await conn.execute(select(incidents).where(incidents.c.id == incident_id))).first()
        return load_incident(row) if row else None

    async def list(
        self, status: str | None, severity: str | None, limit: int, offset: int = 0
    ) -> list[Incident]:
        """Newest first."""
        query = (
            select(incidents)
            .order_by(incidents.c.opened_at.desc(), incidents.c.id)
            .limit(limit)
            .offset(offset)
        )
        if status:
            query = query.where(incidents.c.status == status)
        if severity:
            query = query.where(incidents.c.severity == severity)
        async with self._db.read() as conn:
            return [load_incident(r) for r in await conn.execute(query)]

    async def open_versions(self, limit: int) -> dict[str, int]:
        """id -> stored version of the newest ``limit`` open incidents: what changed since a
        cache was filled, without decoding any incident."""
        query = (
            select(incidents.c.id, incidents.c.version)
            .where(incidents.c.status == "open")
            .order_by(incidents.c.opened_at.desc(), incidents.c.id)
            .limit(limit)
        )

        async def versions(conn: AsyncConnection) -> dict[str, int]:
            return {r.id: r.version for r in await conn.execute(query)}

        return await self._db.read_inline(versions)

    async def get_many(self, ids: Sequence[str]) -> Sequence[Incident]:
        async def many(conn: AsyncConnection) -> builtins.list[Incident]:
            out: builtins.list[Incident] = []
            for chunk in chunks(builtins.list(ids)):
                rows = await conn.execute(select(incidents).where(incidents.c.id.in_(chunk)))
                out.extend(load_incident(r) for r in rows)
            return out

        return await self._db.read_inline(many)

    async def open_counts(self) -> dict[str, int]:
        """severity -> open incidents."""
        async with self._db.read() as conn:
            rows = await conn.execute(
                select(incidents.c.severity, func.count())
                .where(incidents.c.status == "open")
                .group_by(incidents.c.severity)
            )
            return {sev: n for sev, n in rows}

    @staticmethod
    async def save(conn: AsyncConnection, inc: Incident) -> None:
        """Insert a new incident or update it from the version it was read at; raises
        :class:`ConcurrentUpdate` if someone else wrote it since."""
        await Incidents.save_all(conn, [inc])

    @staticmethod
    async def save_all(conn: AsyncConnection, incs: Sequence[Incident]) -> None:
        """:meth:`save` for each, the new ones in one insert (a storm opens hundreds at once).
        Updates first: a new incident of a group takes the place of one that stops being the
        group's current one (a unique index), and that one's update frees the place."""
        for inc in incs:
            if inc.version == 0:
                continue
            result = await conn.execute(
                update(incidents)
                .where(incidents.c.id == inc.id, incidents.c.version == inc.version)
                .values(version=inc.version + 1, **_values(inc))
            )
            if result.rowcount != 1:
                raise ConcurrentUpdate(inc.id)
        new = [{"id": i.id, "version": 1, **_values(i)} for i in incs if i.version == 0]
        if new:
            await conn.execute(insert(incidents), new)


def _values(inc: Incident) -> dict[str, object]:
    return {
        "group_key": inc.group_key,
        "is_current": inc.is_current,
        "status": inc.status.value,
        "severity": inc.severity,
        "opened_at": inc.opened_at.timestamp(),
        "data": dump_incident(inc),
    }
