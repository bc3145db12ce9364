"""Pages reach whom contacts.yaml says, and an acknowledgement or close follows each trigger
(issue #10): a role's own PagerDuty routing key, a person's own contact, role names in the
runbook's spelling."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.clock import ManualClock
from service.config import Settings
from service.context import Context
from service.emit.cloudevents import EventFactory
from service.models import PageAction
from service.notify.base import Notifier, idempotency_key
from service.notify.pagerduty import PagerDutyNotifier
from service.notify.slack import SlackNotifier
from service.notify.worker import PageWorker
from service.observability.metrics import Metrics
from service.ruleset import RuleSet, load_rules
from service.ruleset.errors import RulesError
from service.ruleset.models import ContactsFile
from service.store.pages import NewPage
from service.store.store import Effects, Store
from tests.support.incidents import make_incident
from tests.support.pagerduty_api import FakePagerDuty
from tests.support.payloads import alert, body, webhook
from tests.support.recorder import Recorder
from tests.support.service import RULES, run_service, test_settings
from tests.support.slack_api import FakeSlackWebhook
from tests.support.time import T0

DEFAULT_KEY = "R0UTING-DEFAULT"
# Roles with PagerDuty services (routing keys) of their own.
ROLE_KEYS = {
    "DevOps": {"pagerduty": {"routing_key": "DEVOPS-KEY"}},
    "Security": {"pagerduty": {"routing_key": "SECURITY-KEY"}},
    "Legal": {"pagerduty": {"routing_key": "LEGAL-KEY"}},
}


def stand_in(name: str = "opsgenie") -> Recorder:
    return Recorder(name, comms=False)


@pytest.fixture
async def fake():  # type: ignore[no-untyped-def]
    async with FakePagerDuty() as server:
        yield server


def rules_dir_with_contacts(tmp: Path, contacts: dict[str, Any]) -> Path:
    folder = tmp / "rules"
    shutil.copytree(RULES, folder)
    (folder / "contacts.yaml").write_text(yaml.safe_dump(contacts))
    return folder


def worker(
    store: Store, rules: RuleSet, notifiers: dict[str, Notifier], contacts: dict[str, Any]
) -> PageWorker:
    rules = rules.model_copy(update={"contacts": ContactsFile.model_validate(contacts)})
    ctx = Context(
        store, rules, EventFactory("events", "io.incidentd", "/test"), ManualClock(T0), Metrics(), Settings()
    )
    return PageWorker(ctx, notifiers)


async def tick(w: PageWorker) -> int:
    started = await w.run_once()
    await w.drain()
    return started


def every_role(**overrides: dict[str, Any]) -> dict[str, Any]:
    """The shipped roles (escalation.yaml names them), with these contacts instead."""
    shipped = yaml.safe_load((RULES / "contacts.yaml").read_text())
    return {**shipped, "roles": {**shipped["roles"], **overrides}}


async def test_the_pagerduty_close_of_a_per_role_page_reaches_that_roles_routing_key(
    kafka: str, tmp_path: Path, fake: FakePagerDuty
) -> None:
    contacts = every_role(DevOps={"opsgenie": {"team": "devops"}, "pagerduty": {"routing_key": "DEVOPS-KEY"}})
    folder = rules_dir_with_contacts(tmp_path, contacts)
    settings = test_settings(kafka, tmp_path, pagers=["pagerduty"], rules_dir=folder)
    pd = PagerDutyNotifier(DEFAULT_KEY, fake.url, 5)
    async with run_service(settings, notifiers={"pagerduty": pd}) as svc:
        assert (await svc.post_webhook(body(webhook(alert("ApiDown", namespace="pd"))))).status_code == 202
        await svc.events.wait_types({"page.sent": 1})
        sent = svc.events.of_type("page.sent")[0]["data"]
        inc_id, dedup = sent["id"], sent["page"]["idempotency_key"]
        assert sent["page"]["roles"] == ["DevOps"]
        assert [(e["routing_key"], e["event_action"]) for e in fake.events] == [("DEVOPS-KEY", "trigger")]

        acked = await svc.client.post(f"{svc.url}/api/v1/incidents/{inc_id}/ack", json={"by": "alice"})
        assert acked.status_code == 200
        await fake.wait_for(lambda: len(fake.events) == 2)
        resolved = alert("ApiDown", status="resolved", ends_at="2026-11-26T10:05:00Z", namespace="pd")
        assert (await svc.post_webhook(body(webhook(resolved)))).status_code == 202
        await fake.wait_for(lambda: ("DEVOPS-KEY", dedup) in fake.resolved)

    # The trigger, the acknowledgement and the resolve: one PagerDuty incident, on the role's
    # own service, none of it on the default routing key.
    assert [(e["routing_key"], e["event_action"], e["dedup_key"]) for e in fake.events] == [
        ("DEVOPS-KEY", "trigger", dedup),
        ("DEVOPS-KEY", "acknowledge", dedup),
        ("DEVOPS-KEY", "resolve", dedup),
    ]
    assert fake.open == {}


async def test_each_page_of_an_opening_is_closed_where_its_trigger_went(
    store: Store, rules: RuleSet, fake: FakePagerDuty
) -> None:
    contacts = {
        "roles": {
            **ROLE_KEYS,
            "Account Manager": {"opsgenie": {"team": "accounts"}},  # no key of its own: the default
        }
    }
    pd = PagerDutyNotifier(DEFAULT_KEY, fake.url, 5)
    try:
        w = worker(store, rules, {"pagerduty": pd}, contacts)
        triggers = [
            NewPage("inc-1", "pagerduty", PageAction.TRIGGER, 1, "first", ("DevOps",)),
            NewPage("inc-1", "pagerduty", PageAction.TRIGGER, 1, "data-breach", ("Security", "Legal")),
            NewPage("inc-1", "pagerduty", PageAction.TRIGGER, 1, "sla", ("Account Manager",)),
        ]
        await store.commit(Effects(incidents=[make_incident()], pages=triggers), T0)
        for _ in triggers:
            assert await tick(w) == 1
        await store.commit(Effects(pages=[NewPage("inc-1", "pagerduty", PageAction.CLOSE, 1)]), T0)
        # The incident resolved (the close is queued with it).
        assert await tick(w) == 1
    finally:
        await pd.aclose()
    first, breach, sla = (idempotency_key("inc-1", 1, t) for t in ("first", "data-breach", "sla"))
    assert [(e["routing_key"], e["event_action"], e["dedup_key"]) for e in fake.events] == [
        ("DEVOPS-KEY", "trigger", first),
        ("SECURITY-KEY", "trigger", breach),
        ("LEGAL-KEY", "trigger", breach),
        (DEFAULT_KEY, "trigger", sla),
        ("DEVOPS-KEY", "resolve", first),
        ("SECURITY-KEY", "resolve", breach),
        ("LEGAL-KEY", "resolve", breach),
        (DEFAULT_KEY, "resolve", sla),
    ]
    assert fake.open == {}


async def test_a_close_answered_in_pagerduty_skips_only_that_page_where_it_was_one_incident(
    store: Store, rules: RuleSet, fake: FakePagerDuty
) -> None:
    contacts = {"roles": dict(ROLE_KEYS)}
    pd = PagerDutyNotifier(DEFAULT_KEY, fake.url, 5)
    try:
        w = worker(store, rules, {"pagerduty": pd}, contacts)
        sent = []
        # Resolved in PagerDuty: inc-1 on its first page (one PagerDuty incident, on
        # DEVOPS-KEY), inc-2 on its breach page (two PagerDuty incidents: Security's, Legal's).
        for inc, answered in (("inc-1", "first"), ("inc-2", "data-breach")):
            triggers = [
                NewPage(inc, "pagerduty", PageAction.TRIGGER, 1, "first", ("DevOps",)),
                NewPage(inc, "pagerduty", PageAction.TRIGGER, 1, "data-breach", ("Security", "Legal")),
            ]
            await store.commit(Effects(incidents=[make_incident(inc, alertname=inc)], pages=triggers), T0)
            for _ in triggers:
                assert await tick(w) == 1
            mark = len(fake.events)
            close = NewPage(inc, "pagerduty", PageAction.CLOSE, 1, answered=answered)
            await store.commit(Effects(pages=[close]), T0)
            assert await tick(w) == 1
            sent.append([(e["routing_key"], e["event_action"], e["dedup_key"]) for e in fake.events[mark:]])
    finally:
        await pd.aclose()
    key = idempotency_key
    # The first page is left alone; the breach pages are still closed.
    assert sent[0] == [
        ("SECURITY-KEY", "resolve", key("inc-1", 1, "data-breach")),
        ("LEGAL-KEY", "resolve", key("inc-1", 1, "data-breach")),
    ]
    # The breach page went to two services, so both still hear it, and the first page too.
    assert sent[1] == [
        ("DEVOPS-KEY", "resolve", key("inc-2", 1, "first")),
        ("SECURITY-KEY", "resolve", key("inc-2", 1, "data-breach")),
        ("LEGAL-KEY", "resolve", key("inc-2", 1, "data-breach")),
    ]


PEOPLE = {
    "roles": {"Incident Commander": {"opsgenie": {"team": "incident-command"}}},
    "people": {
        "alice": {
            "opsgenie": {"user": "alice@example.com"},
            "pagerduty": {"routing_key": "ALICE-KEY"},
            "slack": {"mention": "<@U0ALICE>"},
        },
        "bob": {"slack": {"mention": "<@U0BOB>"}},
    },
}


def person_page(name: str, pager: str) -> NewPage:
    return NewPage("inc-1", pager, PageAction.TRIGGER, 1, f"person:{name}", ("Incident Commander",))


async def test_the_person_assigned_a_role_is_paged_on_their_own_contacts(
    store: Store, rules: RuleSet
) -> None:
    pagers = {name: stand_in(name) for name in ("opsgenie", "pagerduty", "slack", "console")}
    w = worker(store, rules, dict(pagers), PEOPLE)
    pages = [person_page("alice", name) for name in pagers]
    await store.commit(Effects(incidents=[make_incident()], pages=pages), T0)
    while await tick(w):
        pass
    responders = {name: [r.responders for r in p.sent] for name, p in pagers.items()}
    assert responders == {
        "opsgenie": [({"type": "user", "username": "alice@example.com"},)],  # not the role's team
        "pagerduty": [({"routing_key": "ALICE-KEY"},)],
        "slack": [({"mention": "<@U0ALICE>"},)],
        "console": [()],
    }
    [req] = pagers["opsgenie"].sent
    assert req.target == "person:alice" and req.roles == ("Incident Commander",)
    assert req.idempotency_key == idempotency_key("inc-1", 1, "person:alice")


async def test_a_person_without_a_contact_on_a_pager_is_not_paged_there(store: Store, rules: RuleSet) -> None:
    pagers = {name: stand_in(name) for name in ("opsgenie", "pagerduty", "slack")}
    w = worker(store, rules, dict(pagers), PEOPLE)
    pages = [person_page("bob", name) for name in pagers] + [person_page("nobody", "slack")]
    await store.commit(Effects(incidents=[make_incident()], pages=pages), T0)
    while await tick(w):
        pass
    # Bob only has Slack; nobody is not listed at all. Neither goes to the role's team or
    # PagerDuty's default service instead.
    assert pagers["opsgenie"].sent == [] and pagers["pagerduty"].sent == []
    assert [(r.target, r.responders) for r in pagers["slack"].sent] == [
        ("person:bob", ({"mention": "<@U0BOB>"},))
    ]
    views = await store.pages.for_incident("inc-1")
    skipped = {(v.integration, v.target): (v.status, v.last_error) for v in views if v.status != "sent"}
    assert skipped == {
        ("opsgenie", "person:bob"): (
            "superseded",
            "no opsgenie contact for person 'bob' in contacts.yaml (people); not paged there",
        ),
        ("pagerduty", "person:bob"): (
            "superseded",
            "no pagerduty contact for person 'bob' in contacts.yaml (people); not paged there",
        ),
        ("slack", "person:nobody"): (
            "superseded",
            "no slack contact for person 'nobody' in contacts.yaml (people); not paged there",
        ),
    }
    # Not a delivery failure: no page.failed, no unrouted role.
    types = [json.loads(r.value)["type"] for r in await store.outbox.unpublished(100)]
    assert types == ["io.incidentd.page.sent"]


def test_contacts_role_names_are_the_runbooks() -> None:
    contacts = ContactsFile.model_validate(
        {"roles": {"IC": {"opsgenie": {"team": "ic"}}, "comms": {}, "Technical Lead": {}, "DevOps": {}}}
    )
    assert list(contacts.roles) == ["Incident Commander", "Communications", "Technical Lead", "DevOps"]
    with pytest.raises(
        ValueError, match="'Incident Commander' listed twice, as 'IC' and 'Incident Commander'"
    ):
        ContactsFile.model_validate({"roles": {"IC": {}, "Incident Commander": {}}})


def test_contacts_yaml_with_backups_and_people_loads_and_mistakes_are_reported(tmp_path: Path) -> None:
    contacts = every_role(
        IC={
            "opsgenie": {"team": "ic"},
            "backup": {"opsgenie": {"user": "ic2@example.com"}},
            "backup_after": "5m",
        }
    )
    del contacts["roles"]["Incident Commander"]
    contacts["people"] = {"alice": {"slack": {"mention": "<@U0ALICE>"}}}
    loaded = load_rules(rules_dir_with_contacts(tmp_path, contacts)).contacts
    assert loaded.backup_after_for("Incident Commander").total_seconds() == 300
    assert loaded.backup_after_for("DevOps").total_seconds() == 600  # the top-level default
    assert loaded.backup("Incident Commander", "opsgenie") is not None
    assert loaded.person("Alice") is not None

    broken = every_role(DevOps={"opsgenie": {"team": "devops"}, "backup_after": "5m"})
    broken["people"] = {"bob": {"opsgenie": {"team": "a", "user": "b"}}}
    with pytest.raises(RulesError) as info:
        load_rules(rules_dir_with_contacts(tmp_path / "broken", broken))
    text = str(info.value)
    assert "backup_after without a backup contact" in text
    assert "give exactly one of team, user, escalation or schedule" in text


async def test_slack_mentions_from_contacts_reach_the_posted_message(store: Store, rules: RuleSet) -> None:
    contacts = every_role(
        DevOps={"opsgenie": {"team": "devops"}, "slack": {"mention": "<!subteam^S0DEVOPS>"}},
        Security={"slack": {"mention": "<@U0SEC>"}},
    )
    contacts["people"] = {"carol": {"slack": {"mention": "<@U0CAROL>"}}}
    pages = [
        NewPage("inc-1", "slack", PageAction.TRIGGER, 1, "first", ("DevOps",)),
        NewPage("inc-1", "slack", PageAction.TRIGGER, 1, "data-breach-suspected", ("Security", "Legal")),
        NewPage("inc-1", "slack", PageAction.TRIGGER, 1, "person:carol", ("Incident Commander",)),
    ]
    async with FakeSlackWebhook() as channel:
        slack = SlackNotifier(channel.webhook_url, 5)
        try:
            w = worker(store, rules, {"slack": slack}, contacts)
            await store.commit(Effects(incidents=[make_incident()], pages=pages), T0)
            while await tick(w):
                pass
        finally:
            await slack.aclose()
        messages = channel.messages
    # Each role's (or person's) mention, as written in contacts.yaml, leads the message and
    # has a section of its own; Legal has no Slack contact and adds nothing.
    # (The worker sends a batch's pages concurrently: in any order.)
    by_mention = {m["text"].split("\n", 1)[0]: m for m in messages}
    assert len(messages) == 3 and by_mention.keys() == {"<!subteam^S0DEVOPS>", "<@U0SEC>", "<@U0CAROL>"}
    for mention, message in by_mention.items():
        assert message["text"].split("\n")[1] == "[INCIDENT] SEV-1: ApiDown"
        sections = [b["text"]["text"] for b in message["blocks"] if b["type"] == "section"]
        assert sections[0] == mention
    events = [json.loads(r.value) for r in await store.outbox.unpublished(100)]
    assert sorted((e["type"], e["data"]["page"]["target"]) for e in events) == [
        ("io.incidentd.page.sent", "data-breach-suspected"),
        ("io.incidentd.page.sent", "first"),
        ("io.incidentd.page.sent", "person:carol"),
    ]
