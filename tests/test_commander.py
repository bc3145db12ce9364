"""The commander's commands (declare, status, note, update, severity, escalate) through the
real service, once over HTTP and once over incidents.commands: each with its event, and
what the next [UPDATE] says."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.checks import assert_valid_event
from tests.support.kafka import TopicReader, produce
from tests.support.payloads import alert, body, webhook
from tests.support.service import RunningService, run_service, test_settings

Send = Callable[[str | None, dict[str, Any]], Awaitable[str]]


@pytest.fixture(scope="module")
async def svc(kafka: str, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    async with run_service(test_settings(kafka, tmp_path_factory.mktemp("commander"))) as running:
        yield running


def events_for(svc: RunningService, incident_id: str, suffix: str) -> list[dict[str, Any]]:
    return [e for e in svc.events.of_type(suffix) if e["subject"] == incident_id]


def sender(svc: RunningService, kafka: str, transport: str) -> Send:
    """Send a command; return the incident id. Over the API the answer carries the state
    at once; over Kafka the command is applied when consumed (the caller waits for its event)."""
    paths = {"status": "status", "note": "notes", "update": "updates", "severity": "severity"}
    paths |= {"escalate": "escalate", "ack": "ack"}

    async def over_api(incident_id: str | None, cmd: dict[str, Any]) -> str:
        body = {k: v for k, v in cmd.items() if k != "command"}
        if incident_id is None:
            resp = await svc.client.post(f"{svc.url}/api/v1/incidents", json=body)
            assert resp.status_code == 201, resp.text
        else:
            url = f"{svc.url}/api/v1/incidents/{incident_id}/{paths[cmd['command']]}"
            resp = await svc.client.post(url, json=body)
            assert resp.status_code == 200, resp.text
        return str(resp.json()["incident"]["id"])

    async def over_kafka(incident_id: str | None, cmd: dict[str, Any]) -> str:
        target = incident_id or f"inc-declared-{uuid.uuid4().hex[:8]}"
        record = json.dumps({"incident_id": target, "command": cmd}).encode()
        await produce(kafka, svc.settings.kafka_commands_topic, [record], key=target.encode())
        return target

    return over_api if transport == "api" else over_kafka


async def wait_events(svc: RunningService, inc: str, suffix: str, n: int) -> list[dict[str, Any]]:
    await svc.events.wait_for(lambda _: len(events_for(svc, inc, suffix)) >= n)
    return events_for(svc, inc, suffix)


@pytest.mark.parametrize("transport", ["api", "kafka"])
async def test_each_command_with_its_event_and_the_next_update(
    svc: RunningService, kafka: str, transport: str
) -> None:
    send = sender(svc, kafka, transport)
    declare = {"command": "declare", "title": f"Checkout slow ({transport})", "severity": "SEV-3"}
    inc = await send(
        None, {**declare, "impact": "Some payments fail", "roles": {"IC": "carol"}, "by": "dave"}
    )
    [opened] = await wait_events(svc, inc, "incident.opened", 1)
    assert opened["data"]["declared_by"] == "dave" and opened["data"]["severity"] == "SEV-3"
    assert opened["data"]["roles"] == {"Incident Commander": "carol"}
    assert opened["data"]["command"] == {"command": "declare", "by": "dave", "source": transport}
    # Paged like any other incident: the first page, and carol as Incident Commander.
    sent = await wait_events(svc, inc, "page.sent", 2)
    assert sorted(e["data"]["page"]["target"] for e in sent) == ["first", "person:carol"]

    status = {"command": "status", "phase": "identified", "root_cause": "a bad index", "eta": "14:30 UTC"}
    await send(inc, {**status, "by": "carol"})
    [updated] = await wait_events(svc, inc, "incident.updated", 1)
    assert updated["data"]["reasons"] == ["phase:identified", "root_cause", "eta"]
    assert (updated["data"]["phase"], updated["data"]["root_cause"]) == ("identified", "a bad index")

    await send(inc, {"command": "note", "text": "index rebuilt on replica 2", "by": "erin"})
    noted = (await wait_events(svc, inc, "incident.updated", 2))[1]
    assert noted["data"]["reasons"] == ["note"]
    assert noted["data"]["latest_note"]["text"] == "index rebuilt on replica 2"

    await send(inc, {"command": "severity", "severity": "SEV-1", "reason": "all regions", "by": "carol"})
    raised = (await wait_events(svc, inc, "incident.updated", 3))[2]
    assert raised["data"]["reasons"] == ["severity_raised:SEV-3->SEV-1"]
    assert raised["data"]["command"]["reason"] == "all regions"

    await send(inc, {"command": "escalate", "roles": ["Security", "CTO"], "reason": "data at risk"})
    [escalated] = await wait_events(svc, inc, "incident.escalated", 1)
    assert escalated["data"]["escalation"] == {
        "rule": "manual:1",
        "kind": "manual",
        "roles": ["Security", "CTO"],
        "reason": "data at risk",
        "by": "unknown",
    }
    await svc.events.wait_for(
        lambda _: any(e["data"]["page"]["target"] == "manual:1" for e in events_for(svc, inc, "page.sent"))
    )

    await send(inc, {"command": "update", "by": "carol", "text": "Customers notified"})
    first, update = await wait_events(svc, inc, "comms.update", 2)
    # The new phase went out at once (SEV-3 then, no cadence); the person's [UPDATE] after.
    assert first["data"]["comms"]["message"].startswith(
        f"[UPDATE] SEV-3: Checkout slow ({transport})\n- Status: Identified"
    )
    message = update["data"]["comms"]["message"]
    assert message.startswith(f"[UPDATE] SEV-1: Checkout slow ({transport})\n- Status: Identified\n")
    for line in (
        "- Root cause: a bad index",
        "- ETA: 14:30 UTC",
        "- IC: @carol",
        "- Customers notified",
        "- Latest note (erin): index rebuilt on replica 2",
    ):
        assert line in message
    assert update["data"]["comms"]["next_update"] is not None  # SEV-1 has a cadence
    timeline = (await svc.client.get(f"{svc.url}/api/v1/incidents/{inc}")).json()["timeline"]
    summaries = [t["summary"] for t in timeline]
    assert f"SEV-3 open | note | note by erin via {transport}: index rebuilt on replica 2" in summaries
    assert any("manual escalation to Security, CTO: data at risk" in line for line in summaries)
    for e in svc.events.events:
        if e["subject"] == inc:
            assert_valid_event(e)


async def test_list_filters_by_triggered_acknowledged_and_phase(svc: RunningService) -> None:
    base = f"{svc.url}/api/v1/incidents"
    made = await svc.client.post(base, json={"title": "Queue backlog", "severity": "SEV-4"})
    inc = made.json()["incident"]["id"]

    async def ids(**params: str) -> list[str]:
        resp = await svc.client.get(base, params=params)
        assert resp.status_code == 200, resp.text
        return [i["id"] for i in resp.json()["incidents"]]

    assert inc in await ids(status="triggered") and inc not in await ids(status="acknowledged")
    await svc.client.post(f"{base}/{inc}/ack", json={"by": "bob"})
    assert inc in await ids(status="acknowledged") and inc not in await ids(status="triggered")
    assert inc in await ids(phase="investigating") and inc not in await ids(phase="mitigating")
    await svc.client.post(f"{base}/{inc}/status", json={"phase": "mitigating"})
    assert inc in await ids(phase="mitigating", status="open")
    await svc.client.post(f"{base}/{inc}/status", json={"phase": "resolved", "root_cause": "full disk"})
    assert inc in await ids(status="resolved") and inc not in await ids(status="acknowledged")
    shown = (await svc.client.get(f"{base}/{inc}")).json()["incident"]
    assert (shown["status"], shown["phase"], shown["root_cause"]) == ("resolved", "resolved", "full disk")
    bad = await svc.client.get(base, params={"phase": "panicking"})
    assert bad.status_code == 422 and "phase must be one of" in bad.json()["error"]


async def test_commands_that_cannot_apply_are_refused(svc: RunningService, kafka: str) -> None:
    base = f"{svc.url}/api/v1/incidents"
    inc = (await svc.client.post(base, json={"title": "Disk full", "severity": "SEV-3"})).json()["incident"][
        "id"
    ]
    unknown_role = await svc.client.post(f"{base}/{inc}/escalate", json={"roles": ["Janitor"], "reason": "x"})
    assert unknown_role.status_code == 422 and "Janitor" in unknown_role.json()["error"]
    unknown_sev = await svc.client.post(f"{base}/{inc}/severity", json={"severity": "SEV-9"})
    assert unknown_sev.status_code == 422 and "SEV-9" in unknown_sev.json()["error"]
    bad_phase = await svc.client.post(f"{base}/{inc}/status", json={"phase": "panicking"})
    assert bad_phase.status_code == 422 and bad_phase.json()["details"][0]["loc"] == "phase"
    no_title = await svc.client.post(base, json={"severity": "SEV-3"})
    assert no_title.status_code == 422
    await svc.client.post(f"{base}/{inc}/resolve", json={})
    late = await svc.client.post(f"{base}/{inc}/escalate", json={"roles": ["CTO"], "reason": "x"})
    assert late.status_code == 409 and "resolved" in late.json()["error"]

    dlq = await TopicReader(kafka, svc.settings.kafka_dlq_topic).start()
    try:
        refused = json.dumps(
            {"incident_id": inc, "command": {"command": "escalate", "roles": ["CTO"], "reason": "x"}}
        ).encode()
        bad_sev = json.dumps(
            {"incident_id": "inc-new-1", "command": {"command": "declare", "title": "t", "severity": "SEV-9"}}
        ).encode()
        await produce(kafka, svc.settings.kafka_commands_topic, [refused, bad_sev])
        await dlq.wait_for(lambda recs: len(recs) >= 2)
        reasons = {r.value: dict(r.headers)["incidentd-dlq-reason"].decode() for r in dlq.records}
        assert reasons[refused].startswith("command refused: incident") and "resolved" in reasons[refused]
        assert reasons[bad_sev].startswith("command refused: severity must be one of")
    finally:
        await dlq.stop()


@dataclass(frozen=True)
class Refusal:
    """A command on incidents.commands that cannot apply: the incident it names (unknown,
    open, resolved), how the dead letter's reason starts and what else it says (None: the
    incident's id)."""

    state: str
    cmd: dict[str, Any]
    starts: str
    says: str | None = None

    def __str__(self) -> str:
        return "-".join([self.state, *(str(v).strip() or "blank" for v in self.cmd.values())])


def on_resolved(command: str) -> str:
    return f"is resolved; {command} applies to open incidents"


REFUSALS = [
    Refusal("unknown", {"command": "status", "phase": "identified"}, "unknown incident"),
    Refusal(
        "resolved", {"command": "status", "phase": "mitigating"}, "command refused", on_resolved("status")
    ),
    Refusal("open", {"command": "status", "phase": "panicking"}, "invalid command", "phase"),
    Refusal("unknown", {"command": "note", "text": "x"}, "unknown incident"),
    Refusal("open", {"command": "note", "text": " "}, "invalid command", "text"),
    Refusal("unknown", {"command": "update"}, "unknown incident"),
    Refusal("resolved", {"command": "update", "text": "x"}, "command refused", on_resolved("update")),
    Refusal("open", {"command": "severity", "severity": "SEV-9"}, "command refused", "got SEV-9"),
    Refusal("open", {"command": "severity", "severity": "critical"}, "invalid command", "severity"),
    Refusal(
        "resolved", {"command": "severity", "severity": "SEV-1"}, "command refused", on_resolved("severity")
    ),
]


@pytest.mark.parametrize("case", REFUSALS, ids=str)
async def test_commands_on_the_topic_that_cannot_apply_are_dead_lettered_with_the_reason(
    svc: RunningService, kafka: str, case: Refusal
) -> None:
    state, cmd = case.state, case.cmd
    base = f"{svc.url}/api/v1/incidents"
    inc = f"inc-missing-{uuid.uuid4().hex[:8]}"
    if state != "unknown":
        made = await svc.client.post(base, json={"title": f"Refused: {cmd}", "severity": "SEV-3"})
        inc = made.json()["incident"]["id"]
        if state == "resolved":
            assert (await svc.client.post(f"{base}/{inc}/resolve", json={})).status_code == 200
    before = (await svc.client.get(f"{base}/{inc}")).json() if state != "unknown" else None
    record = json.dumps({"incident_id": inc, "command": {**cmd, "by": "carol"}}).encode()
    dlq = await TopicReader(kafka, svc.settings.kafka_dlq_topic).start()
    try:
        await produce(kafka, svc.settings.kafka_commands_topic, [record], key=inc.encode())
        seen = await dlq.wait_for(lambda recs: any(r.value == record for r in recs))
        [dead] = [r for r in seen if r.value == record]
    finally:
        await dlq.stop()
    headers = {k: v.decode() for k, v in dead.headers}
    assert headers["incidentd-dlq-topic"] == svc.settings.kafka_commands_topic
    reason = headers["incidentd-dlq-reason"]
    assert reason.startswith(case.starts), reason
    assert (case.says or inc) in reason, reason
    if before is not None:  # refused: the incident is as it was, no event, no [UPDATE]
        after = (await svc.client.get(f"{base}/{inc}")).json()
        assert after["incident"] == before["incident"]
        assert changes(after["timeline"]) == changes(before["timeline"])
        assert events_for(svc, inc, "incident.updated") == events_for(svc, inc, "comms.update") == []


async def test_a_declare_delivered_twice_is_one_incident(svc: RunningService, kafka: str) -> None:
    inc = f"inc-declared-{uuid.uuid4().hex[:8]}"
    record = json.dumps(
        {"incident_id": inc, "command": {"command": "declare", "title": "Login loop", "severity": "SEV-2"}}
    ).encode()
    # Keyed by the incident, as producers of commands should: one partition keeps their order.
    await produce(kafka, svc.settings.kafka_commands_topic, [record, record], key=inc.encode())
    # The note after both declares orders the wait: once it is applied, both were consumed.
    note = json.dumps({"incident_id": inc, "command": {"command": "note", "text": "seen twice"}}).encode()
    await produce(kafka, svc.settings.kafka_commands_topic, [note], key=inc.encode())
    await wait_events(svc, inc, "incident.updated", 1)
    assert len(events_for(svc, inc, "incident.opened")) == 1


async def test_a_command_sent_twice_is_applied_once(svc: RunningService, kafka: str) -> None:
    base = f"{svc.url}/api/v1/incidents"
    retry = {"Idempotency-Key": f"declare-{uuid.uuid4().hex}"}
    made = [await svc.client.post(base, json={"title": "Cart empty", "severity": "SEV-2"}, headers=retry)]
    made.append(await svc.client.post(base, json={"title": "Cart empty", "severity": "SEV-2"}, headers=retry))
    assert [r.status_code for r in made] == [201, 201]
    inc = made[0].json()["incident"]["id"]
    assert made[1].json()["incident"]["id"] == inc  # one incident, paged once
    key = {"Idempotency-Key": "escalate-1"}
    for _ in range(2):
        resp = await svc.client.post(
            f"{base}/{inc}/escalate", json={"roles": ["CTO"], "reason": "x"}, headers=key
        )
        assert resp.status_code == 200
    assert resp.json()["incident"]["escalations"].keys() == {"1:manual:1"}
    bad = await svc.client.post(
        f"{base}/{inc}/notes", json={"text": "x"}, headers={"Idempotency-Key": "a\tb"}
    )
    assert bad.status_code == 400 and "Idempotency-Key" in bad.json()["error"]

    # Over Kafka: the sender's command_id, and a record delivered again (its coordinates).
    note = {"incident_id": inc, "command": {"command": "note", "text": "once"}, "command_id": "n-1"}
    records = [json.dumps(note).encode()] * 2
    await produce(kafka, svc.settings.kafka_commands_topic, records, key=inc.encode())
    marker = {"incident_id": inc, "command": {"command": "note", "text": "after"}}
    await produce(kafka, svc.settings.kafka_commands_topic, [json.dumps(marker).encode()], key=inc.encode())
    await svc.events.wait_for(lambda _: any(e["data"]["command"]["text"] == "after" for e in notes(svc, inc)))
    assert [e["data"]["command"]["text"] for e in notes(svc, inc)] == ["once", "after"]
    commands = await TopicReader(kafka, svc.settings.kafka_commands_topic).start()
    try:
        seen = await commands.wait_for(lambda recs: any(b'"after"' in r.value for r in recs))
        [record] = [r for r in seen if b'"after"' in r.value]
    finally:
        await commands.stop()
    await svc.runtime.command_consumer.handle(record)  # the same record again, as after a crash
    shown = (await svc.client.get(f"{base}/{inc}")).json()
    assert [t["summary"].rsplit(": ", 1)[-1] for t in shown["timeline"] if "| note by" in t["summary"]] == [
        "once",
        "after",
    ]
    assert len(events_for(svc, inc, "incident.opened")) == 1


def changes(timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The timeline less the page outcomes (the page worker's, which come when they come)."""
    return [t for t in timeline if not t["type"].startswith("page.")]


def notes(svc: RunningService, inc: str) -> list[dict[str, Any]]:
    return [e for e in events_for(svc, inc, "incident.updated") if e["data"].get("reasons") == ["note"]]


async def test_a_declare_naming_a_bad_or_taken_id_is_dead_lettered(svc: RunningService, kafka: str) -> None:
    await svc.post_webhook(body(webhook(alert("QueueStuck", namespace="commander"))))
    await svc.events.wait_for(
        lambda _: any(
            e["data"]["group_labels"].get("alertname") == "QueueStuck"
            for e in svc.events.of_type("incident.opened")
        )
    )
    [opened] = [
        e
        for e in svc.events.of_type("incident.opened")
        if e["data"]["group_labels"].get("alertname") == "QueueStuck"
    ]
    declare = {"command": "declare", "title": "t", "severity": "SEV-3"}
    bad_id = json.dumps({"incident_id": "../remediation/pause", "command": declare}).encode()
    taken = json.dumps({"incident_id": opened["data"]["id"], "command": declare}).encode()
    dlq = await TopicReader(kafka, svc.settings.kafka_dlq_topic).start()
    try:
        await produce(kafka, svc.settings.kafka_commands_topic, [bad_id, taken])
        await dlq.wait_for(lambda recs: sum(r.value in (bad_id, taken) for r in recs) == 2)
        reasons = {r.value: dict(r.headers)["incidentd-dlq-reason"].decode() for r in dlq.records}
        assert reasons[bad_id].startswith("command refused: incident_id must match")
        assert reasons[taken].endswith("was opened by an alert, not declared")
    finally:
        await dlq.stop()
