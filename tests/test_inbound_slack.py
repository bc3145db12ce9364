"""Slack's Acknowledge and Resolve buttons, through the whole service on the real broker.

``SlackInteractivity`` (tests/support/slack_api.py) stands in for Slack: it builds the
``block_actions`` payload from the button of the message the service posted to the
``FakeSlackWebhook``, and signs it as Slack does. The service runs with a bearer token,
which the inbound endpoint does not ask for: Slack's signature is its check.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.http.inbound.slack import PATH
from service.notify.base import Notifier
from service.notify.slack import ACK_ACTION, RESOLVE_ACTION, SlackNotifier
from tests.support.inbound import assert_unchanged, events, shown
from tests.support.payloads import alert, body, webhook
from tests.support.service import RunningService, run_service, test_settings
from tests.support.slack_api import FakeSlackWebhook, SlackInteractivity

SECRET = "8f742231b10e8888abc4f9a7bb5a85a5"
TOKEN = "api-t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Setup:
    svc: RunningService
    channel: FakeSlackWebhook
    slack: SlackInteractivity


@pytest.fixture(scope="module")
async def setup(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    tmp = tmp_path_factory.mktemp("inbound-slack")
    settings = test_settings(kafka, tmp, pagers=["slack"], slack_signing_secret=SECRET, webhook_token=TOKEN)
    async with FakeSlackWebhook() as channel:
        notifiers: dict[str, Notifier] = {"slack": SlackNotifier(channel.webhook_url, 10.0)}
        async with run_service(settings, notifiers=notifiers) as svc:
            yield Setup(svc, channel, SlackInteractivity(svc.url + PATH, SECRET))


async def open_incident(s: Setup, name: str) -> tuple[str, dict[str, Any]]:
    """Open an incident; its id and the ``[INCIDENT]`` message posted to the channel."""
    doc = body(webhook(alert(name, namespace="inbound-slack")))
    assert (await s.svc.post_webhook(doc, **AUTH)).status_code == 202

    def opened() -> list[dict[str, Any]]:
        return [
            e
            for e in s.svc.events.of_type("incident.opened")
            if e["data"]["group_labels"].get("alertname") == name
        ]

    await s.svc.events.wait_for(lambda _: bool(opened()))
    incident_id = str(opened()[0]["data"]["id"])
    await s.svc.events.wait_for(
        lambda _: any(e["subject"] == incident_id for e in s.svc.events.of_type("page.sent"))
    )
    [message] = [m for m in s.channel.messages if incident_id in m["blocks"][-1]["elements"][0]["text"]]
    return incident_id, message


# -- signatures ---------------------------------------------------------------------------


async def test_slack_good_signature_ack_button_acknowledges_the_incident_as_the_presser(
    setup: Setup,
) -> None:
    s = setup
    incident_id, message = await open_incident(s, "SlackAck")

    resp = await s.slack.press(s.svc.client, message, ACK_ACTION, "alice")  # no bearer token

    assert resp.status_code == 200
    assert resp.json()["result"] == "acknowledged"
    assert resp.json()["acknowledged_by"] == "alice"
    assert (await shown(s.svc, incident_id, AUTH))["incident"]["acknowledged_by"] == "alice"
    await s.svc.events.wait_for(lambda _: bool(events(s.svc, incident_id, "incident.acknowledged")))
    [acked] = events(s.svc, incident_id, "incident.acknowledged")
    assert acked["data"]["command"] == {"command": "ack", "by": "alice", "source": "slack"}
    assert acked["data"]["acknowledged_by"] == "alice"
    # The channel hears who acknowledged, though the button was pressed there: a Slack post
    # changes no pager state that could race the person's next action.
    await s.svc.events.wait_for(
        lambda _: any(e["data"]["page"]["action"] == "ack" for e in events(s.svc, incident_id, "page.sent"))
    )
    assert any("SlackAck" in text and "Acknowledged by alice" in text for text in s.channel.texts())

    again = await s.slack.press(
        s.svc.client, message, ACK_ACTION, "bob"
    )  # Slack retries, people double-press
    assert (again.status_code, again.json()["result"]) == (200, "unchanged")
    assert (await shown(s.svc, incident_id, AUTH))["incident"]["acknowledged_by"] == "alice"


async def test_slack_resolve_button_resolves_the_incident_as_the_presser(setup: Setup) -> None:
    s = setup
    incident_id, message = await open_incident(s, "SlackResolve")

    resp = await s.slack.press(s.svc.client, message, RESOLVE_ACTION, "carol")

    assert (resp.status_code, resp.json()["result"]) == (200, "resolved")
    assert (await shown(s.svc, incident_id, AUTH))["incident"]["status"] == "resolved"
    await s.svc.events.wait_for(lambda _: bool(events(s.svc, incident_id, "incident.resolved")))
    [resolved] = events(s.svc, incident_id, "incident.resolved")
    assert resolved["data"]["command"]["by"] == "carol"
    assert resolved["data"]["command"]["source"] == "slack"

    late_ack = await s.slack.press(s.svc.client, message, ACK_ACTION, "dave")
    assert (late_ack.status_code, late_ack.json()["result"]) == (200, "ignored")
    assert "resolved" in late_ack.json()["reason"]


async def test_slack_bad_signature_is_401_and_changes_nothing(setup: Setup) -> None:
    s = setup
    incident_id, message = await open_incident(s, "SlackBadSignature")

    wrong_secret = await s.slack.press(s.svc.client, message, ACK_ACTION, "mallory", secret="not-the-secret")
    assert wrong_secret.status_code == 401
    assert "X-Slack-Signature" in wrong_secret.json()["error"]

    # A body changed after Slack signed it.
    signed = s.slack.form(s.slack.block_actions(message, RESOLVE_ACTION, "alice"))
    headers = s.slack.headers(signed)
    forged = s.slack.form(s.slack.block_actions(message, RESOLVE_ACTION, "mallory"))
    assert (await s.slack.send(s.svc.client, forged, headers)).status_code == 401

    unsigned = await s.svc.client.post(
        s.slack.url, content=signed, headers={"Content-Type": headers["Content-Type"]}
    )
    assert unsigned.status_code == 401
    assert "missing" in unsigned.json()["error"]

    await assert_unchanged(s.svc, incident_id, AUTH)


@pytest.mark.parametrize("age", [301, 3600, -301])
async def test_slack_stale_timestamp_is_401_and_changes_nothing(setup: Setup, age: int) -> None:
    s = setup
    incident_id, message = await open_incident(s, f"SlackStale{age}".replace("-", "Future"))

    # Correctly signed, but stamped more than five minutes from now: a replay.
    resp = await s.slack.press(s.svc.client, message, ACK_ACTION, "alice", age=age)

    assert resp.status_code == 401
    assert "stale" in resp.json()["error"]
    await assert_unchanged(s.svc, incident_id, AUTH)


async def test_slack_timestamp_within_five_minutes_is_accepted(setup: Setup) -> None:
    s = setup
    incident_id, message = await open_incident(s, "SlackSlow")

    resp = await s.slack.press(s.svc.client, message, ACK_ACTION, "erin", age=240)

    assert (resp.status_code, resp.json()["result"]) == (200, "acknowledged")
    assert (await shown(s.svc, incident_id, AUTH))["incident"]["acknowledged_by"] == "erin"


# -- what is signed but not acted on, and what is malformed ---------------------------------------


async def signed(s: Setup, form: bytes) -> httpx.Response:
    return await s.slack.send(s.svc.client, form, s.slack.headers(form))


async def test_slack_other_buttons_and_interactions_are_ignored_with_200(setup: Setup) -> None:
    s = setup
    incident_id, message = await open_incident(s, "SlackOtherButton")
    payload = s.slack.block_actions(message, ACK_ACTION, "alice")
    payload["actions"][0]["action_id"] = "someone_elses_button"

    other = await signed(s, s.slack.form(payload))
    assert (other.status_code, other.json()["result"]) == (200, "ignored")

    shortcut = await signed(s, s.slack.form({"type": "message_action", "user": {"id": "U1"}}))
    assert (shortcut.status_code, shortcut.json()["result"]) == (200, "ignored")

    # A button of an earlier opening never acts on the incident as it is now.
    payload = s.slack.block_actions(message, ACK_ACTION, "alice")
    payload["actions"][0]["value"] = json.dumps({"incident": incident_id, "opening": 7})
    old = await signed(s, s.slack.form(payload))
    assert (old.status_code, old.json()["result"]) == (200, "ignored")
    assert "opening 7" in old.json()["reason"]

    await assert_unchanged(s.svc, incident_id, AUTH)


@pytest.mark.parametrize(
    ("form", "complaint"),
    [
        (b"", "one 'payload' field"),
        (b"text=hello", "one 'payload' field"),
        (b"payload=%7Bnot+json", "not JSON"),
        (b"payload=%5B%5D", "not a JSON object"),
        (b"payload=" + json.dumps({"type": "block_actions"}).encode(), "payload.actions"),
    ],
)
async def test_slack_malformed_bodies_are_400_with_the_problem(
    setup: Setup, form: bytes, complaint: str
) -> None:
    resp = await signed(setup, form)

    assert resp.status_code == 400
    assert complaint in resp.json()["error"]


async def test_slack_malformed_button_value_or_user_is_400(setup: Setup) -> None:
    s = setup
    incident_id, message = await open_incident(s, "SlackMalformed")
    payload = s.slack.block_actions(message, ACK_ACTION, "alice")
    payload["actions"][0]["value"] = "inc-1"
    bad_value = await signed(s, s.slack.form(payload))
    assert bad_value.status_code == 400
    assert "payload.actions[0].value" in bad_value.json()["error"]

    payload = s.slack.block_actions(message, ACK_ACTION, "alice")
    payload["user"] = {}
    no_user = await signed(s, s.slack.form(payload))
    assert no_user.status_code == 400
    assert "payload.user" in no_user.json()["error"]

    await assert_unchanged(s.svc, incident_id, AUTH)


# -- an endpoint without its secret -----------------------------------------------------------------


async def test_inbound_endpoints_without_their_secret_are_404_saying_which_variable(
    kafka: str, tmp_path: Path
) -> None:
    async with run_service(test_settings(kafka, tmp_path)) as svc:
        for path, variable in (
            (PATH, "INCIDENTD_SLACK_SIGNING_SECRET"),
            ("/api/v1/inbound/pagerduty", "INCIDENTD_PAGERDUTY_WEBHOOK_SECRET"),
            ("/api/v1/inbound/opsgenie", "INCIDENTD_OPSGENIE_WEBHOOK_SECRET"),
        ):
            resp = await svc.client.post(svc.url + path, content=b"{}")
            assert resp.status_code == 404
            assert variable in resp.json()["error"]
