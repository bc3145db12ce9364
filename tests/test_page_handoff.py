"""The persist stage hands the page jobs it stores to the page worker, leased in the same
transaction: a first page needs no claim and no read of its incident (issue #13)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from service.batch import Batch, DeadLetter, PageIntent
from service.clock import ManualClock
from service.config import Settings
from service.context import Context
from service.emit.cloudevents import EventFactory
from service.models import IncidentStatus, PageAction
from service.notify.base import PageError, PageRequest
from service.notify.worker import PageWorker
from service.observability.metrics import Metrics
from service.persist.stage import PersistStage
from service.ruleset import RuleSet
from service.scheduling import IDLE_SECONDS
from service.store.store import ConcurrentUpdate, Store
from service.store.tables import page_jobs
from tests.support.incidents import make_incident
from tests.support.page_rounds import Rounds, running
from tests.support.time import T0


class GatedPager:
    """Records each request; while ``gate`` is clear, a send waits for it (a slow pager)."""

    name = "rec"

    def __init__(self) -> None:
        self.sent: list[PageRequest] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = asyncio.Event()

    async def send(self, request: PageRequest) -> str | None:
        self.waiting.set()
        await self.gate.wait()
        self.sent.append(request)
        return f"ref-{len(self.sent)}"

    async def aclose(self) -> None:
        return None


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def any_store(url: str) -> AsyncIterator[Store]:
    s = Store(url)
    await s.start()
    yield s
    await s.close()


async def _no_dead_letters(dead: list[DeadLetter]) -> None:
    raise AssertionError(dead)


class Replica:
    """One process's page worker (its run loop not started: only the handoff starts jobs)
    and the persist stage that hands it the jobs."""

    def __init__(self, store: Store, rules: RuleSet, pager: GatedPager, **settings: Any) -> None:
        ctx = Context(
            store,
            rules,
            EventFactory("events", "io.incidentd", "/test"),
            ManualClock(T0),
            Metrics(),
            Settings(**settings),
        )
        self.worker = PageWorker(ctx, {"rec": pager})
        self.persist = PersistStage(ctx, ["rec"], [], _no_dead_letters, handoff=self.worker)

    async def store_opening(self, inc_id: str, severity: str = "SEV-1", resolved: bool = False) -> Batch:
        inc = make_incident(inc_id, alertname=f"Down-{inc_id}", severity=severity)
        batch = Batch([], T0, changed={inc.id: inc})
        batch.pages.append(PageIntent(inc.id, PageAction.TRIGGER, 1))
        if resolved:
            inc.status = IncidentStatus.RESOLVED
            batch.pages.append(PageIntent(inc.id, PageAction.CLOSE, 1))
        return await self.persist(batch)


async def _jobs(store: Store, inc_id: str) -> list[tuple[str, str]]:
    return [(j.action, j.status) for j in await store.pages.for_incident(inc_id)]


async def test_a_first_page_goes_out_from_the_transaction_that_stored_it(
    any_store: Store, rules: RuleSet
) -> None:
    pager = GatedPager()
    replica = Replica(any_store, rules, pager)
    batch = await replica.store_opening("inc-1")
    # No worker loop runs here, and nothing woke one: the handoff alone sent the page.
    await replica.worker.drain()
    assert [r.incident_id for r in pager.sent] == ["inc-1"]
    assert await _jobs(any_store, "inc-1") == [("trigger", "sent")]
    assert page_jobs.name not in batch.stored.queues  # nothing left for a claim to find


async def test_a_handed_job_is_leased_so_another_replica_cannot_claim_it(
    any_store: Store, rules: RuleSet
) -> None:
    pager = GatedPager()
    pager.gate.clear()
    a, b = Replica(any_store, rules, pager), Replica(any_store, rules, pager)
    await a.store_opening("inc-1")
    await pager.waiting.wait()  # a's send is in flight
    assert await b.worker.run_once() == 0
    pager.gate.set()
    await a.worker.drain()
    assert await b.worker.run_once() == 0
    assert len(pager.sent) == 1
    assert await _jobs(any_store, "inc-1") == [("trigger", "sent")]


async def test_with_every_slot_busy_pages_wait_for_a_claim_most_severe_first(
    store: Store, rules: RuleSet
) -> None:
    pager = GatedPager()
    pager.gate.clear()
    replica = Replica(store, rules, pager, page_concurrency=1)
    await replica.store_opening("inc-0")
    await pager.waiting.wait()
    # The one slot is busy: these are not handed (nor held in memory) but left to a claim.
    low = await replica.store_opening("inc-low", severity="SEV-3")
    high = await replica.store_opening("inc-high", severity="SEV-1")
    assert page_jobs.name in low.stored.queues and page_jobs.name in high.stored.queues
    pager.gate.set()
    await replica.worker.drain()
    while await replica.worker.run_once():
        await replica.worker.drain()
    assert [r.incident_id for r in pager.sent] == ["inc-0", "inc-high", "inc-low"]


async def test_a_close_stored_with_its_trigger_is_not_handed_ahead_of_it(
    store: Store, rules: RuleSet
) -> None:
    pager = GatedPager()
    replica = Replica(store, rules, pager)
    batch = await replica.store_opening("inc-1", resolved=True)
    await replica.worker.drain()
    # The trigger was handed and found moot (resolved in the same batch); the close was
    # left queued behind it, for the claim the stored batch wakes the worker for.
    assert await _jobs(store, "inc-1") == [("trigger", "superseded"), ("close", "pending")]
    assert page_jobs.name in batch.stored.queues
    assert await replica.worker.run_once() == 1
    await replica.worker.drain()
    assert await _jobs(store, "inc-1") == [("trigger", "superseded"), ("close", "superseded")]
    assert pager.sent == []  # nothing went out, so there is nothing to close


async def test_a_failed_commit_gives_the_reserved_slots_back(store: Store, rules: RuleSet) -> None:
    pager = GatedPager()
    replica = Replica(store, rules, pager, page_concurrency=4)
    inc = make_incident("inc-1")
    inc.version = 5  # never stored: the update finds no such version
    batch = Batch([], T0, changed={inc.id: inc}, pages=[PageIntent(inc.id, PageAction.TRIGGER, 1)])
    with pytest.raises(ConcurrentUpdate):
        await replica.persist(batch)
    assert replica.worker.reserve(10).slots == 4
    assert pager.sent == [] and await _jobs(store, "inc-1") == []


async def test_a_page_recording_its_outcome_holds_no_pager_call_slot(store: Store, rules: RuleSet) -> None:
    """INCIDENTD_PAGE_CONCURRENCY bounds pager calls: with one slot, the second incident's
    page goes out while the first's outcome still waits for the store."""
    pager = GatedPager()
    replica = Replica(store, rules, pager, page_concurrency=1)
    recording, release = asyncio.Event(), asyncio.Event()
    commit = store.commit

    async def slow_outcomes(*args: Any, **kw: Any) -> bool:
        if kw.get("guard") is not None and not release.is_set():  # a page job's outcome
            recording.set()
            await release.wait()
        return await commit(*args, **kw)

    store.commit = slow_outcomes  # type: ignore[method-assign]
    await replica.store_opening("inc-1")
    await recording.wait()  # inc-1 was sent; its outcome waits
    assert [r.incident_id for r in pager.sent] == ["inc-1"]
    await replica.store_opening("inc-2")  # handed: the slot is free
    pager.waiting.clear()
    await asyncio.wait_for(pager.waiting.wait(), 10)  # not after inc-1's outcome: never
    assert [r.incident_id for r in pager.sent] == ["inc-1", "inc-2"]
    release.set()
    await replica.worker.drain()
    assert await _jobs(store, "inc-1") == [("trigger", "sent")]
    assert await _jobs(store, "inc-2") == [("trigger", "sent")]


async def test_handed_pages_that_leave_nothing_in_the_store_start_no_claim_round(
    store: Store, rules: RuleSet
) -> None:
    """A storm's pages are handed and done one by one: none of them may cost a claim's
    transaction and a next-due read that find nothing."""
    pager = GatedPager()
    replica = Replica(store, rules, pager)
    rounds = Rounds(store)
    async with running(replica.worker):
        await rounds.next_sleep()  # the first round found nothing: asleep until IDLE_SECONDS
        asleep_until = replica.worker.sleeping_until
        for i in range(3):
            await replica.store_opening(f"inc-{i}")
        await replica.worker.drain()
        assert len(pager.sent) == 3
        assert replica.worker.sleeping_until == asleep_until  # never woken
        assert rounds.claims == 1


async def test_a_job_queued_behind_one_in_flight_is_claimed_as_soon_as_that_one_ends(
    store: Store, rules: RuleSet
) -> None:
    pager = GatedPager()
    pager.gate.clear()
    replica = Replica(store, rules, pager)
    rounds = Rounds(store)
    async with running(replica.worker):
        await rounds.next_sleep()
        await replica.store_opening("inc-1")
        await pager.waiting.wait()  # the trigger's call is in flight
        inc = make_incident("inc-1")
        inc.version, inc.status = 1, IncidentStatus.RESOLVED
        resolved = await replica.persist(
            Batch([], T0, changed={inc.id: inc}, pages=[PageIntent(inc.id, PageAction.CLOSE, 1)])
        )
        # Not handed behind the trigger: left to a claim, which the stored batch asks for (the
        # runtime wakes the worker for it). That round skips inc-1: its trigger is in flight.
        assert page_jobs.name in resolved.stored.queues
        replica.worker.wake()
        await rounds.next_sleep()
        assert await _jobs(store, "inc-1") == [("trigger", "pending"), ("close", "pending")]
        pager.gate.set()
        # Nobody wakes the worker now: the trigger's end alone starts the round for the close.
        await rounds.next_sleep()
        await replica.worker.drain()
        assert [r.action for r in pager.sent] == ["trigger", "close"]
        assert await _jobs(store, "inc-1") == [("trigger", "sent"), ("close", "sent")]


class FailingPager(GatedPager):
    async def send(self, request: PageRequest) -> str | None:
        raise PageError("503 from the pager", retryable=True)


async def test_a_page_to_retry_wakes_the_worker_for_its_retry_time(store: Store, rules: RuleSet) -> None:
    replica = Replica(store, rules, FailingPager(), page_backoff_initial_seconds=2.0)
    rounds = Rounds(store)
    async with running(replica.worker):
        await rounds.next_sleep()
        assert replica.worker.sleeping_until == (T0 + timedelta(seconds=IDLE_SECONDS)).timestamp()
        await replica.store_opening("inc-1")
        await rounds.next_sleep()  # woken by the retry it stored
        assert await _jobs(store, "inc-1") == [("trigger", "pending")]
        # Asleep until the retry (2 s, jittered by up to a fifth), not until IDLE_SECONDS.
        until = replica.worker.sleeping_until
        assert until is not None and until <= (T0 + timedelta(seconds=2.4)).timestamp()
