"""The noise worker reads the open incidents a hundred at a time, never all at once
(issue #13: a storm's thousand incidents of a hundred alerts each, decoded together, were
60 MiB more memory), and still judges every one of them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from service.batch import Batch, Pipeline
from service.clock import ManualClock
from service.config import Settings
from service.context import Context
from service.emit.cloudevents import EventFactory
from service.models import AlertState, AlertStatus, Incident
from service.observability.metrics import Metrics
from service.quiet.stage import READ_AT_ONCE
from service.quiet.worker import NoiseWorker
from service.ruleset import RuleSet
from service.store.silences import Silence, SilenceMatcher
from service.store.store import Effects, Store
from tests.support.incidents import make_incident
from tests.support.time import T0

OPEN = 250


def firing(inc: Incident, n: int) -> Incident:
    for i in range(n):
        labels = {"alertname": inc.title, "team": "db", "instance": f"i-{i}"}
        inc.alerts[f"{inc.id}-{i}"] = AlertState(
            AlertStatus.FIRING, T0, inc.severity, inc.title, labels=labels
        )
    inc.paged = 1
    return inc


async def test_every_open_incident_is_judged_from_reads_of_at_most_a_hundred(
    store: Store, rules: RuleSet
) -> None:
    incs = [firing(make_incident(f"inc-{n:03}", alertname=f"Down{n}"), 3) for n in range(OPEN)]
    await store.commit(Effects(incidents=incs), T0)
    silence = Silence(
        "s-1",
        (SilenceMatcher("team", "db", is_regex=False),),
        T0,
        T0 + timedelta(hours=1),
        "alice",
        "db work",
        T0,
    )
    await store.silences.upsert(silence)
    reads: list[int] = []
    get_many = store.incidents.get_many

    async def counted(ids: Sequence[str]) -> Sequence[Incident]:
        reads.append(len(ids))
        return await get_many(ids)

    async def not_all_at_once(*args: object) -> list[Incident]:
        raise AssertionError("the open incidents were listed all at once")

    store.incidents.get_many = counted  # type: ignore[method-assign]
    store.incidents.list = not_all_at_once  # type: ignore[method-assign,assignment]
    held: list[str] = []

    async def record(batch: Batch) -> Batch:
        held.extend(e.incident["id"] for e in batch.events if e.type == "incident.suppressed")
        return batch

    ctx = Context(
        store,
        rules,
        EventFactory("events", "io.incidentd", "/t"),
        ManualClock(T0 + timedelta(minutes=1)),
        Metrics(),
        Settings(),
    )

    async def publish(body: bytes) -> None:
        raise AssertionError("nothing expired")

    worker = NoiseWorker(ctx, Pipeline([record]), publish)
    assert await worker.run_once() == OPEN
    assert sorted(held) == [i.id for i in incs]  # each judged, and held by the silence, once
    assert reads and max(reads) <= READ_AT_ONCE
    # Nothing changed in the store: the next round reads the incidents, not the sources again.
    reads.clear()
    await worker.run_once()
    assert sum(reads) == OPEN
