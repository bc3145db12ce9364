"""What each command does to an incident, decided without I/O."""

from __future__ import annotations

from datetime import timedelta

import pytest

from service.errors import Conflict, Invalid
from service.escalate.commands import (
    Ack,
    AddNote,
    Assign,
    Escalate,
    PostUpdate,
    Resolve,
    SetSeverity,
    SetStatus,
)
from service.escalate.decisions import Decisions
from service.models import Incident, IncidentStatus, PageAction, Phase
from service.ruleset import RuleSet
from tests.support.time import T0


def incident(severity: str = "SEV-2") -> Incident:
    return Incident(
        id="inc-1",
        group_key="g",
        group_labels={"alertname": "X"},
        title="X is down",
        impact="",
        severity=severity,
        status=IncidentStatus.OPEN,
        opened_at=T0,
        opening_started_at=T0,
        response_due_at=T0 + timedelta(minutes=30),
    )


@pytest.fixture
def decide(rules: RuleSet) -> Decisions:
    return Decisions(rules)


def test_status_reports_what_changed_and_a_repeat_changes_nothing(decide: Decisions) -> None:
    inc = incident()
    change = decide.decide(inc, SetStatus(phase=Phase.IDENTIFIED, root_cause="cert expired"), T0)
    assert (change.suffix, change.reasons) == ("incident.updated", ["phase:identified", "root_cause"])
    assert (inc.phase, inc.root_cause, inc.eta) == (Phase.IDENTIFIED, "cert expired", None)
    again = decide.decide(inc, SetStatus(phase=Phase.IDENTIFIED, root_cause="cert expired"), T0)
    assert again.suffix is None
    eta = decide.decide(inc, SetStatus(phase=Phase.IDENTIFIED, eta="15:00"), T0)
    assert eta.reasons == ["eta"] and inc.root_cause == "cert expired"  # left as it was


def test_phase_resolved_resolves_and_closes_the_pages(decide: Decisions) -> None:
    inc = incident()
    change = decide.decide(inc, SetStatus(phase=Phase.RESOLVED, root_cause="disk"), T0)
    assert change.suffix == "incident.resolved" and change.reasons == ["root_cause"]
    assert inc.status is IncidentStatus.RESOLVED and inc.phase is Phase.RESOLVED
    assert [p.action for p in change.pages] == [PageAction.CLOSE]
    assert decide.decide(inc, SetStatus(phase=Phase.RESOLVED), T0).suffix is None
    with pytest.raises(Conflict, match="resolved"):
        decide.decide(inc, SetStatus(phase=Phase.MITIGATING), T0)
    with pytest.raises(Conflict):
        decide.decide(inc, Ack(), T0)
    assert decide.decide(inc, AddNote(text="postmortem on Friday"), T0).reasons == ["note"]


def test_assign_takes_the_alias_and_pages_the_person(decide: Decisions) -> None:
    inc = incident()
    change = decide.decide(inc, Assign(role="ic", who="carol"), T0)
    assert inc.roles == {"Incident Commander": "carol"}
    assert change.reasons == ["assigned:Incident Commander"]
    [page] = change.pages
    assert (page.action, page.target, page.roles) == (
        PageAction.TRIGGER,
        "person:carol",
        ["Incident Commander"],
    )
    assert decide.decide(inc, Assign(role="Incident Commander", who="carol"), T0).suffix is None


def test_severity_replans_an_unacknowledged_clock_only(decide: Decisions) -> None:
    inc = incident("SEV-3")
    later = T0 + timedelta(minutes=10)
    change = decide.decide(inc, SetSeverity(severity="SEV-1"), later)
    assert change.reasons == ["severity_raised:SEV-3->SEV-1"]
    assert inc.response_due_at == later + timedelta(minutes=15)
    tag = f"@{int(later.timestamp())}"
    timers = {t.name: t.due_at for t in change.timers}
    assert timers[f"rule:sev1-unresolved-30m{tag}"] == later + timedelta(minutes=30)
    # SEV-3 had no [UPDATE] cadence: SEV-1's starts now, after the reminders stored so far.
    assert timers["reminder:1"] == later + timedelta(minutes=30) and inc.update_sequence == 1
    decide.decide(inc, Ack(), later)
    due = inc.response_due_at
    lowered = decide.decide(inc, SetSeverity(severity="SEV-2"), later + timedelta(minutes=1))
    assert lowered.reasons == ["severity_lowered:SEV-1->SEV-2"] and inc.response_due_at == due
    assert not any(t.name.startswith("reminder:") for t in lowered.timers)  # SEV-2 has a cadence too
    with pytest.raises(Invalid, match="SEV-7"):
        decide.decide(inc, SetSeverity(severity="SEV-7"), later)


def test_a_severity_back_and_forth_plans_its_rules_again(decide: Decisions) -> None:
    inc = incident("SEV-1")
    t1, t2 = T0 + timedelta(minutes=5), T0 + timedelta(minutes=40)
    decide.decide(inc, SetSeverity(severity="SEV-2"), t1)
    back = decide.decide(inc, SetSeverity(severity="SEV-1"), t2)
    # Not the opening's own rule:sev1-unresolved-30m, which was planned (and skipped) before.
    names = {t.name for t in back.timers}
    assert f"rule:sev1-unresolved-30m@{int(t2.timestamp())}" in names


def test_manual_escalations_are_numbered_and_checked(decide: Decisions) -> None:
    inc = incident()
    first = decide.decide(inc, Escalate(roles=["CTO", "CTO", "Security"], reason="press"), T0)
    assert first.extra["escalation"]["rule"] == "manual:1"
    assert first.pages[0].roles == ["CTO", "Security"]
    second = decide.decide(inc, Escalate(roles=["Legal"], reason="contract"), T0)
    assert second.extra["escalation"]["rule"] == "manual:2"
    assert set(inc.escalations) == {"1:manual:1", "1:manual:2"}
    with pytest.raises(Invalid, match="Janitor"):
        decide.decide(inc, Escalate(roles=["Janitor"], reason="x"), T0)


def test_a_manual_update_supersedes_the_scheduled_reminder(decide: Decisions) -> None:
    inc = incident("SEV-1")
    inc.phase, inc.eta = Phase.MITIGATING, "soon"
    change = decide.decide(inc, PostUpdate(text="failover done"), T0, reminders=1)
    [event] = change.events
    assert event.extra["comms"]["sequence"] == 2
    assert "- Status: Mitigating\n" in event.extra["comms"]["message"]
    assert [(t.name, t.due_at) for t in change.timers] == [("reminder:3", T0 + timedelta(minutes=30))]
    assert inc.update_sequence == 3  # reminder 1 (and 2) are stale when they come due
    assert change.comms_only and change.pages[0].action is PageAction.UPDATE


def test_resolve_of_a_resolved_incident_is_a_repeat(decide: Decisions) -> None:
    inc = incident()
    assert decide.decide(inc, Resolve(), T0).suffix == "incident.resolved"
    assert decide.decide(inc, Resolve(), T0).suffix is None


def test_a_resolved_incident_says_how_long_it_lasted_and_whether_the_response_was_met(
    decide: Decisions,
) -> None:
    inc = incident("SEV-2")  # 30 min to respond
    assert (inc.snapshot()["duration_seconds"], inc.snapshot()["response_met"]) == (None, None)
    decide.decide(inc, Ack(), T0 + timedelta(minutes=31))
    assert inc.snapshot()["response_met"] is False  # acknowledged a minute late
    decide.decide(inc, Resolve(), T0 + timedelta(minutes=95))
    assert inc.snapshot()["duration_seconds"] == 95 * 60
    quick = incident("SEV-2")
    decide.decide(quick, Resolve(), T0 + timedelta(minutes=10))
    assert quick.snapshot()["response_met"] is True  # resolved within the response time


def test_a_new_phase_posts_an_update_and_a_root_cause_alone_waits(decide: Decisions) -> None:
    inc = incident("SEV-1")
    phase = decide.decide(inc, SetStatus(phase=Phase.MITIGATING), T0, reminders=1)
    assert phase.comms_only and [p.action for p in phase.pages] == [PageAction.UPDATE]
    assert phase.events[0].extra["comms"]["sequence"] == 2 and inc.update_sequence == 3
    cause = decide.decide(inc, SetStatus(phase=Phase.MITIGATING, root_cause="disk"), T0, reminders=3)
    assert cause.reasons == ["root_cause"] and cause.pages == [] and cause.events == []
