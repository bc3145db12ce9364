"""Fires due timers: escalations and [UPDATE] reminders, durably and exactly once.

Timers are rows in the store with their due time. A timer is leased, its effect
decided against the incident as it is now, and the effect (incident change,
events, page jobs, the next reminder) stored with the timer's ``fired`` status in
one transaction. A crash before that commit leaves the timer pending: it fires
after the restart, late but once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from service.clock import Clock, iso
from service.correlate.correlator import PageIntent
from service.emit.cloudevents import EventFactory
from service.escalate.policy import REMINDER, EscalationPolicy, TimerIntent, escalation_key
from service.models import Incident, IncidentStatus
from service.observability.metrics import Metrics
from service.pipeline import page_row
from service.ruleset.models import RuleSet
from service.scheduling import run_due_work
from service.store.store import ConcurrentUpdate, Store, TimerJob

log = logging.getLogger(__name__)

LEASE_SECONDS = 60.0


class TimerWorker:
    def __init__(
        self,
        store: Store,
        rules: RuleSet,
        events: EventFactory,
        clock: Clock,
        metrics: Metrics,
        pagers: dict[str, bool],  # name -> takes [UPDATE] messages (the comms channel)
        on_effects: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._rules = rules
        self._policy = EscalationPolicy(rules)
        self._events = events
        self._clock = clock
        self._metrics = metrics
        self._pagers = pagers
        self._on_effects = on_effects
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        await run_due_work(
            "timer worker",
            self.run_once,
            self._store.next_timer_due,
            self._clock,
            self._wake,
            log,
            until_idle=True,
        )

    async def run_once(self, limit: int = 100) -> int:
        """Fire every due timer (up to ``limit``); return how many were handled."""
        timers = await self._store.claim_due_timers(self._clock.now(), limit, LEASE_SECONDS)
        for timer in timers:
            try:
                await self._fire(timer)
            except ConcurrentUpdate:
                # The incident changed under us (an alert, an ack): decide again.
                await self._store.release_timer(timer)
        return len(timers)

    async def _fire(self, timer: TimerJob) -> None:
        now = self._clock.now()
        inc = await self._store.get_incident(timer.incident_id)
        if inc is None or inc.opening != timer.opening or inc.status is IncidentStatus.RESOLVED:
            await self._record(timer, "skipped", None, [], [], [], now)
            return
        if timer.name.startswith(REMINDER):
            await self._remind(timer, inc, now)
            return
        esc = self._policy.due_escalation(inc, timer.name, now)
        if esc is None:
            await self._record(timer, "skipped", None, [], [], [], now)
            return
        inc.escalations[escalation_key(inc, esc.rule)] = now.isoformat()
        event = self._events.build("incident.escalated", inc.snapshot(), {"escalation": esc.part()}, now)
        page = PageIntent(inc.id, "trigger", inc.opening, esc.rule, esc.roles)
        pages = [page_row(page, name) for name in self._pagers]
        await self._record(timer, "fired", inc, [event], pages, [], now)
        self._metrics.escalations.labels(esc.kind).inc()
        log.info("incident %s escalated (%s) to %s: %s", inc.id, esc.rule, ", ".join(esc.roles), esc.reason)

    async def _remind(self, timer: TimerJob, inc: Incident, now: datetime) -> None:
        follow_up = self._policy.follow_up(inc)
        if follow_up is None:
            await self._record(timer, "skipped", None, [], [], [], now)
            return
        sequence = int(timer.name.removeprefix(REMINDER))
        # From the due time, not from now: a late reminder after a restart does not
        # shift the cadence, and missed ones each fire once, at once.
        next_due = timer.due_at + follow_up
        message = self._render_update(inc, next_due)
        comms = {"message": message, "sequence": sequence, "next_update": iso(next_due)}
        event = self._events.build("comms.update", inc.snapshot(), {"comms": comms}, now)
        target = f"{REMINDER}{sequence}"
        page = PageIntent(inc.id, "update", inc.opening, target, [], {"message": message})
        pages = [page_row(page, name) for name, comms_channel in self._pagers.items() if comms_channel]
        following = [TimerIntent(inc.id, inc.opening, f"{REMINDER}{sequence + 1}", next_due)]
        await self._record(timer, "fired", None, [event], pages, following, now)
        self._metrics.reminders.inc()

    def _render_update(self, inc: Incident, next_due: datetime) -> str:
        ctx: dict[str, Any] = {**inc.snapshot(), "root_cause": None, "eta": None}
        try:
            return self._rules.templates.update.render(incident=ctx, next_update=iso(next_due)).strip()
        except Exception as exc:  # a user's template must not stop the cadence
            log.warning("update template failed for %s: %s", inc.id, exc)
            return f"[UPDATE] {inc.severity}: {inc.title}\n- Next update: {iso(next_due)}"

    async def _record(
        self,
        timer: TimerJob,
        status: str,
        inc: Incident | None,
        events: list[Any],
        pages: list[dict[str, Any]],
        timers: list[TimerIntent],
        now: datetime,
    ) -> None:
        recorded = await self._store.fire_timer(
            timer, status=status, incident=inc, events=events, pages=pages, timers=timers, now=now
        )
        if not recorded:
            log.warning("timer %s (%s): lease lost; another replica handles it", timer.id, timer.name)
        elif events or pages or timers:
            self._on_effects()
