"""A work queue builds a claim's statements once per narrowing condition (queue.Narrowing),
and a caller that builds its condition per call neither breaks claims nor grows the cache."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, select

from service.models import PageAction
from service.store.pages import NewPage
from service.store.queue import MAX_NARROWINGS, Narrowing
from service.store.store import Effects, Store
from service.store.tables import page_jobs
from tests.support.incidents import make_incident
from tests.support.time import T0


async def stored_pages(store: Store, count: int) -> None:
    incs = [make_incident(f"inc-{n}", f"DiskFull{n}", "SEV-3") for n in range(count)]
    pages = [NewPage(i.id, "console", PageAction.TRIGGER, i.opening) for i in incs]
    assert await store.commit(Effects(incidents=incs, pages=pages), T0)


async def test_a_narrowing_s_statements_are_built_once(store: Store) -> None:
    await stored_pages(store, 3)
    queue = store.pages.queue
    one = Narrowing(page_jobs.c.incident_id.in_(bindparam("ids", expanding=True)), {"ids": ["inc-0"]})
    other_values = Narrowing(one.condition, {"ids": ["inc-1", "inc-2"]})
    first = await queue.claim(T0, 10, 30, where=one)
    rest = await queue.claim(T0, 10, 30, where=other_values)
    assert [r.incident_id for r in first.rows] == ["inc-0"]
    assert sorted(r.incident_id for r in rest.rows) == ["inc-1", "inc-2"]
    assert queue.narrowings_kept() == 1


async def test_conditions_built_per_call_still_claim_and_the_cache_stays_bounded(store: Store) -> None:
    count = MAX_NARROWINGS + 4
    await stored_pages(store, count)
    queue = store.pages.queue
    claimed: list[str] = []
    for n in range(count):
        fresh = Narrowing(page_jobs.c.incident_id == f"inc-{n}")
        claimed += [
            r.incident_id for r in (await queue.claim(T0 + timedelta(seconds=1), 10, 30, where=fresh)).rows
        ]
    assert claimed == [f"inc-{n}" for n in range(count)]
    assert queue.narrowings_kept() == MAX_NARROWINGS


async def test_a_finish_records_each_set_of_columns_only_while_the_lease_is_held(store: Store) -> None:
    # The finish statement is built once per set of columns and reused: each use must still
    # write its own values, and only for the row and owner it names.
    await stored_pages(store, 3)
    queue = store.pages.queue
    claim = await queue.claim(T0, 10, 30)
    first, second, third = (r.id for r in claim.rows)

    async def finish(row_id: Any, owner: str, **values: Any) -> bool:
        return await store.db.write_inline(lambda conn: queue.finish(conn, row_id, owner, **values))

    assert await finish(first, claim.owner, status="sent", attempts=1)
    assert not await finish(second, "someone-else", status="sent", attempts=1)
    assert await finish(second, claim.owner, status="pending", attempts=2, next_attempt_at=9.0)
    assert await finish(third, claim.owner, status="failed", attempts=3)
    assert not await finish(third, claim.owner, status="sent", attempts=4)  # no lease any more
    async with store.db.read() as conn:
        rows = {r.id: r for r in (await conn.execute(select(page_jobs))).all()}
    assert (rows[first].status, rows[first].attempts, rows[first].lease_owner) == ("sent", 1, None)
    assert (rows[second].status, rows[second].attempts, rows[second].next_attempt_at) == ("pending", 2, 9.0)
    assert (rows[third].status, rows[third].attempts, rows[third].lease_until) == ("failed", 3, None)


async def test_next_due_answers_for_the_pagers_asked_each_time_its_statement_is_reused(store: Store) -> None:
    # One statement for every call (the pagers a bind parameter): each call's own pagers and
    # time must decide the answer, a delayed job counting from when it is due.
    inc = make_incident("inc-0", "DiskFull", "SEV-3")
    later = T0 + timedelta(minutes=5)
    pages = [
        NewPage(inc.id, "console", PageAction.TRIGGER, inc.opening),
        NewPage(inc.id, "slack", PageAction.TRIGGER, inc.opening, target="backup:first", due=later),
    ]
    assert await store.commit(Effects(incidents=[inc], pages=pages), T0)
    for _ in range(2):
        assert await store.pages.next_due({"console"}, T0) == T0.timestamp()
        assert await store.pages.next_due({"slack"}, T0) == later.timestamp()
        assert await store.pages.next_due({"opsgenie"}, T0) is None
        assert await store.pages.next_due({"console", "slack"}, T0) == T0.timestamp()
