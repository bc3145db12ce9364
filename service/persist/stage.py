"""The persist stage: dead letters to Kafka, then everything the batch decided in one
transaction (incidents, events, page jobs, timers, remediation jobs)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from service.batch import Batch, DeadLetter, PageIntent, Stored
from service.context import Context
from service.models import PageAction
from service.store.pages import NewPage
from service.store.store import INCIDENTS, Effects


class DeadLetterSink(Protocol):
    async def __call__(self, dead: list[DeadLetter]) -> None: ...


class PersistStage:
    def __init__(
        self, ctx: Context, pagers: Sequence[str], closers: Sequence[str], dead_letters: DeadLetterSink
    ) -> None:
        """``pagers``: who gets each page; ``closers``: who else gets its close (the fallback
        pagers, in case a page went out through them)."""
        self._store = ctx.store
        self._events = ctx.events
        self._pagers = list(pagers)
        self._closers = [*pagers, *(c for c in closers if c not in pagers)]
        self._dead_letters = dead_letters
        self._metrics = ctx.metrics
        self._wake_noise = ctx.wake_noise

    async def __call__(self, batch: Batch) -> Batch:
        if batch.dead:
            # Confirmed by Kafka before the batch commits: a record is processed or dead-lettered.
            await self._dead_letters(batch.dead)
        effects = Effects(
            incidents=list(batch.changed.values()),
            events=[self._events.build(e.type, e.incident, e.extra, batch.now) for e in batch.events],
            pages=[page for p in batch.pages for page in NewPage.fan_out(p, self._route(p))],
            timers=batch.timers,
            remediations=batch.remediations,
        )
        if effects:
            await self._store.commit(effects, batch.now)
            batch.stored = Stored(
                {*effects.queues(), *([INCIDENTS] if effects.incidents else [])},
                min((t.due_at.timestamp() for t in batch.timers), default=None),
            )
        if batch.holds_may_lift:
            self._wake_noise()
        self._count(batch)
        return batch

    def _route(self, page: PageIntent) -> list[str]:
        return self._closers if page.action in (PageAction.ACK, PageAction.CLOSE) else self._pagers

    def _count(self, batch: Batch) -> None:
        """Counted once the batch is stored, so a batch read again is not counted twice."""
        m = self._metrics
        m.alerts_received.inc(len(batch.alerts))
        m.alerts_deduplicated.inc(batch.duplicates)
        m.alerts_ignored.inc(batch.ignored)
        for e in batch.events:
            if e.type == "incident.opened":
                m.incidents_opened.labels(e.incident["severity"]).inc()
            elif e.type == "incident.escalated":
                m.escalations.labels(e.extra["escalation"]["kind"]).inc()
            elif e.type == "remediation.skipped":
                m.remediations.labels(e.extra["remediation"]["action"], "skipped").inc()
                m.remediations_skipped.labels(e.extra["remediation"]["guardrail"]).inc()
        # Wall time, not the injected clock: this measures the machine, not the scenario.
        stored_at = datetime.now(UTC)
        for alert in batch.alerts:
            if alert.received_at is not None:
                m.processing_latency.observe(max(0.0, (stored_at - alert.received_at).total_seconds()))
