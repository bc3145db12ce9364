"""Who the postmortem-due reminder reaches: the chat pagers when there are any (a reminder
must not open a PagerDuty incident that wakes someone), else the paging pagers, so that
somebody is told; never a follow-up (the status page). And after downtime that missed
several reminder times, one reminder, not one per day missed."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from service.batch import DeadLetter, Record
from service.clock import ManualClock
from service.config import Settings
from service.context import Context
from service.emit.cloudevents import EventFactory
from service.escalate.commands import Ack, CommandHandler, Resolve
from service.escalate.scheduler import TimerWorker
from service.notify.worker import PageWorker
from service.observability.metrics import Metrics
from service.pipeline import Paging, build_pipeline
from service.ruleset import RuleSet
from service.store.store import Store
from tests.support.payloads import alert, body, webhook
from tests.support.recorder import Recorder
from tests.support.time import T0

HOUR = timedelta(hours=1)
IC = ("Incident Commander",)


class Harness:
    """The pipeline, the command handler, the timer and page workers of one process, with
    these pagers (``comms``: a chat pager), on a manual clock."""

    def __init__(self, store: Store, rules: RuleSet, *pagers: Recorder) -> None:
        self.store, self.clock = store, ManualClock(T0)
        self.pagers = {p.name: p for p in pagers}
        names = list(self.pagers)
        comms = [p.name for p in pagers if p.comms]
        ctx = Context(
            store, rules, EventFactory("events", "io.incidentd", "/test"), self.clock, Metrics(), Settings()
        )

        async def sink(dead: list[DeadLetter]) -> None:
            raise AssertionError(f"dead letters: {dead}")

        self.pipeline = build_pipeline(ctx, Paging(names), sink)
        self.timers = TimerWorker(ctx, names, comms)
        self.pages = PageWorker(ctx, dict(self.pagers))
        self.commands = CommandHandler(ctx, names, comms)

    async def settle(self) -> None:
        while await self.timers.run_once() or await self.pages.run_once():
            await self.pages.drain()

    async def resolved_sev1(self) -> str:
        """ApiDown (SEV-1: postmortem due 48 h after resolving) opened, acknowledged and
        resolved at T0 + 10 min."""
        await self.pipeline.process(
            [Record(body(webhook(alert("ApiDown", namespace="a"))), "alerts", 0, 1)], T0
        )
        await self.settle()
        events = [json.loads(r.value) for r in await self.store.outbox.unpublished(100)]
        [inc] = [e["subject"] for e in events if e["type"] == "io.incidentd.incident.opened"]
        self.clock.advance(timedelta(minutes=10))
        await self.commands.apply(inc, Ack(by="bob"), "api")
        await self.commands.apply(inc, Resolve(by="carol"), "api")
        await self.settle()
        return str(inc)

    async def at(self, when: timedelta) -> None:
        """``when`` after T0."""
        self.clock.advance(T0 + when - self.clock.now())
        await self.settle()

    def reminders(self, pager: str) -> list[tuple[str, str, tuple[str, ...]]]:
        return [
            (str(p.action), p.target, p.roles)
            for p in self.pagers[pager].sent
            if p.target.startswith("postmortem:")
        ]


RESOLVED = timedelta(minutes=10)
DUE = RESOLVED + 48 * HOUR


@pytest.mark.parametrize("with_status_page", [False, True], ids=["pagerduty", "pagerduty+statuspage"])
async def test_without_a_chat_pager_the_reminder_goes_to_the_paging_pager(
    store: Store, rules: RuleSet, with_status_page: bool
) -> None:
    # A status page carries [UPDATE]s (comms) but is no chat: the public hears nothing of it.
    pagers = [Recorder("pagerduty", comms=False)]
    if with_status_page:
        pagers.append(Recorder("statuspage", comms=True))
    h = Harness(store, rules, *pagers)
    inc = await h.resolved_sev1()
    await h.at(DUE - timedelta(minutes=1))
    assert h.reminders("pagerduty") == []
    await h.at(DUE)
    assert h.reminders("pagerduty") == [("trigger", "postmortem:1", IC)]
    [page] = [p for p in h.pagers["pagerduty"].sent if p.target == "postmortem:1"]
    assert page.message.startswith(f"[POSTMORTEM DUE] SEV-1: ApiDown is happening (incident {inc}")
    if with_status_page:
        assert h.reminders("statuspage") == []
        jobs = [(j.integration, j.target) for j in await store.pages.for_incident(inc)]
        assert ("statuspage", "postmortem:1") not in jobs
    await h.at(DUE + 24 * HOUR)
    assert h.reminders("pagerduty")[-1] == ("trigger", "postmortem:2", IC)


async def test_with_a_chat_pager_the_paging_pager_gets_no_reminder(store: Store, rules: RuleSet) -> None:
    h = Harness(store, rules, Recorder("slack", comms=True), Recorder("pagerduty", comms=False))
    inc = await h.resolved_sev1()
    await h.at(DUE)
    await h.at(DUE + 24 * HOUR)
    assert h.reminders("slack") == [("trigger", "postmortem:1", IC), ("trigger", "postmortem:2", IC)]
    assert h.reminders("pagerduty") == []
    # Not even a job for it: nothing to supersede, nothing on the timeline.
    jobs = [(j.integration, j.target) for j in await store.pages.for_incident(inc)]
    assert [t for i, t in jobs if i == "pagerduty" and t.startswith("postmortem:")] == []
    # The paging pager did get the incident's own pages (it is no bystander here).
    assert [(str(p.action), p.target) for p in h.pagers["pagerduty"].sent][:2] == [
        ("trigger", "first"),
        ("ack", "first"),
    ]


async def test_after_downtime_past_several_reminder_times_one_reminder_is_sent(
    store: Store, rules: RuleSet
) -> None:
    h = Harness(store, rules, Recorder("slack", comms=True))
    await h.resolved_sev1()
    await h.at(DUE - HOUR)
    assert h.reminders("slack") == []
    # Down from before the first reminder until three and a half days after it: back at
    # DUE + 84 h, the reminders of DUE, +24 h, +48 h and +72 h all lie in the past.
    back = DUE + 84 * HOUR
    await h.at(back)
    assert h.reminders("slack") == [("trigger", "postmortem:1", IC)]
    # The next one a day after it was sent, not a day after it was due.
    await h.at(back + 24 * HOUR - timedelta(minutes=1))
    assert len(h.reminders("slack")) == 1
    await h.at(back + 24 * HOUR)
    assert h.reminders("slack") == [("trigger", "postmortem:1", IC), ("trigger", "postmortem:2", IC)]
