"""Opsgenie's webhook integration coming back: an alert acknowledged or closed in
Opsgenie (or JSM) acknowledges or resolves the incidentd incident it pages for.

Pages go to the Alert API stand-in (``FakeOpsgenie``) and to the console; the webhook
bodies are Opsgenie's "alert action data" (docs.opsgenie.com), with the shared secret in
the custom header the integration is configured to send.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from service.http.inbound.opsgenie import PATH
from service.notify.base import Notifier
from service.notify.console import ConsoleNotifier
from service.notify.opsgenie import OpsgenieNotifier
from tests.support.inbound import assert_unchanged, events, pages, shown
from tests.support.opsgenie_api import FakeOpsgenie
from tests.support.payloads import alert, body, webhook
from tests.support.service import RunningService, run_service, test_settings

SECRET = "og-webhook-s3cret-9a8b7c"
KEY = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"


@dataclass
class Setup:
    svc: RunningService
    og: FakeOpsgenie


@pytest.fixture(scope="module")
async def setup(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    tmp = tmp_path_factory.mktemp("inbound-opsgenie")
    settings = test_settings(kafka, tmp, pagers=["opsgenie", "console"], opsgenie_webhook_secret=SECRET)
    async with FakeOpsgenie() as og:
        notifiers: dict[str, Notifier] = {
            "opsgenie": OpsgenieNotifier(KEY, og.url, 10.0),
            "console": ConsoleNotifier(io.StringIO()),
        }
        async with run_service(settings, notifiers=notifiers) as svc:
            yield Setup(svc, og)


def action_data(action: str, alias: str | None, who: str, *, age: float = 0.0) -> dict[str, Any]:
    """Opsgenie's webhook body for an alert action (updatedAt in nanoseconds, as it sends it)."""
    return {
        "source": {"name": "", "type": "web"},
        "alert": {
            "updatedAt": int((time.time() - age) * 1e9),
            "tags": ["SEV-1"],
            "message": "[INCIDENT] SEV-1: ApiDown",
            "username": who,
            "alertId": "052652ac-5d1c-464a-812a-7dd18bbfba8c",
            "source": "incidentd",
            "alias": alias,
            "tinyId": "23",
            "createdAt": int((time.time() - age - 60) * 1000),
            "userId": "daed1180-0ce8-438b-8f8e-57e1a5920a2d",
            "entity": "",
        },
        "action": action,
        "integrationId": "37c8f316-17c6-49d7-899b-9c7e540c048d",
        "integrationName": "incidentd acknowledgements",
    }


async def deliver(s: Setup, doc: dict[str, Any] | bytes, token: str | None = SECRET) -> httpx.Response:
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["X-Incidentd-Token"] = token
    return await s.svc.client.post(s.svc.url + PATH, content=raw, headers=headers)


async def open_incident(s: Setup, name: str) -> tuple[str, str]:
    """Open an incident paged to Opsgenie; its id and the alert's alias."""
    assert (await s.svc.post_webhook(body(webhook(alert(name, namespace="inbound-og"))))).status_code == 202

    def paged() -> list[dict[str, Any]]:
        return [
            e
            for e in s.svc.events.of_type("page.sent")
            if e["data"]["group_labels"].get("alertname") == name
            and e["data"]["page"]["integration"] == "opsgenie"
        ]

    await s.svc.events.wait_for(lambda _: bool(paged()))
    [sent] = paged()
    alias = str(sent["data"]["page"]["idempotency_key"])
    assert [a.status for a in s.og.alerts_with(alias)] == ["open"]  # the alert people will act on
    return str(sent["subject"]), alias


async def test_opsgenie_good_token_acknowledge_acknowledges_and_is_not_sent_back(setup: Setup) -> None:
    s = setup
    incident_id, alias = await open_incident(s, "OgAck")

    resp = await deliver(s, action_data("Acknowledge", alias, "fili@example.com"))

    assert (resp.status_code, resp.json()["result"]) == (200, "acknowledged")
    detail = await shown(s.svc, incident_id)
    assert detail["incident"]["acknowledged_by"] == "fili@example.com"
    await s.svc.events.wait_for(lambda _: bool(events(s.svc, incident_id, "incident.acknowledged")))
    [acked] = events(s.svc, incident_id, "incident.acknowledged")
    assert acked["data"]["command"] == {"command": "ack", "by": "fili@example.com", "source": "opsgenie"}
    # Each pager gets the ack; opsgenie's own only for its pages not answered there (none here).
    assert sorted(pages(detail, "ack")) == ["console", "opsgenie"]
    await s.svc.events.wait_for(
        lambda _: any(e["data"]["page"]["action"] == "ack" for e in events(s.svc, incident_id, "page.sent"))
    )
    await s.svc.runtime.pages.drain()
    assert s.og.requests_to("acknowledge", alias) == []

    again = await deliver(s, action_data("Acknowledge", alias, "fili@example.com"))
    assert (again.status_code, again.json()["result"]) == (200, "unchanged")


async def test_opsgenie_close_resolves_the_incident_and_is_not_sent_back(setup: Setup) -> None:
    s = setup
    incident_id, alias = await open_incident(s, "OgClose")

    resp = await deliver(s, action_data("Close", alias, "gina@example.com"))

    assert (resp.status_code, resp.json()["result"]) == (200, "resolved")
    detail = await shown(s.svc, incident_id)
    assert detail["incident"]["status"] == "resolved"
    # Each pager gets the close; opsgenie's own only for its pages not answered there (none here).
    assert sorted(pages(detail, "close")) == ["console", "opsgenie"]
    await s.svc.events.wait_for(lambda _: bool(events(s.svc, incident_id, "incident.resolved")))
    [resolved] = events(s.svc, incident_id, "incident.resolved")
    command = resolved["data"]["command"]
    assert (command["by"], command["source"]) == ("gina@example.com", "opsgenie")


async def test_opsgenie_action_without_a_username_is_recorded_by_its_source(setup: Setup) -> None:
    s = setup
    incident_id, alias = await open_incident(s, "OgSourceOnly")
    doc = action_data("Acknowledge", alias, "")
    doc["source"] = {"name": "Jira Service Management", "type": "integration"}

    resp = await deliver(s, doc)

    assert (resp.status_code, resp.json()["acknowledged_by"]) == (200, "Jira Service Management")
    assert (await shown(s.svc, incident_id))["incident"]["acknowledged_by"] == "Jira Service Management"


async def test_opsgenie_bad_or_missing_token_is_401_and_changes_nothing(setup: Setup) -> None:
    s = setup
    incident_id, alias = await open_incident(s, "OgBadToken")
    doc = action_data("Close", alias, "mallory@example.com")

    wrong = await deliver(s, doc, token="og-webhook-s3cret-9a8b7")
    assert wrong.status_code == 401
    assert "X-Incidentd-Token" in wrong.json()["error"]
    missing = await deliver(s, doc, token=None)
    assert missing.status_code == 401
    assert "missing" in missing.json()["error"]
    in_query = await s.svc.client.post(f"{s.svc.url}{PATH}?token={SECRET}", json=doc)
    assert in_query.status_code == 401  # only the header carries the secret

    await assert_unchanged(s.svc, incident_id)


async def test_opsgenie_stale_action_is_401_and_changes_nothing(setup: Setup) -> None:
    s = setup
    incident_id, alias = await open_incident(s, "OgStale")

    resp = await deliver(s, action_data("Acknowledge", alias, "fili@example.com", age=7200))

    assert resp.status_code == 401
    assert "stale" in resp.json()["error"] and "alert.updatedAt" in resp.json()["error"]
    await assert_unchanged(s.svc, incident_id)


async def test_opsgenie_updated_at_in_milliseconds_is_read_too(setup: Setup) -> None:
    s = setup
    incident_id, alias = await open_incident(s, "OgMillis")
    doc = action_data("Acknowledge", alias, "hal@example.com")
    doc["alert"]["updatedAt"] = int(time.time() * 1000)

    resp = await deliver(s, doc)

    assert (resp.status_code, resp.json()["result"]) == (200, "acknowledged")
    assert (await shown(s.svc, incident_id))["incident"]["acknowledged_by"] == "hal@example.com"


async def test_opsgenie_unknown_aliases_and_other_actions_are_ignored_with_200(setup: Setup) -> None:
    s = setup
    incident_id, alias = await open_incident(s, "OgIgnored")

    for doc in (
        action_data("Acknowledge", "someone-elses-alias", "fili@example.com"),
        action_data("Acknowledge", None, "fili@example.com"),
        action_data("AddNote", alias, "fili@example.com"),
        action_data("UnAcknowledge", alias, "fili@example.com"),
    ):
        resp = await deliver(s, doc)
        assert (resp.status_code, resp.json()["result"]) == (200, "ignored")

    await assert_unchanged(s.svc, incident_id)


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "expected a JSON object"),
        (b'{"alert": {}}', "action"),
        (b'{"action": "Acknowledge", "alert": "x"}', "alert"),
        (b'{"action": "Acknowledge", "alert": {"alias": "a", "updatedAt": "soon"}}', "alert.updatedAt"),
        # JSON's 1e400 is infinity: refused, not divided down to seconds forever.
        (b'{"action": "Acknowledge", "alert": {"alias": "a", "updatedAt": 1e400}}', "alert.updatedAt"),
        (b'{"action": "Acknowledge", "alert": {"alias": "a", "updatedAt": NaN}}', "alert.updatedAt"),
    ],
)
async def test_opsgenie_malformed_bodies_are_400_with_the_problem(
    setup: Setup, raw: bytes, complaint: str
) -> None:
    resp = await deliver(setup, raw)

    assert resp.status_code == 400
    assert complaint in resp.json()["error"]


async def test_opsgenie_source_that_is_not_an_object_still_names_someone(setup: Setup) -> None:
    incident_id, alias = await open_incident(setup, "OgOddSource")
    doc = action_data("Acknowledge", alias, "")
    doc["alert"]["username"] = ""
    doc["source"] = "Opsgenie mobile"
    resp = await deliver(setup, doc)
    assert (resp.status_code, resp.json()["acknowledged_by"]) == (200, "Opsgenie")
    assert (await shown(setup.svc, incident_id))["incident"]["acknowledged_by"] == "Opsgenie"
