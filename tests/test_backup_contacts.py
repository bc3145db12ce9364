"""Primary and backup contacts per role (the runbook's Contact List, issue #10): a page nobody
acknowledges within ``backup_after`` goes to the role's backup. A real SQLite store, an
injected clock, no sleeps."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from service.clock import ManualClock
from service.config import Settings
from service.context import Context
from service.emit.cloudevents import EventFactory
from service.models import Incident, IncidentStatus, PageAction
from service.notify.base import Notifier, idempotency_key
from service.notify.pagerduty import PagerDutyNotifier
from service.notify.worker import PageWorker
from service.observability.metrics import Metrics
from service.ruleset import RuleSet
from service.ruleset.models import ContactsFile
from service.store.pages import NewPage
from service.store.store import Effects, Store
from tests.support.checks import assert_valid_event
from tests.support.incidents import make_incident
from tests.support.page_rounds import Rounds, running
from tests.support.pagerduty_api import FakePagerDuty
from tests.support.recorder import Recorder
from tests.support.time import T0

CONTACTS: dict[str, Any] = {
    "backup_after": "10m",
    "roles": {
        "DevOps": {
            "opsgenie": {"team": "devops"},
            "pagerduty": {"routing_key": "DEVOPS-KEY"},
            "backup": {
                "opsgenie": {"user": "devops-backup@example.com"},
                "pagerduty": {"routing_key": "BACKUP-KEY"},
            },
        },
        "Security": {
            "opsgenie": {"team": "security"},
            "backup": {"opsgenie": {"team": "security-backup"}},
            "backup_after": "4m",
        },
        "Legal": {"opsgenie": {"team": "legal"}},  # no backup
    },
}


def stand_in(name: str = "opsgenie") -> Recorder:
    return Recorder(name, comms=False)


@dataclass
class Rig:
    store: Store
    clock: ManualClock
    ctx: Context
    worker: PageWorker

    async def tick(self) -> int:
        """Run every job due now; how many were started."""
        started = 0
        while n := await self.worker.run_once():
            await self.worker.drain()
            started += n
        return started

    async def at(self, **delta: float) -> int:
        """Move the clock to T0 + delta and run what is due."""
        when = T0 + timedelta(**delta)
        assert when >= self.clock.now()
        self.clock.advance(when - self.clock.now())
        return await self.tick()

    async def jobs(self) -> list[tuple[str, str, str]]:
        return [(v.action, v.target, v.status) for v in await self.store.pages.for_incident("inc-1")]

    async def change(self, edit: Any, pages: tuple[NewPage, ...] = ()) -> None:
        """Change the stored incident as a person's command would, with the pages it queues."""
        inc = await self.store.incidents.get("inc-1")
        assert inc is not None
        edit(inc)
        await self.store.commit(Effects(incidents=[inc], pages=pages), self.clock.now())

    async def sent_events(self) -> list[dict[str, Any]]:
        events = [json.loads(r.value) for r in await self.store.outbox.unpublished(1000)]
        for event in events:
            assert_valid_event(event)
        return [e["data"]["page"] for e in events if e["type"].endswith(".page.sent")]


def rig(store: Store, rules: RuleSet, pagers: dict[str, Notifier], clock: ManualClock | None = None) -> Rig:
    clock = clock or ManualClock(T0)
    rules = rules.model_copy(update={"contacts": ContactsFile.model_validate(CONTACTS)})
    ctx = Context(store, rules, EventFactory("events", "io.incidentd", "/test"), clock, Metrics(), Settings())
    return Rig(store, clock, ctx, PageWorker(ctx, pagers))


def trigger(target: str = "first", roles: tuple[str, ...] = ("DevOps",), pager: str = "opsgenie") -> NewPage:
    return NewPage("inc-1", pager, PageAction.TRIGGER, 1, target, roles)


def _acknowledge(inc: Incident) -> None:
    inc.acknowledged_at, inc.acknowledged_by = T0 + timedelta(minutes=5), "alice"


def _resolve(inc: Incident) -> None:
    inc.status, inc.resolved_at = IncidentStatus.RESOLVED, T0 + timedelta(minutes=5)


async def test_backup_contact_after_an_unanswered_primary(store: Store, rules: RuleSet) -> None:
    pager = stand_in()
    r = rig(store, rules, {"opsgenie": pager})
    await store.commit(Effects(incidents=[make_incident()], pages=[trigger()]), T0)
    assert await r.tick() == 1
    [primary] = pager.sent
    assert primary.responders == ({"type": "team", "name": "devops"},)
    # Stored with the outcome: the backup page, waiting for its time.
    assert await r.jobs() == [("trigger", "first", "sent"), ("trigger", "backup:first", "pending")]
    assert await store.pages.next_due({"opsgenie"}, r.clock.now()) == (T0 + timedelta(minutes=10)).timestamp()

    assert await r.at(minutes=9, seconds=59) == 0
    assert len(pager.sent) == 1
    assert await r.at(minutes=10) == 1
    [_, backup] = pager.sent
    assert backup.action is PageAction.TRIGGER
    assert backup.target == "backup:first" and backup.roles == ("DevOps",)
    assert backup.responders == ({"type": "user", "username": "devops-backup@example.com"},)
    # A page of its own (a new Opsgenie alert), saying why it came.
    assert backup.idempotency_key == idempotency_key("inc-1", 1, "backup:first") != primary.idempotency_key
    assert backup.message == primary.message
    assert "- Backup page: the page to DevOps went unacknowledged for 10m" in backup.description
    assert await r.jobs() == [("trigger", "first", "sent"), ("trigger", "backup:first", "sent")]
    assert [(p["target"], p["roles"]) for p in await r.sent_events()] == [
        ("first", ["DevOps"]),
        ("backup:first", ["DevOps"]),
    ]
    # No backup of a backup.
    assert await store.pages.next_due({"opsgenie"}, r.clock.now()) is None


@pytest.mark.parametrize(
    ("edit", "answer"),
    [(_acknowledge, PageAction.ACK), (_resolve, PageAction.CLOSE)],
    ids=["acknowledged", "resolved"],
)
async def test_an_answer_before_backup_after_means_no_backup_page(
    store: Store, rules: RuleSet, edit: Any, answer: PageAction
) -> None:
    pager = stand_in()
    r = rig(store, rules, {"opsgenie": pager})
    await store.commit(Effects(incidents=[make_incident()], pages=[trigger()]), T0)
    await r.tick()
    assert await r.at(minutes=5) == 0
    await r.change(edit, (NewPage("inc-1", "opsgenie", answer, 1, by="alice"),))
    # The ack (or close) goes out at once, not held back behind the waiting backup page...
    assert await r.tick() == 1
    assert [(p.action, p.target) for p in pager.sent] == [(PageAction.TRIGGER, "first"), (answer, "first")]
    # ...and once due, the backup page is dropped: somebody answered.
    assert await r.at(minutes=10) == 1
    assert await r.at(hours=1) == 0
    assert len(pager.sent) == 2
    assert await r.jobs() == [
        ("trigger", "first", "sent"),
        ("trigger", "backup:first", "superseded"),
        (answer.value, "first", "sent"),
    ]


async def test_backups_go_to_roles_that_have_one_after_the_shortest_wait(
    store: Store, rules: RuleSet
) -> None:
    pager = stand_in()
    r = rig(store, rules, {"opsgenie": pager})
    pages = [trigger("data-breach", ("Security", "Legal", "DevOps"))]
    await store.commit(Effects(incidents=[make_incident()], pages=pages), T0)
    await r.tick()
    assert await r.at(minutes=3, seconds=59) == 0
    assert await r.at(minutes=4) == 1  # Security's own backup_after
    backup = pager.sent[-1]
    assert backup.target == "backup:data-breach"
    assert backup.roles == ("Security", "DevOps")  # Legal has no backup
    assert backup.responders == (
        {"type": "team", "name": "security-backup"},
        {"type": "user", "username": "devops-backup@example.com"},
    )
    assert "unacknowledged for 4m" in backup.description


async def test_no_backup_for_roles_without_one_or_pages_after_the_ack(store: Store, rules: RuleSet) -> None:
    pager = stand_in()
    r = rig(store, rules, {"opsgenie": pager, "console": stand_in("console")})
    inc = make_incident()
    # Legal has no backup; console reaches a channel, not a person: no backups there.
    pages = [trigger("sla", ("Legal",)), trigger("first", ("DevOps",), "console")]
    await store.commit(Effects(incidents=[inc], pages=pages), T0)
    assert await r.tick() == 2
    # Acknowledged; then a condition escalation goes out after it: nobody's answer is awaited.
    await r.change(_acknowledge)
    await r.change(
        lambda inc: inc.escalations.update({"1:data-breach": (T0 + timedelta(minutes=6)).isoformat()})
    )
    await store.commit(Effects(pages=[trigger("data-breach", ("DevOps",))]), T0)
    assert await r.tick() == 1
    assert [(v.target, v.status) for v in await store.pages.for_incident("inc-1")] == [
        ("sla", "sent"),
        ("first", "sent"),
        ("data-breach", "sent"),
    ]
    assert await store.pages.next_due({"opsgenie", "console"}, r.clock.now()) is None


async def test_a_backup_page_survives_a_restart(store: Store, rules: RuleSet) -> None:
    r = rig(store, rules, {"opsgenie": stand_in()})
    await store.commit(Effects(incidents=[make_incident()], pages=[trigger()]), T0)
    await r.tick()
    # This process stops; another starts later, with nothing in memory.
    clock, pager = ManualClock(T0 + timedelta(minutes=30)), stand_in()
    later = rig(store, rules, {"opsgenie": pager}, clock)
    assert await later.tick() == 1
    assert [(p.target, p.responders) for p in pager.sent] == [
        ("backup:first", ({"type": "user", "username": "devops-backup@example.com"},))
    ]


async def test_the_pagerduty_backup_goes_to_the_backup_key_and_the_close_reaches_both(
    store: Store, rules: RuleSet
) -> None:
    async with FakePagerDuty() as fake:
        pd = PagerDutyNotifier("DEFAULT-KEY", fake.url, 5)
        try:
            r = rig(store, rules, {"pagerduty": pd})
            await store.commit(Effects(incidents=[make_incident()], pages=[trigger(pager="pagerduty")]), T0)
            await r.tick()
            await r.at(minutes=10)
            await r.change(_resolve, (NewPage("inc-1", "pagerduty", PageAction.CLOSE, 1),))
            await r.tick()
        finally:
            await pd.aclose()
    first, backup = idempotency_key("inc-1", 1), idempotency_key("inc-1", 1, "backup:first")
    assert [(e["routing_key"], e["event_action"], e["dedup_key"]) for e in fake.events] == [
        ("DEVOPS-KEY", "trigger", first),
        ("BACKUP-KEY", "trigger", backup),
        ("DEVOPS-KEY", "resolve", first),
        ("BACKUP-KEY", "resolve", backup),
    ]
    assert fake.open == {}


async def test_a_backup_due_in_minutes_leaves_the_worker_asleep(store: Store, rules: RuleSet) -> None:
    """A sent trigger stores its backup page, due in 10 minutes: the worker need not look
    before it planned to."""
    pager = stand_in()
    r = rig(store, rules, {"opsgenie": pager})
    rounds = Rounds(store)
    async with running(r.worker):
        await rounds.next_sleep()
        await store.commit(Effects(incidents=[make_incident()], pages=[trigger()]), T0)
        r.worker.wake()  # as the runtime does for a stored page job
        await rounds.next_sleep()  # the round that claimed the trigger
        asleep_until = r.worker.sleeping_until
        await r.worker.drain()
        assert len(pager.sent) == 1
        assert await r.jobs() == [("trigger", "first", "sent"), ("trigger", "backup:first", "pending")]
        assert asleep_until is not None and r.worker.sleeping_until == asleep_until
        assert rounds.claims == 2
