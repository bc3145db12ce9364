"""SQLite's group commit: commits that queue together are one transaction, and a failing one
fails alone."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from service.store.incidents import ConcurrentUpdate
from service.store.store import Effects, Store
from tests.support.incidents import make_incident
from tests.support.time import T0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    await s.start()
    try:
        yield s
    finally:
        await s.close()


def count_transactions(store: Store) -> list[int]:
    """Counts the write transactions from now on (a group commit's and any other)."""
    seen = [0]

    def counting(write: Any) -> Any:
        @contextlib.asynccontextmanager
        async def counted() -> AsyncIterator[AsyncConnection]:
            seen[0] += 1
            async with write() as conn:
                yield conn

        return counted

    write_inline = store.db.write_inline

    async def counted_group(work: Any) -> Any:
        seen[0] += 1
        return await write_inline(work)

    store.db.write = counting(store.db.write)  # type: ignore[method-assign]
    store.db.write_inline = counted_group  # type: ignore[method-assign]
    return seen


async def test_commits_that_queue_together_are_one_transaction(store: Store) -> None:
    seen = count_transactions(store)
    a, b = make_incident("inc-a"), make_incident("inc-b", "AuthBroken", "SEV-2")
    done = await asyncio.gather(
        store.commit(Effects(incidents=[a]), T0), store.commit(Effects(incidents=[b]), T0)
    )
    assert done == [True, True] and seen == [1]
    assert {i.id for i in await store.incidents.list("open", None, 10)} == {"inc-a", "inc-b"}


async def test_a_failing_commit_fails_alone_and_a_guard_that_says_no_writes_nothing(store: Store) -> None:
    seen = count_transactions(store)
    stale = make_incident("inc-stale")
    stale.version = 5  # read at a version the store never had: someone else wrote it
    refused = make_incident("inc-refused")

    async def no(conn: Any) -> bool:
        return False

    results = await asyncio.gather(
        store.commit(Effects(incidents=[make_incident("inc-ok")]), T0),
        store.commit(Effects(incidents=[stale]), T0),
        store.commit(Effects(incidents=[refused]), T0, guard=no),
        return_exceptions=True,
    )
    assert results[0] is True and isinstance(results[1], ConcurrentUpdate) and results[2] is False
    # The group's transaction failed, then each was written alone.
    assert seen == [4]
    assert [i.id for i in await store.incidents.list("open", None, 10)] == ["inc-ok"]


async def test_a_groups_effects_keep_each_commits_time_and_order(store: Store) -> None:
    """The group's rows go in one insert per table: each commit's events keep its own time,
    in the commits' order, and a commit its guard refused adds none."""
    from datetime import timedelta

    from service.store.outbox import OutboxRecord, TimelineEntry

    def event(inc: str, n: int) -> OutboxRecord:
        return OutboxRecord(
            "events", inc.encode(), f"{inc}-{n}".encode(), TimelineEntry(inc, "x", f"{inc} {n}")
        )

    async def no(conn: Any) -> bool:
        return False

    seen = count_transactions(store)
    later = T0 + timedelta(seconds=30)
    a = make_incident("inc-a")
    b, c = make_incident("inc-b", "AuthBroken", "SEV-2"), make_incident("inc-c", "DiskFull", "SEV-3")
    done = await asyncio.gather(
        store.commit(Effects(incidents=[a], events=[event("inc-a", 1), event("inc-a", 2)]), T0),
        store.commit(Effects(incidents=[b], events=[event("inc-b", 1)]), later),
        store.commit(Effects(incidents=[c], events=[event("inc-c", 1)]), later, guard=no),
    )
    assert done == [True, True, False] and seen == [1]
    assert [(t.at, t.summary) for t in await store.outbox.timeline("inc-a")] == [
        (T0, "inc-a 1"),
        (T0, "inc-a 2"),
    ]
    assert [(t.at, t.summary) for t in await store.outbox.timeline("inc-b")] == [(later, "inc-b 1")]
    assert await store.outbox.timeline("inc-c") == []
    claim = await store.outbox.claim(later, 10, 30)
    assert [r.value for _, r in claim.records] == [b"inc-a-1", b"inc-a-2", b"inc-b-1"]
    assert {i.id for i in await store.incidents.list("open", None, 10)} == {"inc-a", "inc-b"}


async def test_a_new_incident_takes_the_place_of_the_one_it_replaces_in_the_same_commit(store: Store) -> None:
    """A group has one current incident (a unique index): the old one's update is written
    before the new one's insert, whatever order the commit lists them in."""
    from service.models import IncidentStatus

    old = make_incident("inc-old")
    await store.commit(Effects(incidents=[old]), T0)
    [stored] = await store.incidents.get_many(["inc-old"])
    stored.status, stored.is_current = IncidentStatus.RESOLVED, False
    new = make_incident("inc-new")
    assert await store.commit(Effects(incidents=[new, stored]), T0)
    current = await store.incidents.load_current([old.group_key])
    assert current[old.group_key].id == "inc-new"


async def test_a_lock_held_by_another_process_is_waited_for_off_the_event_loop(
    store: Store, tmp_path: Path
) -> None:
    """Group commits run their statements in the event loop's thread, but never SQLite's busy
    wait: while another process holds the write lock, the loop keeps running, and the commit
    is written once the lock is let go."""
    import sqlite3

    other = sqlite3.connect(str(tmp_path / "state.db"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    commit = asyncio.create_task(store.commit(Effects(incidents=[make_incident("inc-late")]), T0))
    loop = asyncio.get_running_loop()
    gaps = []
    for _ in range(20):  # the loop turns while the commit waits (a busy wait would stall it)
        before = loop.time()
        await asyncio.sleep(0.01)
        gaps.append(loop.time() - before)
    assert max(gaps) < 1.0, gaps  # SQLite's busy wait would be its 5 s timeout
    assert not commit.done()
    other.execute("ROLLBACK")
    other.close()
    assert await asyncio.wait_for(commit, 30) is True
    assert [i.id for i in await store.incidents.list("open", None, 10)] == ["inc-late"]
