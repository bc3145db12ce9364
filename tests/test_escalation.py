"""The runbook's escalation matrix on a simulated clock: no test waits for real minutes."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

from service.batch import DeadLetter, Record
from service.clock import ManualClock
from service.config import Settings
from service.context import Context
from service.emit.cloudevents import EventFactory
from service.escalate.commands import (
    Ack,
    AddNote,
    CommandHandler,
    Declare,
    Escalate,
    PostUpdate,
    SetSeverity,
    SetStatus,
)
from service.escalate.scheduler import TimerWorker
from service.notify.worker import PageWorker
from service.observability.metrics import Metrics
from service.pipeline import Paging, build_pipeline
from service.ruleset import RuleSet, load_rules
from service.store.store import Store
from tests.support.checks import assert_valid_event
from tests.support.payloads import alert, body, webhook
from tests.support.recorder import Recorder
from tests.support.service import RULES
from tests.support.time import T0


class Scenario:
    def __init__(self, store: Store, rules: RuleSet, pager: Recorder) -> None:
        self.store, self.rules, self.pager = store, rules, pager
        self.clock = ManualClock(T0)
        self.metrics = Metrics()
        events = EventFactory("events", "io.incidentd", "/test")
        self.dead: list[DeadLetter] = []

        async def sink(dead: list[DeadLetter]) -> None:
            self.dead.extend(dead)

        ctx = Context(store, rules, events, self.clock, self.metrics, Settings())
        self.pipeline = build_pipeline(ctx, Paging([pager.name]), sink)
        self.pages = PageWorker(ctx, {pager.name: pager})
        self.timers = TimerWorker(ctx, [pager.name], [pager.name] if pager.comms else [])
        self.commands = CommandHandler(ctx, [pager.name], [pager.name] if pager.comms else [])
        self.offset = 0

    async def alert(self, *alerts: dict[str, Any]) -> None:
        self.offset += 1
        await self.pipeline.process(
            [Record(body(webhook(*alerts)), "alerts", 0, self.offset)], self.clock.now()
        )
        await self.settle()

    async def at(self, minutes: float) -> None:
        self.clock.advance(T0 + timedelta(minutes=minutes) - self.clock.now())
        await self.settle()

    async def settle(self) -> None:
        while await self.timers.run_once() or await self.pages.run_once():
            await self.pages.drain()

    async def events(self) -> list[dict[str, Any]]:
        return [json.loads(r.value) for r in await self.store.outbox.unpublished(10_000)]

    async def of(self, incident: str, suffix: str) -> list[dict[str, Any]]:
        return [e for e in await self.events() if e["subject"] == incident and e["type"].endswith(suffix)]

    async def incident_id(self, alertname: str) -> str:
        [opened] = [
            e
            for e in await self.events()
            if e["type"].endswith("incident.opened") and e["data"]["group_labels"]["alertname"] == alertname
        ]
        return str(opened["data"]["id"])

    def paged(self, incident: str) -> list[tuple[str, str, tuple[str, ...]]]:
        return [(p.action, p.target, p.roles) for p in self.pager.sent if p.incident_id == incident]


async def test_sev1_through_the_whole_matrix_and_an_ack_that_stops_the_response_rules_only(
    store: Store, rules: RuleSet
) -> None:
    sc = Scenario(store, rules, Recorder())
    await sc.alert(alert("ApiDown", namespace="aragora"))
    inc = await sc.incident_id("ApiDown")
    assert sc.paged(inc) == [("trigger", "first", ("DevOps",))]
    assert sc.pager.sent[0].message == "[INCIDENT] SEV-1: ApiDown is happening"

    await sc.alert(alert("DatabaseUnavailable", namespace="aragora"))  # the second incident
    second = await sc.incident_id("DatabaseUnavailable")
    await sc.at(10)
    await sc.commands.apply(second, Ack(by="alice"), "api")

    await sc.at(11.9)
    assert await sc.of(inc, "incident.escalated") == []
    await sc.at(12)  # 80 % of SEV-1's 15 min: SLA violation imminent
    await sc.at(15)  # the response clock runs out
    await sc.at(29.9)
    assert await sc.of(inc, "comms.update") == []
    await sc.at(30)  # SEV-1 open 30 min, and the first [UPDATE]
    await sc.at(60)
    await sc.at(61)

    escalated = [e["data"]["escalation"] for e in await sc.of(inc, "incident.escalated")]
    assert [(e["rule"], e["kind"], e["roles"]) for e in escalated] == [
        ("sla-violation-imminent", "sla", ["Account Manager"]),
        ("response_overdue", "response_overdue", ["Engineering Lead"]),
        ("sev1-unresolved-30m", "time", ["Engineering Lead", "CTO"]),
    ]
    assert sc.paged(inc) == [
        ("trigger", "first", ("DevOps",)),
        ("trigger", "sla-violation-imminent", ("Account Manager",)),
        ("trigger", "response_overdue", ("Engineering Lead",)),
        ("trigger", "sev1-unresolved-30m", ("Engineering Lead", "CTO")),  # due with the update
        ("update", "reminder:1", ()),
        ("update", "reminder:2", ()),
    ]
    updates = [e["data"]["comms"] for e in await sc.of(inc, "comms.update")]
    assert [u["sequence"] for u in updates] == [1, 2]
    assert updates[0]["message"].startswith("[UPDATE] SEV-1: ApiDown is happening\n- Status: Investigating")
    assert updates[0]["next_update"] == "2026-11-26T13:00:00Z"  # 30 min after the first update
    assert "- Next update: 2026-11-26T13:00:00Z" in updates[0]["message"]

    # The acknowledged incident skipped the response rules (SLA, overdue), but "SEV-1 > 30
    # min" means unresolved: it still reaches Engineering Lead and CTO, after the ack.
    escalated = [e["data"]["escalation"] for e in await sc.of(second, "incident.escalated")]
    assert [(e["rule"], e["roles"], e["reason"]) for e in escalated] == [
        ("sev1-unresolved-30m", ["Engineering Lead", "CTO"], "SEV-1 unresolved for 30 min")
    ]
    assert [p[:2] for p in sc.paged(second)] == [
        ("trigger", "first"),
        ("ack", "first"),  # the page itself is acknowledged too
        ("trigger", "sev1-unresolved-30m"),
        ("update", "reminder:1"),
        ("update", "reminder:2"),
    ]
    for e in await sc.events():
        assert_valid_event(e)


async def test_resolve_stops_reminders_and_closes_every_page(store: Store, rules: RuleSet) -> None:
    sc = Scenario(store, rules, Recorder())
    await sc.alert(alert("AuthBroken", namespace="a"))  # SEV-2: 30 min response, 30 min updates
    inc = await sc.incident_id("AuthBroken")
    await sc.at(30)
    await sc.alert(alert("AuthBroken", status="resolved", namespace="a"))
    await sc.at(120)
    assert [p[:2] for p in sc.paged(inc)] == [
        ("trigger", "first"),
        ("trigger", "sla-violation-imminent"),  # 80 % of 30 min
        ("trigger", "response_overdue"),
        ("update", "reminder:1"),
        ("close", "first"),
        ("close", "sla-violation-imminent"),
        ("close", "response_overdue"),
    ]
    assert len(await sc.of(inc, "comms.update")) == 1


async def test_condition_escalation_reaches_roles_on_the_first_page(store: Store, rules: RuleSet) -> None:
    sc = Scenario(store, rules, Recorder())
    await sc.alert(alert("ConnectorDown", namespace="a", data_breach="suspected"))
    inc = await sc.incident_id("ConnectorDown")
    assert sc.paged(inc) == [("trigger", "first", ("DevOps", "Security", "Legal"))]
    [esc] = await sc.of(inc, "incident.escalated")
    assert esc["data"]["escalation"]["kind"] == "condition"
    # Customer data affected, learnt from a later alert of the same incident: escalates then.
    await sc.alert(alert("ConnectorDown", namespace="a", pod="x", customer_data="affected"))
    assert sc.paged(inc)[-1] == ("trigger", "customer-data-affected", ("Customer Success", "Legal"))
    await sc.alert(alert("ConnectorDown", namespace="a", pod="y", customer_data="affected"))
    assert len(await sc.of(inc, "incident.escalated")) == 2  # once per opening


async def test_role_without_contact_is_reported_loudly(store: Store, tmp_path: Path) -> None:
    rules_dir = tmp_path / "rules"
    shutil.copytree(RULES, rules_dir)
    contacts = rules_dir / "contacts.yaml"
    contacts.write_text(contacts.read_text().replace("  Legal: {opsgenie: {team: legal}}\n", "  Legal: {}\n"))
    rules = load_rules(rules_dir)
    sc = Scenario(store, rules, Recorder("opsgenie"))
    await sc.alert(alert("ConnectorDown", namespace="a", data_breach="true"))
    inc = await sc.incident_id("ConnectorDown")
    [page] = sc.pager.sent
    assert page.roles == ("DevOps", "Security", "Legal")
    assert page.responders == ({"type": "team", "name": "devops"}, {"type": "team", "name": "security"})
    [failed] = await sc.of(inc, "page.failed")
    assert failed["data"]["page"]["unrouted_roles"] == ["Legal"]
    assert "no opsgenie contact for role(s) Legal" in failed["data"]["page"]["error"]
    assert (
        sc.metrics.registry.get_sample_value(
            "incidentd_escalations_unrouted_total", {"integration": "opsgenie", "role": "Legal"}
        )
        == 1
    )
    assert len(await sc.of(inc, "page.sent")) == 1  # the reachable roles were still paged


async def test_a_manual_update_restarts_the_cadence(store: Store, rules: RuleSet) -> None:
    sc = Scenario(store, rules, Recorder())
    await sc.alert(alert("ApiDown", namespace="aragora"))  # SEV-1: an [UPDATE] every 30 min
    inc = await sc.incident_id("ApiDown")
    await sc.at(10)
    await sc.commands.apply(inc, PostUpdate(by="carol", text="Rolling back"), "api")
    await sc.settle()
    await sc.at(30)  # reminder 1 was superseded by the update at 10
    await sc.at(39.9)
    updates = [e["data"]["comms"] for e in await sc.of(inc, "comms.update")]
    assert [(u["sequence"], u["next_update"]) for u in updates] == [(2, "2026-11-26T12:40:00Z")]
    assert "- Rolling back" in updates[0]["message"]
    await sc.at(40)
    updates = [e["data"]["comms"] for e in await sc.of(inc, "comms.update")]
    assert [(u["sequence"], u["next_update"]) for u in updates][1:] == [(3, "2026-11-26T13:10:00Z")]
    assert [p[1] for p in sc.paged(inc) if p[0] == "update"] == ["reminder:2", "reminder:3"]


async def test_raising_the_severity_starts_the_new_rules_then(store: Store, rules: RuleSet) -> None:
    sc = Scenario(store, rules, Recorder())
    inc = (await sc.commands.declare(Declare(title="Slow search", severity="SEV-3"), "api")).id
    await sc.at(10)
    raised = await sc.commands.apply(inc, SetSeverity(severity="SEV-1", by="carol"), "api")
    assert raised.response_due_at == T0 + timedelta(minutes=25)  # SEV-1's 15 min, from now
    for minute in (21.9, 22, 25, 39.9, 40):
        await sc.at(minute)
    escalated = await sc.of(inc, "incident.escalated")
    assert [(e["data"]["escalation"]["rule"], e["time"]) for e in escalated] == [
        ("sla-violation-imminent", "2026-11-26T12:22:00Z"),  # 80 % of 15 min after the change
        ("response_overdue", "2026-11-26T12:25:00Z"),
        ("sev1-unresolved-30m", "2026-11-26T12:40:00Z"),  # 30 min after the change
    ]


async def test_a_manual_escalation_after_the_ack_still_pages(store: Store, rules: RuleSet) -> None:
    sc = Scenario(store, rules, Recorder())
    await sc.alert(alert("AuthBroken", namespace="a"))
    inc = await sc.incident_id("AuthBroken")
    await sc.commands.apply(inc, Ack(by="alice"), "api")
    await sc.at(5)
    await sc.commands.apply(inc, Escalate(roles=["Database Admin"], reason="replica lag", by="alice"), "api")
    await sc.settle()
    assert sc.paged(inc)[-1] == ("trigger", "manual:1", ("Database Admin",))
    [esc] = await sc.of(inc, "incident.escalated")
    assert esc["data"]["escalation"]["kind"] == "manual" and esc["data"]["escalation"]["by"] == "alice"


async def test_the_next_scheduled_update_carries_what_the_commander_set(store: Store, rules: RuleSet) -> None:
    sc = Scenario(store, rules, Recorder())
    await sc.alert(alert("ApiDown", namespace="aragora"))
    inc = await sc.incident_id("ApiDown")
    await sc.at(5)
    # The phase as it was: a root cause and an ETA wait for the next [UPDATE] (a new phase
    # would post one at once).
    status = SetStatus(phase="investigating", root_cause="expired TLS cert", eta="12:45 UTC", by="carol")
    await sc.commands.apply(inc, status, "kafka")
    await sc.commands.apply(inc, AddNote(text="new cert issued", by="erin"), "api")
    await sc.at(30)
    [update] = [e["data"]["comms"] for e in await sc.of(inc, "comms.update")]
    assert update["sequence"] == 1  # the cadence's own reminder, not a person's update
    assert update["message"].splitlines() == [
        "[UPDATE] SEV-1: ApiDown is happening",
        "- Status: Investigating",
        "- Root cause: expired TLS cert",
        "- ETA: 12:45 UTC",
        "- IC: @unassigned",
        # Nobody acknowledged: the matrix escalated (its SEV-1 rule fired first, at 30 too).
        "- Escalated: sla-violation-imminent (Account Manager); response_overdue (Engineering Lead); "
        "sev1-unresolved-30m (Engineering Lead, CTO)",
        "- Latest note (erin): new cert issued",
        "- Next update: 2026-11-26T13:00:00Z",
    ]


async def test_a_severity_lowered_and_raised_again_escalates_and_updates(
    store: Store, rules: RuleSet
) -> None:
    sc = Scenario(store, rules, Recorder())
    inc = (await sc.commands.declare(Declare(title="Payments down", severity="SEV-1"), "api")).id
    await sc.commands.apply(inc, Ack(by="alice"), "api")
    await sc.at(5)
    await sc.commands.apply(inc, SetSeverity(severity="SEV-3", reason="one region"), "api")
    await sc.at(30)  # SEV-1's 30-minute rule and first [UPDATE] come due while it is SEV-3
    assert await sc.of(inc, "incident.escalated") == [] and await sc.of(inc, "comms.update") == []
    await sc.at(40)
    await sc.commands.apply(inc, SetSeverity(severity="SEV-1", reason="all regions"), "api")
    for minute in (69.9, 70):
        await sc.at(minute)
    [escalated] = await sc.of(inc, "incident.escalated")
    assert (escalated["data"]["escalation"]["rule"], escalated["time"]) == (
        "sev1-unresolved-30m",
        "2026-11-26T13:10:00Z",  # 30 min after it became SEV-1 again
    )
    updates = [e["data"]["comms"] for e in await sc.of(inc, "comms.update")]
    assert [(u["sequence"], u["next_update"]) for u in updates] == [(2, "2026-11-26T13:40:00Z")]


async def test_an_unresolved_sev1_escalation_queued_before_the_ack_is_still_sent(
    store: Store, rules: RuleSet
) -> None:
    sc = Scenario(store, rules, Recorder())
    await sc.alert(alert("ApiDown", namespace="aragora"))
    inc = await sc.incident_id("ApiDown")
    await sc.at(29)
    sc.clock.advance(timedelta(minutes=1))
    await sc.timers.run_once()  # "SEV-1 > 30 min" fires: its page is queued, not yet sent
    await sc.commands.apply(inc, Ack(by="alice"), "api")  # the ack lands before the page goes
    await sc.settle()
    # An ack answers the response rules' pages, not this one (until: resolved).
    triggers = [p[1] for p in sc.paged(inc) if p[0] == "trigger"]
    assert triggers == ["first", "sla-violation-imminent", "response_overdue", "sev1-unresolved-30m"]
