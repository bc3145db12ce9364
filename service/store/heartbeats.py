"""Heartbeats (dead man's switch): when each named heartbeat was last seen, and since when
it is missing (set once its missing-heartbeat alert was published, cleared once its
resolve was)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from service.store.database import Database
from service.store.tables import heartbeats


@dataclass(frozen=True, slots=True)
class HeartbeatRow:
    name: str
    last_seen: datetime
    missing_since: datetime | None


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _heartbeat(row: Row[Any]) -> HeartbeatRow:
    return HeartbeatRow(row.name, _at(row.last_seen), _at(row.missing_since) if row.missing_since else None)


class Heartbeats:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def seen(self, names: Iterable[str], at: datetime) -> None:
        """Record that these heartbeats arrived at ``at``."""
        names = sorted(set(names))
        if not names:
            return
        async with self._db.write() as conn:
            await self._insert(conn, names, at)
            await conn.execute(
                update(heartbeats)
                .where(heartbeats.c.name.in_(names), heartbeats.c.last_seen < at.timestamp())
                .values(last_seen=at.timestamp())
            )

    async def watch(self, names: Iterable[str], now: datetime) -> list[HeartbeatRow]:
        """Every heartbeat of ``names``; one never seen counts from ``now``, when we began
        to watch for it."""
        names = sorted(set(names))
        if not names:
            return []
        async with self._db.write() as conn:
            await self._insert(conn, names, now)
            rows = await conn.execute(select(heartbeats).where(heartbeats.c.name.in_(names)))
            return [_heartbeat(r) for r in rows]

    async def all(self) -> list[HeartbeatRow]:
        """Every heartbeat watched so far, by name. Only reads: one not watched yet has no
        row, and ``watch`` (the noise worker) decides when watching begins."""
        async with self._db.read() as conn:
            rows = await conn.execute(select(heartbeats).order_by(heartbeats.c.name))
            return [_heartbeat(r) for r in rows]

    async def set_missing(self, name: str, since: datetime | None) -> None:
        """Missing since ``since`` (its alert is published), or back (None: its resolve is)."""
        async with self._db.write() as conn:
            value = since.timestamp() if since else None
            await conn.execute(
                update(heartbeats).where(heartbeats.c.name == name).values(missing_since=value)
            )

    async def _insert(self, conn: AsyncConnection, names: list[str], at: datetime) -> None:
        for name in names:
            await conn.execute(
                self._db.insert_ignore(heartbeats).values(
                    name=name, last_seen=at.timestamp(), missing_since=None
                )
            )
