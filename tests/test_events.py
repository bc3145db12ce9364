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
