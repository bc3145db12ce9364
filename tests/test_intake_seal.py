"""The intake seals the records it wrote, and the consumer reads a sealed record without
validating it again (issue #13: pydantic's second parse of every body was a twelfth of a
storm). What a sealed record reads as must be exactly what validation gives; a record
with no seal, or with a seal under any other key, is validated as before."""

from __future__ import annotations

import asyncio
import json
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from service.batch import Batch, Record
from service.ingest.parse import parse, parse_pushed, read_sealed, validated_webhook
from service.ingest.seal import HEADER, KEY_NAME, Seal, seal_of
from service.ingest.stage import ParseStage
from service.jsonfast import dumps
from service.store.store import Store
from tests.support.kafka import TopicReader
from tests.support.payloads import alert, body, webhook
from tests.support.service import run_service, test_settings
from tests.support.time import T0

set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "incidentd-hypothesis")

KEY = b"k" * 32
PROPERTY = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

# Times as producers write them: RFC 3339 with nanoseconds, offsets, no zone, Go's zero
# time, epoch numbers (pydantic takes them in a webhook), and text that is no time at all.
TIMES = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "2026-11-26T10:00:00Z",
            "2026-11-26T10:00:00.123456789Z",
            "2026-11-26T12:00:00.5+02:00",
            "2026-11-26T10:00:00",
            "0001-01-01T00:00:00Z",
            "2026-11-26",
            "1795694400",
            "yesterday",
        ]
    ),
    st.integers(min_value=0, max_value=4_000_000_000_000),
    st.floats(min_value=0, max_value=4e9, allow_nan=False),
    st.datetimes(timezones=st.none() | st.timezones()).map(datetime.isoformat),
)
LABELS = st.dictionaries(
    st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,6}", fullmatch=True) | st.sampled_from(["bad-name", ""]),
    st.text(max_size=6),
    max_size=4,
).map(lambda labels: {"alertname": "DiskFull", **labels})
ALERT = st.fixed_dictionaries(
    {"labels": LABELS},
    optional={
        "status": st.sampled_from(["firing", "resolved", None, "pending"]),
        "startsAt": TIMES,
        "endsAt": TIMES,
        "fingerprint": st.sampled_from(["", "0123456789abcdef", "0123456789ABCDEF", "f1"])
        | st.text(max_size=4),
        "annotations": st.dictionaries(st.text(max_size=4), st.text(max_size=6), max_size=3),
        "generatorURL": st.text(max_size=8),
        "extra": st.integers() | st.lists(st.integers(), max_size=2),
    },
)
WEBHOOK = st.fixed_dictionaries(
    {
        "version": st.just("4"),
        "status": st.sampled_from(["firing", "resolved"]),
        "alerts": st.lists(ALERT, min_size=1, max_size=4),
    },
    optional={
        "receiver": st.text(max_size=4),
        "groupLabels": st.dictionaries(st.text(max_size=3), st.text(max_size=3)),
    },
)


@PROPERTY
@given(doc=WEBHOOK, ascii_only=st.booleans())
@example(
    doc={"version": "4", "status": "firing", "alerts": [{"labels": {"alertname": "A", "x": "1"}}]},
    ascii_only=False,
)
def test_a_sealed_webhook_reads_as_validation_gives_it(doc: dict[str, Any], ascii_only: bool) -> None:
    raw = json.dumps(doc, ensure_ascii=ascii_only).encode()
    assume(validated_webhook(raw) is not None)  # else the intake refuses it: never sealed
    assert read_sealed(raw, T0) == parse(raw, T0)


def test_a_webhook_with_a_repeated_key_reads_as_validation_gives_it() -> None:
    raw = (
        b'{"version":"4","status":"firing","alerts":[{"labels":{"alertname":"A","x":"1","x":"2"},'
        b'"startsAt":"2026-11-26T10:00:00Z","startsAt":"2026-11-26T11:00:00.1234567Z"}]}'
    )
    assert validated_webhook(raw) is not None
    [sealed] = read_sealed(raw, T0)
    assert [sealed] == parse(raw, T0)
    assert (sealed.labels["x"], sealed.starts_at.hour) == ("2", 11)


@pytest.mark.parametrize(
    "pushed",
    [
        [{"labels": {"alertname": "A"}}],
        [{"labels": {"alertname": "A"}, "startsAt": "2026-11-26T09:00:00Z"}],
        [{"labels": {"alertname": "A"}, "endsAt": "2026-11-26T09:00:00Z"}],
        [{"labels": {"alertname": "A", "empty": ""}, "annotations": {"d": "x"}, "generatorURL": "u"}],
    ],
)
def test_a_sealed_prometheus_push_reads_as_validation_gives_it(pushed: list[dict[str, Any]]) -> None:
    raw = dumps(parse_pushed(pushed, T0).doc)
    assert read_sealed(raw, T0) == parse(raw, T0)


def test_a_seal_holds_only_for_the_same_bytes_under_the_same_key() -> None:
    value = body(webhook(alert("DiskFull")))
    headers = Seal(KEY).headers(value)
    assert headers is not None
    seal = headers[HEADER].encode()
    assert Seal(KEY).holds(value, seal)
    assert not Seal(KEY).holds(value + b" ", seal)
    assert not Seal(b"x" * 32).holds(value, seal)
    assert not Seal(KEY).holds(value, None)
    assert not Seal().holds(value, seal)  # unkeyed: trusts nothing
    assert not Seal(KEY).holds(value, seal.replace(b"v1=", b"v2="))
    assert Seal().headers(value) is None  # and seals nothing
    assert seal_of([("other", b"x"), (HEADER, seal)]) == seal
    assert seal_of([("other", b"x")]) is None


def _record(value: bytes, seal: Seal) -> Record:
    headers = seal.headers(value) or {}
    return Record(value, "alerts", 0, 0, seal=headers[HEADER].encode())


async def test_a_sealed_record_that_is_no_webhook_is_validated_and_dead_lettered() -> None:
    seal = Seal(KEY)
    good = body(webhook(alert("DiskFull")))
    batch = Batch([_record(b"[1, 2, 3]", seal), _record(b'{"alerts": 5}', seal), _record(good, seal)], now=T0)
    await ParseStage(seal)(batch)
    not_object, no_list = (d.reason for d in batch.dead)
    assert not_object == "expected a JSON object"
    assert "alerts: Input should be a valid list" in no_list
    assert [a.labels["alertname"] for a in batch.alerts] == ["DiskFull"]


async def test_every_replica_gets_the_key_the_first_one_made(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    stores = [Store(url), Store(url)]
    try:
        for store in stores:
            await store.start()
        keys = await asyncio.gather(*(s.keys.shared(KEY_NAME) for s in stores))
        assert keys[0] == keys[1] and len(keys[0]) == 32
        assert await stores[0].keys.shared("another") != keys[0]
    finally:
        for store in stores:
            await store.close()
    again = Store(url)
    try:
        await again.start()
        assert await again.keys.shared(KEY_NAME) == keys[0]  # a restart keeps it
    finally:
        await again.close()


async def test_replicas_on_postgresql_share_the_key(pg_url: str) -> None:
    stores = [Store(pg_url), Store(pg_url)]
    try:
        await asyncio.gather(*(s.start() for s in stores))
        keys = await asyncio.gather(*(s.keys.shared(KEY_NAME) for s in stores))
        assert keys[0] == keys[1]
    finally:
        for store in stores:
            await store.close()


async def _produce(bootstrap: str, topic: str, value: bytes, headers: dict[str, str]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, headers=[(k, v.encode()) for k, v in headers.items()])
    finally:
        await producer.stop()


async def test_the_consumer_trusts_only_what_this_deployments_intake_sealed(
    kafka: str, tmp_path: Path
) -> None:
    async with run_service(test_settings(kafka, tmp_path)) as svc:
        written = await TopicReader(kafka, svc.settings.kafka_alerts_topic).start()
        dlq = await TopicReader(kafka, svc.settings.kafka_dlq_topic).start()
        try:
            assert (
                await svc.post_webhook(body(webhook(alert("UIGlitch", namespace="web"))))
            ).status_code == 202
            [rec] = await written.wait_for(bool)
            key = await svc.runtime.store.keys.shared(KEY_NAME)
            assert Seal(key).holds(rec.value, seal_of(rec.headers))

            # A label name only validation refuses: read as it is under the deployment's
            # seal, dead-lettered under any other seal or none.
            doc = webhook(alert("UIGlitch", namespace="forged"))
            doc["alerts"][0]["labels"]["bad-name"] = "v"
            value = orjson.dumps(doc)
            forged = Seal(b"f" * 32).headers(value) or {}
            sealed = Seal(key).headers(value) or {}
            topic = svc.settings.kafka_alerts_topic
            await _produce(kafka, topic, value, forged)
            await _produce(kafka, topic, value, {})
            await dlq.wait_for(lambda recs: len(recs) >= 2)
            for dead in dlq.records:
                assert dead.value == value
                assert "labels.bad-name" in dict(dead.headers)["incidentd-dlq-reason"].decode()
            await _produce(kafka, topic, value, sealed)
            opened = await svc.events.wait_types({"incident.opened": 2})
            namespaces = {
                e["data"]["group_labels"]["namespace"]
                for e in opened
                if e["type"].endswith(".incident.opened")
            }
            assert namespaces == {"web", "forged"}
            assert len(dlq.records) == 2
        finally:
            await written.stop()
            await dlq.stop()
