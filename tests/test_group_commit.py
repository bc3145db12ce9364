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
    """Counts the write transactions from now on."""
    seen = [0]
    write = store.db.write

    @contextlib.asynccontextmanager
    async def counted() -> AsyncIterator[AsyncConnection]:
        seen[0] += 1
        async with write() as conn:
            yield conn

    store.db.write = counted  # type: ignore[method-assign]
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
