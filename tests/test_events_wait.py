"""Pages before events (issue #13): while the alert consumers work through a backlog (a poll
of more than one slice), the outbox relay claims no events, for at most the events' longest
delay; then, or once the backlog ends, every waiting event goes out, in order."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from service.backlog import SETTLE_SECONDS, AlertBacklog
from service.batch import Batch
from service.clock import ManualClock
from service.emit.relay import WAIT_POLL
from service.ruleset import RuleSet
from service.runtime import Runtime
from service.store.outbox import OutboxRecord
from service.store.store import Store
from tests.support.service import test_settings
from tests.support.time import T0
from tests.test_outbox_ride import Service

MAX_DELAY = 5.0


def test_a_poll_of_several_slices_is_a_backlog_until_it_settles() -> None:
    clock = ManualClock(T0)
    backlog = AlertBacklog(clock)
    with backlog.poll(1):
        assert not backlog.active()  # one slice: Kafka had no more than the consumer takes
    with backlog.poll(3):
        assert backlog.active()
        with backlog.poll(2):  # the other lane's, at the same time
            assert backlog.active()
        clock.advance(timedelta(seconds=SETTLE_SECONDS * 2))
        assert backlog.active()  # the first still in hand
    clock.advance(timedelta(seconds=SETTLE_SECONDS / 2))
    assert backlog.active()  # a storm's next poll comes within this
    clock.advance(timedelta(seconds=SETTLE_SECONDS / 2))
    assert not backlog.active()


@pytest.fixture
async def waiting(
    store: Store, rules: RuleSet, monkeypatch: pytest.MonkeyPatch
) -> tuple[Service, list[bool]]:
    svc = Service(store, rules, monkeypatch)
    backlog = [False]
    svc.relay.wait_for(lambda: backlog[0], MAX_DELAY)
    assert await svc.relay.run_once() == 0  # its start-up round
    svc.writes = 0
    return svc, backlog


async def test_events_wait_for_the_backlog_then_go_out_in_order(waiting: tuple[Service, list[bool]]) -> None:
    svc, backlog = waiting
    backlog[0] = True
    await svc.store_events("inc-1", "opened", "updated")
    await svc.store_events("inc-2", "opened")
    await svc.relay.drain()
    assert svc.broker.sent == [] and svc.writes == 2  # no ride claimed, no claim of its own
    svc.relay.events_stored()
    assert await svc.relay.run_once() == 0
    assert await svc.relay.next_due() == T0.timestamp() + WAIT_POLL  # looks again soon
    assert svc.writes == 2
    backlog[0] = False
    assert await svc.relay.run_once() == 3
    assert svc.broker.sent == [(b"inc-1", "opened"), (b"inc-1", "updated"), (b"inc-2", "opened")]
    # The backlog over, rides claim again.
    await svc.store_events("inc-3", "opened")
    await svc.relay.drain()
    assert svc.broker.sent[3:] == [(b"inc-3", "opened")]


async def test_events_wait_no_longer_than_their_longest_delay(waiting: tuple[Service, list[bool]]) -> None:
    svc, backlog = waiting
    backlog[0] = True
    await svc.store_events("inc-1", "opened")
    assert await svc.relay.run_once() == 0
    svc.clock.advance(timedelta(seconds=MAX_DELAY - 1))
    await svc.store_events("inc-2", "opened")
    assert await svc.relay.run_once() == 0
    assert await svc.relay.next_due() == T0.timestamp() + MAX_DELAY - 1 + WAIT_POLL
    svc.clock.advance(timedelta(seconds=1))
    assert await svc.relay.run_once() == 2  # the backlog goes on; they waited their longest
    # The next wait starts now.
    await svc.store_events("inc-3", "opened")
    await svc.relay.drain()
    assert await svc.relay.run_once() == 0
    assert [key for key, _ in svc.broker.sent] == [b"inc-1", b"inc-2"]
    svc.clock.advance(timedelta(seconds=MAX_DELAY))
    assert await svc.relay.run_once() == 1


async def test_a_longest_delay_of_zero_never_waits(waiting: tuple[Service, list[bool]]) -> None:
    svc, backlog = waiting
    svc.relay.wait_for(lambda: True, 0)
    await svc.store_events("inc-1", "opened")
    await svc.relay.drain()
    assert svc.broker.sent == [(b"inc-1", "opened")] and svc.writes == 1
    assert backlog == [False]


async def test_the_alert_consumers_poll_of_several_slices_makes_the_services_relay_wait(
    rules: RuleSet, tmp_path: Path
) -> None:
    runtime = Runtime(test_settings("127.0.0.1:9", tmp_path, kafka_slice_bytes=2), rules)
    await runtime.store.start()
    try:
        async with runtime.store.db.write() as conn:
            await runtime.store.outbox.add(conn, [OutboxRecord("incidents.events", b"inc-1", b"{}")], T0)
        bulk, urgent = runtime.consumers
        seen: list[tuple[str, bool]] = []

        async def note(batch: Batch) -> Batch:
            rec = batch.records[0]
            waits = runtime.backlog.active() and await runtime.relay.run_once() == 0
            seen.append((f"{rec.topic}:{rec.offset}", waits))
            return batch

        runtime.pipeline.stages = [note]

        def polled(topic: str, count: int) -> list[SimpleNamespace]:
            return [
                SimpleNamespace(value=b"{}", topic=topic, partition=0, offset=n, timestamp=0, headers=())
                for n in range(count)
            ]

        await urgent.handle(polled("urgent", 1))  # one slice: no backlog
        await bulk.handle(polled("alerts", 2))  # two slices of one record each
        assert seen == [("urgent:0", False), ("alerts:0", True), ("alerts:1", True)]
        # The relay claimed nothing meanwhile: the event is still there to claim.
        claim = await runtime.store.outbox.claim(T0, 10, 10.0)
        assert [r.key for _, r in claim.records] == [b"inc-1"]
    finally:
        await runtime.store.close()
