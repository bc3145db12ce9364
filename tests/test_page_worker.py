"""The durable page worker on a real SQLite store, with an injected clock."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from service.clock import ManualClock
from service.config import Settings
from service.context import Context
from service.emit.cloudevents import EventFactory
from service.models import PageAction
from service.notify.base import PageError, PageRequest
from service.notify.worker import PageWorker
from service.observability.metrics import Metrics
from service.ruleset import RuleSet
from service.store.pages import NewPage, PageOutcome, PageStatus
from service.store.store import Effects, Store
from tests.support.incidents import make_incident
from tests.support.time import T0


class Recorder:
    name = "rec"

    def __init__(self, failures: list[PageError] | None = None) -> None:
        self.sent: list[PageRequest] = []
        self.failures = failures or []

    async def send(self, request: PageRequest) -> str | None:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(request)
        return f"ref-{len(self.sent)}"

    async def aclose(self) -> None:
        return None


def worker(
    store: Store, rules: RuleSet, notifier: Recorder, clock: ManualClock, **settings: Any
) -> PageWorker:
    values: dict[str, Any] = {"page_backoff_initial_seconds": 10, "page_backoff_max_seconds": 60, **settings}
    events = EventFactory("events", "io.incidentd", "/test")
    ctx = Context(store, rules, events, clock, Metrics(), Settings(**values))
    return PageWorker(ctx, {"rec": notifier})


async def tick(w: PageWorker) -> int:
    """One scheduler pass, waiting for the jobs it started."""
    started = await w.run_once()
    await w.drain()
    return started


async def jobs(store: Store, inc_id: str = "inc-1") -> list[tuple[str, str, int]]:
    return [(j.action, j.status, j.attempts) for j in await store.pages.for_incident(inc_id)]


async def events(store: Store) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in await store.outbox.unpublished(100)]


def job(action: str, opening: int = 1, inc_id: str = "inc-1") -> NewPage:
    return NewPage(inc_id, "rec", PageAction(action), opening)


async def test_trigger_sends_the_runbook_message_with_priority(store: Store, rules: RuleSet) -> None:
    clock, rec = ManualClock(T0), Recorder()
    await store.commit(Effects(incidents=[make_incident()], pages=[job("trigger")]), T0)
    w = worker(store, rules, rec, clock)
    assert await tick(w) == 1
    [req] = rec.sent
    assert req.message == "[INCIDENT] SEV-1: ApiDown"
    assert "- Status: Investigating" in req.description
    assert req.priority == "P1"
    assert await jobs(store) == [("trigger", "sent", 1)]
    [sent] = await events(store)
    assert sent["type"] == "io.incidentd.page.sent"
    assert sent["data"]["page"]["reference"] == "ref-1"


async def test_retry_waits_for_its_backoff_on_the_clock(store: Store, rules: RuleSet) -> None:
    clock = ManualClock(T0)
    rec = Recorder([PageError("HTTP 503", retryable=True)])
    await store.commit(Effects(incidents=[make_incident()], pages=[job("trigger")]), T0)
    w = worker(store, rules, rec, clock)
    await tick(w)
    assert await jobs(store) == [("trigger", "pending", 1)]
    assert await w.run_once() == 0  # not due yet
    clock.advance(timedelta(seconds=7))  # backoff is 10 s +-20 %
    assert await w.run_once() == 0
    clock.advance(timedelta(seconds=6))
    assert await tick(w) == 1
    assert await jobs(store) == [("trigger", "sent", 2)]
    types = [(e["type"].rsplit(".", 2)[-2:], e["data"]["page"]["attempt"]) for e in await events(store)]
    assert types == [(["page", "failed"], 1), (["page", "sent"], 2)]


async def test_retry_after_from_the_pager_is_honoured(store: Store, rules: RuleSet) -> None:
    clock = ManualClock(T0)
    rec = Recorder([PageError("HTTP 429", retryable=True, retry_after=45)])
    await store.commit(Effects(incidents=[make_incident()], pages=[job("trigger")]), T0)
    w = worker(store, rules, rec, clock)
    await tick(w)
    clock.advance(timedelta(seconds=44))
    assert await w.run_once() == 0
    clock.advance(timedelta(seconds=2))
    assert await w.run_once() == 1


async def test_an_update_gives_up_after_max_attempts(store: Store, rules: RuleSet) -> None:
    # Only pages nobody waits on give up; a trigger for an open incident keeps trying
    # (tests/test_page_failover.py).
    clock = ManualClock(T0)
    rec = Recorder([PageError("HTTP 500", retryable=True) for _ in range(3)])
    await store.commit(Effects(incidents=[make_incident()], pages=[job("update")]), T0)
    w = worker(store, rules, rec, clock, page_max_attempts=3)
    for _ in range(3):
        await tick(w)
        clock.advance(timedelta(minutes=5))
    assert await w.run_once() == 0
    assert await jobs(store) == [("update", "failed", 3)]
    last = (await events(store))[-1]
    assert last["data"]["page"] == {**last["data"]["page"], "retrying": False, "attempt": 3}


async def test_incident_resolved_before_its_page_went_out_pages_nobody(store: Store, rules: RuleSet) -> None:
    clock, rec = ManualClock(T0), Recorder()
    await store.commit(Effects(incidents=[make_incident()], pages=[job("trigger"), job("close")]), T0)
    w = worker(store, rules, rec, clock)
    await tick(w)
    await tick(w)
    assert rec.sent == []
    assert await jobs(store) == [("trigger", "superseded", 0), ("close", "superseded", 0)]


async def test_close_never_overtakes_its_trigger(store: Store, rules: RuleSet) -> None:
    clock = ManualClock(T0)
    rec = Recorder([PageError("HTTP 503", retryable=True)])
    await store.commit(Effects(incidents=[make_incident()], pages=[job("trigger")]), T0)
    w = worker(store, rules, rec, clock)
    await tick(w)
    # The incident resolves while the trigger waits for its retry: the close is queued
    # behind it, and the still-unsent trigger is dropped rather than paging late.
    await store.commit(Effects(pages=[job("close")]), T0)
    clock.advance(timedelta(minutes=1))
    await tick(w)
    await tick(w)
    assert rec.sent == []
    assert await jobs(store) == [("trigger", "superseded", 1), ("close", "superseded", 0)]


async def test_a_leased_job_is_not_claimed_twice(store: Store, rules: RuleSet) -> None:
    await store.commit(Effects(incidents=[make_incident()], pages=[job("trigger")]), T0)
    pagers = {"rec"}
    first = await store.pages.claim_due(T0, 10, 120, set(), pagers)
    second = await store.pages.claim_due(T0, 10, 120, set(), pagers)
    assert len(first) == 1 and second == []
    # A replica that died mid-call: its lease runs out and the job is claimed again...
    third = await store.pages.claim_due(T0 + timedelta(seconds=121), 10, 120, set(), pagers)
    assert [j.id for j in third] == [first[0].id]
    # ...and the first holder, if it was only slow, can no longer record an outcome.
    sent = PageOutcome(PageStatus.SENT, attempts=1)
    async with store.db.write() as conn:
        assert not await store.pages.finish(conn, first[0], sent, T0)
        assert await store.pages.finish(conn, third[0], sent, T0)
    # A finished job is never claimed again, whatever its lease says.
    assert await store.pages.claim_due(T0 + timedelta(hours=1), 10, 120, set(), pagers) == []


async def test_jobs_for_a_pager_this_replica_lacks_are_left_for_others(store: Store, rules: RuleSet) -> None:
    await store.commit(Effects(incidents=[make_incident()], pages=[job("trigger")]), T0)
    assert await store.pages.claim_due(T0, 10, 120, set(), {"opsgenie"}) == []
    assert await jobs(store) == [("trigger", "pending", 0)]


async def test_next_due_time_skips_jobs_queued_behind_their_trigger(store: Store, rules: RuleSet) -> None:
    clock = ManualClock(T0)
    await store.commit(Effects(incidents=[make_incident()], pages=[job("trigger")]), T0)
    w = worker(store, rules, Recorder([PageError("HTTP 503", retryable=True)]), clock)
    await tick(w)
    await store.commit(Effects(pages=[job("close")]), T0)  # due now, but behind the trigger
    due = await store.pages.next_due({"rec"}, T0)
    assert due is not None and due > T0.timestamp() + 5  # the trigger's backoff, not "now"


async def test_duplicate_page_jobs_are_ignored_by_the_store(store: Store, rules: RuleSet) -> None:
    await store.commit(Effects(incidents=[make_incident()], pages=[job("trigger")]), T0)
    await store.commit(Effects(pages=[job("trigger")]), T0)
    assert await jobs(store) == [("trigger", "pending", 0)]
