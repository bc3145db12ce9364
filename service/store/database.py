"""The database: one engine for SQLite or PostgreSQL, read and write transactions.

Repositories take the connection of the transaction they are part of, so that one
batch (incidents, events, pages, timers, remediation jobs) is one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Executable, Row, Table, create_engine, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
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
        # SQLite's hot writes (group commits, the queues' claims and leases) and the
        # consumer's reads run through the synchronous driver, in the event loop's own
        # thread (write_inline, read_inline). No busy wait there: if another process holds
        # the lock, the work waits for it in aiosqlite's thread instead, never in the loop.
        self._inline = (
            None
            if self.postgres
            else create_engine(parsed.set(drivername="sqlite"), connect_args={"timeout": 0})
        )
        # An inline write's COMMIT (its fsync) is written by this thread; sqlite3 lets go of
        # the GIL meanwhile, so the loop takes webhooks and runs the next stages. Here an fsync
        # takes ~0.3 ms and the hand-over costs the loop ~0.1 ms; on a disk whose fsync takes
        # milliseconds, the loop no longer stops for each one.
        self._committer = None if self.postgres else ThreadPoolExecutor(1, thread_name_prefix="sqlite-commit")

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed on exit, rolled back on an exception."""
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
        else:
            async with self._write_lock, self.engine.begin() as conn:
                yield conn

    async def write_inline(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """``work`` in a write transaction (in turn with every other :meth:`write`). On SQLite
        its statements run at once, in this thread, with no trip to the driver's thread:
        through aiosqlite each statement is three or four trips, and under a storm each trip
        back waits for the busy event loop and the GIL (a group commit of a dozen statements
        took 60-80 ms that way, for 2-3 ms of SQLite's own work, and the one writer was busy
        for the whole storm; a page worker's claim held the write lock 30 ms, and the group
        commits queued behind the claims). The loop is held for that SQLite work instead,
        never for a wait: if another process holds SQLite's write lock, ``work`` runs again
        through :meth:`write`, whose wait is in aiosqlite's thread. The COMMIT alone is
        written in a thread of its own, the loop free meanwhile. ``work`` may run twice;
        only the committed run counts."""
        if self._inline is not None and self._write_lock is not None and self._committer is not None:
            async with self._write_lock:
                done = await _run_inline(work, self._inline.connect, self._committer)
            if not isinstance(done, _Busy):
                return done
        async with self.write() as conn:
            return await work(conn)

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            yield conn

    async def read_inline(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """``work``: the consumer's small indexed reads, which await nothing but
        ``execute``. On SQLite they run at once, in this thread, as :meth:`write_inline`'s
        statements do: through aiosqlite each statement is several trips to the driver's
        thread and back, and under a storm each trip back waited for the busy event loop
        (measured: 11-12 ms a read, where SQLite took well under one; 6 s of a
        100,000-alert storm's consumer). A WAL reader waits for no writer; should SQLite
        answer busy all the same (a recovery, a checkpoint as the last connection closes),
        ``work`` runs again through :meth:`read`. On PostgreSQL, through :meth:`read`."""
        if self._inline is not None:
            done = await _run_inline(work, self._inline.connect)
            if not isinstance(done, _Busy):
                return done
        async with self.read() as conn:
            return await work(conn)

    async def first(self, query: Executable, conn: AsyncConnection | None = None) -> Row[Any] | None:
        """The first row of a query, in ``conn``'s transaction or a read of its own."""
        if conn is not None:
            return (await conn.execute(query)).first()
        async with self.read() as own:
            return (await own.execute(query)).first()

    async def close(self) -> None:
        if self._committer is not None:
            self._committer.shutdown(wait=True)
        if self._inline is not None:
            self._inline.dispose()
        await self.engine.dispose()

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.execute(text("SELECT 1"))

    def insert_ignore(self, table: Table) -> Any:
        """INSERT that skips rows violating a unique constraint (the idempotency keys)."""
        ins = pg_insert if self.postgres else sqlite_insert
        return ins(table).on_conflict_do_nothing()


class InlineConnection:
    """What repositories use of an AsyncConnection (``await execute(...)``), over a
    synchronous connection: the statement runs when called, and the await never waits."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def execute(self, statement: Executable, parameters: Any = None) -> Any:
        return self._conn.execute(statement, parameters)


class _Busy:
    """SQLite answered busy to an inline run: run it again through aiosqlite."""


async def _run_inline(
    work: Callable[[AsyncConnection], Awaitable[T]],
    connect: Callable[[], contextlib.AbstractContextManager[Connection]],
    committer: ThreadPoolExecutor | None = None,
) -> T | _Busy:
    """``work`` over a synchronous connection, or _Busy if SQLite's lock is held elsewhere
    (nothing of it was committed). With ``committer``: in a transaction, whose COMMIT that
    executor's thread writes."""
    try:
        with connect() as sync_conn:
            # Repositories take an AsyncConnection and only await its execute().
            inline = cast(AsyncConnection, InlineConnection(sync_conn))
            if committer is None:
                return await work(inline)
            trans = sync_conn.begin()
            try:
                done = await work(inline)
            except BaseException:
                trans.rollback()
                raise
            await _to_the_end(asyncio.get_running_loop().run_in_executor(committer, trans.commit))
            return done
    except OperationalError as exc:
        if not _locked(exc):
            raise
        return _Busy()


async def _to_the_end(fut: asyncio.Future[None]) -> None:
    """Awaits ``fut`` even through a cancellation, raised once it ended: the connection
    goes back to the pool (and the write lock to the next writer) only after the thread
    that writes its COMMIT is done with it."""
    interrupted: asyncio.CancelledError | None = None
    while True:
        try:
            await asyncio.shield(fut)
            break
        except asyncio.CancelledError as exc:
            if fut.done():
                raise
            interrupted = exc
    if interrupted is not None:
        raise interrupted


def _locked(exc: OperationalError) -> bool:
    text = str(exc.orig).lower()
    return "locked" in text or "busy" in text


def chunks(items: list[T], size: int = 500) -> Iterable[list[T]]:
    """Bound the parameters of one statement (SQLite allows 32,766)."""
    for i in range(0, len(items), size):
        yield items[i : i + size]
