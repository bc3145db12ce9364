"""Fires due timers: escalations and [UPDATE] reminders, durably and exactly once.

Timers are rows in the store with their due time. A timer is leased, its effect
decided against the incident as it is now, and the effect (incident change,
events, page jobs, the next reminder) stored with the timer's ``fired`` status in
one transaction. A crash before that commit leaves the timer pending: it fires
after the restart, late but once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from service.batch import PageIntent, TimerIntent
from service.clock import iso
from service.context import Context
from service.escalate.policy import EscalationPolicy, escalation_key
from service.escalate.updates import post_update, reminder_sequence
from service.models import Incident, IncidentStatus, PageAction
from service.postmortem import reminders as postmortem
from service.postmortem.reminders import POSTMORTEM
from service.quiet.transitions import FLAP_QUIET
from service.ruleset.models import FOLLOW_UP_NAMES
from service.scheduling import DueWorker
from service.store.pages import NewPage
from service.store.queue import LEASE_SECONDS
from service.store.store import ConcurrentUpdate, Effects
from service.store.timers import REMINDER, TimerJob, TimerStatus

log = logging.getLogger(__name__)


class TimerWorker(DueWorker):
    name = "timer worker"
    until_idle = True

    def __init__(self, ctx: Context, pagers: Sequence[str], comms: Sequence[str]) -> None:
        """``pagers``: every pager; ``comms``: those that carry [UPDATE] messages."""
        super().__init__(ctx.clock)
        self._store = ctx.store
        self._timers = ctx.store.timers
        self._rules = ctx.rules
        self._policy = EscalationPolicy(ctx.rules)
        self._events = ctx.events
        self._metrics = ctx.metrics
        self._pagers = list(pagers)
        self._comms = list(comms)
        # Who hears that a postmortem is due: the chat pagers (Slack, console), not the paging
        # apps, where a reminder would open a pager incident that escalates through the on-call
        # chain and that nothing ever closes; without a chat pager, the paging apps, so that
        # somebody is told. Never a follow-up (a ticket or the public status page).
        chat = [p for p in self._comms if p not in FOLLOW_UP_NAMES]
        self._reminded = chat or [p for p in self._pagers if p not in FOLLOW_UP_NAMES]
        self._on_effects = ctx.on_effects

    async def next_due(self) -> float | None:
        return await self._timers.next_due()

    async def run_once(self, limit: int = 100) -> int:
        """Fire every due timer (up to ``limit``); return how many were handled."""
        timers = await self._timers.claim_due(self._clock.now(), limit, LEASE_SECONDS)
        for timer in timers:
            try:
                await self._fire(timer)
            except ConcurrentUpdate:
                # The incident changed under us (an alert, an ack): decide again.
                await self._timers.release(timer)
        return len(timers)

    async def _fire(self, timer: TimerJob) -> None:
        now = self._clock.now()
        inc = await self._store.incidents.get(timer.incident_id)
        if timer.name.startswith(POSTMORTEM):
            await self._postmortem_due(timer, inc, now)
            return
        if timer.name.startswith(FLAP_QUIET):
            await self._flap_quiet(timer, inc, now)
            return
        if inc is None or inc.opening != timer.opening or inc.status is IncidentStatus.RESOLVED:
            await self._record(timer, TimerStatus.SKIPPED, Effects(), now)
            return
        if inc.hold is not None:
            # Held (silenced, in a window, inhibited): its clocks pause; the lift plans anew.
            await self._record(timer, TimerStatus.SKIPPED, Effects(), now)
            return
        if timer.name.startswith(REMINDER):
            await self._remind(timer, inc, now)
            return
        esc = self._policy.due_escalation(inc, timer.name, now)
        if esc is None:
            await self._record(timer, TimerStatus.SKIPPED, Effects(), now)
            return
        inc.escalations[escalation_key(inc, esc.rule)] = iso(now)
        event = self._events.build("incident.escalated", inc.snapshot(), {"escalation": esc.part()}, now)
        page = PageIntent(inc.id, PageAction.TRIGGER, inc.opening, esc.rule, esc.roles)
        effects = Effects(incidents=[inc], events=[event], pages=NewPage.fan_out(page, self._pagers))
        await self._record(timer, TimerStatus.FIRED, effects, now)
        self._metrics.escalations.labels(esc.kind).inc()
        log.info("incident %s escalated (%s) to %s: %s", inc.id, esc.rule, ", ".join(esc.roles), esc.reason)

    async def _remind(self, timer: TimerJob, inc: Incident, now: datetime) -> None:
        sequence = reminder_sequence(timer.name)
        if self._policy.follow_up(inc) is None or sequence < inc.update_sequence:
            # No cadence for this severity (any more), or a person's [UPDATE] restarted it.
            await self._record(timer, TimerStatus.SKIPPED, Effects(), now)
            return
        post = post_update(self._rules, inc, sequence, timer.due_at)
        event = self._events.build(post.event.type, post.event.incident, post.event.extra, now)
        # The incident is written (unchanged) so a person's [UPDATE] committed meanwhile
        # makes this a ConcurrentUpdate, decided again, rather than a second message.
        effects = Effects(
            incidents=[inc],
            events=[event],
            pages=NewPage.fan_out(post.page, self._comms),
            timers=post.following,
        )
        await self._record(timer, TimerStatus.FIRED, effects, now)
        self._metrics.reminders.inc()

    async def _postmortem_due(self, timer: TimerJob, inc: Incident | None, now: datetime) -> None:
        """Page the Incident Commander that the postmortem is due, and again every day until
        it is marked done (or the incident reopens: its next resolve starts over)."""
        if inc is None or not postmortem.is_due(inc, timer.opening):
            await self._record(timer, TimerStatus.SKIPPED, Effects(), now)
            return
        n = postmortem.sequence(timer.name)
        page = postmortem.reminder_page(inc, n)
        extra = {"reasons": ["postmortem_due"]}
        event = self._events.build("incident.updated", inc.snapshot(), extra, now)
        # The incident is written (unchanged): a postmortem marked done meanwhile makes this a
        # ConcurrentUpdate, decided again, rather than a reminder after it was done.
        effects = Effects(
            incidents=[inc],
            events=[event],
            pages=NewPage.fan_out(page, self._reminded),
            # From now if it fired late (after downtime): one reminder, not one per day missed.
            timers=[postmortem.next_reminder(inc, n, max(timer.due_at, now))],
        )
        await self._record(timer, TimerStatus.FIRED, effects, now)
        log.info("incident %s: postmortem due (reminder %d) to the Incident Commander", inc.id, n)

    async def _flap_quiet(self, timer: TimerJob, inc: Incident | None, now: datetime) -> None:
        """No reopen for the quiet period: the incident stops flapping, and the pagers'
        incident, kept open through the flaps, closes if it is resolved."""
        flapping = inc.flapping if inc is not None else None
        if inc is None or flapping is None or inc.opening != timer.opening or now < flapping.quiet_until:
            await self._record(timer, TimerStatus.SKIPPED, Effects(), now)
            return
        inc.flapping = None
        inc.reopens = []
        pages: list[NewPage] = []
        timers: list[TimerIntent] = []
        if inc.status is IncidentStatus.RESOLVED and inc.paged == timer.opening:
            pages = NewPage.fan_out(PageIntent(inc.id, PageAction.CLOSE, inc.opening), self._pagers)
            # The series is over: its postmortem is due from now.
            timers = postmortem.first_reminder(self._rules, inc, now)
        event = self._events.build("incident.updated", inc.snapshot(), {"reasons": ["flapping_ended"]}, now)
        effects = Effects(incidents=[inc], events=[event], pages=pages, timers=timers)
        await self._record(timer, TimerStatus.FIRED, effects, now)
        log.info("incident %s stopped flapping", inc.id)

    async def _record(self, timer: TimerJob, status: TimerStatus, effects: Effects, now: datetime) -> None:
        """The timer's outcome with everything it causes, in one transaction."""

        async def finish(conn: Any) -> bool:
            return await self._timers.finish(conn, timer, status, now)

        if not await self._store.commit(effects, now, guard=finish):
            log.warning("timer %s (%s): lease lost; another replica handles it", timer.id, timer.name)
        elif effects:
            self._on_effects()
