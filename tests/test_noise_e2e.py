"""Noise control through the real service and broker: a silence made with the real amtool,
a recurring maintenance window on the injectable clock, an inhibited database-down /
API-errors pair, a flapping alert, each open threshold, a missing heartbeat, and a pushed
alert that Prometheus stops re-sending."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from service.clock import ManualClock, iso
from service.store.tables import timers
from tests.support.checks import assert_valid_event
from tests.support.noise import noise_rules
from tests.support.payloads import alert, body, webhook
from tests.support.service import RunningService, run_service, test_settings
from tests.test_silences import amtool, needs_amtool

SUNDAY_0150 = datetime(2026, 11, 29, 1, 50, tzinfo=UTC)
WINDOW = """
time_intervals:
  - name: sunday-night
    time_intervals:
      - weekdays: [sunday]
        times: [{start_time: "02:00", end_time: "04:00"}]
maintenance:
  - name: replication-work
    matchers: ['alertname=~"Replication.*"']
    time_intervals: [sunday-night]
    comment: replicas are rebuilt on Sunday nights
"""


def z(at: datetime) -> str:
    return iso(at)


def of(svc: RunningService, incident_id: str, suffix: str) -> list[dict[str, Any]]:
    return [e for e in svc.events.of_type(suffix) if e["subject"] == incident_id]


async def post(svc: RunningService, *alerts: dict[str, Any]) -> None:
    resp = await svc.post_webhook(body(webhook(*alerts)))
    assert resp.status_code == 202, resp.text


async def opened(svc: RunningService, alertname: str, **labels: str) -> str:
    """The id of the incident an alert with this name (and these labels) opened."""
    wanted = {"alertname": alertname, **labels}

    def matching() -> list[dict[str, Any]]:
        return [
            e
            for e in svc.events.of_type("incident.opened")
            if any(wanted.items() <= a["labels"].items() for a in e["data"]["alerts"])
        ]

    await svc.events.wait_for(lambda _: bool(matching()))
    [event] = matching()
    assert_valid_event(event)
    return str(event["subject"])


async def wait_event(svc: RunningService, incident_id: str, suffix: str, n: int = 1) -> list[dict[str, Any]]:
    await svc.events.wait_for(lambda _: len(of(svc, incident_id, suffix)) >= n)
    found = of(svc, incident_id, suffix)
    for event in found:
        assert_valid_event(event)
    return found


async def triggers(svc: RunningService, incident_id: str) -> list[tuple[str, int]]:
    pages = await svc.runtime.store.pages.for_incident(incident_id)
    return [(p.target, p.opening) for p in pages if p.action == "trigger"]


@pytest.fixture
async def svc(kafka: str, tmp_path: Path) -> AsyncIterator[RunningService]:
    async with run_service(test_settings(kafka, tmp_path)) as running:
        yield running


@needs_amtool
async def test_an_amtool_silence_records_without_paging_then_pages_when_expired(
    svc: RunningService, tmp_path: Path
) -> None:
    add = await amtool(
        svc.url,
        tmp_path,
        "silence",
        "add",
        "alertname=DiskFull",
        "--comment=disk swap",
        "--author=alice",
        "--duration=1h",
    )
    assert add.code == 0, add.err
    sid = add.out.strip()
    query = await amtool(svc.url, tmp_path, "silence", "query", "-q")
    assert query.out.split() == [sid]

    await post(svc, alert("DiskFull", namespace="db", instance="db-1", severity="critical"))
    inc = await opened(svc, "DiskFull")
    [held] = await wait_event(svc, inc, "incident.suppressed")
    assert held["data"]["suppression"]["kind"] == "silenced"
    assert held["data"]["suppression"]["by"] == sid
    assert held["data"]["suppression"]["reason"] == "silenced by alice: disk swap"
    # Another alert of the same silenced group lands on the incident and pages no one either.
    await post(svc, alert("DiskFull", namespace="db", instance="db-2", severity="critical"))
    await svc.events.wait_for(
        lambda _: any("alert_added" in e["data"]["reasons"] for e in of(svc, inc, "incident.updated"))
    )
    assert await triggers(svc, inc) == []
    timeline = [t.type for t in await svc.runtime.store.outbox.timeline(inc)]
    assert timeline[:2] == ["incident.opened", "incident.suppressed"]

    expire = await amtool(svc.url, tmp_path, "silence", "expire", sid)
    assert expire.code == 0, expire.err
    [lifted] = await wait_event(svc, inc, "incident.unsuppressed")
    assert lifted["data"]["suppression"]["kind"] == "silenced"
    assert lifted["data"]["suppression"] is not None and lifted["data"]["status"] == "open"
    await svc.events.wait_for(lambda _: len(of(svc, inc, "page.sent")) >= 1)
    assert await triggers(svc, inc) == [("first", 1)]
    stored = await svc.runtime.store.incidents.get(inc)
    assert stored is not None and stored.hold is None and stored.paged == 1
    # The response clock started when it began to page, not when the alert first came.
    assert stored.response_due_at == stored.opening_started_at + timedelta(minutes=30)


async def test_a_recurring_window_pauses_an_open_incident_and_holds_a_new_one(
    kafka: str, tmp_path: Path
) -> None:
    clock = ManualClock(SUNDAY_0150)
    settings = test_settings(kafka, tmp_path, rules_dir=noise_rules(tmp_path, WINDOW))
    async with run_service(settings, clock=clock) as svc:
        await post(
            svc, alert("ReplicationLag", starts_at=z(SUNDAY_0150), namespace="db", severity="critical")
        )
        lag = await opened(svc, "ReplicationLag")
        await svc.events.wait_for(lambda _: len(of(svc, lag, "page.sent")) >= 1)

        clock.advance(timedelta(minutes=10))  # 02:00: the window begins over the open incident
        await svc.runtime.noise.run_once()
        [paused] = await wait_event(svc, lag, "incident.suppressed")
        assert paused["data"]["suppression"]["kind"] == "maintenance"
        assert paused["data"]["suppression"]["paged"] is True
        assert paused["data"]["suppression"]["until"] == z(SUNDAY_0150 + timedelta(hours=2, minutes=10))

        # 02:30: a new replication alert in the window records but pages no one.
        clock.advance(timedelta(minutes=30))
        await post(
            svc, alert("ReplicationBroken", starts_at=z(clock.now()), namespace="db", severity="critical")
        )
        broken = await opened(svc, "ReplicationBroken")
        await wait_event(svc, broken, "incident.suppressed")
        # The SLA share (24 min), the deadline and the reminder (30 min) of the paused one
        # came due in the window: skipped, no escalation, no [UPDATE].
        states = await settled_timers(svc, lag, clock.now())
        assert states and all(s == "skipped" for s in states.values()), states
        assert of(svc, lag, "incident.escalated") == [] and of(svc, lag, "comms.update") == []

        clock.advance(timedelta(minutes=90))  # 04:00: the window ends, both still fire
        await svc.runtime.noise.run_once()
        await wait_event(svc, lag, "incident.unsuppressed")
        await wait_event(svc, broken, "incident.unsuppressed")
        await svc.events.wait_for(lambda _: len(of(svc, broken, "page.sent")) >= 1)
        # The paused one resumes without a second page; the held one pages now.
        assert await triggers(svc, lag) == [("first", 1)]
        assert await triggers(svc, broken) == [("first", 1)]
        resumed = await svc.runtime.store.incidents.get(lag)
        assert resumed is not None
        # Its deadline moved by the two hours it was held.
        assert resumed.response_due_at == SUNDAY_0150 + timedelta(minutes=30, hours=2)
        # Its clocks run again from the end of the window: the deadline escalates at 04:20.
        clock.advance(timedelta(minutes=21))
        await settled_timers(svc, lag, clock.now())
        escalated = await wait_event(svc, lag, "incident.escalated")
        assert {e["data"]["escalation"]["kind"] for e in escalated} <= {"sla", "response_overdue"}


async def settled_timers(svc: RunningService, incident_id: str, now: datetime) -> dict[str, str]:
    """The incident's timers due by ``now``, each decided: fired here, or by the worker task
    if it holds one (then looked at again, boundedly)."""
    for _ in range(200):
        await svc.runtime.timers.run_once()
        async with svc.runtime.store.db.read() as conn:
            rows = await conn.execute(
                select(timers.c.name, timers.c.status).where(
                    timers.c.incident_id == incident_id, timers.c.due_at <= now.timestamp()
                )
            )
            due = {r.name: r.status for r in rows}
        if all(s != "pending" for s in due.values()):
            return due
        await asyncio.sleep(0.05)  # another task holds the lease of one: it finishes it
    raise AssertionError(f"timers still pending: {due}")


async def test_an_api_error_caused_by_a_database_down_is_held_under_it_then_pages_when_it_resolves(
    svc: RunningService,
) -> None:
    # rules/noise.yaml as shipped: DatabaseUnavailable explains ApiDown in the same cluster.
    db = alert("DatabaseUnavailable", namespace="db", cluster="eu-1")
    api = alert("ApiDown", namespace="aragora", cluster="eu-1")
    await post(svc, db)
    source = await opened(svc, "DatabaseUnavailable")
    await post(svc, api)
    target = await opened(svc, "ApiDown", cluster="eu-1")
    [held] = await wait_event(svc, target, "incident.suppressed")
    hold = held["data"]["suppression"]
    assert (hold["kind"], hold["by"]) == ("inhibited", source)
    assert (
        hold["reason"].startswith(f"caused by {source} (")
        and "database-down-explains-api-errors" in hold["reason"]
    )
    # The same alert in another cluster is not explained by this database.
    await post(svc, alert("ApiDown", namespace="aragora", cluster="us-1"))
    elsewhere = await opened(svc, "ApiDown", cluster="us-1")
    await svc.events.wait_for(lambda _: len(of(svc, elsewhere, "page.sent")) >= 1)
    assert of(svc, elsewhere, "incident.suppressed") == []
    assert await triggers(svc, source) == [("first", 1)]
    assert await triggers(svc, target) == []

    await post(svc, {**db, "status": "resolved", "endsAt": "2026-11-26T10:30:00Z"})
    await wait_event(svc, source, "incident.resolved")
    [lifted] = await wait_event(svc, target, "incident.unsuppressed")
    assert lifted["data"]["suppression"]["by"] == source
    await svc.events.wait_for(lambda _: len(of(svc, target, "page.sent")) >= 1)
    assert await triggers(svc, target) == [("first", 1)]


FLAPPING = """
flapping:
  reopens: 2
  within: 1h
  quiet: 30m
"""
MONDAY = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


async def test_a_flapping_alert_pages_the_series_once_and_closes_after_a_quiet_period(
    kafka: str, tmp_path: Path
) -> None:
    clock = ManualClock(MONDAY)
    settings = test_settings(kafka, tmp_path, rules_dir=noise_rules(tmp_path, FLAPPING))
    async with run_service(settings, clock=clock) as svc:

        def fired() -> int:
            return len(svc.events.of_type("incident.opened")) + len(svc.events.of_type("incident.reopened"))

        for flap in range(10):
            # Each step is stored before the clock moves: its time is the batch's.
            starts = z(clock.now())
            await post(svc, alert("SlowResponses", starts_at=starts, namespace="web", severity="warning"))
            await svc.events.wait_for(lambda _, n=flap + 1: fired() >= n)
            clock.advance(timedelta(minutes=1))
            await post(
                svc, alert("SlowResponses", "resolved", starts_at=starts, namespace="web", severity="warning")
            )
            await svc.events.wait_for(lambda _, n=flap + 1: len(svc.events.of_type("incident.resolved")) >= n)
            clock.advance(timedelta(minutes=1))
        inc = await opened(svc, "SlowResponses")
        # Three openings paged as ever, then the flapping series' one page; seven flaps paged no one.
        assert await triggers(svc, inc) == [("first", 1), ("first", 2), ("first", 3), ("first", 4)]
        [flapping] = [e for e in of(svc, inc, "incident.updated") if "flapping" in e["data"]["reasons"]]
        assert flapping["data"]["flapping"]["since"] == z(MONDAY + timedelta(minutes=6))
        pages = await svc.runtime.store.pages.for_incident(inc)
        assert [p.target for p in pages if p.action == "update"] == ["flapping"]
        # The pagers' incident of the series stays open through the flaps...
        assert [p.opening for p in pages if p.action == "close"] == [1, 2, 3]
        quiet = [e for e in of(svc, inc, "incident.resolved") if e["data"].get("flap")]
        assert len(quiet) == 7  # the resolves from the series' first on

        # ...and closes once it has not reopened for the quiet period.
        clock.advance(timedelta(minutes=30))
        await settled_timers(svc, inc, clock.now())
        [ended] = await svc.events.wait_for(
            lambda _: any("flapping_ended" in e["data"]["reasons"] for e in of(svc, inc, "incident.updated"))
        ) and [e for e in of(svc, inc, "incident.updated") if "flapping_ended" in e["data"]["reasons"]]
        assert ended["data"]["flapping"] is None
        pages = await svc.runtime.store.pages.for_incident(inc)
        assert [p.opening for p in pages if p.action == "close"] == [1, 2, 3, 4]


THRESHOLDS = """
thresholds:
  - name: three-pods
    matchers: ['alertname="PodCrash"']
    min_firing: 3
  - name: ten-minutes
    matchers: ['alertname="DiskSlow"']
    firing_for: 10m
  - name: a-burst
    matchers: ['alertname="Errors"']
    burst: {count: 3, within: 5m}
"""


@pytest.fixture
async def thresholds(kafka: str, tmp_path: Path) -> AsyncIterator[tuple[RunningService, ManualClock]]:
    clock = ManualClock(MONDAY)
    settings = test_settings(kafka, tmp_path, rules_dir=noise_rules(tmp_path, THRESHOLDS))
    async with run_service(settings, clock=clock) as svc:
        yield svc, clock


async def pending_then_paged(svc: RunningService, inc: str) -> dict[str, Any]:
    [held] = await wait_event(svc, inc, "incident.suppressed")
    assert held["data"]["suppression"]["kind"] == "pending"
    listed = await svc.client.get(f"{svc.url}/api/v1/incidents/{inc}")
    assert listed.json()["incident"]["suppression"]["kind"] == "pending"
    return dict(held["data"]["suppression"])


async def test_min_firing_opens_on_the_third_alert(thresholds: tuple[RunningService, ManualClock]) -> None:
    svc, clock = thresholds
    at = z(clock.now())
    await post(svc, *(alert("PodCrash", starts_at=at, namespace="web", pod=p) for p in ("a", "b")))
    inc = await opened(svc, "PodCrash")
    hold = await pending_then_paged(svc, inc)
    assert hold["reason"] == "threshold three-pods: waiting for 3 firing (2 now)"
    assert await triggers(svc, inc) == []
    await post(svc, alert("PodCrash", starts_at=at, namespace="web", pod="c"))
    await wait_event(svc, inc, "incident.unsuppressed")
    await svc.events.wait_for(lambda _: len(of(svc, inc, "page.sent")) >= 1)
    assert await triggers(svc, inc) == [("first", 1)]


async def test_firing_for_opens_when_the_alert_has_fired_long_enough(
    thresholds: tuple[RunningService, ManualClock],
) -> None:
    svc, clock = thresholds
    await post(svc, alert("DiskSlow", starts_at=z(clock.now()), namespace="db"))
    inc = await opened(svc, "DiskSlow")
    hold = await pending_then_paged(svc, inc)
    assert hold["until"] == z(MONDAY + timedelta(minutes=10))
    clock.advance(timedelta(minutes=9))
    await svc.runtime.noise.run_once()
    assert of(svc, inc, "incident.unsuppressed") == []
    clock.advance(timedelta(minutes=1))
    await svc.runtime.noise.run_once()
    await wait_event(svc, inc, "incident.unsuppressed")
    await svc.events.wait_for(lambda _: len(of(svc, inc, "page.sent")) >= 1)
    stored = await svc.runtime.store.incidents.get(inc)
    assert stored is not None and stored.opening_started_at == MONDAY + timedelta(minutes=10)


async def test_a_burst_opens_and_a_trickle_stays_pending(
    thresholds: tuple[RunningService, ManualClock],
) -> None:
    svc, clock = thresholds
    # Two errors six minutes apart: no burst.
    await post(svc, alert("Errors", starts_at=z(clock.now()), namespace="web", pod="a"))
    inc = await opened(svc, "Errors")
    await pending_then_paged(svc, inc)
    clock.advance(timedelta(minutes=6))
    await post(svc, alert("Errors", starts_at=z(clock.now()), namespace="web", pod="b"))
    await svc.events.wait_for(lambda _: len(of(svc, inc, "incident.updated")) >= 1)
    # Then two more within a minute of it: three within five minutes.
    clock.advance(timedelta(minutes=1))
    await post(svc, alert("Errors", starts_at=z(clock.now()), namespace="web", pod="c"))
    await svc.events.wait_for(lambda _: len(of(svc, inc, "incident.updated")) >= 2)
    assert of(svc, inc, "incident.unsuppressed") == []
    await post(svc, alert("Errors", starts_at=z(clock.now()), namespace="web", pod="d"))
    await wait_event(svc, inc, "incident.unsuppressed")
    await svc.events.wait_for(lambda _: len(of(svc, inc, "page.sent")) >= 1)
    assert await triggers(svc, inc) == [("first", 1)]


HEARTBEAT = """
heartbeats:
  - name: alertmanager-watchdog
    matchers: ['alertname="Watchdog"']
    interval: 5m
    severity: SEV-2
"""


async def test_a_missing_heartbeat_opens_an_incident_that_closes_when_it_returns(
    kafka: str, tmp_path: Path
) -> None:
    clock = ManualClock(MONDAY)
    settings = test_settings(kafka, tmp_path, rules_dir=noise_rules(tmp_path, HEARTBEAT))
    async with run_service(settings, clock=clock) as svc:
        watchdog = alert("Watchdog", starts_at=z(MONDAY - timedelta(days=1)), severity="none")
        await post(svc, watchdog)
        await svc.runtime.progress.wait_records(1)
        clock.advance(timedelta(minutes=4))
        await svc.runtime.noise.run_once()
        assert svc.events.of_type("incident.opened") == []  # the Watchdog itself opens nothing

        clock.advance(timedelta(minutes=2))  # six minutes without it
        await svc.runtime.noise.run_once()
        inc = await opened(svc, "HeartbeatMissing", heartbeat="alertmanager-watchdog")
        [event] = of(svc, inc, "incident.opened")
        assert event["data"]["severity"] == "SEV-2"
        assert event["data"]["title"].startswith(
            "alerting pipeline silent: no alertmanager-watchdog heartbeat"
        )
        await svc.events.wait_for(lambda _: len(of(svc, inc, "page.sent")) >= 1)
        # Looked at again, it is still missing: published once.
        await svc.runtime.noise.run_once()

        await post(svc, watchdog)  # Alertmanager's repeat: it lives again
        await svc.runtime.progress.wait_records(3)
        await svc.runtime.noise.run_once()
        await wait_event(svc, inc, "incident.resolved")
        assert len(svc.events.of_type("incident.opened")) == 1


async def test_a_pushed_alert_resolves_when_prometheus_stops_resending_it(kafka: str, tmp_path: Path) -> None:
    clock = ManualClock(MONDAY)
    async with run_service(test_settings(kafka, tmp_path), clock=clock) as svc:

        async def push(ends: datetime) -> None:
            pushed = [
                {
                    "labels": {"alertname": "QueueStuck", "namespace": "jobs", "severity": "warning"},
                    "annotations": {"summary": "the queue is stuck"},
                    "startsAt": z(MONDAY),
                    "endsAt": z(ends),
                }
            ]
            resp = await svc.client.post(f"{svc.url}/api/v2/alerts", json=pushed)
            assert resp.status_code == 200, resp.text

        await push(MONDAY + timedelta(minutes=3))
        inc = await opened(svc, "QueueStuck")
        clock.advance(timedelta(minutes=2))
        # Prometheus re-sends it (every resend delay) with a later endsAt: still alive after 3 min.
        await push(clock.now() + timedelta(minutes=3))
        await svc.runtime.progress.wait_records(2)
        clock.advance(timedelta(minutes=2))
        await svc.runtime.noise.run_once()
        assert of(svc, inc, "incident.resolved") == []
        clock.advance(timedelta(minutes=2))  # its last endsAt passed without a re-send
        await svc.runtime.noise.run_once()
        [resolved] = await wait_event(svc, inc, "incident.resolved")
        assert resolved["data"]["resolved_at"] == z(MONDAY + timedelta(minutes=6))
