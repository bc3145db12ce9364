"""Remediation through the whole running service: Alertmanager webhook -> Kafka -> pipeline
-> remediation worker -> Kubernetes API stand-in (real HTTP), events on Kafka, and the
kill switch, holds and approvals over HTTP and ``incidents.commands``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.checks import assert_valid_event
from tests.support.k8s_api import FakeKubernetes
from tests.support.kafka import TopicReader, produce
from tests.support.payloads import alert, body, webhook
from tests.support.remediation import enforced_settings
from tests.support.service import RunningService, run_service


@pytest.fixture
async def fake() -> AsyncIterator[FakeKubernetes]:
    now = datetime.now(UTC)
    async with FakeKubernetes() as f:
        f.add_deployment("shop", "api", image="api:v1", created_at=now - timedelta(hours=2))
        f.set_image("shop", "api", "api:v2", at=now - timedelta(minutes=2))
        f.add_deployment("shop", "web", image="web:v1")
        yield f


@pytest.fixture
async def svc(kafka: str, fake: FakeKubernetes, tmp_path: Path) -> AsyncIterator[RunningService]:
    async with run_service(enforced_settings(kafka, tmp_path, fake)) as running:
        yield running


def image(fake: FakeKubernetes) -> str:
    return str(fake.deployment("shop", "api")["spec"]["template"]["spec"]["containers"][0]["image"])


def of(svc: RunningService, suffix: str, incident: str | None = None) -> list[dict[str, Any]]:
    return [e for e in svc.events.of_type(suffix) if incident is None or e["subject"] == incident]


async def test_an_alert_rolls_back_verifies_and_is_on_kafka_and_the_api(
    svc: RunningService, fake: FakeKubernetes
) -> None:
    labels = {"namespace": "shop", "deployment": "api", "severity": "critical"}
    resp = await svc.post_webhook(body(webhook(alert("BadDeploy", **labels))))
    assert resp.status_code == 202
    await svc.events.wait_types({"remediation.started": 1})
    # "started" is recorded before the change is made; the change follows.
    await fake.wait_for(lambda: image(fake) == "api:v1")

    resolved = alert("BadDeploy", status="resolved", ends_at="2026-11-26T12:00:00Z", **labels)
    await svc.post_webhook(body(webhook(resolved)))
    await svc.events.wait_types({"remediation.succeeded": 1})
    events = [e for e in svc.events.events if e["type"].split(".", 2)[-1].startswith("remediation.")]
    assert [e["type"].rsplit(".", 2)[-2:] for e in events] == [
        ["remediation", "planned"],
        ["remediation", "started"],
        ["remediation", "succeeded"],
    ]
    for e in events:
        assert_valid_event(e, e["subject"].encode())
    incident = events[0]["subject"]

    shown = (await svc.client.get(f"{svc.url}/api/v1/incidents/{incident}")).json()
    (job,) = shown["remediations"]
    assert (job["action"], job["status"], job["target_key"]) == (
        "rollback",
        "succeeded",
        "deployment/shop/api",
    )
    assert job["plan"]["to_revision"] == 1 and job["dry_run"]["changed"] is True
    state = (await svc.client.get(f"{svc.url}/api/v1/remediation")).json()
    assert state["mode"] == "enforce" and state["paused"] is False
    assert [r["id"] for r in state["remediations"]] == [job["id"]]
    one = await svc.client.get(f"{svc.url}/api/v1/remediation/actions/{job['id']}")
    assert one.json()["remediation"]["status"] == "succeeded"


async def test_kill_switch_over_http(svc: RunningService, fake: FakeKubernetes) -> None:
    base = f"{svc.url}/api/v1/remediation"
    paused = await svc.client.post(f"{base}/pause", json={"by": "alice", "reason": "game day"})
    assert paused.status_code == 200 and paused.json()["pause"]["paused_by"] == "alice"
    await svc.post_webhook(body(webhook(alert("Hung", namespace="shop", deployment="web"))))
    await svc.events.wait_types({"remediation.skipped": 1})
    (skipped,) = of(svc, "remediation.skipped")
    assert skipped["data"]["remediation"]["guardrail"] == "kill_switch"
    assert fake.mutations == []
    assert (await svc.client.get(base)).json()["paused"] is True

    assert (await svc.client.post(f"{base}/pause", content=b"[1]")).status_code == 422
    assert (
        await svc.client.post(f"{base}/resume", json={"target": "deployment/shop/nope"})
    ).status_code == 404
    resumed = await svc.client.post(f"{base}/resume", json={"by": "alice"})
    assert resumed.status_code == 200 and resumed.json()["paused"] is False
    await svc.post_webhook(body(webhook(alert("SaturatedCPU", namespace="shop", deployment="web"))))
    await svc.events.wait_types({"remediation.started": 1})
    await fake.wait_for(lambda: fake.deployment("shop", "web")["spec"]["replicas"] == 5)


async def test_sev1_approval_over_incidents_commands(
    svc: RunningService, fake: FakeKubernetes, kafka: str
) -> None:
    await svc.post_webhook(body(webhook(alert("ApiDown", namespace="shop", deployment="api"))))
    await svc.events.wait_types({"remediation.planned": 1})
    (planned,) = of(svc, "remediation.planned")
    rem = planned["data"]["remediation"]
    assert planned["data"]["severity"] == "SEV-1" and rem["approval"]["required"] is True
    assert fake.mutations == []

    dlq = await TopicReader(kafka, svc.settings.kafka_dlq_topic).start()
    try:
        wrong = {"incident_id": "inc-other", "command": {"command": "approve", "remediation_id": rem["id"]}}
        right = {
            "incident_id": planned["subject"],
            "command": {"command": "approve", "remediation_id": rem["id"], "by": "oncall"},
        }
        await produce(
            kafka, svc.settings.kafka_commands_topic, [json.dumps(wrong).encode(), json.dumps(right).encode()]
        )
        await svc.events.wait_types({"remediation.started": 1})
        (started,) = of(svc, "remediation.started")
        assert started["data"]["remediation"]["approval"]["decision"] == "approved"
        assert started["data"]["remediation"]["approval"]["by"] == "oncall"
        await fake.wait_for(lambda: image(fake) == "api:v1")
        await dlq.wait_for(lambda recs: len(recs) >= 1)
        reason = dict(dlq.records[0].headers)["incidentd-dlq-reason"].decode()
        assert reason == f"command refused: no remediation {rem['id']} in incident inc-other"
    finally:
        await dlq.stop()

    over_http = await svc.client.post(
        f"{svc.url}/api/v1/remediation/actions/{rem['id']}/deny", json={"by": "x"}
    )
    assert over_http.status_code == 409
    unknown = await svc.client.post(f"{svc.url}/api/v1/remediation/actions/rem-nope/approve", json={})
    assert unknown.status_code == 422
