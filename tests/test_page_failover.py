"""A trigger keeps trying while its incident waits for a person, and fails over to a second
pager (issue #9 item 7); on a real SQLite store with an injected clock, no sleeps."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest

from service.clock import ManualClock, iso
from service.config import Settings
from service.context import Context
from service.emit.cloudevents import EventFactory
from service.models import Incident, IncidentStatus, PageAction
from service.notify.base import Notifier, PageError, PageRequest
from service.notify.registry import NOTIFIERS, build_fallbacks
from service.notify.worker import PAGE_FAILOVER_AFTER, PageWorker
from service.observability.metrics import Metrics
from service.ruleset import RuleSet
from service.ruleset.models import FOLLOW_UP_NAMES, PAGER_NAMES, ContactsFile
from service.store.pages import NewPage
from service.store.store import Effects, Store
from tests.support.checks import assert_valid_event
from tests.support.incidents import make_incident
from tests.support.time import T0

OUTAGE = PageError("HTTP 503", retryable=True)


class Pager:
    """A pager that is down (every call fails with ``error``) until told otherwise."""

    comms = False

    def __init__(self, name: str, clock: ManualClock, error: PageError | None = None) -> None:
        self.name = name
        self.clock = clock
        self.error = error
        self.calls: list[datetime] = []
        self.sent: list[PageRequest] = []

    async def send(self, request: PageRequest) -> str | None:
        self.calls.append(self.clock.now())
        if self.error is not None:
            raise self.error
        self.sent.append(request)
        return f"{self.name}-{len(self.sent)}"

    async def aclose(self) -> None:
        return None


@dataclass
class Rig:
    """A page worker with its store, clock, metrics and pagers."""

    store: Store
    clock: ManualClock
    metrics: Metrics
    worker: PageWorker
    pagers: dict[str, Pager] = field(default_factory=dict)

    async def tick(self) -> int:
        started = await self.worker.run_once()
        await self.worker.drain()
        return started

    async def jobs(self, inc_id: str = "inc-1") -> list[tuple[str, str, str, int]]:
        views = await self.store.pages.for_incident(inc_id)
        return [(v.integration, v.action, v.status, v.attempts) for v in views]

    async def events(self) -> list[dict[str, Any]]:
        out = [json.loads(r.value) for r in await self.store.outbox.unpublished(1000)]
        for event in out:
            assert_valid_event(event)
        return out

    async def pages(self, kind: str) -> list[dict[str, Any]]:
        return [e["data"]["page"] for e in await self.events() if e["type"].endswith(f".page.{kind}")]

    def metric(self, name: str, **labels: str) -> float:
        return float(self.metrics.registry.get_sample_value(name, labels) or 0.0)

    async def change(self, edit: Any) -> None:
        """Change the stored incident as a person's command would."""
        inc = await self.store.incidents.get("inc-1")
        assert inc is not None
        edit(inc)
        await self.store.commit(Effects(incidents=[inc]), self.clock.now())


@dataclass
class Setup:
    primary: dict[str, PageError | None]
    fallbacks: dict[str, PageError | None] = field(default_factory=dict)
    contacts: dict[str, Any] | None = None


def rig(store: Store, rules: RuleSet, setup: Setup, **settings: Any) -> Rig:
    clock, metrics = ManualClock(T0), Metrics()
    if setup.contacts is not None:
        rules = rules.model_copy(update={"contacts": ContactsFile.model_validate(setup.contacts)})
    # The shipped defaults: 8 attempts, 2 s to 300 s backoff.
    ctx = Context(
        store, rules, EventFactory("events", "io.incidentd", "/test"), clock, metrics, Settings(**settings)
    )
    pagers = {name: Pager(name, clock, err) for name, err in {**setup.primary, **setup.fallbacks}.items()}
    primary: dict[str, Notifier] = {name: pagers[name] for name in setup.primary}
    fallbacks: dict[str, Notifier] = {name: pagers[name] for name in setup.fallbacks}
    return Rig(store, clock, metrics, PageWorker(ctx, primary, fallbacks), pagers)


def contacts(fallback: str | None = None, **role_fallbacks: str) -> dict[str, Any]:
    roles: dict[str, Any] = {
        "DevOps": {"opsgenie": {"team": "devops"}},
        "Security": {"opsgenie": {"team": "security"}},
    }
    for role, pager in role_fallbacks.items():
        roles[role]["fallback"] = pager
    return {"roles": roles, "fallback": fallback}


def trigger(integration: str, target: str = "first", roles: tuple[str, ...] = ("DevOps",)) -> NewPage:
    return NewPage("inc-1", integration, PageAction.TRIGGER, 1, target, roles)


async def run_for(r: Rig, duration: timedelta, step: timedelta = timedelta(seconds=30)) -> None:
    end = r.clock.now() + duration
    while r.clock.now() < end:
        await r.tick()
        r.clock.advance(step)


async def test_a_trigger_outlives_an_hour_long_pager_outage_then_is_sent_once(
    store: Store, rules: RuleSet
) -> None:
    r = rig(store, rules, Setup({"opsgenie": OUTAGE}))
    await store.commit(Effects(incidents=[make_incident()], pages=[trigger("opsgenie")]), T0)
    await run_for(r, timedelta(hours=1))

    pager = r.pagers["opsgenie"]
    attempts = len(pager.calls)
    assert attempts > 8  # the old limit, reached after about five minutes
    assert await r.jobs() == [("opsgenie", "trigger", "pending", attempts)]
    failed = await r.pages("failed")
    assert [p["attempt"] for p in failed] == list(range(1, attempts + 1))
    assert all(p["retrying"] for p in failed)
    assert r.metric("incidentd_pages_failed_total", integration="opsgenie", retrying="true") == attempts
    # Rate-limited: once the backoff reaches its cap (300 s, +-20 % jitter), calls are minutes apart.
    gaps = [(b - a).total_seconds() for a, b in zip(pager.calls, pager.calls[1:], strict=False)]
    assert all(gap >= 240 for gap in gaps[-5:])
    assert max(gaps) <= 360 + 30  # the cap plus one scheduling step

    pager.error = None  # the pager is back
    await run_for(r, timedelta(minutes=10))
    assert len(pager.sent) == 1
    assert await r.jobs() == [("opsgenie", "trigger", "sent", attempts + 1)]
    [sent] = await r.pages("sent")
    assert sent["attempt"] == attempts + 1


def _acknowledge(inc: Incident) -> None:
    inc.acknowledged_at, inc.acknowledged_by = T0 + timedelta(minutes=30), "alice"


def _resolve(inc: Incident) -> None:
    inc.status, inc.resolved_at = IncidentStatus.RESOLVED, T0 + timedelta(minutes=30)


def _reopen(inc: Incident) -> None:
    inc.opening += 1


@pytest.mark.parametrize(
    "edit", [_acknowledge, _resolve, _reopen], ids=["acknowledged", "resolved", "reopened"]
)
async def test_a_retrying_trigger_stops_once_nobody_waits_for_it(
    store: Store, rules: RuleSet, edit: Any
) -> None:
    r = rig(store, rules, Setup({"opsgenie": OUTAGE}))
    await store.commit(Effects(incidents=[make_incident()], pages=[trigger("opsgenie")]), T0)
    await run_for(r, timedelta(minutes=30))
    attempts = len(r.pagers["opsgenie"].calls)
    assert attempts > 8

    await r.change(edit)
    r.pagers["opsgenie"].error = None  # even with the pager back, nobody is paged
    await run_for(r, timedelta(minutes=15))
    assert r.pagers["opsgenie"].sent == []
    assert await r.jobs() == [("opsgenie", "trigger", "superseded", attempts)]
    assert await r.pages("sent") == []


async def test_acknowledging_drops_earlier_escalations_but_not_a_condition_found_later(
    store: Store, rules: RuleSet
) -> None:
    r = rig(store, rules, Setup({"opsgenie": OUTAGE}))
    inc = make_incident()
    inc.escalations["1:sla"] = iso(T0 + timedelta(minutes=12))
    # A data breach found after the acknowledgement: Security and Legal must still hear of it.
    inc.escalations["1:data-breach"] = iso(T0 + timedelta(minutes=40))
    inc.acknowledged_at, inc.acknowledged_by = T0 + timedelta(minutes=30), "alice"
    pages = [trigger("opsgenie", "sla"), trigger("opsgenie", "data-breach", ("Security",))]
    await store.commit(Effects(incidents=[inc], pages=pages), T0)
    r.pagers["opsgenie"].error = None
    await run_for(r, timedelta(minutes=1))
    assert await r.jobs() == [
        ("opsgenie", "trigger", "superseded", 0),
        ("opsgenie", "trigger", "sent", 1),
    ]
    assert [req.target for req in r.pagers["opsgenie"].sent] == ["data-breach"]


async def test_after_three_failures_the_fallback_pager_is_paged_once(
    store: Store, rules: RuleSet, caplog: pytest.LogCaptureFixture
) -> None:
    assert PAGE_FAILOVER_AFTER == 3
    setup = Setup({"opsgenie": OUTAGE}, {"pagerduty": None}, contacts("pagerduty"))
    r = rig(store, rules, setup)
    await store.commit(Effects(incidents=[make_incident()], pages=[trigger("opsgenie")]), T0)
    with caplog.at_level(logging.WARNING, logger="service.notify.worker"):
        await run_for(r, timedelta(minutes=30))

    assert await r.jobs() == [
        ("opsgenie", "trigger", "pending", len(r.pagers["opsgenie"].calls)),
        ("pagerduty", "trigger", "sent", 1),
    ]
    [paged] = r.pagers["pagerduty"].sent
    assert (paged.action, paged.target, paged.roles) == (PageAction.TRIGGER, "first", ("DevOps",))
    assert paged.message == "[INCIDENT] SEV-1: ApiDown"
    failed = await r.pages("failed")
    assert [p.get("failover") for p in failed[:4]] == [None, None, ["pagerduty"], None]
    assert sum(1 for p in failed if p.get("failover")) == 1
    [sent] = await r.pages("sent")
    assert sent["integration"] == "pagerduty"
    assert r.metric("incidentd_page_failovers_total", integration="opsgenie", fallback="pagerduty") == 1
    ours = [rec for rec in caplog.records if rec.name == "service.notify.worker"]
    errors = [rec.getMessage() for rec in ours if rec.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "via opsgenie" in errors[0] and "fallback pagerduty" in errors[0]
    warnings = [rec for rec in ours if rec.levelno == logging.WARNING]
    assert len(warnings) == len(failed)  # loud at every failed attempt

    # The primary kept trying all along; when it recovers it pages too.
    r.pagers["opsgenie"].error = None
    await run_for(r, timedelta(minutes=10))
    assert len(r.pagers["opsgenie"].sent) == 1

    # An ack fanned out to the fallback reaches the page it sent.
    await store.commit(
        Effects(pages=[NewPage("inc-1", "pagerduty", PageAction.ACK, 1, by="alice")]), r.clock.now()
    )
    await r.tick()
    assert [req.action for req in r.pagers["pagerduty"].sent] == [PageAction.TRIGGER, PageAction.ACK]


async def test_a_role_fallback_beats_the_global_one(store: Store, rules: RuleSet) -> None:
    setup = Setup(
        {"opsgenie": OUTAGE}, {"pagerduty": None, "slack": None}, contacts("slack", DevOps="pagerduty")
    )
    r = rig(store, rules, setup)
    await store.commit(Effects(incidents=[make_incident()], pages=[trigger("opsgenie")]), T0)
    await run_for(r, timedelta(minutes=5))
    assert len(r.pagers["pagerduty"].sent) == 1
    assert r.pagers["slack"].sent == []
    # A role without a fallback of its own uses the global one.
    both = ContactsFile.model_validate(contacts("slack", DevOps="pagerduty"))
    assert both.fallbacks_for(["DevOps", "Security"]) == ["pagerduty", "slack"]
    assert both.fallbacks_for([]) == ["slack"]


async def test_a_refused_trigger_fails_at_once_and_fails_over_at_once(store: Store, rules: RuleSet) -> None:
    refused = PageError("HTTP 401", retryable=False)
    r = rig(store, rules, Setup({"opsgenie": refused}, {"pagerduty": None}, contacts("pagerduty")))
    await store.commit(Effects(incidents=[make_incident()], pages=[trigger("opsgenie")]), T0)
    await run_for(r, timedelta(minutes=1))
    assert await r.jobs() == [("opsgenie", "trigger", "failed", 1), ("pagerduty", "trigger", "sent", 1)]
    [failed] = await r.pages("failed")
    assert (failed["retrying"], failed["failover"]) == (False, ["pagerduty"])
    assert r.metric("incidentd_pages_failed_total", integration="opsgenie", retrying="false") == 1


async def test_a_fallback_this_process_lacks_is_reported_not_queued(
    store: Store, rules: RuleSet, caplog: pytest.LogCaptureFixture
) -> None:
    r = rig(store, rules, Setup({"opsgenie": OUTAGE}, {}, contacts("pagerduty")))
    await store.commit(Effects(incidents=[make_incident()], pages=[trigger("opsgenie")]), T0)
    with caplog.at_level(logging.ERROR, logger="service.notify.worker"):
        await run_for(r, timedelta(minutes=5))
    assert [j[0] for j in await r.jobs()] == ["opsgenie"]  # no job nobody here could send
    assert any("pagerduty" in rec.getMessage() and "not set up" in rec.getMessage() for rec in caplog.records)


@pytest.mark.parametrize("action", ["ack", "close", "update"])
async def test_ack_close_and_update_still_give_up_after_max_attempts(
    store: Store, rules: RuleSet, action: str
) -> None:
    r = rig(store, rules, Setup({"opsgenie": None}), page_max_attempts=4)
    await store.commit(Effects(incidents=[make_incident()], pages=[trigger("opsgenie")]), T0)
    await r.tick()  # the trigger went out; what follows refers to it
    if action == "close":
        await r.change(_resolve)
    elif action == "ack":
        await r.change(_acknowledge)
    r.pagers["opsgenie"].error = OUTAGE
    page = NewPage("inc-1", "opsgenie", PageAction(action), 1, by="alice" if action == "ack" else None)
    await store.commit(Effects(pages=[page]), r.clock.now())
    await run_for(r, timedelta(hours=1))
    assert await r.jobs() == [("opsgenie", "trigger", "sent", 1), ("opsgenie", action, "failed", 4)]
    failed = await r.pages("failed")
    assert [p["retrying"] for p in failed] == [True, True, True, False]
    assert r.metric("incidentd_pages_failed_total", integration="opsgenie", retrying="false") == 1


def test_fallback_notifiers_are_built_for_pagers_not_already_configured() -> None:
    assert {*PAGER_NAMES, *FOLLOW_UP_NAMES} == set(NOTIFIERS)  # follow-ups are never a fallback
    file = ContactsFile.model_validate(contacts("console", DevOps="console"))
    settings = Settings()
    built = build_fallbacks(settings, file, {})
    assert list(built) == ["console"]
    assert build_fallbacks(settings, file, {"console": built["console"]}) == {}
