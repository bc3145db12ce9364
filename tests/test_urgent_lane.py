"""Issue #13, priority under storms: urgent alerts take a lane of their own, a poll is stored
in slices, and the most severe incident's pages are claimed first."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

from service.batch import Batch, Pipeline, Record
from service.classify.lane import urgent_lane
from service.ingest.consumer import slices
from service.ingest.parse import parse_document
from service.ingest.records import Routing, split_by_group
from service.models import PageAction
from service.ruleset import RuleSet
from service.runtime import Runtime
from service.store.pages import NewPage
from service.store.store import Effects, Store
from tests.support.incidents import make_incident
from tests.support.kafka import TopicReader
from tests.support.payloads import alert, body, webhook
from tests.support.service import run_service, test_settings

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def test_the_lane_is_the_severitys(rules: RuleSet) -> None:
    # severities.yaml: SEV-1 is `urgent`; classify.yaml's rule makes ApiDown SEV-1 whatever its
    # `severity` label says; a `critical` label alone is SEV-2.
    urgent = urgent_lane(rules)
    alerts = parse_document(
        webhook(
            alert("ApiDown", namespace="shop", severity="warning"),
            alert("HighErrorRate", namespace="shop", severity="critical"),
            alert("ConnectorDown", namespace="shop"),
        ),
        NOW,
    )
    assert [urgent(a.labels) for a in alerts] == [True, False, False]


def test_one_group_in_two_lanes_is_two_records_each_with_the_webhooks_fields(rules: RuleSet) -> None:
    doc = webhook(
        alert("HighErrorRate", namespace="shop", pod="a"),
        alert("HighErrorRate", namespace="shop", pod="b"),
        alert("HighErrorRate", namespace="shop", pod="c"),
    )
    alerts = parse_document(doc, NOW)
    routing = Routing(rules.grouping.group_by, lambda labels: labels["pod"] == "b")
    records = split_by_group(doc, [a.labels for a in alerts], routing, body(doc))
    routed = {r.urgent: json.loads(r.value) for r in records}
    assert {u: [a["labels"]["pod"] for a in d["alerts"]] for u, d in routed.items()} == {
        False: ["a", "c"],
        True: ["b"],
    }
    assert all(d["receiver"] == "incidentd" and d["version"] == "4" for d in routed.values())
    assert len({r.key for r in records}) == 1  # one incident group: one key, both lanes


def test_a_body_of_one_group_and_lane_goes_to_kafka_as_it_came(rules: RuleSet) -> None:
    doc = webhook(alert("ConnectorDown", namespace="shop", pod="a"), alert("ConnectorDown", namespace="shop"))
    raw = body(doc)
    alerts = parse_document(doc, NOW)
    labels = [a.labels for a in alerts]
    [record] = split_by_group(doc, labels, Routing(rules.grouping.group_by, urgent_lane(rules)), raw)
    assert record.value is raw and not record.urgent


def test_slices_hold_at_most_the_bytes_given_and_keep_the_order() -> None:
    records = [Record(b"x" * n, "alerts", 0, i) for i, n in enumerate([3, 4, 2, 10, 1, 1])]
    parts = slices(records, 6)
    assert [[r.offset for r in p] for p in parts] == [[0], [1, 2], [3], [4, 5]]
    assert slices([], 6) == []


async def test_an_urgent_alert_is_paged_while_the_backlog_is_held(kafka: str, tmp_path: Path) -> None:
    # A batch of the other lane is held inside the pipeline (as a long storm slice would be);
    # a SEV-1 posted then is stored and paged all the same, and the held batch follows.
    settings = test_settings(kafka, tmp_path, kafka_slice_bytes=1)
    async with run_service(settings) as svc:
        release = asyncio.Event()
        held = asyncio.Event()

        async def hold_backlog(batch: Batch) -> Batch:
            if any(a.labels["alertname"] == "ConnectorDown" for a in batch.alerts):
                held.set()
                await release.wait()
            return batch

        svc.runtime.pipeline.stages.insert(1, hold_backlog)
        urgent = await TopicReader(kafka, settings.urgent_topic).start()
        try:
            assert (
                await svc.post_webhook(body(webhook(alert("ConnectorDown", namespace="backlog"))))
            ).status_code == 202
            await asyncio.wait_for(held.wait(), 30)
            assert (
                await svc.post_webhook(body(webhook(alert("ApiDown", namespace="now"))))
            ).status_code == 202
            await svc.events.wait_types({"incident.opened": 1, "page.sent": 1})
            [opened] = svc.events.of_type("incident.opened")
            assert (opened["data"]["severity"], opened["data"]["group_labels"]["namespace"]) == (
                "SEV-1",
                "now",
            )
            await urgent.wait_for(lambda recs: len(recs) == 1)
            assert b"ApiDown" in urgent.records[0].value and b"ConnectorDown" not in urgent.records[0].value
        finally:
            release.set()
            await urgent.stop()
        await svc.events.wait_types({"incident.opened": 2, "page.sent": 2})
        assert svc.events.of_type("incident.opened")[1]["data"]["group_labels"]["namespace"] == "backlog"


async def test_without_an_urgent_topic_every_alert_takes_the_one_lane(kafka: str, tmp_path: Path) -> None:
    settings = test_settings(kafka, tmp_path, kafka_urgent_topic="")
    async with run_service(settings) as svc:
        assert [c.lane for c in svc.runtime.consumers] == ["alerts"]
        alerts = await TopicReader(kafka, settings.kafka_alerts_topic).start()
        try:
            assert (
                await svc.post_webhook(body(webhook(alert("ApiDown", namespace="one"))))
            ).status_code == 202
            await alerts.wait_for(lambda recs: len(recs) == 1)
            await svc.events.wait_types({"incident.opened": 1, "page.sent": 1})
        finally:
            await alerts.stop()


async def test_the_most_severe_incidents_pages_are_claimed_first(rules: RuleSet, tmp_path: Path) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    await store.start()
    try:
        low = make_incident("inc-low", "ConnectorDown", "SEV-3", NOW)
        high = make_incident("inc-high", "ApiDown", "SEV-1", NOW)
        earlier = NOW - timedelta(minutes=5)
        pages = [NewPage(low.id, "console", PageAction.TRIGGER, low.opening, due=earlier)]
        pages += [NewPage(high.id, "console", PageAction.TRIGGER, high.opening)]
        await store.commit(Effects(incidents=[low, high], pages=pages), NOW)
        first = await store.pages.claim_due(NOW, 1, 10, set(), {"console"})
        second = await store.pages.claim_due(NOW, 1, 10, set(), {"console"})
        assert [j.incident_id for j in first + second] == [high.id, low.id]
    finally:
        await store.close()


async def test_the_other_lane_starts_no_slice_while_an_urgent_batch_is_in_hand(
    rules: RuleSet, tmp_path: Path
) -> None:
    # The two consumers' handlers, called as their subscribers would, on one pipeline whose only
    # stage notes what it sees and holds the urgent batch until released.
    runtime = Runtime(test_settings("127.0.0.1:9", tmp_path), rules)
    bulk, urgent = runtime.consumers
    seen: list[str] = []
    release = asyncio.Event()

    async def note(batch: Batch) -> Batch:
        seen.append(batch.records[0].topic)
        if batch.records[0].topic == "urgent":
            await release.wait()
        return batch

    runtime.pipeline.stages = [note]

    def polled(topic: str) -> list[SimpleNamespace]:
        return [SimpleNamespace(value=b"{}", topic=topic, partition=0, offset=0, timestamp=0, headers=())]

    held = asyncio.create_task(urgent.handle(polled("urgent")))
    await asyncio.sleep(0)  # one turn: the urgent batch is in the pipeline, held
    waiting = asyncio.create_task(bulk.handle(polled("alerts")))
    await asyncio.sleep(0)  # one turn: without the yield, the other lane's slice would be in too
    assert seen == ["urgent"] and not urgent.idle.is_set()
    release.set()
    await asyncio.wait_for(asyncio.gather(held, waiting), 5)
    assert seen == ["urgent", "alerts"] and urgent.idle.is_set() and bulk.idle.is_set()


async def test_the_pipeline_lets_other_work_run_between_its_stages() -> None:
    """A storm slice's stages are CPU work that never waits: without a yield between them the
    urgent lane, the webhooks and the page worker would not run until the slice is done."""
    ran: list[str] = []

    async def other_lane() -> None:
        ran.append("urgent lane")

    async def first(batch: Batch) -> Batch:
        asyncio.get_running_loop().create_task(other_lane())
        ran.append("stage 1")
        return batch

    async def second(batch: Batch) -> Batch:
        ran.append("stage 2")
        return batch

    await Pipeline([first, second]).process([], datetime(2026, 12, 1, tzinfo=UTC))
    assert ran == ["stage 1", "urgent lane", "stage 2"]


async def test_the_backlog_lane_leaves_the_webhooks_more_turns_than_the_urgent_lane(
    rules: RuleSet, tmp_path: Path
) -> None:
    """A webhook in hand needs several turns of the loop to be answered: between two stages
    the backlog lane leaves it four, the urgent lane one (its page must not wait)."""
    runtime = Runtime(test_settings("127.0.0.1:9", tmp_path), rules)
    bulk, urgent = runtime.consumers
    ran: list[str] = []

    async def webhook(turns: int) -> None:
        for _ in range(turns - 1):
            await asyncio.sleep(0)
        ran.append(f"webhook of {turns} turns")

    async def first(batch: Batch) -> Batch:
        for turns in (1, 4, 5):
            asyncio.get_running_loop().create_task(webhook(turns))
        return batch

    async def second(batch: Batch) -> Batch:
        ran.append("stage 2")
        return batch

    runtime.pipeline.stages = [first, second]
    record = SimpleNamespace(value=b"{}", topic="alerts", partition=0, offset=0, timestamp=0, headers=())
    await bulk.handle([record])
    assert ran[:3] == ["webhook of 1 turns", "webhook of 4 turns", "stage 2"]
    await asyncio.sleep(0.01)  # the last one done
    ran.clear()
    await urgent.handle([record])
    assert ran[:2] == ["webhook of 1 turns", "stage 2"]
