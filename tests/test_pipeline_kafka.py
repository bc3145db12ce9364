"""The pipeline against the real broker: HTTP and Kafka ingest, dedup, DLQ, events."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from service.clock import ManualClock, iso
from service.emit.schema import SCHEMA_PATH, json_schema
from service.escalate.commands import Ack
from tests.support.checks import assert_valid_event, metric
from tests.support.kafka import TopicReader, produce
from tests.support.payloads import alert, body, webhook
from tests.support.service import run_service, test_settings
from tests.support.time import T0


def test_committed_schema_is_the_generated_one() -> None:
    assert json.loads(SCHEMA_PATH.read_text()) == json_schema()


async def test_same_webhook_three_times_is_one_incident_and_one_page(kafka: str, tmp_path: Path) -> None:
    async with run_service(test_settings(kafka, tmp_path)) as svc:
        doc = body(webhook(alert("ApiDown", namespace="aragora"), alert("ApiDown", namespace="aragora")))
        for _ in range(3):
            assert (await svc.post_webhook(doc)).status_code == 202
        await svc.runtime.progress.wait_records(3)
        await svc.events.wait_types({"incident.opened": 1, "page.sent": 1})
        await svc.runtime.pages.drain()
        assert await svc.runtime.relay.flush() == 0  # nothing left unpublished
        assert len(svc.events.of_type("incident.opened")) == 1
        assert len(svc.events.of_type("page.sent")) == 1
        # 6 alerts arrived, 1 opened the incident, the other 5 were duplicates.
        assert metric(svc.runtime, "incidentd_alerts_deduplicated_total") == 5
        opened = svc.events.of_type("incident.opened")[0]
        assert opened["data"]["severity"] == "SEV-1"
        assert opened["type"] == "io.incidentd.incident.opened"
        for rec in svc.events.records:
            assert_valid_event(json.loads(rec.value), rec.key)


async def test_resolve_closes_incident_and_page(kafka: str, tmp_path: Path) -> None:
    async with run_service(test_settings(kafka, tmp_path)) as svc:
        await svc.post_webhook(body(webhook(alert("AuthBroken", namespace="aragora"))))
        await svc.events.wait_types({"page.sent": 1})
        resolved = alert("AuthBroken", status="resolved", ends_at="2026-11-26T10:05:00Z", namespace="aragora")
        assert (await svc.post_webhook(body(webhook(resolved)))).status_code == 202
        events = await svc.events.wait_types({"incident.resolved": 1, "page.sent": 2})
        [res] = svc.events.of_type("incident.resolved")
        assert res["data"]["status"] == "resolved" and res["data"]["resolved_at"]
        pages = [e["data"]["page"] for e in svc.events.of_type("page.sent")]
        assert [(p["action"], p["opening"]) for p in pages] == [("trigger", 1), ("close", 1)]
        assert pages[0]["idempotency_key"] == pages[1]["idempotency_key"]
        for e in events:
            assert_valid_event(e)


async def test_alerts_published_to_kafka_directly_take_the_same_path(kafka: str, tmp_path: Path) -> None:
    async with run_service(test_settings(kafka, tmp_path)) as svc:
        single = {"labels": {"alertname": "ConnectorDown", "namespace": "aragora", "connector": "s3"}}
        doc = webhook(alert("UIGlitch", namespace="web"))
        await produce(kafka, svc.settings.kafka_alerts_topic, [body(single), body(doc)])
        await svc.events.wait_types({"incident.opened": 2, "page.sent": 2})
        severities = sorted(e["data"]["severity"] for e in svc.events.of_type("incident.opened"))
        assert severities == ["SEV-3", "SEV-4"]


async def test_bad_kafka_records_reach_the_dlq_with_reason_and_original_bytes(
    kafka: str, tmp_path: Path
) -> None:
    async with run_service(test_settings(kafka, tmp_path)) as svc:
        dlq = await TopicReader(kafka, svc.settings.kafka_dlq_topic).start()
        try:
            bad = {
                b"\x00\xffnot json": "body is not valid JSON",
                b'{"labels": {"severity": "critical"}}': "alertname",
                b'{"version": "3", "status": "firing", "alerts": []}': "version",
                b"[1, 2, 3]": "expected a JSON object",
            }
            good = body(webhook(alert("DataLoss", namespace="db")))
            await produce(kafka, svc.settings.kafka_alerts_topic, [*bad, good], key=b"same-partition")
            await dlq.wait_for(lambda recs: len(recs) >= len(bad))
            await svc.events.wait_types({"incident.opened": 1})
            by_value = {r.value: dict(r.headers) for r in dlq.records}
            assert set(by_value) == set(bad)  # byte for byte, nothing else
            for value, needle in bad.items():
                headers = by_value[value]
                assert needle in headers["incidentd-dlq-reason"].decode()
                assert headers["incidentd-dlq-topic"].decode() == svc.settings.kafka_alerts_topic
                assert headers["incidentd-dlq-offset"].decode().isdigit()
            assert metric(svc.runtime, "incidentd_dead_letters_total", reason="malformed") == 1
            assert metric(svc.runtime, "incidentd_dead_letters_total", reason="invalid") == 3
        finally:
            await dlq.stop()


async def test_resolved_events_carry_the_duration_and_whether_the_response_time_was_met(
    kafka: str, tmp_path: Path
) -> None:
    # On a manual clock: ApiDown (SEV-1, respond within 15 min) acknowledged at 12:05 and
    # resolved at 12:20; AuthBroken (SEV-2, 30 min) never acknowledged, resolved at 12:40.
    clock = ManualClock(T0)
    async with run_service(test_settings(kafka, tmp_path), clock=clock) as svc:

        def mine(suffix: str) -> list[dict[str, Any]]:
            return [
                e for e in svc.events.of_type(suffix) if e["data"]["group_labels"].get("namespace") == "dur"
            ]

        async def wait(suffix: str, n: int) -> list[dict[str, Any]]:
            await svc.events.wait_for(lambda _: len(mine(suffix)) >= n)
            return mine(suffix)

        def resolve(name: str) -> bytes:
            return body(webhook(alert(name, "resolved", iso(T0), iso(clock.now()), namespace="dur")))

        firing = [alert(name, starts_at=iso(T0), namespace="dur") for name in ("ApiDown", "AuthBroken")]
        assert (await svc.post_webhook(body(webhook(*firing)))).status_code == 202
        opened = await wait("incident.opened", 2)
        ids = {e["data"]["group_labels"]["alertname"]: e["subject"] for e in opened}
        clock.advance(timedelta(minutes=5))
        await svc.runtime.commands.apply(ids["ApiDown"], Ack(by="bob"), "api")
        clock.advance(timedelta(minutes=15))
        assert (await svc.post_webhook(resolve("ApiDown"))).status_code == 202
        await wait("incident.resolved", 1)
        clock.advance(timedelta(minutes=20))
        assert (await svc.post_webhook(resolve("AuthBroken"))).status_code == 202
        resolved = {e["subject"]: e for e in await wait("incident.resolved", 2)}

    api, auth = resolved[ids["ApiDown"]]["data"], resolved[ids["AuthBroken"]]["data"]
    assert (api["severity"], api["duration_seconds"], api["response_met"]) == ("SEV-1", 20 * 60, True)
    assert (auth["severity"], auth["duration_seconds"], auth["response_met"]) == ("SEV-2", 40 * 60, False)
    assert (api["resolved_at"], auth["resolved_at"]) == (
        iso(T0 + timedelta(minutes=20)),
        iso(T0 + timedelta(minutes=40)),
    )
    # While open, neither is decided yet.
    for event in opened:
        assert (event["data"]["duration_seconds"], event["data"]["response_met"]) == (None, None)
    for event in resolved.values():
        assert_valid_event(event)
