"""A remediation that waits for approval pages the policy's approvers (issue #10), with what
is asked and how to answer, stored with the status change; an acknowledged incident does
not silence it. The service's own pipeline and workers, the Kubernetes API stand-in, an
injected clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from service.config import Settings
from service.models import PageAction
from service.notify.base import PageRequest, idempotency_key
from service.remediate.approval import Approve
from service.remediate.kube import Kube
from service.store.pages import NewPage
from service.store.remediations import JobStatus
from service.store.store import Effects, Store
from tests.support.k8s_api import FakeKubernetes
from tests.support.payloads import alert
from tests.support.remediation import ENFORCED, Scenario, rules_with
from tests.support.time import T0

APPROVAL = "approval: {severities: [SEV-1], timeout: 10m}"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    yield s
    await s.close()


async def scenario(store: Store, tmp_path: Path, kube: Kube, rules: str = ENFORCED) -> Scenario:
    settings = Settings(remediation_mode="enforce", remediation_verify_interval_seconds=30)
    return await Scenario(store, rules_with(tmp_path, rules), kube, settings).start()


def firing(name: str, **labels: str) -> dict[str, Any]:
    return alert(name, starts_at="2026-11-26T10:00:00Z", severity="critical", **labels)


def approval_pages(s: Scenario) -> list[PageRequest]:
    return [r for r in s.pager.sent if r.target.startswith("approval:")]


async def test_a_remediation_waiting_for_approval_pages_the_approvers(
    k8s: FakeKubernetes, kube: Kube, store: Store, tmp_path: Path
) -> None:
    s = await scenario(store, tmp_path, kube)
    await s.alert(firing("ApiDown", namespace="shop", deployment="api"))  # SEV-1: approval
    (planned,) = await s.events()
    rem = planned["data"]["remediation"]
    rid, inc_id = rem["id"], planned["data"]["id"]
    job = await store.remediations.get(rid)
    assert job is not None and job.status is JobStatus.AWAITING_APPROVAL

    [page] = approval_pages(s)
    assert page.action is PageAction.TRIGGER
    assert page.target == f"approval:{rid}"
    assert page.roles == ("Incident Commander",)  # the default approvers
    assert page.idempotency_key == idempotency_key(inc_id, 1, f"approval:{rid}")
    assert page.message == (f"[APPROVAL NEEDED] SEV-1: rollback on {job.target_key} waits for your approval")
    lines = page.description.splitlines()
    assert f"- Policy: {job.policy}" in lines
    assert any(line.startswith(f"- Asks: rollback on {job.target_key}, plan ") for line in lines)
    assert (
        f"- Approve: POST /api/v1/remediation/actions/{rid}/approve "
        f"(deny: POST /api/v1/remediation/actions/{rid}/deny), or on the incident board"
    ) in lines
    assert "- No answer by 2026-11-26T12:10:00Z means denied" in lines
    views = {v.target: v.status for v in await store.pages.for_incident(inc_id)}
    assert views == {"first": "sent", f"approval:{rid}": "sent"}

    # Approved: the action runs, and nobody is asked again.
    await s.approvals.decide(Approve(remediation_id=rid, by="erin"))
    await s.settle()
    assert (await s.outcomes())[-1] == ("remediation.started", None)
    assert len(approval_pages(s)) == 1


async def test_the_approval_page_goes_out_after_an_acknowledgement_too(
    k8s: FakeKubernetes, kube: Kube, store: Store, tmp_path: Path
) -> None:
    s = await scenario(store, tmp_path, kube)
    await s.alert(firing("ApiDown", namespace="shop", deployment="api"), settle=False)
    [inc] = await store.incidents.list(None, None, 10)
    inc.acknowledged_at, inc.acknowledged_by = T0 + timedelta(seconds=30), "alice"
    ack = NewPage(inc.id, s.pager.name, PageAction.ACK, inc.opening, by="alice")
    await store.commit(Effects(incidents=[inc], pages=[ack]), s.clock.now())
    await s.after(minutes=1)
    # The first page is no longer needed (somebody answered); the approval request is.
    assert [r.target for r in s.pager.sent if r.action is PageAction.TRIGGER] == [
        f"approval:{(await s.events())[0]['data']['remediation']['id']}"
    ]
    statuses = [(v.action, v.target.split(":")[0], v.status) for v in await store.pages.for_incident(inc.id)]
    assert statuses == [
        ("trigger", "first", "superseded"),
        ("ack", "first", "superseded"),
        ("trigger", "approval", "sent"),
    ]


async def test_the_policy_names_its_approvers_and_actions_without_approval_page_nobody(
    k8s: FakeKubernetes, kube: Kube, store: Store, tmp_path: Path
) -> None:
    assert APPROVAL in ENFORCED
    rules = ENFORCED.replace(APPROVAL, APPROVAL.replace("}", ", approvers: [IC, Technical Lead]}"))
    s = await scenario(store, tmp_path, kube, rules)
    await s.alert(firing("ApiDown", namespace="shop", deployment="api"))
    [page] = approval_pages(s)
    assert page.roles == ("Incident Commander", "Technical Lead")

    k8s.add_deployment("shop", "web", image="web:v1", replicas=2, created_at=T0 - timedelta(days=1))
    await s.alert(firing("SaturatedCPU", namespace="shop", deployment="web"))  # no approval needed
    assert (await s.outcomes())[-1] == ("remediation.started", None)
    assert len(approval_pages(s)) == 1
