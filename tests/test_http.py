"""The webhook's answers, so Alertmanager retries exactly when it should."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from service.embedded.broker import embedded_broker
from tests.support.checks import metric
from tests.support.payloads import alert, body, webhook
from tests.support.service import RunningService, free_port, run_service, test_settings


@pytest.fixture(scope="module")
async def svc(kafka: str, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    settings = test_settings(
        kafka, tmp_path_factory.mktemp("http"), webhook_token="s3cret", http_max_body_bytes=2 * 1024 * 1024
    )
    async with run_service(settings) as running:
        yield running


AUTH = {"authorization": "Bearer s3cret"}


async def test_valid_webhook_with_token_is_202_after_kafka_ack(svc: RunningService) -> None:
    resp = await svc.post_webhook(body(webhook(alert("ApiDown", namespace="http"))), **AUTH)
    assert resp.status_code == 202
    assert resp.json() == {"status": "accepted", "alerts": 1, "records": 1}
    await svc.events.wait_types({"incident.opened": 1})


@pytest.mark.parametrize(
    ("headers", "expected"),
    [({}, 401), ({"authorization": "Bearer wrong"}, 401), ({"authorization": "Basic s3cret"}, 401)],
)
async def test_missing_or_wrong_token_is_401(
    svc: RunningService, headers: dict[str, str], expected: int
) -> None:
    resp = await svc.post_webhook(body(webhook(alert("ApiDown"))), **headers)
    assert resp.status_code == expected
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert "token" in resp.json()["error"]


async def test_malformed_json_is_400(svc: RunningService) -> None:
    resp = await svc.post_webhook(b'{"version": "4", "alerts": [', **AUTH)
    assert resp.status_code == 400
    assert resp.json()["error"].startswith("body is not valid JSON")


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({**webhook(alert("ApiDown")), "version": "3"}, "version"),
        ({**webhook(alert("ApiDown")), "alerts": [{"annotations": {}}]}, "alerts.0.labels"),
        ({**webhook(alert("ApiDown")), "alerts": [{"labels": {"severity": "critical"}}]}, "alertname"),
        (
            {**webhook(alert("ApiDown")), "alerts": [{"labels": {"bad-name": "x", "alertname": "A"}}]},
            "labels",
        ),
        ({"labels": {"alertname": "A"}}, "not an Alertmanager webhook"),
        ({**webhook(alert("ApiDown")), "alerts": [{"labels": {"alertname": "Api\ud800"}}]}, "lone surrogate"),
        ([1, 2], "expected a JSON object"),
    ],
)
async def test_invalid_payload_is_422_with_details(svc: RunningService, doc: object, needle: str) -> None:
    before = metric(svc.runtime, "incidentd_alerts_invalid_total", source="http", reason="invalid")
    resp = await svc.post_webhook(json.dumps(doc).encode(), **AUTH)
    assert resp.status_code == 422
    payload = resp.json()
    assert needle in payload["error"] + json.dumps(payload["details"])
    assert (
        metric(svc.runtime, "incidentd_alerts_invalid_total", source="http", reason="invalid") == before + 1
    )


async def test_body_over_limit_is_413_declared_or_streamed(svc: RunningService) -> None:
    big = b'{"version":"4","alerts":[' + b" " * (5 * 1024 * 1024) + b"]}"
    resp = await svc.post_webhook(big, **AUTH)
    assert resp.status_code == 413

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(5):
            yield b" " * (1024 * 1024)

    # No Content-Length: the limit holds while streaming.
    resp = await svc.client.post(f"{svc.url}/api/v1/alerts/alertmanager", content=chunks(), headers=AUTH)
    assert resp.status_code == 413


async def test_group_over_kafka_record_limit_is_413_not_a_503_loop(svc: RunningService) -> None:
    # Under the 2 MiB body limit, but one group's record would be over Kafka's 1 MiB.
    doc = webhook(*(alert("ApiDown", namespace="big", pod=f"p{i}") for i in range(2000)))
    for a in doc["alerts"]:
        a["annotations"]["description"] = "x" * 500
    payload = body(doc)
    assert 1024 * 1024 < len(payload) < 2 * 1024 * 1024
    resp = await svc.post_webhook(payload, **AUTH)
    assert resp.status_code == 413
    assert "record limit" in resp.json()["error"]


async def test_health_ready_and_metrics(svc: RunningService) -> None:
    assert (await svc.client.get(f"{svc.url}/healthz")).json() == {"status": "ok"}
    ready = await svc.client.get(f"{svc.url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"store": "ok", "kafka": "ok"}
    text = (await svc.client.get(f"{svc.url}/metrics")).text
    for name in (
        "incidentd_alerts_received_total",
        "incidentd_alerts_invalid_total",
        "incidentd_alerts_deduplicated_total",
        "incidentd_incidents_open",
        "incidentd_pages_sent_total",
        "incidentd_pages_failed_total",
        "incidentd_processing_latency_seconds_bucket",
    ):
        assert name in text, name


async def test_kafka_down_gives_503_and_not_ready(tmp_path: Path) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    settings = test_settings(bootstrap, tmp_path, kafka_publish_timeout_seconds=2)
    async with embedded_broker(bootstrap) as pid:
        async with run_service(settings) as svc:
            import os
            import signal

            os.kill(pid, signal.SIGKILL)
            resp = await svc.post_webhook(body(webhook(alert("ApiDown"))))
            assert resp.status_code == 503
            assert resp.headers["retry-after"] == "5"
            assert "Kafka did not acknowledge" in resp.json()["error"]
            ready = await svc.client.get(f"{svc.url}/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["kafka"] != "ok"
            assert ready.json()["checks"]["store"] == "ok"


async def test_unknown_path_and_wrong_method(svc: RunningService) -> None:
    assert (await svc.client.get(f"{svc.url}/api/v1/alerts/alertmanager")).status_code == 405
    assert (await svc.client.post(f"{svc.url}/api/v3/alerts")).status_code == 404
    assert isinstance(svc.client, httpx.AsyncClient)
