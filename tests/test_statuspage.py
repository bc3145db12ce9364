"""The Statuspage incident: through httpx against a local stand-in, and through the
running service (created on open for a SEV-1, updated by [UPDATE]s, resolved on resolve)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from service.clock import ManualClock
from service.config import Settings
from service.context import Context
from service.emit.cloudevents import EventFactory
from service.models import PageAction
from service.notify.base import PageError, PageRequest, idempotency_key
from service.notify.statuspage import StatuspageNotifier
from service.notify.worker import PageWorker
from service.observability.metrics import Metrics
from service.ruleset import RuleSet
from service.ruleset.models import ContactsFile
from service.store.pages import NewPage
from service.store.store import Effects, Store
from tests.support.incidents import make_incident
from tests.support.payloads import alert, body, webhook
from tests.support.service import RunningService, run_service, test_settings
from tests.support.statuspage_api import FakeStatuspage, Reply
from tests.support.time import T0


def request(
    action: str = "trigger",
    target: str = "first",
    severity: str = "SEV-1",
    message: str = "",
    **snapshot: Any,
) -> PageRequest:
    inc = make_incident("inc-s", severity=severity)
    return PageRequest(
        action=PageAction(action),
        incident={**inc.snapshot(), "impact": "Users cannot log in", **snapshot},
        opening=1,
        idempotency_key=idempotency_key(inc.id, 1, target),
        message=message,
        description="",
        priority="P1" if severity == "SEV-1" else "P4",
        target=target,
        public=severity in ("SEV-1", "SEV-2"),  # severities.yaml's status_page, as shipped
    )


def statuspage(fake: FakeStatuspage) -> StatuspageNotifier:
    return StatuspageNotifier(fake.api_key, fake.page_id, fake.url, 5)


@pytest.fixture
async def fake():  # type: ignore[no-untyped-def]
    async with FakeStatuspage() as server:
        yield server


async def test_trigger_creates_update_patches_close_resolves(fake: FakeStatuspage) -> None:
    sp = statuspage(fake)
    try:
        assert await sp.send(request()) == "sp1"
        [created] = fake.incidents
        assert created["name"] == "ApiDown" and created["status"] == "investigating"
        assert created["impact"] == "critical"
        assert created["metadata"] == {"incidentd": {"key": idempotency_key("inc-s", 1)}}
        assert "Users cannot log in" in created["incident_updates"][0]["body"]
        assert {r.auth for r in fake.requests} == {"OAuth SP-KEY"}
        # Sent again: found among the unresolved ones, not created twice.
        assert await sp.send(request()) == "sp1"
        update = request(
            "update", target="reminder:1", message="[UPDATE] fix rolling out", phase="mitigating"
        )
        assert await sp.send(update) == "sp1"
        assert created["status"] == "monitoring"
        assert created["incident_updates"][-1]["body"] == "[UPDATE] fix rolling out"
        assert await sp.send(request("ack")) is None
        assert await sp.send(request("close", message="[RESOLVED] SEV-1: ApiDown")) == "sp1"
        assert created["status"] == "resolved"
        assert await sp.send(request("close")) is None  # nothing unresolved left to resolve
        assert len(fake.incidents) == 1 and len(fake.calls("POST")) == 1
    finally:
        await sp.aclose()


async def test_low_severities_and_other_pages_create_nothing(fake: FakeStatuspage) -> None:
    sp = statuspage(fake)
    try:
        assert await sp.send(request(severity="SEV-4")) is None
        assert await sp.send(request(target="sev1-30min")) is None
        assert await sp.send(request(target="backup:first")) is None
        assert await sp.send(request(target="postmortem:1")) is None
        # Triage findings are for the team, not the public page.
        assert await sp.send(request("update", target="triage", message="Triage: 3 of 6 failed")) is None
        assert fake.requests == []
        # An [UPDATE] or close of an incident that has none on the page: looked up, nothing else.
        assert await sp.send(request("update", target="reminder:1", severity="SEV-4")) is None
        assert await sp.send(request("close", severity="SEV-4")) is None
        assert [r.method for r in fake.requests] == ["GET", "GET"]
    finally:
        await sp.aclose()


async def test_a_lost_create_answer_is_found_on_the_retry(fake: FakeStatuspage) -> None:
    fake.script("POST", Reply(504, {"error": "gateway timeout"}, commit=True))
    sp = statuspage(fake)
    try:
        with pytest.raises(PageError) as info:
            await sp.send(request())
        assert info.value.retryable and "HTTP 504" in info.value.reason
        assert await sp.send(request()) == "sp1"
        assert len(fake.incidents) == 1 and len(fake.calls("POST")) == 1
    finally:
        await sp.aclose()


@pytest.mark.parametrize(
    ("method", "reply", "retryable", "retry_after"),
    [
        ("POST", Reply(503), True, None),
        ("GET", Reply(500), True, None),
        ("POST", Reply(420, {"error": "rate limited"}, (("Retry-After", "2"),)), False, 2.0),
        ("POST", Reply(429, {"error": "rate limited"}, (("Retry-After", "2"),)), True, 2.0),
        ("POST", Reply(422, {"error": "name can't be blank"}), False, None),
    ],
)
async def test_errors_are_classified_and_create_nothing(
    fake: FakeStatuspage, method: str, reply: Reply, retryable: bool, retry_after: float | None
) -> None:
    fake.script(method, reply)
    sp = statuspage(fake)
    try:
        with pytest.raises(PageError) as info:
            await sp.send(request())
        assert info.value.retryable is retryable and info.value.retry_after == retry_after
        assert fake.incidents == []
    finally:
        await sp.aclose()


def test_settings_are_required(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="INCIDENTD_STATUSPAGE_PAGE_ID"):
        StatuspageNotifier.from_settings(Settings())
    key = tmp_path / "key"
    key.write_text("K\n")
    settings = Settings(statuspage_page_id="pg", statuspage_api_key_file=key)
    assert isinstance(StatuspageNotifier.from_settings(settings), StatuspageNotifier)


# --- through the page worker -------------------------------------------------------------


async def test_worker_retries_into_one_incident_and_never_fails_over(
    store: Store, rules: RuleSet, fake: FakeStatuspage
) -> None:
    # Three 503s: a pager would now be failed over to the role's fallback (Slack); a status
    # page that is down pages nobody elsewhere. The fourth attempt creates the incident.
    fake.script("POST", *[Reply(503, {"error": "down"})] * 3)
    contacts = {"roles": {"DevOps": {"opsgenie": {"team": "devops"}, "fallback": "slack"}}}
    rules = rules.model_copy(update={"contacts": ContactsFile.model_validate(contacts)})
    clock, sp = ManualClock(T0), statuspage(fake)
    settings = Settings(page_backoff_initial_seconds=10, page_backoff_max_seconds=60)
    ctx = Context(store, rules, EventFactory("events", "io.incidentd", "/test"), clock, Metrics(), settings)
    w = PageWorker(ctx, {"statuspage": sp})
    page = NewPage("inc-1", "statuspage", PageAction.TRIGGER, 1, "first", ("DevOps",))
    await store.commit(Effects(incidents=[make_incident()], pages=[page]), T0)
    try:
        for _ in range(6):
            await w.run_once()
            await w.drain()
            clock.advance(timedelta(minutes=2))
        views = await store.pages.for_incident("inc-1")
        assert [(v.integration, v.action, v.status, v.attempts) for v in views] == [
            ("statuspage", "trigger", "sent", 4)
        ]
        assert len(fake.incidents) == 1 and len(fake.calls("POST")) == 4
        timeline = [json.loads(r.value) for r in await store.outbox.unpublished(100)]
        kinds = [(e["type"].rsplit(".", 1)[-1], e["data"]["page"].get("failover")) for e in timeline]
        assert kinds == [("failed", None)] * 3 + [("sent", None)]
        assert timeline[-1]["data"]["page"]["reference"] == "sp1"
    finally:
        await sp.aclose()


def sp_worker(store: Store, rules: RuleSet, sp: StatuspageNotifier, clock: ManualClock) -> PageWorker:
    settings = Settings(page_backoff_initial_seconds=10, page_backoff_max_seconds=60)
    ctx = Context(store, rules, EventFactory("events", "io.incidentd", "/test"), clock, Metrics(), settings)
    return PageWorker(ctx, {"statuspage": sp})


async def test_an_ack_does_not_stop_the_status_page_and_a_lost_create_is_still_resolved(
    store: Store, rules: RuleSet, fake: FakeStatuspage
) -> None:
    # The create is lost (created, then a 504); the incident is acknowledged, which makes a
    # pager's retry moot but not the status page's: the retry finds the incident the lost
    # create opened, and the close resolves it.
    fake.script("POST", Reply(504, {"error": "gateway timeout"}, commit=True))
    clock, sp = ManualClock(T0), statuspage(fake)
    w = sp_worker(store, rules, sp, clock)
    inc = make_incident()
    page = NewPage("inc-1", "statuspage", PageAction.TRIGGER, 1, "first", ("DevOps",))
    await store.commit(Effects(incidents=[inc], pages=[page]), T0)
    try:
        await w.run_once()
        await w.drain()
        stored = await store.incidents.get("inc-1")
        assert stored is not None
        stored.acknowledged_at, stored.acknowledged_by = T0, "alice"
        await store.commit(Effects(incidents=[stored]), T0)
        clock.advance(timedelta(seconds=13))
        await w.run_once()
        await w.drain()
        views = await store.pages.for_incident("inc-1")
        assert [(v.action, v.status, v.attempts) for v in views] == [("trigger", "sent", 2)]
        assert len(fake.incidents) == 1 and fake.incidents[0]["status"] == "investigating"
        close = NewPage("inc-1", "statuspage", PageAction.CLOSE, 1)
        await store.commit(Effects(pages=[close]), T0)
        await w.run_once()
        await w.drain()
        assert fake.incidents[0]["status"] == "resolved" and len(fake.incidents) == 1
    finally:
        await sp.aclose()


# --- through the service ------------------------------------------------------------------


async def open_incident(svc: RunningService, name: str) -> dict[str, Any]:
    await svc.post_webhook(body(webhook(alert(name, namespace="sp"))))
    await svc.events.wait_for(
        lambda _: any(
            e["data"]["group_labels"]["alertname"] == name for e in svc.events.of_type("incident.opened")
        )
    )
    [opened] = [
        e for e in svc.events.of_type("incident.opened") if e["data"]["group_labels"]["alertname"] == name
    ]
    return dict(opened["data"])


def pages(svc: RunningService, kind: str, inc_id: str) -> list[dict[str, Any]]:
    return [e["data"]["page"] for e in svc.events.of_type(kind) if e["subject"] == inc_id]


async def test_service_sev1_creates_once_despite_a_503_updates_and_resolves(
    kafka: str, tmp_path: Path, fake: FakeStatuspage
) -> None:
    fake.script("POST", Reply(503, {"error": "Service Unavailable"}))
    settings = test_settings(kafka, tmp_path, pagers=["statuspage"])
    async with run_service(settings, notifiers={"statuspage": statuspage(fake)}) as svc:
        inc = await open_incident(svc, "ApiDown")
        await fake.wait_for(lambda: len(fake.incidents) == 1)
        await svc.events.wait_for(lambda _: len(pages(svc, "page.sent", inc["id"])) == 1)
        [failed] = pages(svc, "page.failed", inc["id"])
        [sent] = pages(svc, "page.sent", inc["id"])
        assert (failed["action"], failed["retrying"], failed["attempt"]) == ("trigger", True, 1)
        assert (sent["action"], sent["attempt"], sent["reference"]) == ("trigger", 2, "sp1")
        [created] = fake.incidents
        assert created["name"] == inc["title"] and created["status"] == "investigating"

        base = f"{svc.url}/api/v1/incidents/{inc['id']}"
        resp = await svc.client.post(f"{base}/status", json={"phase": "identified", "by": "carol"})
        assert resp.status_code == 200
        resp = await svc.client.post(f"{base}/updates", json={"text": "rolling back", "by": "carol"})
        assert resp.status_code == 200
        # The new phase went out at once, then the person's [UPDATE] with its text.
        await fake.wait_for(lambda: any("rolling back" in u["body"] for u in created["incident_updates"]))
        assert created["status"] == "identified"

        assert (await svc.client.post(f"{base}/resolve", json={"by": "carol"})).status_code == 200
        await fake.wait_for(lambda: created["status"] == "resolved")
        await svc.events.wait_for(
            lambda _: any(p["action"] == "close" for p in pages(svc, "page.sent", inc["id"]))
        )
        assert len(fake.incidents) == 1 and len(fake.calls("POST")) == 2  # the 503, then the create

        # A SEV-4 opens no Statuspage incident.
        minor = await open_incident(svc, "UIGlitch")
        assert minor["severity"] == "SEV-4"
        await svc.events.wait_for(lambda _: len(pages(svc, "page.sent", minor["id"])) == 1)
        assert pages(svc, "page.sent", minor["id"])[0]["reference"] is None
        assert len(fake.incidents) == 1
