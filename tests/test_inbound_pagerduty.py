"""PagerDuty V3 webhooks coming back: an incident acknowledged or resolved in PagerDuty
acknowledges or resolves the incidentd incident it pages for, through the whole service.

Pages go to the Events API stand-in (``FakePagerDuty``) and to the console; the webhook
bodies are V3 ``incident.*`` events as PagerDuty documents them (developer.pagerduty.com,
Webhooks > V3 Overview), signed as PagerDuty signs them (Webhooks > Verifying Signatures).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from sqlalchemy import Connection, text

from service.clock import iso
from service.http.inbound.pagerduty import PATH
from service.models import PageAction
from service.notify.base import Notifier, idempotency_key
from service.notify.console import ConsoleNotifier
from service.notify.pagerduty import PagerDutyNotifier
from service.store import schema
from service.store.pages import NewPage, PageKey
from service.store.store import Effects, Store
from tests.support.inbound import assert_unchanged, events, pages, shown
from tests.support.pagerduty_api import FakePagerDuty
from tests.support.payloads import alert, body, webhook
from tests.support.service import RunningService, run_service, test_settings

SECRET = "pd-webhook-s3cret"
ROUTING = "R0UTING"


@dataclass
class Setup:
    svc: RunningService
    pd: FakePagerDuty


@pytest.fixture(scope="module")
async def setup(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    tmp = tmp_path_factory.mktemp("inbound-pagerduty")
    settings = test_settings(kafka, tmp, pagers=["pagerduty", "console"], pagerduty_webhook_secret=SECRET)
    async with FakePagerDuty() as pd:
        notifiers: dict[str, Notifier] = {
            "pagerduty": PagerDutyNotifier(ROUTING, pd.url, 5.0),
            "console": ConsoleNotifier(io.StringIO()),
        }
        async with run_service(settings, notifiers=notifiers) as svc:
            yield Setup(svc, pd)


def v3_event(event_type: str, incident_key: str | None, who: str, *, age: float = 0.0) -> dict[str, Any]:
    """A V3 webhook body, as PagerDuty sends it."""
    return {
        "event": {
            "id": "01DEN4HPBQAJRFJNOMPQ9ROWQU",
            "event_type": event_type,
            "resource_type": "incident",
            "occurred_at": iso(datetime.now(UTC) - timedelta(seconds=age)),
            "agent": {
                "html_url": "https://acme.pagerduty.com/users/PLH1HKV",
                "id": "PLH1HKV",
                "self": "https://api.pagerduty.com/users/PLH1HKV",
                "summary": who,
                "type": "user_reference",
            },
            "client": None,
            "data": {
                "id": "PGR0VU2",
                "type": "incident",
                "self": "https://api.pagerduty.com/incidents/PGR0VU2",
                "html_url": "https://acme.pagerduty.com/incidents/PGR0VU2",
                "number": 2,
                "status": event_type.removeprefix("incident."),
                "incident_key": incident_key,
                "created_at": "2026-11-26T10:00:00Z",
                "title": "[INCIDENT] SEV-1: ApiDown",
                "service": {"id": "PF9KMXH", "summary": "API Service", "type": "service_reference"},
                "assignees": [{"id": "PTUXL6G", "summary": who, "type": "user_reference"}],
                "urgency": "high",
                "resolve_reason": None,
            },
        }
    }


def signature(raw: bytes, *secrets: str) -> str:
    return ",".join("v1=" + hmac.new(s.encode(), raw, hashlib.sha256).hexdigest() for s in secrets)


async def deliver(s: Setup, doc: dict[str, Any] | bytes, *secrets: str) -> httpx.Response:
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    headers = {"Content-Type": "application/json", "X-Webhook-Id": "9f2c6e0c-5d6b-4a36-a8b3-1a2b3c4d5e6f"}
    if secrets:
        headers["X-PagerDuty-Signature"] = signature(raw, *secrets)
    return await s.svc.client.post(s.svc.url + PATH, content=raw, headers=headers)


async def open_incident(s: Setup, name: str) -> tuple[str, str]:
    """Open an incident paged to PagerDuty; its id and the page's dedup_key."""
    assert (await s.svc.post_webhook(body(webhook(alert(name, namespace="inbound-pd"))))).status_code == 202

    def paged() -> list[dict[str, Any]]:
        return [
            e
            for e in s.svc.events.of_type("page.sent")
            if e["data"]["group_labels"].get("alertname") == name
            and e["data"]["page"]["integration"] == "pagerduty"
        ]

    await s.svc.events.wait_for(lambda _: bool(paged()))
    [sent] = paged()
    key = str(sent["data"]["page"]["idempotency_key"])
    assert (ROUTING, key) in s.pd.open  # the PagerDuty incident people will act on
    return str(sent["subject"]), key


async def test_pagerduty_good_signature_ack_acknowledges_and_is_not_sent_back_to_pagerduty(
    setup: Setup,
) -> None:
    s = setup
    incident_id, key = await open_incident(s, "PdAck")

    resp = await deliver(s, v3_event("incident.acknowledged", key, "Dana Oncall"), SECRET)

    assert (resp.status_code, resp.json()["result"]) == (200, "acknowledged")
    detail = await shown(s.svc, incident_id)
    assert detail["incident"]["acknowledged_by"] == "Dana Oncall"
    await s.svc.events.wait_for(lambda _: bool(events(s.svc, incident_id, "incident.acknowledged")))
    [acked] = events(s.svc, incident_id, "incident.acknowledged")
    assert acked["data"]["command"] == {"command": "ack", "by": "Dana Oncall", "source": "pagerduty"}
    # The other pagers hear of it; PagerDuty, where it was pressed, is not sent it back.
    # Each pager gets the ack; pagerduty's own only for its pages not answered there (none here).
    assert sorted(pages(detail, "ack")) == ["console", "pagerduty"]
    await s.svc.events.wait_for(
        lambda _: any(e["data"]["page"]["action"] == "ack" for e in events(s.svc, incident_id, "page.sent"))
    )
    await s.svc.runtime.pages.drain()
    assert [e["event_action"] for e in s.pd.events if e["dedup_key"] == key] == ["trigger"]

    # PagerDuty delivers at least once: a repeat changes nothing and is still a 2xx.
    again = await deliver(s, v3_event("incident.acknowledged", key, "Dana Oncall"), SECRET)
    assert (again.status_code, again.json()["result"]) == (200, "unchanged")


async def test_pagerduty_resolve_resolves_the_incident_and_is_not_sent_back(setup: Setup) -> None:
    s = setup
    incident_id, key = await open_incident(s, "PdResolve")

    resp = await deliver(s, v3_event("incident.resolved", key, "Eve Oncall"), SECRET)

    assert (resp.status_code, resp.json()["result"]) == (200, "resolved")
    detail = await shown(s.svc, incident_id)
    assert detail["incident"]["status"] == "resolved"
    # Each pager gets the close; pagerduty's own only for its pages not answered there (none here).
    assert sorted(pages(detail, "close")) == ["console", "pagerduty"]
    await s.svc.events.wait_for(lambda _: bool(events(s.svc, incident_id, "incident.resolved")))
    [resolved] = events(s.svc, incident_id, "incident.resolved")
    assert (resolved["data"]["command"]["by"], resolved["data"]["command"]["source"]) == (
        "Eve Oncall",
        "pagerduty",
    )

    late_ack = await deliver(s, v3_event("incident.acknowledged", key, "Dana Oncall"), SECRET)
    assert (late_ack.status_code, late_ack.json()["result"]) == (200, "ignored")


async def test_pagerduty_signature_of_a_rotated_secret_among_several_is_accepted(setup: Setup) -> None:
    s = setup
    incident_id, key = await open_incident(s, "PdRotation")

    resp = await deliver(s, v3_event("incident.acknowledged", key, "Dana Oncall"), "the-old-secret", SECRET)

    assert (resp.status_code, resp.json()["result"]) == (200, "acknowledged")
    assert (await shown(s.svc, incident_id))["incident"]["acknowledged_by"] == "Dana Oncall"


async def test_pagerduty_bad_signature_is_401_and_changes_nothing(setup: Setup) -> None:
    s = setup
    incident_id, key = await open_incident(s, "PdBadSignature")
    doc = v3_event("incident.resolved", key, "Mallory")

    wrong = await deliver(s, doc, "not-the-secret")
    assert wrong.status_code == 401
    assert "X-PagerDuty-Signature" in wrong.json()["error"]
    assert (await deliver(s, doc)).status_code == 401  # unsigned
    raw = json.dumps(doc).encode()
    tampered = raw.replace(b"Mallory", b"Dana Oncall")
    resp = await s.svc.client.post(
        s.svc.url + PATH, content=tampered, headers={"X-PagerDuty-Signature": signature(raw, SECRET)}
    )
    assert resp.status_code == 401
    v0 = await s.svc.client.post(s.svc.url + PATH, content=raw, headers={"X-PagerDuty-Signature": "v0=abc"})
    assert v0.status_code == 401 and "no v1" in v0.json()["error"]

    await assert_unchanged(s.svc, incident_id)


async def test_pagerduty_stale_event_is_401_and_changes_nothing(setup: Setup) -> None:
    s = setup
    incident_id, key = await open_incident(s, "PdStale")

    # Signed, but it happened two hours ago: past PagerDuty's ~20 minutes of retries, a replay.
    resp = await deliver(s, v3_event("incident.acknowledged", key, "Dana Oncall", age=7200), SECRET)

    assert resp.status_code == 401
    assert "stale" in resp.json()["error"] and "occurred_at" in resp.json()["error"]
    await assert_unchanged(s.svc, incident_id)


async def test_pagerduty_unknown_keys_and_other_events_are_ignored_with_200(setup: Setup) -> None:
    s = setup
    incident_id, key = await open_incident(s, "PdIgnored")

    unknown = await deliver(s, v3_event("incident.acknowledged", "some-other-tools-key", "Dana"), SECRET)
    assert (unknown.status_code, unknown.json()["result"]) == (200, "ignored")
    no_key = await deliver(s, v3_event("incident.acknowledged", None, "Dana"), SECRET)
    assert (no_key.status_code, no_key.json()["result"]) == (200, "ignored")
    other = await deliver(s, v3_event("incident.priority_updated", key, "Dana"), SECRET)
    assert (other.status_code, other.json()["result"]) == (200, "ignored")

    await assert_unchanged(s.svc, incident_id)


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "'event' object"),
        (b'{"event": {"event_type": 7}}', "event.event_type"),
        (
            b'{"event": {"event_type": "incident.acknowledged", "occurred_at": "yesterday"}}',
            "event.occurred_at",
        ),
    ],
)
async def test_pagerduty_malformed_bodies_are_400_with_the_problem(
    setup: Setup, raw: bytes, complaint: str
) -> None:
    resp = await deliver(setup, raw, SECRET)

    assert resp.status_code == 400
    assert complaint in resp.json()["error"]


async def test_pagerduty_event_without_the_incident_is_400(setup: Setup) -> None:
    doc = v3_event("incident.acknowledged", "k", "Dana")
    doc["event"]["data"] = None

    resp = await deliver(setup, doc, SECRET)

    assert resp.status_code == 400
    assert "event.data" in resp.json()["error"]


# -- pages sent before the key column existed ---------------------------------------------------------


def _paged_at_0002(conn: Connection) -> None:
    """A database at 0002 with an open and a resolved incident, each paged once."""
    command.upgrade(schema.alembic_config(conn), "0002")
    for incident_id, status in (("inc-open", "open"), ("inc-done", "resolved")):
        conn.execute(
            text(
                "INSERT INTO incidents (id, group_key, is_current, status, severity, opened_at, version, data)"
                " VALUES (:id, :id, true, :status, 'SEV-1', 1.0, 1, '{}')"
            ),
            {"id": incident_id, "status": status},
        )
        conn.execute(
            text(
                "INSERT INTO page_jobs (incident_id, integration, action, opening, target, status,"
                " attempts, next_attempt_at, created_at, updated_at)"
                " VALUES (:id, 'pagerduty', 'trigger', 2, 'first', 'sent', 1, 1.0, 1.0, 1.0)"
            ),
            {"id": incident_id},
        )


async def test_pagerduty_pages_of_open_incidents_sent_before_the_upgrade_are_found_by_key(
    tmp_path: Path,
) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    try:
        async with store.db.write() as conn:
            await conn.run_sync(_paged_at_0002)
        await store.start()  # upgrades to head

        found = await store.pages.find_by_key(idempotency_key("inc-open", 2), "pagerduty")
        assert found == PageKey("inc-open", 2, "first", "pagerduty")
        # Resolved incidents are not filled in: nothing can be acknowledged on them.
        assert await store.pages.find_by_key(idempotency_key("inc-done", 2)) is None
    finally:
        await store.close()


async def test_resolving_the_first_page_in_pagerduty_still_closes_its_escalations_there(setup: Setup) -> None:
    s = setup
    incident_id, key = await open_incident(s, "PdEscalated")
    escalate = {"roles": ["CTO"], "reason": "board meeting", "by": "carol"}
    resp = await s.svc.client.post(f"{s.svc.url}/api/v1/incidents/{incident_id}/escalate", json=escalate)
    assert resp.status_code == 200
    escalation_key = idempotency_key(incident_id, 1, "manual:1")
    await s.svc.events.wait_for(
        lambda _: any(
            e["data"]["page"]["idempotency_key"] == escalation_key
            for e in events(s.svc, incident_id, "page.sent")
            if e["data"]["page"]["integration"] == "pagerduty"
        )
    )

    resolved = await deliver(s, v3_event("incident.resolved", key, "Eve Oncall"), SECRET)
    assert (resolved.status_code, resolved.json()["result"]) == (200, "resolved")
    await s.svc.events.wait_for(
        lambda _: any(
            e["data"]["page"]["action"] == "close" and e["data"]["page"]["integration"] == "pagerduty"
            for e in events(s.svc, incident_id, "page.sent")
        )
    )
    # The pressed page is not resolved again; the escalation's PagerDuty incident is.
    assert [e["event_action"] for e in s.pd.events if e["dedup_key"] == key] == ["trigger"]
    assert [e["event_action"] for e in s.pd.events if e["dedup_key"] == escalation_key] == [
        "trigger",
        "resolve",
    ]


async def test_clearing_an_approval_request_in_pagerduty_leaves_the_incident_alone(setup: Setup) -> None:
    s = setup
    incident_id, _ = await open_incident(s, "PdApproval")
    store = s.svc.runtime.store
    request = NewPage(
        incident_id, "pagerduty", PageAction.TRIGGER, 1, "approval:rem-1", ("Incident Commander",)
    )
    await store.commit(Effects(pages=[request]), datetime.now(UTC))
    key = idempotency_key(incident_id, 1, "approval:rem-1")
    assert await store.pages.find_by_key(key, "pagerduty") is not None

    resp = await deliver(s, v3_event("incident.resolved", key, "Ivy Approver"), SECRET)
    assert (resp.status_code, resp.json()["result"]) == (200, "ignored")
    assert "asks about a remediation" in resp.json()["reason"]
    await assert_unchanged(s.svc, incident_id)
