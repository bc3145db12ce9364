"""Offsets are committed only after the state is stored: crash anywhere, lose nothing, page once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from faststream import AckPolicy

from service.batch import Batch
from service.ruleset import RuleSet
from service.runtime import Runtime
from tests.support.checks import metric
from tests.support.kafka import TopicReader, produce
from tests.support.payloads import alert, body, webhook
from tests.support.service import run_service, test_settings


class Crash:
    """A stage that fails the batch (as a crash would) after the stages before it ran."""

    def __init__(self, times: int | None = None, when: str | None = None) -> None:
        self.times = times  # None: always
        self.when = when  # only batches with an alert of this alertname
        self.calls = 0
        self.reached = asyncio.Event()

    async def __call__(self, batch: Batch) -> Batch:
        if self.when and not any(a.labels["alertname"] == self.when for a in batch.alerts):
            return batch
        self.calls += 1
        self.reached.set()
        if self.times is None or self.calls <= self.times:
            raise RuntimeError("injected crash")
        return batch


def test_ack_policy_is_explicit_nack_on_error(rules: RuleSet, tmp_path: Path) -> None:
    # FastStream's Kafka default (ACK_FIRST) commits before processing; ACK commits
    # even after an error. Only NACK_ON_ERROR commits after success and re-reads on error.
    runtime = Runtime(test_settings("127.0.0.1:9", tmp_path), rules)
    assert runtime.consumer.subscriber.ack_policy is AckPolicy.NACK_ON_ERROR


async def test_failed_batch_is_read_again_without_second_page(kafka: str, tmp_path: Path) -> None:
    async with run_service(test_settings(kafka, tmp_path)) as svc:
        crash = Crash(times=1)
        svc.runtime.pipeline.stages.append(crash)  # after the store transaction
        # One incident group, so one Kafka record and one batch (records of two groups may
        # land on two partitions and arrive in two batches).
        await svc.post_webhook(
            body(
                webhook(alert("ApiDown", namespace="a", pod="p1"), alert("ApiDown", namespace="a", pod="p2"))
            )
        )
        await svc.events.wait_types({"incident.opened": 1, "page.sent": 1})
        await svc.runtime.progress.wait_records(1)
        await svc.runtime.pages.drain()
        assert crash.calls == 2  # failed once, re-read once
        assert len(svc.events.of_type("incident.opened")) == 1
        assert len(svc.events.of_type("page.sent")) == 1
        assert metric(svc.runtime, "incidentd_alerts_deduplicated_total") == 2


async def test_crash_after_store_then_restart_pages_once(kafka: str, tmp_path: Path) -> None:
    settings = test_settings(kafka, tmp_path)
    async with run_service(settings) as first:
        crash = Crash()  # every attempt fails after the store: the offset is never committed
        first.runtime.pipeline.stages.append(crash)
        first.runtime.pages.wake = lambda: None  # type: ignore[method-assign]
        await first.post_webhook(body(webhook(alert("DatabaseUnavailable", namespace="db"))))
        await asyncio.wait_for(crash.reached.wait(), 30)
    # The first process is gone; it stored the incident but committed nothing to Kafka.
    async with run_service(settings) as second:
        await second.runtime.progress.wait_records(1)  # the same record, read again
        await second.events.wait_types({"incident.opened": 1, "page.sent": 1})
        await second.runtime.pages.drain()
        assert await second.runtime.relay.flush() == 0
        assert metric(second.runtime, "incidentd_alerts_deduplicated_total") == 1
        assert len(second.events.of_type("incident.opened")) == 1
        assert len(second.events.of_type("page.sent")) == 1


async def test_crash_before_store_then_restart_loses_nothing(kafka: str, tmp_path: Path) -> None:
    settings = test_settings(kafka, tmp_path)
    async with run_service(settings) as first:
        crash = Crash()
        first.runtime.pipeline.stages.insert(2, crash)  # after classify, before correlate + store
        await first.post_webhook(body(webhook(alert("DataLoss", namespace="db"))))
        await asyncio.wait_for(crash.reached.wait(), 30)
        assert await first.runtime.store.incidents.open_counts() == {}
    async with run_service(settings) as second:
        await second.events.wait_types({"incident.opened": 1, "page.sent": 1})
        assert (await second.runtime.store.incidents.open_counts()) == {"SEV-1": 1}


async def test_poison_record_is_dead_lettered_after_bounded_retries(kafka: str, tmp_path: Path) -> None:
    async with run_service(test_settings(kafka, tmp_path)) as svc:
        poison = Crash(when="Poison")
        svc.runtime.pipeline.stages.insert(2, poison)
        dlq = await TopicReader(kafka, svc.settings.kafka_dlq_topic).start()
        try:
            records = [
                body(webhook(alert("ApiDown", namespace="p1"))),
                body(webhook(alert("Poison", namespace="p1"))),
                body(webhook(alert("AuthBroken", namespace="p1"))),
            ]
            await produce(kafka, svc.settings.kafka_alerts_topic, records, key=b"one-partition")
            await dlq.wait_for(lambda recs: len(recs) >= 1)
            await svc.events.wait_types({"incident.opened": 2})
            [dead] = dlq.records
            assert dead.value == records[1]
            reason = dict(dead.headers)["incidentd-dlq-reason"].decode()
            assert reason.startswith("processing failed after 3 attempts: RuntimeError: injected crash")
            names = sorted(
                e["data"]["group_labels"]["alertname"] for e in svc.events.of_type("incident.opened")
            )
            assert names == ["ApiDown", "AuthBroken"]
        finally:
            await dlq.stop()
