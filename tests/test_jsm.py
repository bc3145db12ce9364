"""The Jira Service Management Ops pager (``jsm``): Opsgenie's Alert API, through the real
``opsgenie-sdk``, under JSM's base URL, against a real HTTP server mounted where JSM
serves it (``/jsm/ops/integration/v2/alerts``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.config import Settings
from service.notify.base import PageError, PageRequest
from service.notify.jsm import JsmNotifier
from service.notify.registry import NOTIFIERS
from service.ruleset import RuleSet
from service.ruleset.models import OpsgenieContact, Reach
from tests.support.opsgenie_api import FakeOpsgenie, Reply
from tests.support.payloads import alert, body, webhook
from tests.support.service import run_service, test_settings
from tests.test_opsgenie import page_request

KEY = "5a6b7c8d-0e1f-4a2b-9c3d-4e5f6a7b8c9d"  # a JSM API integration's key
PREFIX = "/jsm/ops/integration"


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpsgenie]:
    async with FakeOpsgenie(api_keys={KEY}, prefix=PREFIX) as api:
        yield api


@pytest.fixture
async def notifier(fake: FakeOpsgenie) -> AsyncIterator[JsmNotifier]:
    n = JsmNotifier(KEY, fake.url, 10.0)
    yield n
    await n.aclose()


def answer_to(trigger: PageRequest, action: str, text: str) -> PageRequest:
    return PageRequest(
        action=action,  # type: ignore[arg-type]
        incident=trigger.incident,
        opening=trigger.opening,
        idempotency_key=trigger.idempotency_key,
        message=text,
        description=text,
        priority=trigger.priority,
    )


async def test_trigger_ack_and_resolve_reach_jsm_by_alias_with_the_genie_key(
    fake: FakeOpsgenie, notifier: JsmNotifier, rules: RuleSet
) -> None:
    trigger = page_request(rules, severity="SEV-2")
    reference = await notifier.send(trigger)
    await notifier.send(answer_to(trigger, "ack", "- Status: Acknowledged by alice"))
    await notifier.send(answer_to(trigger, "close", "[UPDATE] SEV-2: API is down"))

    create, ack, close = fake.requests
    alias = trigger.idempotency_key
    assert (create.path, create.endpoint) == (f"{PREFIX}/v2/alerts", "create")
    assert (ack.path, ack.query) == (f"{PREFIX}/v2/alerts/{alias}/acknowledge", {"identifierType": ["alias"]})
    assert (close.path, close.query) == (f"{PREFIX}/v2/alerts/{alias}/close", {"identifierType": ["alias"]})
    assert {r.header("Authorization") for r in fake.requests} == {f"GenieKey {KEY}"}
    assert (create.body["alias"], create.body["priority"], create.body["source"]) == (
        alias,
        "P2",
        "incidentd",
    )
    assert reference == fake.answers[0].request_id
    [created] = fake.alerts
    assert (created.alias, created.acknowledged, created.status) == (alias, True, "closed")


async def test_a_repeated_trigger_is_one_alert(
    fake: FakeOpsgenie, notifier: JsmNotifier, rules: RuleSet
) -> None:
    trigger = page_request(rules)
    await notifier.send(trigger)
    await notifier.send(trigger)  # a retry after a lost answer: the same alias
    assert len(fake.requests_to("create")) == 2
    [created] = fake.alerts
    assert created.count == 2


async def test_failures_name_jsm_and_keep_opsgenie_retry_rules(fake: FakeOpsgenie, rules: RuleSet) -> None:
    fake.script("create", Reply(503))
    wrong_key = JsmNotifier("not-the-key", fake.url, 10.0)
    ok = JsmNotifier(KEY, fake.url, 10.0)
    try:
        with pytest.raises(PageError) as unavailable:
            await ok.send(page_request(rules))
        with pytest.raises(PageError) as refused:
            await wrong_key.send(page_request(rules))
    finally:
        await ok.aclose()
        await wrong_key.aclose()
    assert unavailable.value.retryable and unavailable.value.reason.startswith("jsm answered HTTP 503")
    assert not refused.value.retryable and refused.value.reason.startswith("jsm answered HTTP 401")


def test_settings_need_the_key_and_read_it_from_a_file(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match="pager 'jsm' needs INCIDENTD_JSM_API_KEY or INCIDENTD_JSM_API_KEY_FILE"
    ):
        JsmNotifier.from_settings(Settings(pagers=["jsm"]))
    (tmp_path / "key").write_text(f"{KEY}\n")
    settings = Settings(pagers=["jsm"], jsm_api_key_file=tmp_path / "key")  # type: ignore[call-arg]
    assert settings.jsm_api_key is not None and settings.jsm_api_key.get_secret_value() == KEY
    assert settings.jsm_api_url == "https://api.atlassian.com/jsm/ops/integration"
    built = NOTIFIERS["jsm"](settings)  # the registry's builder, which imports the SDK late
    assert isinstance(built, JsmNotifier)
    asyncio.run(built.aclose())


def jsm_responder(contacts: dict[str, object]) -> dict[str, str] | None:
    contact = Reach.model_validate(contacts).on("jsm")
    return contact.responder() if isinstance(contact, OpsgenieContact) else None


def test_a_role_without_a_jsm_contact_is_reached_through_its_opsgenie_one() -> None:
    assert jsm_responder({"opsgenie": {"team": "devops"}}) == {"type": "team", "name": "devops"}
    own = {"opsgenie": {"team": "devops"}, "jsm": {"schedule": "devops-jsm"}}
    assert jsm_responder(own) == {"type": "schedule", "name": "devops-jsm"}
    assert jsm_responder({"slack": {"mention": "@here"}}) is None


async def test_the_service_pages_jsm_once_then_acknowledges_and_closes_the_alert(
    kafka: str, tmp_path: Path
) -> None:
    (tmp_path / "jsm-key").write_text(KEY)
    async with FakeOpsgenie(api_keys={KEY}, prefix=PREFIX) as fake:
        settings = test_settings(
            kafka, tmp_path, pagers=["jsm"], jsm_api_key_file=tmp_path / "jsm-key", jsm_api_url=fake.url
        )
        async with run_service(settings) as svc:  # the pager built from the settings, by the registry
            notification = body(webhook(alert("ApiDown", namespace="aragora")))
            for _ in range(2):  # Alertmanager in HA sends the same notification from each replica
                assert (await svc.post_webhook(notification)).status_code == 202
            await svc.runtime.progress.wait_records(2)
            await svc.events.wait_types({"page.sent": 1})
            [opened] = svc.events.of_type("incident.opened")
            incident = opened["data"]["id"]
            ack = await svc.client.post(f"{svc.url}/api/v1/incidents/{incident}/ack", json={"by": "alice"})
            assert ack.status_code == 200
            await fake.wait_for(lambda: len(fake.accepted("acknowledge")) == 1)
            resolve = await svc.client.post(
                f"{svc.url}/api/v1/incidents/{incident}/resolve", json={"by": "alice"}
            )
            assert resolve.status_code == 200
            await fake.wait_for(lambda: len(fake.accepted("close")) == 1)

        [create] = fake.requests_to("create")
        assert create.body["responders"] == [{"type": "team", "name": "devops"}]  # contacts.yaml's opsgenie
        [paged] = fake.alerts
        assert (paged.alias, paged.acknowledged, paged.status) == (create.identifier, True, "closed")
        assert {p["data"]["page"]["integration"] for p in svc.events.of_type("page.sent")} == {"jsm"}
