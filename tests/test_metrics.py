"""The metrics an SRE alerts on and builds dashboards from (issue #14 point 3), read from a
running service's ``GET /metrics`` as Prometheus reads it: the real broker, the Opsgenie
stand-in as the pager, an injected clock for the ages and durations, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from service import __version__
from service.clock import ManualClock, iso
from service.embedded.broker import embedded_broker
from service.notify.base import Notifier
from service.notify.opsgenie import OpsgenieNotifier
from tests.conftest import postgres_database
from tests.support.opsgenie_api import FakeOpsgenie, RecordedRequest, Reply
from tests.support.payloads import alert, body, webhook
from tests.support.scrape import Scrape, scrape
from tests.support.service import RULES, RunningService, free_port, run_service, test_settings
from tests.support.time import T0

TOKEN = "metrics-s3cret"
AUTH = {"authorization": f"Bearer {TOKEN}"}
KEY = "5a1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
WAIT = 30.0

ACK = "incidentd_incident_time_to_acknowledge_seconds"
RESOLVE = "incidentd_incident_time_to_resolve_seconds"
PAGER = "incidentd_pager_request_duration_seconds"


@dataclass
class Rig:
    svc: RunningService
    og: FakeOpsgenie
    clock: ManualClock
    db: str  # "sqlite" or "postgresql"


def untimed_rules(tmp: Path) -> Path:
    """The shipped rules without timed escalations: the tests move the clock, and a page an
    escalation adds meanwhile would change the pending pages they count."""
    rules = tmp / "rules"
    shutil.copytree(RULES, rules)
    (rules / "escalation.yaml").write_text("first_page: [DevOps]\nrules: []\n")
    return rules


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
async def rig(
    request: pytest.FixtureRequest, kafka: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Rig]:
    tmp = tmp_path_factory.mktemp(f"metrics-{request.param}")
    async with contextlib.AsyncExitStack() as stack:
        overrides: dict[str, Any] = {}
        if request.param == "postgresql":
            overrides["database_url"] = await stack.enter_async_context(postgres_database())
        settings = test_settings(
            kafka, tmp, pagers=["opsgenie"], webhook_token=TOKEN, rules_dir=untimed_rules(tmp), **overrides
        )
        og = await stack.enter_async_context(FakeOpsgenie())
        clock = ManualClock(T0)
        notifiers: dict[str, Notifier] = {"opsgenie": OpsgenieNotifier(KEY, og.url, 10.0)}
        svc = await stack.enter_async_context(run_service(settings, clock=clock, notifiers=notifiers))
        yield Rig(svc, og, clock, request.param)


async def until(rig: Rig, done: Callable[[Scrape], bool], timeout: float = WAIT) -> Scrape:
    """Scrape until ``done`` holds (what the metrics show follows the service's own work)."""
    deadline = time.monotonic() + timeout
    while True:
        s = await scrape(rig.svc)
        if done(s):
            return s
        if time.monotonic() > deadline:
            raise AssertionError(f"metrics never got there; last scrape:\n{s.text}")
        await asyncio.sleep(0.05)


async def post_alerts(rig: Rig, *alerts: dict[str, Any]) -> dict[str, Any]:
    """Post a webhook and wait until every record it made is processed and committed."""
    before = rig.svc.runtime.progress.records
    resp = await rig.svc.post_webhook(body(webhook(*alerts)), **AUTH)
    assert resp.status_code == 202, resp.text
    answer: dict[str, Any] = resp.json()
    await rig.svc.runtime.progress.wait_records(before + answer["records"], WAIT)
    return answer


def of(rig: Rig, suffix: str, alertname: str) -> list[dict[str, Any]]:
    return [
        e for e in rig.svc.events.of_type(suffix) if e["data"]["group_labels"].get("alertname") == alertname
    ]


async def open_incident(rig: Rig, name: str) -> tuple[str, str]:
    """An incident opened by an alert and paged to Opsgenie: its id and severity."""
    return await open_incident_on(rig, name, "opsgenie")


async def open_incident_on(rig: Rig, name: str, pager: str) -> tuple[str, str]:
    await post_alerts(rig, alert(name, namespace="metrics", severity="critical"))

    def paged(_: object) -> bool:
        return any(e["data"]["page"]["integration"] == pager for e in of(rig, "page.sent", name))

    await rig.svc.events.wait_for(paged, WAIT)
    [opened] = of(rig, "incident.opened", name)
    return str(opened["subject"]), str(opened["data"]["severity"])


async def command(rig: Rig, incident_id: str, verb: str) -> None:
    url = f"{rig.svc.url}/api/v1/incidents/{incident_id}/{verb}"
    resp = await rig.svc.client.post(url, json={"by": "ana"}, headers=AUTH)
    assert resp.status_code == 200, resp.text


def histogram(s: Scrape, name: str, **labels: str) -> tuple[float, float]:
    return s.value(f"{name}_count", **labels), s.value(f"{name}_sum", **labels)


async def test_build_info_names_the_version_and_python(rig: Rig) -> None:
    s = await scrape(rig.svc)
    assert s.labelsets("incidentd_build_info") == [
        {"version": __version__, "python_version": platform.python_version()}
    ]
    assert s.value("incidentd_build_info", version=__version__, python_version=platform.python_version()) == 1


async def test_each_alert_is_counted_once_at_the_edge_and_once_processed(rig: Rig) -> None:
    before = await scrape(rig.svc)
    answer = await post_alerts(
        rig,
        alert("CountedOnce", namespace="metrics", pod="a"),
        alert("CountedOnce", namespace="metrics", pod="b"),
    )
    assert answer["alerts"] == 2
    # Firing for a day: the clock the tests move never resolves it behind their backs.
    ends = iso(T0 + timedelta(days=1))
    pushed = [
        {"labels": {"alertname": "PushedOnce", "namespace": "metrics"}, "startsAt": iso(T0), "endsAt": ends}
    ]
    progress = rig.svc.runtime.progress.records
    resp = await rig.svc.client.post(f"{rig.svc.url}/api/v2/alerts", json=pushed, headers=AUTH)
    assert resp.status_code == 200, resp.text
    await rig.svc.runtime.progress.wait_records(progress + 1, WAIT)

    after = await scrape(rig.svc)
    edge = "incidentd_webhook_alerts_accepted_total"
    assert after.value(edge, source="http") - before.value(edge, source="http") == 2
    assert after.value(edge, source="prometheus") - before.value(edge, source="prometheus") == 1
    # THE count: three alerts, three (not six), whichever endpoint they came through.
    received = "incidentd_alerts_received_total"
    assert after.labelsets(received) == [{}]
    assert after.value(received) - before.value(received) == 3


async def test_every_refused_webhook_request_is_counted_by_its_status(rig: Rig) -> None:
    refused = "incidentd_webhook_requests_refused_total"
    before = await scrape(rig.svc)
    url = rig.svc.url
    good = body(webhook(alert("Refused", namespace="metrics")))
    answers = [
        await rig.svc.post_webhook(good),  # no token
        await rig.svc.client.post(f"{url}/api/v2/alerts", content=b"[]"),  # no token
        await rig.svc.post_webhook(b'{"version": "4", "alerts": [', **AUTH),
        await rig.svc.post_webhook(json.dumps({**webhook(), "version": "3"}).encode(), **AUTH),
        await rig.svc.post_webhook(b" " * (rig.svc.settings.http_max_body_bytes + 1), **AUTH),
        await rig.svc.client.post(f"{url}/api/v2/alerts", json=[{"labels": {}}], headers=AUTH),
    ]
    assert [a.status_code for a in answers] == [401, 401, 400, 422, 413, 422]
    after = await scrape(rig.svc)
    delta = {
        status: after.value(refused, status=status) - before.value(refused, status=status)
        for status in ("400", "401", "413", "422", "503")
    }
    assert delta == {"400": 1, "401": 2, "413": 1, "422": 2, "503": 0}
    # An accepted request is no refusal.
    await post_alerts(rig, alert("Refused", namespace="metrics"))
    assert (await scrape(rig.svc)).total(refused) == after.total(refused)


async def test_time_to_acknowledge_and_resolve_are_observed_once_per_incident(rig: Rig) -> None:
    incident_id, severity = await open_incident(rig, "AckThenResolve")
    before = await scrape(rig.svc)

    rig.clock.advance(timedelta(minutes=7))
    await command(rig, incident_id, "ack")
    await command(rig, incident_id, "ack")  # a repeat changes nothing, observes nothing
    rig.clock.advance(timedelta(minutes=13))
    await command(rig, incident_id, "resolve")
    await command(rig, incident_id, "resolve")
    # The resolved alert arriving afterwards finds the incident resolved already.
    await post_alerts(rig, alert("AckThenResolve", "resolved", namespace="metrics", severity="critical"))

    after = await scrape(rig.svc)
    ack_count, ack_sum = histogram(after, ACK, severity=severity)
    assert (ack_count, ack_sum) == (
        histogram(before, ACK, severity=severity)[0] + 1,
        420.0 + histogram(before, ACK, severity=severity)[1],
    )
    count, total = histogram(before, RESOLVE, severity=severity)
    assert histogram(after, RESOLVE, severity=severity) == (count + 1, total + 1200.0)
    assert (
        after.value(f"{ACK}_bucket", severity=severity, le="600.0")
        - before.value(f"{ACK}_bucket", severity=severity, le="600.0")
        == 1
    )
    assert after.value(f"{ACK}_bucket", severity=severity, le="300.0") == before.value(
        f"{ACK}_bucket", severity=severity, le="300.0"
    )


async def test_a_resolve_delivered_twice_is_observed_once(rig: Rig) -> None:
    incident_id, severity = await open_incident(rig, "ResolvedTwice")
    before = await scrape(rig.svc)
    rig.clock.advance(timedelta(minutes=5))
    resolved = alert("ResolvedTwice", "resolved", namespace="metrics", severity="critical")
    await post_alerts(rig, resolved)
    await post_alerts(rig, resolved)  # Alertmanager's HA pair: the same resolve, again
    timeline = await rig.svc.runtime.store.outbox.timeline(incident_id)
    assert [t.type for t in timeline].count("incident.resolved") == 1
    count, total = histogram(before, RESOLVE, severity=severity)
    assert histogram(await scrape(rig.svc), RESOLVE, severity=severity) == (count + 1, total + 300.0)
    # Never acknowledged: no time to acknowledge.
    assert histogram(await scrape(rig.svc), ACK, severity=severity) == histogram(
        before, ACK, severity=severity
    )


def _is_alert(alertname: str) -> Callable[[RecordedRequest], bool]:
    def match(request: RecordedRequest) -> bool:
        return bool(request.body.get("details", {}).get("alertname") == alertname)

    return match


async def test_a_held_page_is_pending_and_aged_and_every_call_is_timed(rig: Rig) -> None:
    await until(rig, lambda s: s.value("incidentd_pages_pending") == 0)
    before = await scrape(rig.svc)
    calls = len(rig.og.answers)
    release = threading.Event()
    rig.og.script("create", Reply(hold=release), when=_is_alert("HeldPage"))
    await post_alerts(rig, alert("HeldPage", namespace="metrics", severity="critical"))
    await rig.og.wait_for(lambda: bool([r for r in rig.og.requests if _is_alert("HeldPage")(r)]))
    seen = time.perf_counter()

    rig.clock.advance(timedelta(seconds=90))
    held = await scrape(rig.svc)
    assert held.value("incidentd_pages_pending") == 1
    assert held.value("incidentd_page_oldest_pending_age_seconds") == 90.0

    await asyncio.sleep(0.2)  # the call stays in flight a measurable time
    release.set()
    waited = time.perf_counter() - seen
    await rig.svc.events.wait_for(lambda _: bool(of(rig, "page.sent", "HeldPage")), WAIT)
    after = await until(rig, lambda s: s.value("incidentd_pages_pending") == 0)
    assert after.value("incidentd_page_oldest_pending_age_seconds") == 0
    count, total = histogram(before, PAGER, integration="opsgenie", outcome="sent")
    new_count, new_total = histogram(after, PAGER, integration="opsgenie", outcome="sent")
    # Every call the pager answered is observed once (this one, and any other meanwhile).
    assert new_count - count == len(rig.og.answers) - calls >= 1
    assert waited <= new_total - total < waited + 5

    # A refused call is timed as failed, and retried.
    rig.og.script("create", Reply(status=503), when=_is_alert("RefusedPage"))
    await post_alerts(rig, alert("RefusedPage", namespace="metrics", severity="critical"))
    await rig.svc.events.wait_for(lambda _: bool(of(rig, "page.failed", "RefusedPage")), WAIT)
    failed = await scrape(rig.svc)
    assert histogram(failed, PAGER, integration="opsgenie", outcome="failed")[0] == (
        histogram(before, PAGER, integration="opsgenie", outcome="failed")[0] + 1
    )
    assert failed.value("incidentd_pages_pending") == 1  # retrying
    rig.clock.advance(timedelta(seconds=1))
    rig.svc.runtime.pages.wake()
    await rig.svc.events.wait_for(lambda _: bool(of(rig, "page.sent", "RefusedPage")), WAIT)
    done = await until(rig, lambda s: s.value("incidentd_pages_pending") == 0)
    assert histogram(done, PAGER, integration="opsgenie", outcome="sent")[0] == new_count + 1


@contextlib.asynccontextmanager
async def store_writes_held(rig: Rig) -> AsyncIterator[None]:
    """Another client holds the database so the service cannot store a batch: SQLite's write
    lock, PostgreSQL's lock on the incidents table."""
    url = make_url(rig.svc.settings.database_url)
    if rig.db == "sqlite":
        con = sqlite3.connect(str(url.database), isolation_level=None)
        con.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            con.execute("ROLLBACK")
            con.close()
        return
    pg = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))
    tx = pg.transaction()
    await tx.start()
    await pg.execute("LOCK TABLE incidents IN ACCESS EXCLUSIVE MODE")
    try:
        yield
    finally:
        await tx.rollback()
        await pg.close()


async def test_consumer_lag_counts_the_records_not_yet_committed(rig: Rig) -> None:
    settings = rig.svc.settings
    group, topic = settings.kafka_group_id, settings.kafka_alerts_topic
    lag = "incidentd_kafka_consumer_lag_records"
    settled = await until(rig, lambda s: s.total(lag, group=group) == 0)
    # Every consumer group reports its partitions: the alerts and the commands.
    reported = {(ls["group"], ls["topic"]) for ls in settled.labelsets(lag)}
    assert {(group, topic), (f"{group}.commands", settings.kafka_commands_topic)} <= reported
    assert (
        len([ls for ls in settled.labelsets(lag) if ls["group"] == group]) == settings.kafka_topic_partitions
    )

    async with store_writes_held(rig):
        # One webhook per record: the embedded broker gives a batch of records for one
        # partition a single offset, which Kafka does not.
        for i in range(3):
            resp = await rig.svc.post_webhook(
                body(webhook(alert(f"Lagging{i}", namespace=f"lag-{i}"))), **AUTH
            )
            assert (resp.status_code, resp.json()["records"]) == (202, 1)
        await until(rig, lambda s: s.total(lag, group=group, topic=topic) == 3)
    await until(rig, lambda s: s.total(lag, group=group, topic=topic) == 0)


async def test_kafka_down_a_503_is_counted_and_the_outbox_backlog_ages(tmp_path: Path) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    clock = ManualClock(T0)
    settings = test_settings(bootstrap, tmp_path, kafka_publish_timeout_seconds=2, webhook_token=TOKEN)
    async with embedded_broker(bootstrap) as pid, run_service(settings, clock=clock) as svc:
        rig = Rig(svc, FakeOpsgenie(), clock, "sqlite")  # the console pages; the fake stays unused
        incident_id, _ = await open_incident_on(rig, "OutboxAges", pager="console")
        await until(rig, lambda s: s.value("incidentd_outbox_pending_events") == 0)

        os.kill(pid, signal.SIGKILL)
        resp = await svc.post_webhook(body(webhook(alert("OutboxAges", namespace="down"))), **AUTH)
        assert resp.status_code == 503
        # Acknowledged in the store; its event waits in the outbox for Kafka to come back.
        await command(rig, incident_id, "ack")
        # The console's ack page goes out and adds its page.sent: then the outbox holds still.
        await until(rig, lambda s: s.value("incidentd_pages_pending") == 0)
        clock.advance(timedelta(minutes=2))
        s = await scrape(svc)  # answers, though the consumer lag cannot be read now
        assert s.value("incidentd_webhook_requests_refused_total", status="503") == 1
        waiting = await svc.runtime.store.outbox.unpublished(100)
        assert s.value("incidentd_outbox_pending_events") == len(waiting) >= 1
        assert s.value("incidentd_outbox_oldest_pending_age_seconds") == 120.0


@pytest.mark.parametrize("amount", [0.0, 0.004, 0.01, 0.3, 29.0, 31.0])
def test_equal_observations_at_once_expose_as_one_by_one(amount: float) -> None:
    """A batch's alerts share their receipt time and are observed at once (issue #13): the
    exposition must be that of one observe() per alert, bucket, count and sum alike."""
    from prometheus_client import CollectorRegistry

    from service.observability.metrics import EqualObservations

    def samples(observe: Callable[[EqualObservations], None]) -> dict[str, float]:
        registry = CollectorRegistry()
        h = EqualObservations("latency_seconds", "x", buckets=(0.005, 0.01, 1, 30), registry=registry)
        observe(h)
        return {
            f"{s.name}{sorted(s.labels.items())}": s.value
            for metric in registry.collect()
            for s in metric.samples
            if not s.name.endswith("_created")
        }

    def one_by_one(h: EqualObservations) -> None:
        for _ in range(7):
            h.observe(amount)

    at_once = samples(lambda h: h.observe_times(amount, 7))
    # The sum as a float: 7 x 0.3 and 0.3 added seven times differ in the last bit.
    assert at_once == pytest.approx(samples(one_by_one), rel=1e-12)
    assert at_once != samples(lambda h: h.observe_times(amount, 6))
