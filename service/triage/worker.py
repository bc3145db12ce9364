"""Fires ``triage`` timers: runs an opening's probes, then stores the findings on the
incident, an ``incident.updated`` event (reasons ``["triage"]``, a ``triage`` part) and an
[UPDATE] to the comms pagers, with the timer's ``fired`` status, in one transaction.

A worker of its own, apart from the timer worker: probes take seconds (or hang until their
timeout), escalations must not wait behind them. The first page was stored with the batch
that opened the incident, before this timer could fire.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from service.batch import PageIntent
from service.clock import iso
from service.context import Context
from service.escalate.updates import render_update
from service.models import Incident, IncidentStatus, PageAction
from service.scheduling import DueWorker
from service.store.pages import NewPage
from service.store.queue import LEASE_SECONDS
from service.store.store import ConcurrentUpdate, Effects
from service.store.timers import TRIAGE, TimerJob, TimerStatus
from service.triage.findings import Finding, summarize
from service.triage.probes.base import Probe
from service.triage.runner import run_probes

log = logging.getLogger(__name__)

# A concurrent write to the incident while the probes ran: store the findings again on
# the fresh copy (the probes are not run again), this many times at most.
ATTEMPTS = 5


class TriageWorker(DueWorker):
    name = "triage worker"
    until_idle = True

    def __init__(self, ctx: Context, comms: Sequence[str], probes: Mapping[str, Probe]) -> None:
        """``comms``: the pagers that carry [UPDATE] messages; ``probes``: by name."""
        super().__init__(ctx.clock)
        self._store = ctx.store
        self._timers = ctx.store.timers
        self._rules = ctx.rules
        self._events = ctx.events
        self._comms = list(comms)
        self._probes = probes
        self._deadline = ctx.settings.triage_deadline_seconds
        self._on_effects = ctx.on_effects

    async def next_due(self) -> float | None:
        return await self._timers.next_due(triage=True)

    async def run_once(self, limit: int = 20) -> int:
        timers = await self._timers.claim_due(self._clock.now(), limit, LEASE_SECONDS, triage=True)
        # Each incident's probes at once: one slow cluster does not delay another's findings.
        await asyncio.gather(*(self._guarded(t) for t in timers))
        return len(timers)

    async def _guarded(self, timer: TimerJob) -> None:
        try:
            await self._fire(timer)
        except Exception:
            # Given back, not held until a restart: the next round (or replica) tries again.
            log.exception("triage of %s failed; trying again", timer.incident_id)
            await self._timers.release(timer)

    async def _fire(self, timer: TimerJob) -> None:
        inc = await self._store.incidents.get(timer.incident_id)
        if not _pending(inc, timer):
            await self._record(timer, TimerStatus.SKIPPED, Effects(), self._clock.now())
            return
        assert inc is not None and inc.triage is not None
        findings = await run_probes(self._probes, inc.triage["plan"], self._deadline)
        for _ in range(ATTEMPTS):
            now = self._clock.now()
            if not _pending(inc, timer):
                await self._record(timer, TimerStatus.SKIPPED, Effects(), now)
                return
            assert inc is not None
            try:
                await self._record(timer, TimerStatus.FIRED, self._effects(inc, findings, now), now)
                log.info("incident %s: triage done: %s", inc.id, summarize(findings).splitlines()[0])
                return
            except ConcurrentUpdate:
                inc = await self._store.incidents.get(timer.incident_id)
        await self._timers.release(timer)

    def _effects(self, inc: Incident, findings: list[Finding], now: datetime) -> Effects:
        summary = summarize(findings)
        rows = [f.to_json() for f in findings]
        plan = inc.triage["plan"] if inc.triage else []
        inc.triage = {"status": "done", "plan": plan, "findings": rows, "summary": summary, "at": iso(now)}
        part = {"findings": rows, "summary": summary}
        event = self._events.build(
            "incident.updated", inc.snapshot(), {"reasons": ["triage"], "triage": part}, now
        )
        message = render_update(self._rules, inc, None, summary)
        page = PageIntent(inc.id, PageAction.UPDATE, inc.opening, TRIAGE, message=message)
        return Effects(incidents=[inc], events=[event], pages=NewPage.fan_out(page, self._comms))

    async def _record(self, timer: TimerJob, status: TimerStatus, effects: Effects, now: datetime) -> None:
        async def finish(conn: Any) -> bool:
            return await self._timers.finish(conn, timer, status, now)

        if not await self._store.commit(effects, now, guard=finish):
            log.warning("triage timer %s: lease lost; another replica handles it", timer.id)
        elif effects:
            self._on_effects()


def _pending(inc: Incident | None, timer: TimerJob) -> bool:
    return (
        inc is not None
        and inc.opening == timer.opening
        and inc.status is not IncidentStatus.RESOLVED
        and inc.triage is not None
        and inc.triage.get("status") == "pending"
    )
