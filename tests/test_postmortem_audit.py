"""The postmortem draft of an incident that triage and remediation worked on: the triage
findings on its Timeline, the remediation job and its audit trail in it and in Impact's
Remediation line. The service's own pipeline, triage worker (probes against the Kubernetes
stand-in), remediation worker, page worker and command handler, on a manual clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from service.context import Context
from service.emit.cloudevents import EventFactory
from service.escalate.commands import Ack, CommandHandler, SetStatus
from service.models import Phase
from service.postmortem.draft import render
from service.remediate.kube import Kube
from service.ruleset import load_rules
from service.store.store import Store
from service.store.views import IncidentViews
from service.triage.probes.registry import build_probes
from service.triage.worker import TriageWorker
from tests.support.k8s_api import FakeKubernetes
from tests.support.payloads import alert
from tests.support.remediation import ENFORCED, Scenario, rules_dir_with
from tests.test_postmortem import sections

# Triage for shop's alerts: the deployment's pods (and the failing ones' logs) and rollouts.
TRIAGE = """
timeout: 5s
rules:
  - name: shop
    matchers: ['namespace="shop"', 'deployment=~".+"']
    probes:
      - probe: pods
        namespace: "{{ labels.namespace }}"
        selector: "app={{ labels.deployment }}"
        tail_lines: 5
      - probe: rollouts
        namespace: "{{ labels.namespace }}"
"""


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    yield s
    await s.close()


def hung(status: str = "firing") -> dict[str, Any]:
    return alert("Hung", status=status, namespace="shop", deployment="api", severity="critical")


async def test_postmortem_shows_triage_findings_and_the_remediation_audit(
    store: Store, k8s: FakeKubernetes, kube: Kube, tmp_path: Path
) -> None:
    rs = k8s.replicasets("shop")[-1]["metadata"]["name"]
    k8s.add_pod("shop", "api-1", labels={"app": "api"}, node="n1", owner_kind="ReplicaSet", owner_name=rs)
    k8s.set_pod_status("shop", "api-1", restarts=3, waiting="CrashLoopBackOff", last_terminated="Error")
    k8s.set_pod_log("shop", "api-1", "starting\ndeadlock detected\n")
    rules_dir = rules_dir_with(tmp_path, ENFORCED)
    (rules_dir / "triage.yaml").write_text(TRIAGE)
    rules = load_rules(rules_dir)
    sc = await Scenario(store, rules, kube).start()
    ctx = Context(
        store, rules, EventFactory("events", "io.incidentd", "/test"), sc.clock, sc.metrics, sc.settings
    )
    triage = TriageWorker(ctx, [sc.pager.name], build_probes(kube))
    commands = CommandHandler(ctx, [sc.pager.name], [sc.pager.name])

    # 12:00 the alert opens the incident: first page, remediation (restart-hung) planned and
    # started, triage planned; the triage worker runs the probes.
    await sc.alert(hung())
    [opened] = await sc.events("incident.opened")
    inc = opened["subject"]
    assert await triage.run_once() == 1
    await sc.settle()
    # 12:01 acknowledged, the cause named.
    await sc.after(minutes=1)
    await commands.apply(inc, Ack(by="bob"), "api")
    await commands.apply(
        inc, SetStatus(phase=Phase.IDENTIFIED, root_cause="a deadlock in api", by="bob"), "api"
    )
    # 12:04 the alert resolves (the incident with it); the restart is verified 30 s later.
    await sc.after(minutes=3)
    await sc.alert(hung("resolved"))
    await sc.after(seconds=30)
    d = await IncidentViews(store).detail(inc)
    assert d is not None
    s = sections(render(d.incident, d.timeline, d.pages, d.remediations, rules))

    rows = s["Timeline"].splitlines()[2:]
    cells = [row.removeprefix("| ").removesuffix(" |").split(" | ", 1) for row in rows]
    # Triage: the findings' summary on the timeline, as an incident.updated at 12:00.
    [(at, triaged)] = [(t, e) for t, e in cells if "triage \\| Triage:" in e]
    assert at == "12:00" and triaged.startswith("incident.updated: ")
    assert "Triage: 1 of 2 checks failed" in triaged
    assert "FAIL pods: 1 of 1 pods failing: api-1 CrashLoopBackOff restarts=3 last=Error" in triaged
    # Remediation: the job's audit trail, planned and started with the page, verified after
    # the alert resolved; each line names the action, the target and the mode.
    audit = [
        (at, e.split(" \\| ")[0], e.split(" \\| ")[-1]) for at, e in cells if e.startswith("remediation.")
    ]
    assert audit == [
        ("12:00", "remediation.planned: SEV-2 open", "restart deployment/shop/api (enforce)"),
        ("12:00", "remediation.started: SEV-2 open", "restart deployment/shop/api (enforce)"),
        ("12:04", "remediation.succeeded: SEV-2 resolved", "restart deployment/shop/api (enforce)"),
    ]
    # The [UPDATE] with the findings went to the channel, and its page is on the timeline.
    [update] = [p for p in sc.pager.sent if p.target == "triage"]
    assert "- FAIL pods: 1 of 1 pods failing" in update.description
    assert ["12:00", "page.sent: SEV-2 open \\| rec update attempt 1"] in cells

    impact = {line.split(":", 1)[0]: line for line in s["Impact"].splitlines()}
    assert impact["- Remediation"] == "- Remediation: restart deployment/shop/api (enforce, succeeded)"
    assert s["Root Cause"] == "a deadlock in api"
