"""The database: one engine for SQLite or PostgreSQL, read and write transactions.

Repositories take the connection of the transaction they are part of, so that one
batch (incidents, events, pages, timers, remediation jobs) is one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Executable, Row, Table, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

T = TypeVar("T")


class Database:
    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        self.dialect = parsed.get_backend_name()
        self.postgres = self.dialect == "postgresql"
        self.engine: AsyncEngine = create_async_engine(url, pool_pre_ping=self.postgres)
        # SQLite has one write lock; writers that queue for it in SQLite's busy handler
        # sleep and retry (measured: 15 ms per one-row write under load). Queue them
        # in-process instead.
        self._write_lock = None if self.postgres else asyncio.Lock()

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed on exit, rolled back on an exception."""
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
        else:
            async with self._write_lock, self.engine.begin() as conn:
                yield conn

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            yield conn

    async def first(self, query: Executable, conn: AsyncConnection | None = None) -> Row[Any] | None:
        """The first row of a query, in ``conn``'s transaction or a read of its own."""
        if conn is not None:
            return (await conn.execute(query)).first()
        async with self.read() as own:
            return (await own.execute(query)).first()

    async def close(self) -> None:
        await self.engine.dispose()

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.execute(text("SELECT 1"))

    def insert_ignore(self, table: Table) -> Any:
        """INSERT that skips rows violating a unique constraint (the idempotency keys)."""
        ins = pg_insert if self.postgres else sqlite_insert
        return ins(table).on_conflict_do_nothing()


def chunks(items: list[T], size: int = 500) -> Iterable[list[T]]:
    """Bound the parameters of one statement (SQLite allows 32,766)."""
    for i in range(0, len(items), size):
        yield items[i : i + size]
