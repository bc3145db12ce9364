"""PagerDuty Events API v2 through httpx against a local stand-in for the API."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from service.notify.base import PageError, PageRequest, idempotency_key
from service.notify.pagerduty import PagerDutyNotifier
from tests.support.incidents import make_incident
from tests.support.pagerduty_api import FakePagerDuty, Reply
from tests.support.payloads import alert, body, webhook
from tests.support.service import run_service, test_settings


def request(action: str = "trigger", priority: str = "P1", **kw: Any) -> PageRequest:
    inc = make_incident("inc-pd")
    return PageRequest(
        action=action,  # type: ignore[arg-type]
        incident=inc.snapshot(),
        opening=1,
        idempotency_key=idempotency_key(inc.id, 1),
        message="[INCIDENT] SEV-1: ApiDown",
        description="- Status: Investigating",
        priority=priority,
        **kw,
    )


@pytest.fixture
async def fake():  # type: ignore[no-untyped-def]
    async with FakePagerDuty() as server:
        yield server


async def test_trigger_event_shape_and_severity_mapping(fake: FakePagerDuty) -> None:
    pd = PagerDutyNotifier("R0UTING", fake.url, 5)
    try:
        for priority, severity in (("P1", "critical"), ("P2", "error"), ("P3", "warning"), ("P4", "info")):
            assert await pd.send(request(priority=priority)) == idempotency_key("inc-pd", 1)
            event = fake.events[-1]
            assert event["payload"]["severity"] == severity
        assert event["routing_key"] == "R0UTING" and event["event_action"] == "trigger"
        assert event["dedup_key"] == idempotency_key("inc-pd", 1)
        assert event["payload"]["summary"] == "[INCIDENT] SEV-1: ApiDown"
        assert event["payload"]["custom_details"]["incident_id"] == "inc-pd"
        assert list(fake.open.values()) == [4]  # one PagerDuty incident, triggered four times
    finally:
        await pd.aclose()


async def test_ack_acknowledges_and_close_resolves_by_dedup_key(fake: FakePagerDuty) -> None:
    pd = PagerDutyNotifier("R0UTING", fake.url, 5)
    try:
        await pd.send(request())
        await pd.send(request(action="ack"))
        assert fake.events[-1]["event_action"] == "acknowledge"
        assert fake.events[-1]["dedup_key"] == fake.events[0]["dedup_key"]
        await pd.send(request(action="close"))
        assert fake.events[-1]["event_action"] == "resolve"
        assert fake.events[-1]["dedup_key"] == fake.events[0]["dedup_key"]
        assert "payload" not in fake.events[-1]
        assert fake.open == {}
    finally:
        await pd.aclose()


async def test_fake_opens_a_new_incident_for_a_resolved_key_as_pagerduty_does(fake: FakePagerDuty) -> None:
    # Why a reopened incident needs a new dedup_key: PagerDuty does not revive a resolved
    # incident, a trigger for its key creates (and pages for) a new one.
    pd = PagerDutyNotifier("R0UTING", fake.url, 5)
    try:
        await pd.send(request())
        await pd.send(request())
        key = ("R0UTING", idempotency_key("inc-pd", 1))
        assert fake.created == [key]  # deduplicated while open
        await pd.send(request(action="close"))
        await pd.send(request())
        assert fake.created == [key, key]
        assert fake.open == {key: 1}
    finally:
        await pd.aclose()


async def test_each_role_routing_key_gets_the_page(fake: FakePagerDuty) -> None:
    pd = PagerDutyNotifier("DEFAULT", fake.url, 5)
    try:
        responders = ({"routing_key": "SECURITY"}, {"routing_key": "LEGAL"}, {"routing_key": "SECURITY"})
        await pd.send(request(responders=responders, roles=("Security", "Legal")))
        assert [e["routing_key"] for e in fake.events] == ["SECURITY", "LEGAL"]
    finally:
        await pd.aclose()


@pytest.mark.parametrize(
    ("reply", "retryable", "retry_after", "needle"),
    [
        (Reply(429, {"status": "throttled"}, {"Retry-After": "30"}), True, 30.0, "HTTP 429"),
        (Reply(500, {"status": "error"}), True, None, "HTTP 500"),
        (Reply(502, None), True, None, "HTTP 502"),
        (Reply(503, {"status": "unavailable"}), True, None, "HTTP 503"),
        (
            Reply(400, {"status": "invalid event", "errors": ["'payload.severity' is invalid"]}),
            False,
            None,
            "payload.severity",
        ),
        (Reply(403, {"status": "forbidden"}), False, None, "HTTP 403"),
    ],
)
async def test_errors_are_classified_and_sent_once(
    fake: FakePagerDuty, reply: Reply, retryable: bool, retry_after: float | None, needle: str
) -> None:
    fake.script(reply)
    pd = PagerDutyNotifier("R0UTING", fake.url, 5)
    try:
        with pytest.raises(PageError) as info:
            await pd.send(request())
        assert info.value.retryable is retryable
        assert info.value.retry_after == retry_after
        assert needle in info.value.reason
        assert len(fake.events) == 1  # no retry hidden in the notifier
    finally:
        await pd.aclose()


async def test_timeout_is_retryable(fake: FakePagerDuty) -> None:
    release = threading.Event()
    fake.script(Reply(202, {"status": "success"}, hold=release))
    pd = PagerDutyNotifier("R0UTING", fake.url, 0.3)
    try:
        with pytest.raises(PageError) as info:
            await pd.send(request())
        assert not release.is_set()  # the answer was still held when the notifier gave up
        assert info.value.retryable and "timed out" in info.value.reason
        assert info.value.retry_after is None
        assert len(fake.events) == 1
    finally:
        release.set()
        await pd.aclose()


async def test_connection_refused_is_retryable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, never listening
        port = s.getsockname()[1]
        pd = PagerDutyNotifier("R0UTING", f"http://127.0.0.1:{port}", 2)
        try:
            with pytest.raises(PageError) as info:
                await pd.send(request())
            assert info.value.retryable and "unreachable" in info.value.reason
        finally:
            await pd.aclose()


def test_missing_or_empty_routing_key_is_refused(tmp_path: Path) -> None:
    from service.config import Settings

    with pytest.raises(ValueError, match="INCIDENTD_PAGERDUTY_ROUTING_KEY"):
        PagerDutyNotifier.from_settings(Settings())
    with pytest.raises(ValueError, match="non-empty"):
        PagerDutyNotifier.from_settings(Settings(pagerduty_routing_key=" "))


async def test_service_retries_pagerduty_then_resolves_the_same_key(
    kafka: str, tmp_path: Path, fake: FakePagerDuty
) -> None:
    fake.script(Reply(500, {"status": "error"}))
    settings = test_settings(kafka, tmp_path, pagers=["pagerduty"])
    pd = PagerDutyNotifier("R0UTING", fake.url, 5)
    async with run_service(settings, notifiers={"pagerduty": pd}) as svc:
        doc = body(webhook(alert("ApiDown", namespace="pd")))
        for _ in range(3):
            assert (await svc.post_webhook(doc)).status_code == 202
        await svc.events.wait_types({"page.failed": 1, "page.sent": 1})
        failed = svc.events.of_type("page.failed")[0]["data"]["page"]
        sent = svc.events.of_type("page.sent")[0]["data"]["page"]
        assert (failed["integration"], failed["retrying"], failed["attempt"]) == ("pagerduty", True, 1)
        assert (sent["integration"], sent["attempt"]) == ("pagerduty", 2)
        assert list(fake.open) == [("R0UTING", sent["idempotency_key"])]
        assert fake.created == [("R0UTING", sent["idempotency_key"])]  # one PagerDuty incident
        assert failed["idempotency_key"] == sent["idempotency_key"]
        resolved = alert("ApiDown", status="resolved", ends_at="2026-11-26T10:05:00Z", namespace="pd")
        assert (await svc.post_webhook(body(webhook(resolved)))).status_code == 202
        await fake.wait_for(lambda: ("R0UTING", sent["idempotency_key"]) in fake.resolved)
        assert fake.open == {}
        assert [e["event_action"] for e in fake.events] == ["trigger", "trigger", "resolve"]


async def test_a_pagerduty_outage_429_500_hanging_then_recovering_pages_each_incident_once(
    kafka: str, tmp_path: Path, fake: FakePagerDuty
) -> None:
    hang = threading.Event()
    fake.script(
        Reply(429, {"status": "throttle"}, {"Retry-After": "1"}),
        Reply(500, {"status": "error"}),
        Reply(202, {"status": "success"}, hold=hang),  # answers only after the client gave up
        Reply(503, {"status": "error"}),
    )
    settings = test_settings(kafka, tmp_path, pagers=["pagerduty"])
    pd = PagerDutyNotifier("R0UTING", fake.url, 0.5)
    try:
        async with run_service(settings, notifiers={"pagerduty": pd}) as svc:
            names = ["OutageA", "OutageB", "OutageC"]
            for name in names:
                doc = body(webhook(alert(name, namespace="pd-outage", severity="critical")))
                assert (await svc.post_webhook(doc)).status_code == 202
            await svc.events.wait_types({"page.sent": 3}, timeout=60)
            failed = svc.events.of_type("page.failed")
            assert len(failed) >= 4 and all(f["data"]["page"]["retrying"] for f in failed)
            sent = svc.events.of_type("page.sent")
            assert len({s["subject"] for s in sent}) == 3
            # One PagerDuty incident per page: every retry carried the same dedup key.
            keys = [("R0UTING", s["data"]["page"]["idempotency_key"]) for s in sent]
            assert sorted(fake.created) == sorted(keys)
    finally:
        hang.set()
