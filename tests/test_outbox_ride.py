"""On SQLite the outbox relay rides every transaction that stores events (issue #13): it
removes what the relay published and claims what goes next, so events cost no fsync of
their own; what no transaction comes to remove, the relay removes itself within
REMOVE_WITHIN."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar, cast

import pytest
from faststream.kafka import KafkaBroker

from service.batch import Batch, DeadLetter, EventIntent, TimerIntent
from service.clock import ManualClock
from service.config import Settings
from service.context import Context
from service.emit.cloudevents import EventFactory
from service.emit.relay import CLAIM_AT_ONCE, REMOVE_WITHIN, OutboxRelay
from service.models import Incident
from service.observability.metrics import Metrics
from service.persist.stage import PersistStage
from service.ruleset import RuleSet
from service.store.outbox import OutboxRecord
from service.store.store import ConcurrentUpdate, Effects, Store
from service.store.tables import outbox
from tests.support.incidents import make_incident
from tests.support.time import T0

T = TypeVar("T")


class GatedBroker:
    """Records what is published, in order; while ``gate`` is clear, a send waits for it."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, str]] = []  # (key, event type)
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = asyncio.Event()

    async def publish(self, value: bytes, topic: str, *, key: bytes, **_: Any) -> asyncio.Future[None]:
        self.waiting.set()
        await self.gate.wait()
        self.sent.append((key, json.loads(value)["type"].rsplit(".", 1)[-1]))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def _no_dead_letters(dead: list[DeadLetter]) -> None:
    raise AssertionError(dead)


class Service:
    """A persist stage whose transactions the relay rides, and a count of the store's write
    transactions (each an fsync on SQLite)."""

    def __init__(
        self, store: Store, rules: RuleSet, monkeypatch: pytest.MonkeyPatch, batch: int = CLAIM_AT_ONCE
    ) -> None:
        self.store, self.clock, self.broker = store, ManualClock(T0), GatedBroker()
        ctx = Context(
            store, rules, EventFactory("events", "io.incidentd", "/test"), self.clock, Metrics(), Settings()
        )
        self.relay = OutboxRelay(store.outbox, cast(KafkaBroker, self.broker), Metrics(), batch, self.clock)
        store.ride_with(self.relay.ride)
        self.persist = PersistStage(ctx, [], [], _no_dead_letters)
        self.incidents: dict[str, Incident] = {}
        self.writes = 0
        write_inline = store.db.write_inline

        async def counted(work: Callable[[Any], Awaitable[T]]) -> T:
            self.writes += 1
            return await write_inline(work)

        monkeypatch.setattr(store.db, "write_inline", counted)

    async def store_events(self, inc_id: str, *types: str) -> Batch:
        inc = self.incidents.get(inc_id) or make_incident(inc_id, alertname=f"Down-{inc_id}")
        batch = Batch([], self.clock.now(), changed={inc.id: inc})
        batch.events = [EventIntent(f"incident.{t}", inc.snapshot()) for t in types]
        stored = await self.persist(batch)
        self.incidents[inc_id] = dataclasses.replace(inc, version=inc.version + 1)
        return stored

    async def left(self) -> list[tuple[bytes, str]]:
        """The outbox's rows: published ones the relay has not removed yet included."""
        return [
            (r.key, json.loads(r.value)["type"].rsplit(".", 1)[-1])
            for r in await self.store.outbox.unpublished(100)
        ]


@pytest.fixture
async def svc(store: Store, rules: RuleSet, monkeypatch: pytest.MonkeyPatch) -> Service:
    s = Service(store, rules, monkeypatch)
    # The relay's start-up round (it looks at once, for what a previous run left).
    assert await s.relay.run_once() == 0
    s.writes = 0
    return s


async def test_a_batchs_events_are_claimed_in_its_transaction_and_removed_in_the_next(svc: Service) -> None:
    first = await svc.store_events("inc-1", "opened", "updated")
    await svc.relay.drain()
    assert svc.broker.sent == [(b"inc-1", "opened"), (b"inc-1", "updated")]
    assert svc.writes == 1  # the batch's own transaction: no claim of the relay's
    assert outbox.name in first.stored.queues
    # The ride claimed all there was: told of the events, the relay does not look.
    svc.relay.events_stored()
    assert await svc.relay.run_once() == 0 and svc.writes == 1
    # Published, and left for the next transaction to remove.
    assert await svc.left() == [(b"inc-1", "opened"), (b"inc-1", "updated")]

    await svc.store_events("inc-2", "opened")
    await svc.relay.drain()
    assert svc.writes == 2
    assert svc.broker.sent[2:] == [(b"inc-2", "opened")]
    assert await svc.left() == [(b"inc-2", "opened")]


async def test_what_no_batch_removes_the_relay_removes_itself_after_REMOVE_WITHIN(svc: Service) -> None:
    await svc.store_events("inc-1", "opened")
    await svc.relay.drain()
    assert await svc.relay.next_due() == T0.timestamp() + REMOVE_WITHIN
    # Looked at early (no new work, only the removal's plan): nothing is written.
    assert await svc.relay.run_once() == 0 and svc.writes == 1
    svc.clock.advance(timedelta(seconds=REMOVE_WITHIN))
    assert await svc.relay.run_once() == 0
    assert svc.writes == 2 and await svc.left() == []
    assert await svc.relay.next_due() is None


async def test_an_incidents_later_events_never_pass_its_earlier_ones(svc: Service) -> None:
    svc.broker.gate.clear()
    await svc.store_events("inc-1", "opened")
    await svc.broker.waiting.wait()  # inc-1's opened is being sent
    # This ride claims inc-2's event; inc-1's waits behind the one in flight.
    await svc.store_events("inc-1", "updated")
    await svc.store_events("inc-2", "opened")
    svc.broker.gate.set()
    await svc.relay.drain()
    assert svc.broker.sent == [(b"inc-1", "opened"), (b"inc-2", "opened")]
    # The relay's own round removes inc-1's opened, then claims its escalated, in one
    # transaction.
    svc.clock.advance(timedelta(seconds=REMOVE_WITHIN))
    writes = svc.writes
    assert await svc.relay.run_once() == 1
    assert svc.writes == writes + 1
    assert svc.broker.sent[2:] == [(b"inc-1", "updated")]
    assert await svc.relay.flush() == 0
    assert await svc.left() == []


async def test_a_failed_transaction_hands_nothing_and_removes_nothing(svc: Service) -> None:
    await svc.store_events("inc-1", "opened")
    await svc.relay.drain()
    inc = make_incident("inc-2")
    inc.version = 5  # never stored: the update finds no such version
    batch = Batch([], T0, changed={inc.id: inc}, events=[EventIntent("incident.opened", inc.snapshot())])
    with pytest.raises(ConcurrentUpdate):
        await svc.persist(batch)
    await svc.relay.drain()
    assert svc.broker.sent == [(b"inc-1", "opened")]
    # Its removal did not hold either: still to do, and done by the relay's own round.
    assert await svc.left() == [(b"inc-1", "opened")]
    assert await svc.relay.flush() == 0
    assert await svc.left() == []


async def test_a_stopping_relay_removes_all_it_published(svc: Service) -> None:
    """Shutdown's flush: nothing published is left for the leases' release to give back,
    which would publish it again after a restart."""
    await svc.store_events("inc-1", "opened", "updated")
    assert await svc.relay.flush() == 0
    assert svc.broker.sent == [(b"inc-1", "opened"), (b"inc-1", "updated")]
    assert await svc.left() == []


async def test_a_ride_leaves_the_events_to_the_next_while_the_relay_is_behind_on_its_sends(
    store: Store, rules: RuleSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rides hand the relay at most a claim's worth of events not yet sent (its memory)."""
    svc = Service(store, rules, monkeypatch, batch=2)
    assert await svc.relay.run_once() == 0  # its start-up round
    svc.writes = 0
    svc.broker.gate.clear()
    await svc.store_events("inc-0", "opened", "updated")
    await svc.broker.waiting.wait()
    await svc.store_events("inc-1", "opened")  # no room: this ride claims nothing
    # Told of its events, the relay still need not look.
    svc.relay.events_stored()
    svc.broker.gate.set()
    await svc.relay.drain()
    assert svc.broker.sent == [(b"inc-0", "opened"), (b"inc-0", "updated")]
    assert await svc.relay.run_once() == 0 and svc.writes == 2
    # The relay's removal of what went out claims the rest, in one transaction.
    svc.clock.advance(timedelta(seconds=REMOVE_WITHIN))
    assert await svc.relay.run_once() == 1
    assert svc.broker.sent[2:] == [(b"inc-1", "opened")]
    assert svc.writes == 3


async def test_a_ride_that_claims_a_whole_batch_has_the_relay_look_for_more(
    svc: Service, store: Store
) -> None:
    events = [
        OutboxRecord("events", b"inc-0", json.dumps({"type": "io.incidentd.incident.updated"}).encode())
        for _ in range(CLAIM_AT_ONCE + 1)
    ]
    assert await store.commit(Effects(events=events), T0)
    await svc.relay.drain()
    assert len(svc.broker.sent) == CLAIM_AT_ONCE
    svc.relay.events_stored()
    assert await svc.relay.run_once() == 1
    assert len(svc.broker.sent) == CLAIM_AT_ONCE + 1


async def test_commits_written_together_take_the_relay_along_once(svc: Service, store: Store) -> None:
    """A page outcome's event, say, stored in the same group transaction as a batch's."""
    rides = 0
    ride = svc.relay.ride

    async def counted(conn: Any) -> Any:
        nonlocal rides
        rides += 1
        return await ride(conn)

    store.ride_with(counted)
    events = [
        OutboxRecord("events", f"inc-{n}".encode(), json.dumps({"type": "io.incidentd.page.sent"}).encode())
        for n in range(3)
    ]
    assert all(await asyncio.gather(*(store.commit(Effects(events=[e]), T0) for e in events)))
    await svc.relay.drain()
    assert svc.writes == 1 and rides == 1
    assert sorted(svc.broker.sent) == [(f"inc-{n}".encode(), "sent") for n in range(3)]
    # A transaction without events takes nobody along.
    assert await store.commit(Effects(timers=[TimerIntent("inc-0", 1, "reminder", T0)]), T0)
    assert rides == 1
