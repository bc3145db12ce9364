"""Acknowledge, resolve and assign over HTTP and over incidents.commands; list and show."""

from __future__ import annotations

import json

import pytest

from tests.support.checks import assert_valid_event
from tests.support.kafka import TopicReader, produce
from tests.support.payloads import alert, body, webhook
from tests.support.service import RunningService, run_service, test_settings


@pytest.fixture(scope="module")
async def svc(kafka: str, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    async with run_service(test_settings(kafka, tmp_path_factory.mktemp("api"))) as running:
        yield running


async def open_incident(svc: RunningService, name: str) -> str:
    await svc.post_webhook(body(webhook(alert(name, namespace="api"))))
    await svc.events.wait_for(
        lambda _: any(
            e["data"]["group_labels"].get("alertname") == name for e in svc.events.of_type("incident.opened")
        )
    )
    [opened] = [
        e for e in svc.events.of_type("incident.opened") if e["data"]["group_labels"]["alertname"] == name
    ]
    return str(opened["data"]["id"])


def events_for(svc: RunningService, incident_id: str, suffix: str) -> list[dict]:  # type: ignore[type-arg]
    return [e for e in svc.events.of_type(suffix) if e["subject"] == incident_id]


async def test_ack_assign_resolve_over_http(svc: RunningService) -> None:
    inc = await open_incident(svc, "ApiDown")
    base = f"{svc.url}/api/v1/incidents/{inc}"

    resp = await svc.client.post(f"{base}/ack", json={"by": "alice"})
    assert resp.status_code == 200
    assert resp.json()["incident"]["acknowledged_by"] == "alice"
    await svc.events.wait_for(lambda _: len(events_for(svc, inc, "incident.acknowledged")) == 1)
    again = await svc.client.post(f"{base}/ack", json={"by": "bob"})
    assert again.json()["incident"]["acknowledged_by"] == "alice"  # idempotent

    resp = await svc.client.post(f"{base}/assign", json={"role": "IC", "who": "carol", "by": "alice"})
    assert resp.status_code == 200 and resp.json()["incident"]["roles"] == {"Incident Commander": "carol"}
    bad_role = await svc.client.post(f"{base}/assign", json={"role": "CEO", "who": "x"})
    assert bad_role.status_code == 422 and bad_role.json()["details"][0]["loc"] == "role"

    resp = await svc.client.post(f"{base}/resolve", json={"by": "carol", "note": "rolled back"})
    assert resp.status_code == 200 and resp.json()["incident"]["status"] == "resolved"
    # Resolving closes the page of this opening.
    await svc.events.wait_for(
        lambda _: any(e["data"]["page"]["action"] == "close" for e in events_for(svc, inc, "page.sent"))
    )
    assert (await svc.client.post(f"{base}/resolve", json={})).status_code == 200  # idempotent
    conflict = await svc.client.post(f"{base}/ack", json={})
    assert conflict.status_code == 409 and "resolved" in conflict.json()["error"]

    [acked] = events_for(svc, inc, "incident.acknowledged")
    assert acked["data"]["command"] == {"command": "ack", "by": "alice", "source": "api"}
    [updated] = [e for e in events_for(svc, inc, "incident.updated") if "command" in e["data"]]
    assert updated["data"]["reasons"] == ["assigned:Incident Commander"]
    [resolved] = events_for(svc, inc, "incident.resolved")
    assert resolved["data"]["command"]["note"] == "rolled back"
    for e in [*events_for(svc, inc, "incident.acknowledged"), updated, resolved]:
        assert_valid_event(e)

    shown = (await svc.client.get(base)).json()
    types = [t["type"] for t in shown["timeline"]]
    assert types[:1] == ["incident.opened"]
    for expected in ("page.sent", "incident.acknowledged", "incident.updated", "incident.resolved"):
        assert expected in types
    assert [(p["action"], p["status"]) for p in shown["pages"]] == [
        ("trigger", "sent"),
        ("ack", "sent"),
        ("trigger", "sent"),  # carol, paged as the new Incident Commander
        ("close", "sent"),
    ]


async def test_list_filters_and_errors(svc: RunningService) -> None:
    inc = await open_incident(svc, "UIGlitch")
    listed = (
        await svc.client.get(f"{svc.url}/api/v1/incidents", params={"status": "open", "severity": "SEV-4"})
    ).json()
    assert inc in [i["id"] for i in listed["incidents"]]
    assert all(i["severity"] == "SEV-4" and i["status"] == "open" for i in listed["incidents"])
    bad = await svc.client.get(f"{svc.url}/api/v1/incidents", params={"status": "closed", "severity": "P1"})
    assert (
        bad.status_code == 422
        and "status must be" in bad.json()["error"]
        and "severity must be" in bad.json()["error"]
    )
    assert (await svc.client.get(f"{svc.url}/api/v1/incidents/inc-nope")).status_code == 404
    assert (await svc.client.post(f"{svc.url}/api/v1/incidents/inc-nope/ack", json={})).status_code == 404
    malformed = await svc.client.post(f"{svc.url}/api/v1/incidents/{inc}/ack", content=b"{nope")
    assert malformed.status_code == 400
    extra = await svc.client.post(f"{svc.url}/api/v1/incidents/{inc}/ack", json={"by": "a", "sudo": True})
    assert extra.status_code == 422


async def test_commands_topic_applies_and_dead_letters(svc: RunningService, kafka: str) -> None:
    inc = await open_incident(svc, "AuthBroken")
    dlq = await TopicReader(kafka, svc.settings.kafka_dlq_topic).start()
    try:
        good = json.dumps({"incident_id": inc, "command": {"command": "ack", "by": "bob"}}).encode()
        unknown = json.dumps({"incident_id": "inc-missing", "command": {"command": "ack"}}).encode()
        broken = b'{"incident_id": 1}'
        await produce(kafka, svc.settings.kafka_commands_topic, [good, unknown, broken])
        await svc.events.wait_for(lambda _: len(events_for(svc, inc, "incident.acknowledged")) == 1)
        [acked] = events_for(svc, inc, "incident.acknowledged")
        assert acked["data"]["command"] == {"command": "ack", "by": "bob", "source": "kafka"}
        await dlq.wait_for(lambda recs: len(recs) >= 2)
        reasons = {r.value: dict(r.headers)["incidentd-dlq-reason"].decode() for r in dlq.records}
        assert reasons[unknown] == "unknown incident inc-missing"
        assert reasons[broken].startswith("invalid command: ")
    finally:
        await dlq.stop()
