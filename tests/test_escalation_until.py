"""A matrix rule's ``until`` (escalation.yaml), set against its default: an ``open_for`` rule
told ``until: acknowledged`` stops at the acknowledgement, a ``response_share`` rule told
``until: resolved`` still fires after it, on the timer and in the page worker alike."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from service.escalate.commands import Ack
from service.ruleset import RuleSet, load_rules
from service.store.store import Store
from tests.support.payloads import alert
from tests.support.recorder import Recorder
from tests.support.service import RULES
from tests.test_escalation import Scenario


def rules_with_until(tmp_path: Path, **until: str | None) -> RuleSet:
    """The shipped rules, with ``until`` set on the named escalation rules (None: as
    shipped, the rule's default)."""
    folder = tmp_path / "rules"
    shutil.copytree(RULES, folder)
    path = folder / "escalation.yaml"
    doc = yaml.safe_load(path.read_text())
    for rule in doc["rules"]:
        if until.get(rule["name"]) is not None:
            rule["until"] = until[rule["name"]]
        elif rule["name"] in until:
            rule.pop("until", None)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    rules = load_rules(folder)
    by_name = {r.name: r.stops_on for r in rules.escalation.rules}
    defaults = {"sev1-unresolved-30m": "resolved", "sla-violation-imminent": "acknowledged"}
    assert {name: by_name[name] for name in until} == {n: u or defaults[n] for n, u in until.items()}
    return rules


def escalated_rules(events: list[dict[str, object]]) -> list[object]:
    return [e["data"]["escalation"]["rule"] for e in events]  # type: ignore[index]


async def test_an_open_for_rule_until_acknowledged_stops_at_the_ack(store: Store, tmp_path: Path) -> None:
    sc = Scenario(store, rules_with_until(tmp_path, **{"sev1-unresolved-30m": "acknowledged"}), Recorder())
    await sc.alert(alert("ApiDown", namespace="acked"))
    acked = await sc.incident_id("ApiDown")
    await sc.alert(alert("DatabaseUnavailable", namespace="unacked"))
    unacked = await sc.incident_id("DatabaseUnavailable")
    await sc.at(10)
    await sc.commands.apply(acked, Ack(by="alice"), "api")
    for minute in (29.9, 30, 31):
        await sc.at(minute)
    # Acknowledged: nothing escalates any more, "SEV-1 > 30 min" included.
    assert await sc.of(acked, "incident.escalated") == []
    assert [p[1] for p in sc.paged(acked) if p[0] == "trigger"] == ["first"]
    # The same rule on the incident nobody acknowledged still fires at 30 min.
    escalated = await sc.of(unacked, "incident.escalated")
    assert escalated_rules(escalated)[-1] == "sev1-unresolved-30m"
    assert escalated[-1]["data"]["escalation"]["reason"] == "SEV-1 unresolved and unacknowledged for 30 min"


@pytest.mark.parametrize("until", ["acknowledged", None])
async def test_an_open_for_rule_until_acknowledged_drops_its_page_queued_before_the_ack(
    store: Store, tmp_path: Path, until: str | None
) -> None:
    sc = Scenario(store, rules_with_until(tmp_path, **{"sev1-unresolved-30m": until}), Recorder())
    await sc.alert(alert("ApiDown", namespace="queued"))
    inc = await sc.incident_id("ApiDown")
    await sc.at(29)
    sc.clock.advance(timedelta(minutes=1))
    await sc.timers.run_once()  # the rule fires: its page is queued, not yet sent
    assert escalated_rules(await sc.of(inc, "incident.escalated"))[-1] == "sev1-unresolved-30m"
    await sc.commands.apply(inc, Ack(by="alice"), "api")  # the ack lands before the page goes
    await sc.settle()
    # Told until: acknowledged, the ack answered it, as it answers the response rules' pages;
    # by default (until: resolved) it is still sent.
    triggers = [p[1] for p in sc.paged(inc) if p[0] == "trigger"]
    kept = ["sev1-unresolved-30m"] if until is None else []
    assert triggers == ["first", "sla-violation-imminent", "response_overdue", *kept]


async def test_a_response_share_rule_until_resolved_still_fires_after_the_ack(
    store: Store, tmp_path: Path
) -> None:
    sc = Scenario(store, rules_with_until(tmp_path, **{"sla-violation-imminent": "resolved"}), Recorder())
    await sc.alert(alert("ApiDown", namespace="sla"))
    inc = await sc.incident_id("ApiDown")
    await sc.at(5)
    await sc.commands.apply(inc, Ack(by="alice"), "api")
    await sc.at(11.9)
    assert await sc.of(inc, "incident.escalated") == []
    await sc.at(12)  # 80 % of SEV-1's 15 min, acknowledged or not
    [esc] = await sc.of(inc, "incident.escalated")
    assert (esc["data"]["escalation"]["rule"], esc["data"]["escalation"]["reason"]) == (
        "sla-violation-imminent",
        "80% of the SEV-1 response time passed unresolved",
    )
    assert sc.paged(inc)[-1] == ("trigger", "sla-violation-imminent", ("Account Manager",))
    await sc.at(15)  # response_overdue keeps its own rule: an acknowledged incident is not overdue
    assert escalated_rules(await sc.of(inc, "incident.escalated")) == ["sla-violation-imminent"]


@pytest.mark.parametrize("until", ["resolved", None])
async def test_a_response_share_rule_until_resolved_keeps_its_page_queued_before_the_ack(
    store: Store, tmp_path: Path, until: str | None
) -> None:
    sc = Scenario(store, rules_with_until(tmp_path, **{"sla-violation-imminent": until}), Recorder())
    await sc.alert(alert("ApiDown", namespace="sla-queued"))
    inc = await sc.incident_id("ApiDown")
    await sc.at(11)
    sc.clock.advance(timedelta(minutes=1))
    await sc.timers.run_once()  # 80 % passed: its page is queued, not yet sent
    await sc.commands.apply(inc, Ack(by="alice"), "api")
    await sc.settle()
    if until is None:  # the default, until: acknowledged: the ack answered it
        assert [p[:2] for p in sc.paged(inc)] == [("trigger", "first"), ("ack", "first")]
        return
    # Sent, then acknowledged like the first page.
    assert [p[:2] for p in sc.paged(inc)] == [
        ("trigger", "first"),
        ("trigger", "sla-violation-imminent"),
        ("ack", "first"),
        ("ack", "sla-violation-imminent"),
    ]
