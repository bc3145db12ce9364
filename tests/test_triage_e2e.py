"""Triage on open through the whole running service: webhook -> Kafka -> pipeline (first page
stored) -> triage worker (probes against a local health endpoint and Prometheus, the
Kubernetes stand-in, the machine's PostgreSQL and Redis) -> incident.updated with the
``triage`` part and an [UPDATE] to the comms pagers, after the first page, however long a
probe hangs."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from service.models import PageAction
from tests.support.checks import assert_valid_event
from tests.support.k8s_api import FakeKubernetes
from tests.support.payloads import alert, body, webhook
from tests.support.recorder import Recorder
from tests.support.service import RULES, run_service, test_settings
from tests.support.triage_http import LocalHttp

TOKEN = "triage-e2e-token"
BAD_PASSWORD = "e2e-never-in-an-event"
GOOD_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"

TRIAGE_YAML = """
timeout: 5s
rules:
  - name: shop
    matchers: ['namespace="shop"', 'service=~".+"']
    probes:
      - probe: health
        url: "{{ annotations.health_url }}"
      - probe: health
        url: "{{ annotations.health_url | replace('/api/health', '/hang') }}"
        timeout: 3s
      - probe: pods
        namespace: "{{ labels.namespace }}"
        selector: "app={{ labels.service }}"
      - probe: rollouts
        namespace: "{{ labels.namespace }}"
      - probe: prometheus
        url: "{{ annotations.prometheus_url }}"
      - probe: postgres
        secret_env: TRIAGE_E2E_PG
      - probe: postgres
        secret_env: TRIAGE_E2E_BAD_PG
      - probe: redis
        secret_file: SECRET_FILE
"""


@pytest.fixture
async def fake() -> AsyncIterator[FakeKubernetes]:
    now = datetime.now(UTC)
    async with FakeKubernetes() as f:
        f.add_deployment("shop", "api", image="api:v1", created_at=now - timedelta(hours=2))
        f.set_image("shop", "api", "api:v2", at=now - timedelta(minutes=3))
        rs = f.replicasets("shop")[-1]["metadata"]["name"]
        f.add_pod("shop", "api-1", labels={"app": "api"}, node="n1", owner_kind="ReplicaSet", owner_name=rs)
        f.set_pod_status("shop", "api-1", restarts=4, waiting="CrashLoopBackOff", last_terminated="OOMKilled")
        f.set_pod_log("shop", "api-1", "starting\nout of memory\n")
        yield f


async def test_the_page_goes_out_first_and_the_findings_follow_as_an_update(
    kafka: str, fake: FakeKubernetes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_url = tmp_path / "redis-url"
    redis_url.write_text("redis://127.0.0.1:6379/0\n")
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    (rules / "triage.yaml").write_text(TRIAGE_YAML.replace("SECRET_FILE", str(redis_url)))
    monkeypatch.setenv("TRIAGE_E2E_PG", GOOD_DSN)
    monkeypatch.setenv("TRIAGE_E2E_BAD_PG", f"postgresql://nobody:{BAD_PASSWORD}@127.0.0.1:5432/x")
    settings = test_settings(
        kafka,
        tmp_path,
        rules_dir=rules,
        kube_api_url=fake.base_url,
        kube_token=fake.token,
        remediation_mode="off",
        webhook_token=TOKEN,
    )
    recorder = Recorder("rec", comms=True)
    async with LocalHttp() as http, run_service(settings, notifiers={"rec": recorder}) as svc:
        doc = alert("ApiDown", namespace="shop", service="api")
        doc["annotations"] |= {"health_url": f"{http.url}/api/health", "prometheus_url": http.url}
        assert (
            await svc.post_webhook(body(webhook(doc)), authorization=f"Bearer {TOKEN}")
        ).status_code == 202

        # The first page is out while the hanging probe still holds triage up.
        await svc.events.wait_types({"incident.opened": 1, "page.sent": 1})
        assert not [e for e in svc.events.of_type("incident.updated") if "triage" in e["data"]]
        assert [r.action for r in recorder.sent] == [PageAction.TRIGGER]

        await svc.events.wait_types({"incident.updated": 1, "page.sent": 2})
        events = svc.events.events
        for event in events:
            assert_valid_event(event)
        types = [e["type"].rsplit(".", 2)[-2] + "." + e["type"].rsplit(".", 1)[-1] for e in events]
        [first_sent, update_sent] = [e for e in events if e["type"].endswith(".page.sent")]
        [triaged] = [e for e in events if e["type"].endswith(".incident.updated")]
        assert first_sent["data"]["page"]["target"] == "first"
        assert update_sent["data"]["page"]["target"] == "triage"
        assert types.index("incident.opened") < events.index(first_sent) < events.index(triaged), types
        # The hanging probe's 3 s bound is what triage waited for; the page did not.
        [opened] = [e for e in events if e["type"].endswith(".incident.opened")]
        opened_at = datetime.fromisoformat(opened["time"])
        assert datetime.fromisoformat(first_sent["time"]) < datetime.fromisoformat(triaged["time"])
        assert datetime.fromisoformat(triaged["time"]) - opened_at >= timedelta(seconds=2.5)

        # The board shows the findings, and the timeline their summary.
        async with httpx.AsyncClient(base_url=svc.url, timeout=30) as browser:
            login = await browser.post("/ui/login", data={"token": TOKEN, "who": "alice"})
            assert login.status_code == 303
            page = await browser.get(f"/ui/incidents/{triaged['subject']}")
        assert page.status_code == 200
        assert "<h2>Triage</h2>" in page.text and "FAIL: 1 of 1 pods failing" in page.text
        assert "triage | Triage: 4 of 8 checks failed; FAIL health: timed out after 3s" in page.text

    data = triaged["data"]
    assert data["reasons"] == ["triage"]
    findings = {(f["probe"], f["target"]): f for f in data["triage"]["findings"]}
    health = findings[("health", f"{http.url}/api/health")]
    assert health["ok"] and health["details"]["status"] == 200
    hang = findings[("health", f"{http.url}/hang")]
    assert (hang["ok"], hang["summary"]) == (False, "timed out after 3s")
    pods = findings[("pods", "shop (app=api)")]
    assert not pods["ok"] and "api-1 CrashLoopBackOff restarts=4 last=OOMKilled" in pods["summary"]
    assert pods["details"]["pods"][0]["log_tail"] == "starting\nout of memory\n"
    rollouts = findings[("rollouts", "shop")]
    assert rollouts["summary"].startswith("api rev 2 3 min ago (recent)")
    assert findings[("prometheus", http.url)]["details"]["value"] == pytest.approx(0.25)
    assert findings[("postgres", "$TRIAGE_E2E_PG")]["ok"]
    bad_pg = findings[("postgres", "$TRIAGE_E2E_BAD_PG")]
    assert not bad_pg["ok"]
    assert findings[("redis", str(redis_url))]["details"]["reply"] == "PONG"
    assert data["triage"]["summary"].startswith("Triage: 4 of 8 checks failed")

    # The [UPDATE] carries the summary to the comms pagers.
    [_, update] = recorder.sent
    assert update.action is PageAction.UPDATE and update.target == "triage"
    assert update.message.startswith("[UPDATE] SEV-1:")
    text = update.description
    assert "- Triage: 4 of 8 checks failed" in text and "- FAIL pods: 1 of 1 pods failing" in text

    # No secret reaches an event, a page or the stored incident.
    everything = json.dumps(events) + json.dumps([r.description for r in recorder.sent])
    assert BAD_PASSWORD not in everything and GOOD_DSN not in everything
    assert {r.method for r in fake.requests} == {"GET"}
