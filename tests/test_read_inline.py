"""The consumer's reads and the workers' claims on SQLite (``Database.read_inline``,
``write_inline``): run at once in the event loop's thread, and through aiosqlite's thread
only when SQLite answers busy."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from faststream.kafka import KafkaBroker
from sqlalchemy.exc import OperationalError

from service.emit.relay import CLAIM_AT_ONCE, OutboxRelay
from service.models import PageAction
from service.observability.metrics import Metrics
from service.store import database
from service.store.outbox import OutboxClaim, OutboxRecord, TimelineEntry
from service.store.pages import NewPage
from service.store.store import Effects, Store
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


async def test_the_workers_claims_and_leases_do_not_give_up_the_loop(store: Store) -> None:
    """A page worker's claim held SQLite's write lock for ~30 ms of trips through aiosqlite
    in a storm, and the consumer's group commits queued behind it."""
    inc = make_incident("inc-2", "DiskFull", "SEV-3")
    event = OutboxRecord("events", b"inc-2", b"opened", TimelineEntry("inc-2", "x", "opened"))
    page = NewPage(inc.id, "console", PageAction.TRIGGER, inc.opening)
    assert await store.commit(Effects(incidents=[inc], pages=[page], events=[event]), T0)
    jobs, turned = await turned_while(store.pages.claim_due(T0, 1, 10, set(), {"console"}))
    assert [j.incident_id for j in jobs] == ["inc-2"] and not turned
    renewed, turned = await turned_while(store.pages.queue.renew_held(T0, lease_seconds=60))
    assert renewed == 1 and not turned
    claim, turned = await turned_while(store.outbox.claim(T0, 10, 30))
    assert [r.value for _, r in claim.records] == [b"opened"] and not turned
    removed, turned = await turned_while(store.outbox.published([claim.sent()]))
    assert removed == 1 and not turned
    released, turned = await turned_while(store.pages.queue.release_held())
    assert released == 1 and not turned


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
