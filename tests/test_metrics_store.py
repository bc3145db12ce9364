"""The metrics' reads and observations at the store, on SQLite and PostgreSQL: the backlog
queries a scrape runs, and time to acknowledge observed only for a committed transaction."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from service.emit.cloudevents import EventFactory
from service.models import PageAction
from service.observability.metrics import Metrics
from service.observability.response_times import ResponseTimes
from service.store.pages import NewPage, PageOutcome, PageStatus
from service.store.queue import Backlog
from service.store.store import ConcurrentUpdate, Effects, Store
from tests.conftest import postgres_database
from tests.support.incidents import make_incident
from tests.support.time import T0

ACK = "incidentd_incident_time_to_acknowledge_seconds"


@pytest.fixture(params=["sqlite", "postgresql"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
        else:
            url = await stack.enter_async_context(postgres_database())
        store = Store(url)
        await store.start()
        stack.push_async_callback(store.close)
        yield store


async def test_backlog_queries_count_what_is_due_and_since_when(any_store: Store) -> None:
    store = any_store
    assert await store.outbox.backlog() == Backlog(0, None)
    assert await store.pages.backlog(T0) == Backlog(0, None)
    inc = make_incident("inc-backlog")
    event = EventFactory("events", "io.incidentd", "/test").build("incident.opened", inc.snapshot(), {}, T0)
    trigger = NewPage(inc.id, "opsgenie", PageAction.TRIGGER, 1)
    backup = NewPage(
        inc.id, "opsgenie", PageAction.TRIGGER, 1, "backup:first", due=T0 + timedelta(minutes=10)
    )
    await store.commit(Effects(incidents=[inc], events=[event], pages=[trigger, backup]), T0)

    assert await store.outbox.backlog() == Backlog(1, T0.timestamp())
    # The backup page is not pending before it is due.
    assert await store.pages.backlog(T0 + timedelta(minutes=1)) == Backlog(1, T0.timestamp())
    later = T0 + timedelta(minutes=11)
    assert await store.pages.backlog(later) == Backlog(2, T0.timestamp())

    [job] = await store.pages.claim_due(later, 1, 10.0, set(), {"opsgenie"})
    assert job.target == "first"

    async def sent(conn: AsyncConnection) -> bool:
        return await store.pages.finish(conn, job, PageOutcome(PageStatus.SENT, 1), later)

    assert await store.commit(Effects(), later, guard=sent)
    # What is left is the backup, due since its due time.
    assert await store.pages.backlog(later) == Backlog(1, (T0 + timedelta(minutes=10)).timestamp())


async def test_response_times_are_observed_only_for_a_committed_transaction(any_store: Store) -> None:
    store, metrics = any_store, Metrics()
    store.on_commit(ResponseTimes(metrics))
    factory = EventFactory("events", "io.incidentd", "/test")
    inc = make_incident("inc-times", severity="SEV-2")
    await store.commit(Effects(incidents=[inc]), T0)

    stale, acked = await store.incidents.get(inc.id), await store.incidents.get(inc.id)
    assert stale is not None and acked is not None
    acked.acknowledged_at = T0 + timedelta(minutes=4)
    ack = factory.build("incident.acknowledged", acked.snapshot(), {}, acked.acknowledged_at)
    assert await store.commit(Effects(incidents=[acked], events=[ack]), acked.acknowledged_at)

    # The same acknowledgement from a stale copy (a replica that lost the race): refused, not observed.
    stale.acknowledged_at = T0 + timedelta(minutes=5)
    with pytest.raises(ConcurrentUpdate):
        await store.commit(Effects(incidents=[stale], events=[ack]), T0 + timedelta(minutes=5))
    # A guard that says no (a command id seen before) writes and observes nothing.
    again = await store.incidents.get(inc.id)
    assert again is not None

    async def seen_before(conn: AsyncConnection) -> bool:
        return False

    assert not await store.commit(Effects(incidents=[again], events=[ack]), T0, guard=seen_before)

    reg = metrics.registry
    assert reg.get_sample_value(f"{ACK}_count", {"severity": "SEV-2"}) == 1
    assert reg.get_sample_value(f"{ACK}_sum", {"severity": "SEV-2"}) == 240.0
