"""A work queue builds a claim's statements once per narrowing condition (queue.Narrowing),
and a caller that builds its condition per call neither breaks claims nor grows the cache."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import bindparam

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
