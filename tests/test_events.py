"""CloudEvents as built for the outbox."""

import json

from service.emit.cloudevents import MAX_EVENT_BYTES, EventFactory
from tests.support.incidents import make_incident
from tests.support.time import T0


def test_event_envelope_and_key() -> None:
    snapshot = make_incident("inc-9").snapshot()
    rec = EventFactory("incidents.events", "com.example.", "/x").build("incident.opened", snapshot, {}, T0)
    event = json.loads(rec.value)
    assert rec.key == b"inc-9" and rec.topic == "incidents.events"
    assert event["type"] == "com.example.incident.opened"
    assert (event["specversion"], event["subject"], event["source"]) == ("1.0", "inc-9", "/x")
    assert event["time"] == "2026-11-26T12:00:00Z"


def test_an_event_too_big_for_kafka_keeps_its_snapshot_and_drops_alert_details() -> None:
    snapshot = make_incident().snapshot()
    alerts = [{"fingerprint": f"{i:016x}", "annotations": {"d": "x" * 2000}} for i in range(600)]
    rec = EventFactory("t", "io.incidentd", "/x").build("incident.updated", snapshot, {"alerts": alerts}, T0)
    assert len(rec.value) <= MAX_EVENT_BYTES
    data = json.loads(rec.value)["data"]
    assert data["alerts"] == [] and data["alerts_omitted"] == 600
    assert data["id"] == snapshot["id"] and data["severity"] == "SEV-1"


def test_remediation_timeline_lines_name_the_action_target_and_outcome() -> None:
    snapshot = make_incident("inc-r").snapshot()
    target = {"kind": "deployment", "namespace": "shop", "name": "api", "pod": None}
    factory = EventFactory("t", "io.incidentd", "/x")

    def line(suffix: str, **part: object) -> str:
        rem = {"id": "rem-1", "policy": "p", "action": "restart", "mode": "enforce", "target": target, **part}
        entry = factory.build(suffix, snapshot, {"remediation": rem}, T0).timeline
        assert entry is not None
        return entry.summary

    assert line("remediation.started") == "SEV-1 open | restart deployment/shop/api (enforce)"
    assert line("remediation.skipped", guardrail="cooldown", reason="cooldown has 1200s left").endswith(
        "| restart deployment/shop/api (enforce), cooldown: cooldown has 1200s left"
    )
    failed = line("remediation.failed", failure={"stage": "verify", "reason": "no recovery within 10m"})
    assert failed.endswith("(enforce), failed at verify: no recovery within 10m")
    target.update(kind="node", namespace=None, name="node-1")
    assert line("remediation.planned").endswith("| restart node/node-1 (enforce)")
