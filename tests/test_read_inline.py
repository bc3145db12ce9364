"""The consumer's reads and the workers' claims on SQLite (``Database.read_inline``,
``write_inline``): run at once in the event loop's thread (a write's COMMIT in a thread of
its own), and through aiosqlite's thread only when SQLite answers busy."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from faststream.kafka import KafkaBroker
from sqlalchemy import event, insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from service.emit.relay import CLAIM_AT_ONCE, OutboxRelay
from service.models import PageAction
from service.observability.metrics import Metrics
from service.store import database
from service.store.outbox import OutboxClaim, OutboxRecord, TimelineEntry
from service.store.pages import NewPage
from service.store.store import Effects, Store
from service.store.tables import heartbeats
from tests.support.incidents import make_incident
from tests.support.time import T0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    await s.start()
    try:
        assert await s.commit(Effects(incidents=[make_incident("inc-1", "ApiDown")]), T0)
        yield s
    finally:
        await s.close()


async def turned_while(read: Any) -> tuple[Any, bool]:
    """What ``read`` returned, and whether the event loop ran anything else meanwhile."""
    turned: list[bool] = []
    asyncio.get_running_loop().call_soon(turned.append, True)
    result = await read
    return result, bool(turned)


async def test_the_consumers_reads_do_not_give_up_the_loop(store: Store) -> None:
    key = make_incident("inc-1", "ApiDown").group_key
    current, turned = await turned_while(store.incidents.load_current([key]))
    assert [i.id for i in current.values()] == ["inc-1"] and not turned
    many, turned = await turned_while(store.incidents.get_many(["inc-1"]))
    assert [i.id for i in many] == ["inc-1"] and not turned
    versions, turned = await turned_while(store.incidents.open_versions(10))
    assert versions == {"inc-1": 1} and not turned
    _, turned = await turned_while(store.silences.active(T0))
    assert not turned
    # A read through aiosqlite waits for its thread: the loop runs meanwhile.
    listed, turned = await turned_while(store.incidents.list("open", None, 10))
    assert [i.id for i in listed] == ["inc-1"] and turned


def ours(store: Store, conn: Any) -> bool:
    return bool(conn.engine.url.database == store.db.engine.url.database)


@contextlib.contextmanager
def threads_at_work(store: Store) -> Iterator[dict[str, set[str]]]:
    """The threads that run SQL statements on ``store``'s database and the threads that
    COMMIT there, meanwhile (not another test's store still running in this process)."""
    seen: dict[str, set[str]] = {"statements": set(), "commits": set()}

    def statement(conn: Any, *_: Any) -> None:
        if ours(store, conn):
            seen["statements"].add(threading.current_thread().name)

    def commit(conn: Any) -> None:
        if ours(store, conn):
            seen["commits"].add(threading.current_thread().name)

    event.listen(Engine, "before_cursor_execute", statement)
    event.listen(Engine, "commit", commit)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", statement)
        event.remove(Engine, "commit", commit)


async def test_the_workers_claims_run_in_the_loop_and_commit_in_a_thread(store: Store) -> None:
    """A page worker's claim held SQLite's write lock for ~30 ms of trips through aiosqlite
    in a storm, and the consumer's group commits queued behind it: its statements run in the
    loop's thread, and only its COMMIT (an fsync, the GIL let go) in the committing thread."""
    loop_thread = threading.current_thread().name
    inc = make_incident("inc-2", "DiskFull", "SEV-3")
    event_row = OutboxRecord("events", b"inc-2", b"opened", TimelineEntry("inc-2", "x", "opened"))
    page = NewPage(inc.id, "console", PageAction.TRIGGER, inc.opening)
    with threads_at_work(store) as seen:
        assert await store.commit(Effects(incidents=[inc], pages=[page], events=[event_row]), T0)
        jobs = await store.pages.claim_due(T0, 1, 10, set(), {"console"})
        assert [j.incident_id for j in jobs] == ["inc-2"]
        assert await store.pages.queue.renew_held(T0, lease_seconds=60) == 1
        claim = await store.outbox.claim(T0, 10, 30)
        assert [r.value for _, r in claim.records] == [b"opened"]
        assert await store.outbox.published([claim.sent()]) == 1
        assert await store.pages.queue.release_held() == 1
    assert seen["statements"] == {loop_thread}
    assert len(seen["commits"]) == 1 and seen["commits"].pop().startswith("sqlite-commit")


@contextlib.contextmanager
def held_commit(store: Store) -> Iterator[tuple[threading.Event, threading.Event]]:
    """Each inline COMMIT on ``store``'s database waits in its thread for the second event;
    the first is set once one does."""
    entered, release = threading.Event(), threading.Event()

    def hold(conn: Any) -> None:
        if ours(store, conn) and threading.current_thread().name.startswith("sqlite-commit"):
            entered.set()
            release.wait(10)

    event.listen(Engine, "commit", hold)
    try:
        yield entered, release
    finally:
        release.set()
        event.remove(Engine, "commit", hold)


async def test_the_loop_reads_while_a_commit_is_written(store: Store) -> None:
    with held_commit(store) as (entered, release):
        write = asyncio.create_task(store.commit(Effects(incidents=[make_incident("inc-5", "DiskFull")]), T0))
        assert await asyncio.to_thread(entered.wait, 10)
        # The commit is in its thread: the loop runs, and a WAL read does not wait for it.
        assert [i.id for i in await store.incidents.get_many(["inc-1", "inc-5"])] == ["inc-1"]
        assert not write.done()
        release.set()
        assert await write
    assert [i.id for i in await store.incidents.get_many(["inc-5"])] == ["inc-5"]


def beat(name: str) -> Callable[[AsyncConnection], Awaitable[Any]]:
    """An inline write of heartbeat ``name``."""
    return lambda conn: conn.execute(insert(heartbeats).values(name=name, last_seen=0.0))


async def test_a_writer_cancelled_during_its_commit_waits_for_it(store: Store) -> None:
    """The connection and the write lock are handed on only once the COMMIT is done; the
    cancelled write is committed all the same (the caller learns nothing of it)."""
    with held_commit(store) as (entered, release):
        write = asyncio.create_task(store.db.write_inline(beat("cancelled")))
        assert await asyncio.to_thread(entered.wait, 10)
        write.cancel()
        await asyncio.sleep(0)
        assert not write.done()  # still waiting for its COMMIT
        entered.clear()
        after = asyncio.create_task(store.db.write_inline(beat("after")))
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await write
        await after
    assert {h.name for h in await store.heartbeats.all()} == {"cancelled", "after"}


async def test_the_relay_claims_a_backlog_a_hundred_events_at_a_time(store: Store) -> None:
    """Each claim runs in the loop's thread, with the events' bodies: a backlog is taken in
    claims of CLAIM_AT_ONCE, and all of it goes out."""
    events = [
        OutboxRecord("events", b"inc-3", f"event {n}".encode(), TimelineEntry("inc-3", "x", str(n)))
        for n in range(2 * CLAIM_AT_ONCE + 50)
    ]
    assert await store.commit(Effects(events=events), T0)
    sent: list[bytes] = []
    claimed: list[int] = []

    class Broker:
        async def publish(self, value: bytes, topic: str, **_: Any) -> asyncio.Future[None]:
            sent.append(value)
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

    claim = store.outbox.claim

    async def counted(*args: Any, **kwargs: Any) -> OutboxClaim:
        out = await claim(*args, **kwargs)
        claimed.append(len(out.records))
        return out

    store.outbox.claim = counted  # type: ignore[method-assign]
    relay = OutboxRelay(store.outbox, cast(KafkaBroker, Broker()), Metrics())
    assert await relay.flush() == len(events)
    assert claimed == [CLAIM_AT_ONCE, CLAIM_AT_ONCE, 50] and sorted(sent) == sorted(e.value for e in events)
    assert await store.outbox.unpublished(10) == []


def failing_inline(monkeypatch: pytest.MonkeyPatch, message: str) -> list[str]:
    """The next inline statement fails with SQLite's ``message``; returns the failures."""
    failed: list[str] = []
    execute = database.InlineConnection.execute

    async def once(self: database.InlineConnection, statement: Any, parameters: Any = None) -> Any:
        if not failed:
            failed.append(message)
            raise OperationalError(str(statement), {}, sqlite3.OperationalError(message))
        return await execute(self, statement, parameters)

    monkeypatch.setattr(database.InlineConnection, "execute", once)
    return failed


async def test_a_read_that_finds_sqlite_busy_runs_again_off_the_loop(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed = failing_inline(monkeypatch, "database is locked")
    key = make_incident("inc-1", "ApiDown").group_key
    current, turned = await turned_while(store.incidents.load_current([key]))
    assert failed and [i.id for i in current.values()] == ["inc-1"] and turned


async def test_any_other_failure_of_a_read_is_raised(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    failing_inline(monkeypatch, "no such table: incidents")
    with pytest.raises(OperationalError, match="no such table"):
        await store.incidents.get_many(["inc-1"])
