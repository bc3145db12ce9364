"""The event contract as a consumer sees it: real records read from the broker, validated with
the committed files only (the data schema, the AsyncAPI document), as a downstream team would."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from aiokafka.admin import AIOKafkaAdminClient

from service.emit.asyncapi import ASYNCAPI_PATH, document, render
from service.emit.schema import SCHEMA_PATH, json_schema
from service.ingest.seal import HEADER as SEAL_HEADER
from tests.support.kafka import TopicReader, produce
from tests.support.payloads import alert, body, webhook
from tests.support.service import RunningService, run_service, test_settings

ASYNCAPI_SCHEMA = Path(__file__).parent / "vendor" / "asyncapi-3.0.0.schema.json"


def committed_data_schema() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def committed_asyncapi() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(ASYNCAPI_PATH.read_text())
    return doc


def payload_validator(doc: dict[str, Any], message: str) -> jsonschema.Draft7Validator:
    """A message's payload schema, its $refs resolved inside the AsyncAPI document."""
    payload = doc["components"]["messages"][message]["payload"]
    return jsonschema.Draft7Validator({**payload, "components": doc["components"]})


def messages(validator: jsonschema.protocols.Validator, instance: Any) -> list[str]:
    return sorted(e.message for e in validator.iter_errors(instance))


def test_committed_asyncapi_document_is_the_generated_one() -> None:
    assert ASYNCAPI_PATH.read_text() == render(document()), "stale: run `make asyncapi` and commit it"


def test_the_asyncapi_document_is_valid_asyncapi_3() -> None:
    doc = committed_asyncapi()
    validator = jsonschema.Draft7Validator(json.loads(ASYNCAPI_SCHEMA.read_text()))
    assert messages(validator, doc) == []
    # The official schema does catch mistakes: AsyncAPI 2's verbs and a channel without an address.
    broken = copy.deepcopy(doc)
    broken["operations"]["sendEvents"]["action"] = "publish"
    broken["channels"]["events"]["address"] = 42
    assert len(list(validator.iter_errors(broken))) >= 2
    # Every $ref points at something in the document itself.
    for ref in _refs(doc):
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(node, dict) and part in node, f"unresolved $ref {ref}"
            node = node[part]


def test_a_lane_turned_off_is_not_a_channel(tmp_path: Path) -> None:
    one_lane = document(test_settings("127.0.0.1:1", tmp_path, kafka_urgent_topic=""))
    assert "urgentAlerts" not in one_lane["channels"]
    assert not [op for op in one_lane["operations"].values() if "urgent" in op["channel"]["$ref"].lower()]


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


async def test_a_consumer_validates_real_events_with_the_committed_schema(kafka: str, tmp_path: Path) -> None:
    async with run_service(test_settings(kafka, tmp_path)) as svc:
        await svc.post_webhook(body(webhook(alert("ApiDown", namespace="contract"))))
        [opened] = (await _wait(svc, {"incident.opened": 1, "page.sent": 1}))["incident.opened"]
        resolved = alert("ApiDown", status="resolved", ends_at="2026-11-26T10:05:00Z", namespace="contract")
        await svc.post_webhook(body(webhook(resolved)))
        await _wait(svc, {"incident.resolved": 1})
        events = [json.loads(r.value) for r in svc.events.records]

    validator = committed_data_schema()
    schema_id = json.loads(SCHEMA_PATH.read_text())["$id"]
    envelope = payload_validator(committed_asyncapi(), "incidentEvent")
    assert {e["type"].removeprefix("io.incidentd.") for e in events} >= {
        "incident.opened",
        "page.sent",
        "incident.resolved",
    }
    for event in events:
        assert event["dataschema"] == schema_id
        assert event["dataschema"].endswith("/incident-event-data/v1.json")
        assert messages(validator, event["data"]) == [], event["type"]
        assert messages(envelope, event) == [], event["type"]

    # A field a later 1.x adds, at the top of data or inside a part, and a new value of an
    # open set (page.action) still validate...
    page = next(e["data"] for e in events if e["type"].endswith(".page.sent"))
    later = {**page, "customer_tier": "gold", "page": {**page["page"], "channel": "sms", "action": "snooze"}}
    assert messages(validator, later) == []
    assert messages(envelope, {**opened, "data": later, "traceparent": "00-ab-cd-01"}) == []
    # ...while the service's own (closed) schema would refuse to emit it undocumented.
    closed = jsonschema.Draft202012Validator(json_schema(closed=True))
    assert len(messages(closed, later)) == 2
    # A missing required field, a wrong type or an unknown value does not validate.
    missing = {k: v for k, v in opened["data"].items() if k != "severity"}
    assert messages(validator, missing) == ["'severity' is a required property"]
    assert messages(validator, {**opened["data"], "opening": "1"}) == ["'1' is not of type 'integer'"]
    assert messages(validator, {**opened["data"], "status": "closed"}) == [
        "'closed' is not one of ['open', 'resolved']"
    ]
    assert messages(
        envelope, {**opened, "dataschema": "https://incidentd.dev/schemas/incident-event-data/v2.json"}
    )


async def test_every_topic_is_in_the_asyncapi_document_and_its_records_fit(
    kafka: str, tmp_path: Path
) -> None:
    doc = committed_asyncapi()
    async with run_service(test_settings(kafka, tmp_path)) as svc:
        settings = svc.settings
        generated = document(settings)
        uid = settings.kafka_group_id.removeprefix("incidentd-")
        readers = {
            name: await TopicReader(kafka, getattr(settings, f"kafka_{name}_topic")).start()
            for name in ("alerts", "commands", "dlq")
        }
        try:
            await svc.post_webhook(body(webhook(alert("DiskFull", namespace="contract"))))
            [opened] = (await _wait(svc, {"incident.opened": 1}))["incident.opened"]
            ack = {"incident_id": opened["subject"], "command": {"command": "ack", "by": "ana"}}
            bad = {"incident_id": opened["subject"], "command": {"command": "dance"}}
            await produce(
                kafka, settings.kafka_commands_topic, [json.dumps(ack).encode(), json.dumps(bad).encode()]
            )
            await _wait(svc, {"incident.acknowledged": 1})
            for reader in readers.values():
                await reader.wait_for(lambda recs: len(recs) >= 1)
            await readers["commands"].wait_for(lambda recs: len(recs) >= 2)
            live = await _topics(kafka, uid)
        finally:
            for reader in readers.values():
                await reader.stop()

    # Every topic the service created is a channel (named as these settings name it).
    assert live == {c["address"] for c in generated["channels"].values()}
    # The committed document differs only in the topic names and groups.
    assert generated["channels"].keys() == doc["channels"].keys()
    assert generated["components"] == doc["components"]
    webhook_in = payload_validator(doc, "alertmanagerWebhook")
    sealed = jsonschema.Draft7Validator(doc["components"]["messages"]["alertmanagerWebhook"]["headers"])
    for rec in readers["alerts"].records:
        assert messages(webhook_in, json.loads(rec.value)) == []
        headers = {k: v.decode() for k, v in rec.headers}
        assert SEAL_HEADER in headers and messages(sealed, headers) == []
    command = payload_validator(doc, "incidentCommand")
    fits = {r.value: messages(command, json.loads(r.value)) == [] for r in readers["commands"].records}
    assert fits == {json.dumps(ack).encode(): True, json.dumps(bad).encode(): False}
    [dead] = readers["dlq"].records
    headers = jsonschema.Draft7Validator(doc["components"]["messages"]["deadLetter"]["headers"])
    assert messages(headers, {k: v.decode() for k, v in dead.headers}) == []
    assert json.loads(dead.value) == bad


async def _wait(svc: RunningService, counts: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
    await svc.events.wait_types(counts)
    return {t: svc.events.of_type(t) for t in counts}


async def _topics(bootstrap: str, uid: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {t for t in await admin.list_topics() if uid in t}
    finally:
        await admin.close()
