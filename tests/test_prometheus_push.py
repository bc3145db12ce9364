"""``POST /api/v2/alerts``: Prometheus pushing to incidentd as to an Alertmanager.

The HTTP answers and what reaches the pipeline (status decided on receipt, ``ends_at``
kept through the Kafka record), then Debian's real Prometheus firing and resolving an
alert from a metric it scrapes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from service.embedded.broker import embedded_broker
from service.ingest.parse import RESOLVE_TIMEOUT, parse
from service.models import Alert, AlertStatus
from tests.support.checks import metric
from tests.support.fake_http import LoopbackServer
from tests.support.kafka import TopicReader
from tests.support.service import RunningService, free_port, run_service, test_settings

PROMETHEUS_BIN = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL_BIN = shutil.which("promtool") or "/usr/bin/promtool"
TOKEN = "s3cret"
AUTH = {"authorization": f"Bearer {TOKEN}"}
WAIT = 30.0
PROMETHEUS_WAIT = 60.0
STOP_TIMEOUT = 5.0


@pytest.fixture(scope="module")
async def svc(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningService]:
    settings = test_settings(
        kafka, tmp_path_factory.mktemp("push"), webhook_token=TOKEN, http_max_body_bytes=256 * 1024
    )
    async with run_service(settings) as running:
        yield running


@pytest.fixture(scope="module")
async def alerts_topic(svc: RunningService) -> AsyncIterator[TopicReader]:
    """The records the intake published, to see what the consumer will parse."""
    reader = await TopicReader(svc.settings.kafka_bootstrap_servers, svc.settings.kafka_alerts_topic).start()
    try:
        yield reader
    finally:
        await reader.stop()


async def push(svc: RunningService, alerts: Any, **headers: str) -> httpx.Response:
    content = alerts if isinstance(alerts, bytes) else json.dumps(alerts).encode()
    return await svc.client.post(
        f"{svc.url}/api/v2/alerts",
        content=content,
        headers={"content-type": "application/json", **AUTH, **headers},
    )


def rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def wait_event(
    svc: RunningService, suffix: str, alertname: str, timeout: float = WAIT
) -> dict[str, Any]:
    def matching() -> list[dict[str, Any]]:
        return [
            e
            for e in svc.events.of_type(suffix)
            if any(a["labels"].get("alertname") == alertname for a in e["data"].get("alerts", []))
        ]

    await svc.events.wait_for(lambda _: bool(matching()), timeout)
    return matching()[0]


async def published(reader: TopicReader, alertname: str, status: AlertStatus, timeout: float = WAIT) -> Alert:
    """The alert as the consumer's parse reads it back from the alerts topic."""
    now = datetime.now(UTC)

    def found() -> list[Alert]:
        return [
            a
            for r in reader.records
            for a in parse(r.value, now)
            if a.labels["alertname"] == alertname and a.status is status
        ]

    await reader.wait_for(lambda _: bool(found()), timeout)
    return found()[0]


# -- the endpoint -------------------------------------------------------------------------


async def test_firing_push_opens_an_incident_and_keeps_ends_at(
    svc: RunningService, alerts_topic: TopicReader
) -> None:
    started = (datetime.now(UTC) - timedelta(seconds=10)).replace(microsecond=0)
    ends = started + timedelta(minutes=3)
    labels = {"alertname": "PushedDown", "namespace": "push", "severity": "warning"}
    resp = await push(svc, [{"labels": labels, "startsAt": rfc3339(started), "endsAt": rfc3339(ends)}])
    assert resp.status_code == 200
    assert resp.content == b""  # Alertmanager's answer

    opened = await wait_event(svc, "incident.opened", "PushedDown")
    [part] = opened["data"]["alerts"]
    assert part["status"] == "firing"
    record = await published(alerts_topic, "PushedDown", AlertStatus.FIRING)
    # The expiry a later stage needs: pushed endsAt -> Kafka record -> models.Alert.ends_at.
    assert record.ends_at == ends
    assert record.starts_at == started

    # The same alert with an endsAt in the past is resolved on receipt.
    resolved_at = datetime.now(UTC).replace(microsecond=0)
    resp = await push(svc, [{"labels": labels, "startsAt": rfc3339(started), "endsAt": rfc3339(resolved_at)}])
    assert resp.status_code == 200
    resolved = await wait_event(svc, "incident.resolved", "PushedDown")
    assert resolved["data"]["id"] == opened["data"]["id"]
    assert (await published(alerts_topic, "PushedDown", AlertStatus.RESOLVED)).ends_at == resolved_at
    assert metric(svc.runtime, "incidentd_webhook_alerts_accepted_total", source="prometheus") >= 2


async def test_missing_times_follow_alertmanager(svc: RunningService, alerts_topic: TopicReader) -> None:
    before = datetime.now(UTC)
    resp = await push(svc, [{"labels": {"alertname": "PushedNoTimes"}}])
    assert resp.status_code == 200
    alert = await published(alerts_topic, "PushedNoTimes", AlertStatus.FIRING)
    # No startsAt: the time it is read, and a re-send of it is the same episode; no endsAt:
    # the time of receipt + resolve_timeout (5m), firing until then.
    assert before <= alert.starts_at <= datetime.now(UTC)
    assert not alert.starts_at_given
    assert alert.ends_at is not None
    assert before + RESOLVE_TIMEOUT <= alert.ends_at <= alert.starts_at + RESOLVE_TIMEOUT
    await wait_event(svc, "incident.opened", "PushedNoTimes")


async def test_empty_list_is_200(svc: RunningService) -> None:
    resp = await push(svc, [])
    assert resp.status_code == 200


NOW = rfc3339(datetime.now(UTC).replace(microsecond=0))


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b'[{"labels": {"alertname": "A"}', 400, "not valid JSON"),
        ({"labels": {"alertname": "A"}}, 422, "expected a JSON array"),
        ({"version": "4", "alerts": []}, 422, "expected a JSON array"),
        ([{"annotations": {}}], 422, "0.labels: Field required"),
        ([{"labels": {"severity": "critical"}}], 422, "alertname"),
        ([{"labels": {"alertname": ""}}], 422, "alertname"),
        ([{"labels": {"alertname": "A", "bad-name": "x"}}], 422, "0.labels"),
        ([{"labels": {"alertname": "A"}, "startsAt": "yesterday"}], 422, "0.startsAt"),
        ([{"labels": {"alertname": "A"}, "endsAt": 1_700_000_000}], 422, "RFC 3339"),
        (
            [{"labels": {"alertname": "A"}, "startsAt": NOW, "endsAt": "2020-01-01T00:00:00Z"}],
            422,
            "0.endsAt: endsAt (2020-01-01T00:00:00Z) is before startsAt",
        ),
        ([1], 422, "0: Input should be a valid dictionary"),
    ],
)
async def test_bad_bodies_are_refused_with_the_reason(
    svc: RunningService, body: Any, status: int, needle: str
) -> None:
    reason = "malformed" if status == 400 else "invalid"
    before = metric(svc.runtime, "incidentd_alerts_invalid_total", source="prometheus", reason=reason)
    resp = await push(svc, body)
    assert resp.status_code == status
    answer = resp.json()
    assert needle in answer["error"], answer
    after = metric(svc.runtime, "incidentd_alerts_invalid_total", source="prometheus", reason=reason)
    assert after == before + 1


async def test_valid_alerts_of_a_partly_bad_batch_are_taken(svc: RunningService) -> None:
    # As Alertmanager: one bad alert must not drop the rest of a Prometheus batch.
    resp = await push(svc, [{"labels": {"alertname": "PushedGood"}}, {"labels": {"job": "x"}}])
    assert resp.status_code == 422
    answer = resp.json()
    assert answer["error"].startswith("1 of 2 alerts refused, the other 1 accepted")
    assert [d["loc"] for d in answer["details"]] == ["1.labels"]
    await wait_event(svc, "incident.opened", "PushedGood")


async def test_without_the_token_is_401(svc: RunningService) -> None:
    resp = await svc.client.post(f"{svc.url}/api/v2/alerts", content=b"[]")
    assert resp.status_code == 401


async def test_body_over_limit_is_413(svc: RunningService) -> None:
    big = [
        {"labels": {"alertname": "Big", "i": str(i)}, "annotations": {"d": "x" * 1000}} for i in range(300)
    ]
    resp = await push(svc, big)
    assert resp.status_code == 413
    assert metric(svc.runtime, "incidentd_alerts_invalid_total", source="prometheus", reason="too_large") >= 1


async def test_kafka_down_is_503_with_retry_after(tmp_path: Path) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    settings = test_settings(bootstrap, tmp_path, kafka_publish_timeout_seconds=2)
    async with embedded_broker(bootstrap) as pid, run_service(settings) as down:
        os.kill(pid, signal.SIGKILL)
        resp = await push(down, [{"labels": {"alertname": "PushedWhileDown"}}])
        assert resp.status_code == 503
        assert resp.headers["retry-after"] == "5"
        assert "Kafka did not acknowledge" in resp.json()["error"]


# -- a real Prometheus --------------------------------------------------------------------


class Exporter(LoopbackServer):
    """One gauge, ``demo_failing``, which the test flips."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = 1

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with exporter.lock:
                    data = f"# TYPE demo_failing gauge\ndemo_failing {exporter.failing}\n".encode()
                self.send_response(200)
                self.send_header("content-type", "text/plain; version=0.0.4")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


def prometheus_files(workdir: Path, service_url: str, exporter_url: str) -> Path:
    rules = {
        "groups": [
            {
                "name": "demo",
                "rules": [
                    {
                        "alert": "DemoFailing",
                        "expr": "demo_failing > 0",
                        "for": "0s",
                        "labels": {"severity": "warning"},
                        "annotations": {"summary": "the demo is failing"},
                    }
                ],
            }
        ]
    }
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(workdir / "rules.yml")],
        "alerting": {
            "alertmanagers": [
                {
                    "api_version": "v2",
                    "authorization": {"credentials": TOKEN},
                    "static_configs": [{"targets": [service_url.removeprefix("http://")]}],
                }
            ]
        },
        "scrape_configs": [
            {"job_name": "demo", "static_configs": [{"targets": [exporter_url.removeprefix("http://")]}]}
        ],
    }
    (workdir / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def log_tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


@contextlib.asynccontextmanager
async def run_prometheus(workdir: Path, config: Path) -> AsyncIterator[str]:
    """Prometheus on a free loopback port with its own storage; yields its URL once ready."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = workdir / "prometheus.log"
    with log_path.open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            PROMETHEUS_BIN,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            # Firing alerts are re-sent every resend delay (default 1m); resolved ones at once.
            "--rules.alert.resend-delay=1s",
            "--log.level=debug",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PROMETHEUS_WAIT
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                if proc.returncode is not None:
                    raise AssertionError(f"prometheus exited {proc.returncode}:\n{log_tail(log_path)}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{url}/-/ready")).status_code == 200:
                        break
                if loop.time() > deadline:
                    raise AssertionError(f"prometheus not ready:\n{log_tail(log_path)}")
                # A child's readiness has no event to wait on: poll /-/ready.
                await asyncio.sleep(0.1)
        yield url
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def test_real_prometheus_fires_and_resolves(
    svc: RunningService, alerts_topic: TopicReader, tmp_path: Path
) -> None:
    if not os.access(PROMETHEUS_BIN, os.X_OK):
        pytest.skip(f"{PROMETHEUS_BIN} missing (scripts/ensure-system-deps.sh installs Debian's prometheus)")
    async with Exporter() as exporter:
        config = prometheus_files(tmp_path, svc.url, exporter.base_url)
        if os.access(PROMTOOL_BIN, os.X_OK):
            check = await asyncio.create_subprocess_exec(
                PROMTOOL_BIN,
                "check",
                "config",
                str(config),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await asyncio.wait_for(check.communicate(), WAIT)
            assert check.returncode == 0, out.decode(errors="replace")
        async with run_prometheus(tmp_path, config):
            opened = await wait_event(svc, "incident.opened", "DemoFailing", PROMETHEUS_WAIT)
            [part] = opened["data"]["alerts"]
            assert part["labels"]["instance"] == exporter.base_url.removeprefix("http://")
            assert part["generator_url"]  # Prometheus links back to its graph
            firing = await published(alerts_topic, "DemoFailing", AlertStatus.FIRING)
            # Prometheus sends endsAt = a few resend delays ahead while the alert fires.
            assert firing.ends_at is not None and firing.ends_at > firing.starts_at

            with exporter.lock:
                exporter.failing = 0
            resolved = await wait_event(svc, "incident.resolved", "DemoFailing", PROMETHEUS_WAIT)
            assert resolved["data"]["id"] == opened["data"]["id"]
