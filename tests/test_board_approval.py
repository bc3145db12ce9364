"""A remediation that waits for approval, answered on the incident board (issue #10).

The real service (webhook -> Kafka -> pipeline -> remediation worker -> Kubernetes API
stand-in over HTTP), remediation enforced, the rollback policy asking approval for SEV-1:
the waiting job shows on the board and on its incident's page with Approve and Deny forms,
next to the approval page that went out; Approve clicked in a real browser (Debian's
chromium under Playwright) runs the rollback; Deny posted as a form leaves the cluster as
it was. Every wait is on an event, the stand-in or Playwright's ``expect``; nothing sleeps.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.support.browser import chromium_missing, job_row, launch_options, log_in, log_in_page, now_rfc3339
from tests.support.k8s_api import FakeKubernetes
from tests.support.payloads import alert, body, webhook
from tests.support.remediation import ENFORCED, enforced_settings
from tests.support.service import RunningService, run_service

TOKEN = "board-approval-token-0123456789"
BEARER = {"authorization": f"Bearer {TOKEN}"}
# ENFORCED's rollback policy: ApiDown is SEV-1, and SEV-1 waits for a person.
APPROVAL = "approval: {severities: [SEV-1], timeout: 10m}"


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeKubernetes]:
    """shop/api and shop/web, each rolled out to a new image two minutes ago (a rollback's
    precondition: changed within 30 minutes). One per module, like the service: each test
    has a deployment of its own."""
    now = datetime.now(UTC)
    async with FakeKubernetes() as f:
        for name in ("api", "web"):
            f.add_deployment("shop", name, image=f"{name}:v1", created_at=now - timedelta(hours=2))
            f.set_image("shop", name, f"{name}:v2", at=now - timedelta(minutes=2))
        yield f


@pytest.fixture(scope="module")
async def svc(
    kafka: str, fake: FakeKubernetes, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningService]:
    assert APPROVAL in ENFORCED
    tmp = tmp_path_factory.mktemp("board-approval")
    async with run_service(enforced_settings(kafka, tmp, fake, webhook_token=TOKEN)) as running:
        yield running


def image(fake: FakeKubernetes, name: str) -> str:
    return str(fake.deployment("shop", name)["spec"]["template"]["spec"]["containers"][0]["image"])


def writes_to(fake: FakeKubernetes, deployment: str) -> list[str]:
    """The stand-in's applied (not dry-run) writes naming this deployment."""
    return [f"{m.method} {m.path}" for m in fake.mutations if deployment in m.path.split("/")]


async def awaiting_approval(svc: RunningService, cluster: str, deployment: str) -> tuple[str, str]:
    """Fire a SEV-1 ApiDown naming shop/<deployment> (its own ``cluster``: its own
    incident); wait until its rollback is planned and waits for approval, and its approval
    page is sent. (incident id, remediation id)."""
    labels = {"namespace": "shop", "deployment": deployment, "cluster": cluster}
    resp = await svc.post_webhook(
        body(webhook(alert("ApiDown", starts_at=now_rfc3339(), severity="critical", **labels))), **BEARER
    )
    assert resp.status_code == 202, resp.text

    def planned() -> list[dict[str, Any]]:
        return [
            e
            for e in svc.events.of_type("remediation.planned")
            if e["data"]["group_labels"].get("cluster") == cluster
        ]

    await svc.events.wait_for(lambda _: bool(planned()))
    (event,) = planned()
    rem = event["data"]["remediation"]
    assert event["data"]["severity"] == "SEV-1"
    assert (rem["action"], rem["approval"]["required"]) == ("rollback", True)
    rid, inc = rem["id"], event["subject"]

    def approval_sent() -> bool:
        return any(
            e["subject"] == inc and e["data"]["page"]["target"] == f"approval:{rid}"
            for e in svc.events.of_type("page.sent")
        )

    await svc.events.wait_for(lambda _: approval_sent())
    job = await remediation(svc, rid)
    assert (job["status"], job["decision"], job["target_key"]) == (
        "awaiting_approval",
        None,
        f"deployment/shop/{deployment}",
    )
    return inc, rid


async def remediation(svc: RunningService, rid: str) -> dict[str, Any]:
    resp = await svc.client.get(f"{svc.url}/api/v1/remediation/actions/{rid}", headers=BEARER)
    assert resp.status_code == 200, resp.text
    return resp.json()["remediation"]  # type: ignore[no-any-return]


def assert_awaiting_with_forms(html: str, rid: str, where: str) -> None:
    row = job_row(html, rid)
    assert row is not None, f"job {rid} not on {where}"
    status, cells = row
    assert status == "awaiting_approval", where
    assert '<span class="status">awaiting approval</span>' in cells, where
    for verb, label in (("approve", "Approve"), ("deny", "Deny")):
        form = re.search(
            rf'<form method="post" action="/ui/remediation/{rid}/{verb}" class="inline">(.*?)</form>',
            cells,
            re.DOTALL,
        )
        assert form, f"no {label} form for {rid} on {where}"
        assert 'name="csrf"' in form.group(1) and f">{label}</button>" in form.group(1), where
    assert "answer before " in cells, where


def assert_approval_page_listed(html: str, rid: str) -> None:
    pages = re.search(r'<table class="pages">(.*?)</table>', html, re.DOTALL)
    assert pages, "no pages table on the incident page"
    row = re.search(
        rf'<tr class="page sent"><td>console</td><td>trigger</td><td>approval:{rid}</td>', pages.group(1)
    )
    assert row, f"approval:{rid} not listed as sent on the incident page"


@pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing()))
async def test_a_waiting_remediation_shows_on_the_board_and_approve_in_the_browser_runs_it(
    svc: RunningService, fake: FakeKubernetes
) -> None:
    from playwright.async_api import async_playwright, expect

    inc, rid = await awaiting_approval(svc, "east", "api")
    assert writes_to(fake, "api") == []

    # Over HTTP: the job waits on the board and on its incident's page, with both forms;
    # the incident page lists the approval page that went out.
    async with httpx.AsyncClient(base_url=svc.url, timeout=30) as client:
        await log_in(client, TOKEN, "alice")
        assert_awaiting_with_forms((await client.get("/ui/")).text, rid, "the board")
        detail = await client.get(f"/ui/incidents/{inc}")
        assert detail.status_code == 200
        assert_awaiting_with_forms(detail.text, rid, "the incident page")
        assert_approval_page_listed(detail.text, rid)

    # In the browser: Approve on the incident page, and the page shows it go ahead.
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(**launch_options())
        try:
            page = await browser.new_page()
            await log_in_page(page, svc.url, TOKEN, "erin")
            await page.goto(f"{svc.url}/ui/incidents/{inc}")
            row = page.locator(f"#job-{rid}")
            await expect(row.locator(".status")).to_have_text("awaiting approval")
            await expect(row.get_by_role("button", name="Deny")).to_be_visible()
            await expect(page.locator("table.pages")).to_contain_text(f"approval:{rid}")

            await row.get_by_role("button", name="Approve").click()

            await expect(page).to_have_url(f"{svc.url}/ui/incidents/{inc}")
            await expect(row).to_contain_text("(approved by erin)")
            await expect(row.locator(".status")).to_have_text(re.compile(r"^(acting|verifying|succeeded)$"))
            await expect(row.get_by_role("button", name="Approve")).to_have_count(0)
            await expect(row.get_by_role("button", name="Deny")).to_have_count(0)
        finally:
            await browser.close()

    job = await remediation(svc, rid)
    assert (job["decision"], job["decided_by"]) == ("approved", "erin")
    await fake.wait_for(lambda: image(fake, "api") == "api:v1")  # the rollback ran
    assert writes_to(fake, "api") and not writes_to(fake, "web")
    await svc.events.wait_for(
        lambda _: any(e["subject"] == inc for e in svc.events.of_type("remediation.started"))
    )
    [started] = [e for e in svc.events.of_type("remediation.started") if e["subject"] == inc]
    assert started["data"]["remediation"]["approval"]["decision"] == "approved"
    assert started["data"]["remediation"]["approval"]["by"] == "erin"


async def test_deny_on_the_board_skips_the_remediation_and_leaves_the_cluster_alone(
    svc: RunningService, fake: FakeKubernetes
) -> None:
    inc, rid = await awaiting_approval(svc, "west", "web")
    assert writes_to(fake, "web") == []
    writes = len(fake.mutations)

    async with httpx.AsyncClient(base_url=svc.url, timeout=30) as client:
        csrf = await log_in(client, TOKEN, "bob")
        detail = await client.get(f"/ui/incidents/{inc}")
        assert_awaiting_with_forms(detail.text, rid, "the incident page")
        assert_approval_page_listed(detail.text, rid)
        denied = await client.post(
            f"/ui/remediation/{rid}/deny", data={"csrf": csrf}, headers={"origin": svc.url}
        )
        assert (denied.status_code, denied.headers["location"]) == (303, f"/ui/incidents/{inc}")

        # The worker takes the decision: skipped by the approval guardrail.
        def skipped() -> list[dict[str, Any]]:
            return [e for e in svc.events.of_type("remediation.skipped") if e["subject"] == inc]

        await svc.events.wait_for(lambda _: bool(skipped()))
        (event,) = skipped()
        assert event["data"]["remediation"]["guardrail"] == "approval"
        assert event["data"]["remediation"]["reason"] == "denied by bob"

        job = await remediation(svc, rid)
        assert (job["status"], job["decision"], job["decided_by"]) == ("skipped", "denied", "bob")
        after = job_row((await client.get(f"/ui/incidents/{inc}")).text, rid)
        assert after is not None
        status, cells = after
        assert status == "skipped" and "(denied by bob)" in cells
        assert "/approve" not in cells and "/deny" not in cells

        # Decided: another answer is refused, and changes nothing.
        late = await client.post(f"/ui/remediation/{rid}/approve", data={"csrf": csrf})
        assert late.status_code == 409 and "already denied by bob" in late.text

    assert writes_to(fake, "web") == [] and len(fake.mutations) == writes
    assert image(fake, "web") == "web:v2"
    assert not [e for e in svc.events.of_type("remediation.started") if e["subject"] == inc]
