"""What each message says (issue #10): the people assigned the runbook's roles are in every
message ([INCIDENT], [UPDATE], the acknowledgement, the close), and a scheduled [UPDATE]
(the cadence's own, on the simulated clock) carries what people changed since the last one:
the phase, the severity, the escalations so far (a manual one too)."""

from __future__ import annotations

from typing import Any

from service.escalate.commands import Ack, Declare, Escalate, PostUpdate, Resolve, SetSeverity, SetStatus
from service.escalate.updates import escalated, render_update
from service.models import Phase
from service.notify.base import PageRequest
from service.ruleset import RuleSet
from service.store.store import Store
from tests.support.incidents import make_incident
from tests.support.payloads import alert
from tests.support.recorder import Recorder
from tests.test_escalation import Scenario

ROLE_LINES = ["- IC: @carol", "- Communications: @dan", "- Technical Lead: @erin"]


def full_text(request: PageRequest) -> list[str]:
    return "\n".join(part for part in (request.message, request.description) if part).splitlines()


async def updates(sc: Scenario, inc: str) -> list[dict[str, Any]]:
    return [e["data"]["comms"] for e in await sc.of(inc, "comms.update")]


async def brought_by_the_clock(sc: Scenario, inc: str, minutes: float) -> list[dict[str, Any]]:
    """The [UPDATE]s posted while the clock moves to ``minutes``, with no person acting:
    the cadence's own (its timers)."""
    before = len(await updates(sc, inc))
    await sc.at(minutes)
    return (await updates(sc, inc))[before:]


def escalated_line(message: str) -> str:
    [line] = [line for line in message.splitlines() if line.startswith("- Escalated:")]
    return line


async def test_every_message_kind_shows_every_assigned_role(store: Store, rules: RuleSet) -> None:
    sc = Scenario(store, rules, Recorder())
    roles = {"IC": "carol", "Comms": "dan", "TL": "erin"}
    inc = (await sc.commands.declare(Declare(title="Checkout slow", severity="SEV-1", roles=roles), "api")).id
    await sc.settle()
    await sc.at(30)  # the cadence's first [UPDATE]
    await sc.commands.apply(inc, PostUpdate(by="carol", text="Rolled back"), "api")
    await sc.commands.apply(inc, Ack(by="carol"), "api")
    await sc.settle()
    await sc.commands.apply(inc, Resolve(by="carol", note="bad deploy"), "api")
    await sc.settle()

    sent = [p for p in sc.pager.sent if p.incident_id == inc]
    kinds = {
        # The first page, the pages to carol, dan and erin, and the matrix's three by 30 min.
        "incident": [p for p in sent if p.action == "trigger" and p.message.startswith("[INCIDENT]")],
        "update": [p for p in sent if p.action == "update"],
        "ack": [p for p in sent if p.action == "ack"],
        "close": [p for p in sent if p.action == "close"],
    }
    assert {k: len(v) for k, v in kinds.items()} == {"incident": 7, "update": 2, "ack": 7, "close": 7}
    # The cadence's [UPDATE] at 30 min, then carol's.
    assert ["- Rolled back" in full_text(p) for p in kinds["update"]] == [False, True]
    for kind, requests in kinds.items():
        for request in requests:
            lines = full_text(request)
            missing = [line for line in ROLE_LINES if line not in lines]
            assert not missing, f"{kind} message ({request.target}) lacks {missing}:\n" + "\n".join(lines)
    ack = kinds["ack"][0]
    assert full_text(ack)[:2] == ["[UPDATE] SEV-1: Checkout slow", "- Status: Acknowledged by carol"]


async def test_an_unassigned_commander_is_shown_as_such_and_absent_roles_are_left_out(
    store: Store, rules: RuleSet
) -> None:
    sc = Scenario(store, rules, Recorder())
    inc = (await sc.commands.declare(Declare(title="Search slow", severity="SEV-2"), "api")).id
    await sc.settle()
    await sc.commands.apply(inc, Ack(by="bob"), "api")
    await sc.settle()
    await sc.commands.apply(inc, Resolve(by="bob"), "api")
    await sc.settle()
    sent = [p for p in sc.pager.sent if p.incident_id == inc]
    assert [p.action for p in sent] == ["trigger", "ack", "close"]
    for request in sent:
        lines = full_text(request)
        assert "- IC: @unassigned" in lines, lines
        assert not [line for line in lines if line.startswith(("- Communications:", "- Technical Lead:"))]


async def test_the_next_scheduled_update_carries_a_new_phase(store: Store, rules: RuleSet) -> None:
    sc = Scenario(store, rules, Recorder())
    await sc.alert(alert("ApiDown", namespace="phase"))  # SEV-1: an [UPDATE] every 30 min
    inc = await sc.incident_id("ApiDown")
    await sc.at(5)
    await sc.commands.apply(inc, SetStatus(phase=Phase.MITIGATING, by="carol"), "kafka")
    await sc.settle()  # a new phase posts an [UPDATE] at once; the cadence restarts from it
    assert await brought_by_the_clock(sc, inc, 34.9) == []
    [update] = await brought_by_the_clock(sc, inc, 35)
    assert update["next_update"] == "2026-11-26T13:05:00Z"
    assert update["message"].splitlines()[:2] == [
        "[UPDATE] SEV-1: ApiDown is happening",
        "- Status: Mitigating",
    ]


async def test_the_next_scheduled_update_carries_a_new_severity(store: Store, rules: RuleSet) -> None:
    sc = Scenario(store, rules, Recorder())
    await sc.alert(alert("AuthBroken", namespace="sev"))  # SEV-2: an [UPDATE] every 30 min
    inc = await sc.incident_id("AuthBroken")
    await sc.at(5)
    await sc.commands.apply(inc, SetSeverity(severity="SEV-1", reason="all regions", by="carol"), "api")
    await sc.settle()
    assert await updates(sc, inc) == []  # a severity change waits for the cadence
    [update] = await brought_by_the_clock(sc, inc, 30)
    assert update["sequence"] == 1
    assert update["message"].startswith("[UPDATE] SEV-1: ")


async def test_the_next_scheduled_update_lists_the_escalations_a_manual_one_too(
    store: Store, rules: RuleSet
) -> None:
    sc = Scenario(store, rules, Recorder())
    await sc.alert(alert("ApiDown", namespace="escalated"))
    inc = await sc.incident_id("ApiDown")
    await sc.at(12)  # 80 % of SEV-1's 15 min: sla-violation-imminent
    await sc.at(15)  # response_overdue
    await sc.at(20)
    await sc.commands.apply(inc, Escalate(roles=["Security"], reason="odd logins", by="carol"), "api")
    await sc.settle()
    assert await brought_by_the_clock(sc, inc, 29.9) == []
    # The first [UPDATE] (and "SEV-1 > 30 min", due at the same minute).
    [first] = await brought_by_the_clock(sc, inc, 30)
    assert escalated_line(first["message"]).startswith(
        "- Escalated: sla-violation-imminent (Account Manager); response_overdue (Engineering Lead); "
        "manual:1 (Security)"
    )
    [second] = await brought_by_the_clock(sc, inc, 60)
    assert escalated_line(second["message"]) == (
        "- Escalated: sla-violation-imminent (Account Manager); response_overdue (Engineering Lead); "
        "manual:1 (Security); sev1-unresolved-30m (Engineering Lead, CTO)"
    )


async def test_an_update_before_any_escalation_has_no_escalated_line(store: Store, rules: RuleSet) -> None:
    sc = Scenario(store, rules, Recorder())
    await sc.alert(alert("AuthBroken", namespace="calm"))
    inc = await sc.incident_id("AuthBroken")
    await sc.commands.apply(inc, Ack(by="alice"), "api")  # the response rules stop
    [update] = await brought_by_the_clock(sc, inc, 30)
    assert not [line for line in update["message"].splitlines() if line.startswith("- Escalated:")]


def test_the_escalations_listed_are_this_openings_in_the_order_they_fired(rules: RuleSet) -> None:
    inc = make_incident()
    inc.opening = 2
    inc.escalations = {
        "1:sla-violation-imminent": "2026-11-26T12:12:00Z",  # the first opening's
        "2:manual:1": "2026-11-26T13:20:00Z",
        "1:manual:1": "2026-11-26T12:20:00Z",  # the first opening's, to other roles
        "2:response_overdue": "2026-11-26T13:15:00Z",
        "2:data-breach-suspected": "2026-11-26T13:00:00Z",
    }
    inc.manual_roles = {"1:manual:1": ["Security"], "2:manual:1": ["CTO", "Legal"]}
    assert [(e["rule"], e["roles"]) for e in escalated(rules, inc)] == [
        ("data-breach-suspected", ["Security", "Legal"]),
        ("response_overdue", ["Engineering Lead"]),
        ("manual:1", ["CTO", "Legal"]),
    ]
    assert escalated_line(render_update(rules, inc, None)) == (
        "- Escalated: data-breach-suspected (Security, Legal); response_overdue (Engineering Lead); "
        "manual:1 (CTO, Legal)"
    )
