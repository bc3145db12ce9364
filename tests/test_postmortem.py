"""The postmortem draft (the runbook's template, from the machine timeline), its action
items, and the postmortem-due reminder (48 h after resolving, then daily until done)."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from datetime import date, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from starlette.applications import Starlette

from service.errors import Conflict
from service.escalate.commands import (
    Ack,
    AddActionItem,
    AddNote,
    Assign,
    Escalate,
    IncidentCommand,
    PostmortemDone,
    PostUpdate,
    Resolve,
    SetSeverity,
    SetStatus,
)
from service.escalate.decisions import Decisions
from service.http.incidents import incident_routes
from service.http.ui import ui_routes
from service.models import Incident, IncidentStatus, Phase
from service.postmortem.draft import render
from service.ruleset import RulesError, RuleSet, load_rules
from service.store.store import Store
from service.store.views import IncidentViews
from tests.support.browser import csrf_of
from tests.support.checks import assert_valid_event
from tests.support.payloads import alert
from tests.support.recorder import Recorder
from tests.support.service import RULES
from tests.support.time import T0
from tests.test_escalation import Scenario

INCIDENTD = str(Path(sys.executable).with_name("incidentd"))
HOUR = 60.0  # Scenario.at takes minutes


async def scripted_sev1(sc: Scenario) -> str:
    """A SEV-2 alert raised to SEV-1 by hand, worked through the runbook and resolved at 12:25."""
    await sc.alert(alert("AuthBroken", namespace="aragora"))
    inc = await sc.incident_id("AuthBroken")
    steps: list[tuple[int, IncidentCommand]] = [
        (2, Assign(role="IC", who="carol", by="alice")),
        (4, SetSeverity(severity="SEV-1", reason="all logins fail", by="carol")),
        (
            6,
            SetStatus(
                phase=Phase.IDENTIFIED, root_cause="auth-service 1.4.2 broke token validation", by="carol"
            ),
        ),
        (7, AddNote(text="rolling back auth-service", by="carol")),
        (8, Escalate(roles=["Engineering Lead"], reason="need a second pair of eyes", by="carol")),
        (10, Ack(by="bob")),
        (12, PostUpdate(text="rollback in progress", by="carol")),
        (
            20,
            AddActionItem(
                item="Canary auth-service deploys", owner="dave", due=date(2026, 12, 10), by="carol"
            ),
        ),
        (21, AddActionItem(item="Alert on token | validation errors", by="carol")),
        (25, Resolve(by="carol", note="rolled back to 1.4.1")),
    ]
    for minute, command in steps:
        await sc.at(minute)
        await sc.commands.apply(inc, command, "api")
    await sc.at(26)
    return inc


async def draft(store: Store, rules: RuleSet, incident_id: str) -> str:
    d = await IncidentViews(store).detail(incident_id)
    assert d is not None
    return render(d.incident, d.timeline, d.pages, d.remediations, rules)


def sections(markdown: str) -> dict[str, str]:
    """ "header" and each "### Name" section's body."""
    head, *rest = markdown.split("\n\n### ")
    out = {"header": head}
    for part in rest:
        name, _, body = part.partition("\n")
        out[name] = body.strip("\n")
    return out


async def test_postmortem_of_a_scripted_sev1_section_by_section(store: Store, rules: RuleSet) -> None:
    sc = Scenario(store, rules, Recorder())
    inc = await scripted_sev1(sc)
    text = await draft(store, rules, inc)
    s = sections(text)
    assert list(s) == [
        "header",
        "Summary",
        "Timeline",
        "Root Cause",
        "Impact",
        "Action Items",
        "Lessons Learned",
    ]

    assert s["header"].splitlines()[:6] == [
        "## Incident: AuthBroken is happening",
        "**Date:** 2026-11-26",
        "**Duration:** 25 minutes (2026-11-26 12:00 UTC to 2026-11-26 12:25 UTC)",
        "**Severity:** SEV-1",
        "**IC:** carol",
        "**Postmortem:** due by 2026-11-28 12:25 UTC",  # SEV-1's postmortem_due: 48h
    ]

    summary = s["Summary"]
    assert summary.startswith(
        f"SEV-1 (Critical - Complete service outage) incident {inc}, opened by alert AuthBroken "
        "at 2026-11-26 12:00 UTC."
    )
    assert "Acknowledged by bob at 2026-11-26 12:10 UTC, 10 minutes after it opened." in summary
    assert "Root cause: auth-service 1.4.2 broke token validation." in summary
    assert summary.endswith("Resolved at 2026-11-26 12:25 UTC after 25 minutes.")

    rows = s["Timeline"].splitlines()
    assert rows[:2] == ["| Time | Event |", "|------|-------|"]
    # Each row: | HH:MM | type: the timeline line (its " | " escaped for the table) |
    cells = [row.removeprefix("| ").removesuffix(" |").split(" | ", 1) for row in rows[2:]]
    people = [(t, e) for t, e in cells if not e.startswith("page.sent")]
    assert [(t, e.split(" \\| ")[0]) for t, e in people] == [
        ("12:00", "incident.opened: SEV-2 open"),
        ("12:02", "incident.updated: SEV-2 open"),
        ("12:04", "incident.updated: SEV-1 open"),
        ("12:06", "incident.updated: SEV-1 open"),
        ("12:06", "comms.update: SEV-1 open"),  # the new phase, posted at once
        ("12:07", "incident.updated: SEV-1 open"),
        ("12:08", "incident.escalated: SEV-1 open"),
        ("12:10", "incident.acknowledged: SEV-1 open"),
        ("12:12", "incident.updated: SEV-1 open"),
        ("12:12", "comms.update: SEV-1 open"),
        ("12:20", "incident.updated: SEV-1 open"),
        ("12:21", "incident.updated: SEV-1 open"),
        ("12:25", "incident.resolved: SEV-1 resolved"),
    ]
    said = [e for _, e in people]
    assert "1 alert(s): firing" in said[0]
    assert "assign by alice via api: Incident Commander: carol" in said[1]
    assert "severity_raised:SEV-2->SEV-1" in said[2] and "all logins fail" in said[2]
    assert "phase:identified; root_cause \\| status by carol" in said[3]
    assert "note by carol via api: rolling back auth-service" in said[5]
    assert "manual escalation to Engineering Lead: need a second pair of eyes" in said[6]
    assert "ack by bob via api" in said[7]
    assert "update_posted" in said[8]
    assert "action_item by carol via api: Canary auth-service deploys" in said[10]
    assert "via api: Alert on token \\| validation errors" in said[11]  # a pipe cannot break the table
    assert "resolve by carol via api: rolled back to 1.4.1" in said[12]
    pages = [e for _, e in cells if e.startswith("page.sent")]
    # One per page job: the three triggers, the ack, the two [UPDATE]s and the close.
    assert len(pages) == 7 and all("rec " in p for p in pages)

    assert s["Root Cause"] == "auth-service 1.4.2 broke token validation"

    impact = s["Impact"].splitlines()
    assert impact[0] == "- Users affected: _(to fill in)_ (recorded impact: Major functionality impaired)"
    assert impact[1] == "- Revenue impact: _(to fill in)_ (if applicable)"
    # Raised to SEV-1 at 12:04 (15 min from then: due 12:19), acknowledged at 12:10.
    assert impact[2] == (
        "- SLA impact: no: response time met (acknowledged 2026-11-26 12:10 UTC; "
        "SEV-1 response time 15 min, due 2026-11-26 12:19 UTC)"
    )
    assert impact[3] == "- Alerts: 1 (AuthBroken); 1 still firing"
    assert impact[4] == "- Pages: 3 trigger(s) (3 sent) for first, person:carol, manual:1"
    assert impact[5] == "- Escalations: manual:1 at 12:08"
    assert impact[6] == "- Remediation: none"

    assert s["Action Items"].splitlines() == [
        "| Item | Owner | Due Date |",
        "|------|-------|----------|",
        "| Canary auth-service deploys | @dave | 2026-12-10 |",
        "| Alert on token \\| validation errors | _(unassigned)_ | _(none)_ |",
    ]
    assert s["Lessons Learned"].splitlines() == [
        "- What went well: _(to fill in)_",
        "- What could improve: _(to fill in)_",
    ]
    for e in await sc.events():
        assert_valid_event(e)


async def test_sla_impact_yes_when_the_response_was_late_and_an_open_incident_is_ongoing(
    store: Store, rules: RuleSet
) -> None:
    sc = Scenario(store, rules, Recorder())
    await sc.alert(alert("ApiDown", namespace="aragora"))  # SEV-1: respond within 15 min
    inc = await sc.incident_id("ApiDown")
    s = sections(await draft(store, rules, inc))
    assert "**Duration:** ongoing (opened 2026-11-26 12:00 UTC)" in s["header"]
    assert "**IC:** (not assigned)" in s["header"]
    assert "- SLA impact: undecided (not acknowledged yet;" in s["Impact"]
    assert s["Root Cause"].startswith("_(to fill in)_ (not recorded")
    assert s["Action Items"].splitlines()[-1] == "| _(to fill in)_ | | |"

    await sc.at(20)
    await sc.commands.apply(inc, Ack(by="bob"), "api")
    s = sections(await draft(store, rules, inc))
    assert "- SLA impact: yes: response time missed (acknowledged 2026-11-26 12:20 UTC;" in s["Impact"]
    assert "Still open (status: investigating)." in s["Summary"]


def test_action_items_and_postmortem_done_apply_to_resolved_incidents(rules: RuleSet) -> None:
    decisions = Decisions(rules)
    inc = Incident(
        "inc-1", "g", {}, "t", "", "SEV-1", IncidentStatus.RESOLVED, T0, T0 + timedelta(minutes=15)
    )
    item = AddActionItem(item="Fix it", owner="dave", due=date(2026, 12, 1), by="carol")
    change = decisions.decide(inc, item, T0)
    assert (change.suffix, change.reasons) == ("incident.updated", ["action_item"])
    assert change.part == {"item": "Fix it", "owner": "dave", "due": "2026-12-01"}
    assert inc.action_items == [
        {"item": "Fix it", "owner": "dave", "due": "2026-12-01", "by": "carol", "at": "2026-11-26T12:00:00Z"}
    ]
    assert decisions.decide(inc, item, T0).suffix is None  # a repeat changes nothing
    done = decisions.decide(inc, PostmortemDone(by="carol", url="https://wiki/pm-1"), T0)
    assert (done.suffix, done.reasons) == ("incident.updated", ["postmortem_done"])
    assert inc.postmortem_done == {"by": "carol", "at": "2026-11-26T12:00:00Z", "url": "https://wiki/pm-1"}
    assert decisions.decide(inc, PostmortemDone(by="bob"), T0).suffix is None
    with pytest.raises(Conflict):
        decisions.decide(inc, Ack(by="bob"), T0)  # still for open incidents only


def test_a_persons_resolve_schedules_the_first_reminder_from_the_severity(rules: RuleSet) -> None:
    decisions = Decisions(rules)
    due = T0 + timedelta(minutes=15)
    sev1 = Incident("inc-1", "g", {}, "t", "", "SEV-1", IncidentStatus.OPEN, T0, due, opening=2)
    change = decisions.decide(sev1, Resolve(by="carol"), T0 + timedelta(minutes=30))
    assert [(t.name, t.opening, t.due_at) for t in change.timers] == [
        ("postmortem:1", 2, T0 + timedelta(minutes=30, hours=48))
    ]
    sev3 = Incident("inc-3", "g", {}, "t", "", "SEV-3", IncidentStatus.OPEN, T0, due)
    assert decisions.decide(sev3, Resolve(by="carol"), T0).timers == []


async def test_the_48h_postmortem_reminder_pages_the_incident_commander_until_done(
    store: Store, rules: RuleSet
) -> None:
    sc = Scenario(store, rules, Recorder())
    await sc.alert(alert("ApiDown", namespace="aragora"))
    inc = await sc.incident_id("ApiDown")
    await sc.at(10)
    await sc.commands.apply(inc, Ack(by="bob"), "api")
    await sc.commands.apply(inc, Resolve(by="carol"), "api")  # resolved at 12:10
    resolved = 10.0

    def reminders() -> list[tuple[str, str, tuple[str, ...]]]:
        return [p for p in sc.paged(inc) if p[1].startswith("postmortem:")]

    await sc.at(resolved + 48 * HOUR - 1)
    assert reminders() == []
    await sc.at(resolved + 48 * HOUR)
    assert reminders() == [("trigger", "postmortem:1", ("Incident Commander",))]
    [page] = [p for p in sc.pager.sent if p.target == "postmortem:1"]
    assert page.message.startswith(f"[POSTMORTEM DUE] SEV-1: ApiDown is happening (incident {inc}")
    [due] = [
        e for e in await sc.of(inc, "incident.updated") if e["data"].get("reasons") == ["postmortem_due"]
    ]
    assert due["time"] == "2026-11-28T12:10:00Z"

    await sc.at(resolved + 72 * HOUR - 1)
    assert len(reminders()) == 1
    await sc.at(resolved + 72 * HOUR)  # and again a day later
    assert reminders()[-1] == ("trigger", "postmortem:2", ("Incident Commander",))

    await sc.at(resolved + 80 * HOUR)
    await sc.commands.apply(inc, PostmortemDone(by="carol", url="https://wiki/pm"), "api")
    await sc.at(resolved + 200 * HOUR)
    assert len(reminders()) == 2  # none after it was marked done
    s = sections(await draft(store, rules, inc))
    assert "**Postmortem:** done by carol at 2026-11-29T20:10:00Z (https://wiki/pm)" in s["header"]
    for e in await sc.events():
        assert_valid_event(e)


async def test_the_last_alert_resolving_schedules_the_reminder_and_sev3_has_none(
    store: Store, rules: RuleSet
) -> None:
    sc = Scenario(store, rules, Recorder())
    await sc.alert(alert("AuthBroken", namespace="a"))  # SEV-2: postmortem due 48 h
    await sc.alert(alert("ConnectorDown", namespace="a"))  # SEV-3: no postmortem_due
    sev2, sev3 = await sc.incident_id("AuthBroken"), await sc.incident_id("ConnectorDown")
    await sc.at(30)
    await sc.alert(alert("AuthBroken", status="resolved", namespace="a"))
    await sc.alert(alert("ConnectorDown", status="resolved", namespace="a"))
    await sc.at(30 + 48 * HOUR)
    assert [p for p in sc.paged(sev2) if p[1].startswith("postmortem:")] == [
        ("trigger", "postmortem:1", ("Incident Commander",))
    ]
    assert [p for p in sc.paged(sev3) if p[1].startswith("postmortem:")] == []


async def test_postmortem_api_markdown_action_items_and_done(store: Store, rules: RuleSet) -> None:
    sc = Scenario(store, rules, Recorder())
    inc = await scripted_sev1(sc)
    app = Starlette(routes=incident_routes(IncidentViews(store), sc.commands, list(rules.severities)))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        base = f"/api/v1/incidents/{inc}"
        resp = await client.get(f"{base}/postmortem")
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "text/markdown; charset=utf-8"
        assert resp.text == await draft(store, rules, inc)

        missing = await client.get("/api/v1/incidents/inc-nope/postmortem")
        assert missing.status_code == 404 and missing.json() == {"error": "no incident inc-nope"}

        added = await client.post(
            f"{base}/action-items", json={"item": "Write a runbook", "owner": "erin", "due": "2026-12-24"}
        )
        assert added.status_code == 200
        bad = await client.post(f"{base}/action-items", json={"item": "x", "due": "soon"})
        assert bad.status_code == 422
        text = (await client.get(f"{base}/postmortem")).text
        assert "| Write a runbook | @erin | 2026-12-24 |" in text

        done = await client.post(f"{base}/postmortem", json={"by": "carol", "url": "https://wiki/pm"})
        assert done.status_code == 200
        text = (await client.get(f"{base}/postmortem")).text
        assert "**Postmortem:** done by carol at 2026-11-26T12:26:00Z (https://wiki/pm)" in text


async def test_cli_prints_the_postmortem_and_fails_in_one_line_for_an_unknown_id(
    store: Store, rules: RuleSet, tmp_path: Path
) -> None:
    sc = Scenario(store, rules, Recorder())
    inc = await scripted_sev1(sc)
    expected = await draft(store, rules, inc)
    env = {
        **os.environ,
        "INCIDENTD_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'state.db'}",
        "INCIDENTD_RULES_DIR": str(RULES),
    }

    async def run(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            INCIDENTD, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    code, out, err = await run("postmortem", inc)
    assert (code, out) == (0, expected), err
    code, out, err = await run("postmortem", "inc-nope")
    assert (code, out, err) == (1, "", "incidentd: no incident inc-nope\n")


async def test_board_shows_the_postmortem_and_adds_action_items(store: Store, rules: RuleSet) -> None:
    sc = Scenario(store, rules, Recorder())
    inc = await scripted_sev1(sc)
    token = "postmortem-board-token-0123456789"
    # Only what the incident page, its forms and the postmortem page use.
    services = SimpleNamespace(
        incidents=IncidentViews(store),
        remediation=None,
        approvals=None,
        severities=list(rules.severities),
        commands=sc.commands,
    )
    app = Starlette(routes=ui_routes(cast(Any, services), token.encode()))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as browser:
        login = await browser.post("/ui/login", data={"token": token, "who": "carol"})
        assert login.status_code == 303
        page = await browser.get(f"/ui/incidents/{inc}")
        assert page.status_code == 200
        assert f'href="/ui/incidents/{inc}/postmortem"' in page.text
        csrf = csrf_of(page.text)
        form = {"csrf": csrf, "item": "Page the DB team directly", "owner": "erin", "due": "2026-12-20"}
        added = await browser.post(f"/ui/incidents/{inc}/action_item", data=form)
        assert added.status_code == 303

        shown = await browser.get(f"/ui/incidents/{inc}/postmortem")
        assert shown.status_code == 200
        assert "<pre" in shown.text and "### Action Items" in shown.text
        assert "| Page the DB team directly | @erin | 2026-12-20 |" in shown.text
        assert (await browser.get("/ui/incidents/inc-nope/postmortem")).status_code == 404


def test_rules_check_reports_a_bad_postmortem_due(tmp_path: Path) -> None:
    rules_dir = tmp_path / "rules"
    shutil.copytree(RULES, rules_dir)
    severities = rules_dir / "severities.yaml"
    severities.write_text(severities.read_text().replace("postmortem_due: 48h", "postmortem_due: 2 days", 1))
    with pytest.raises(RulesError) as caught:
        load_rules(rules_dir)
    [problem] = [str(p) for p in caught.value.problems]
    assert "severities.yaml:10:5: severities[0].postmortem_due: " in problem and "invalid duration" in problem
    assert load_rules(RULES).severity("SEV-3").postmortem_due is None
