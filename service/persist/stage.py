"""The persist stage: dead letters to Kafka, then everything the batch decided in one
transaction (incidents, events, page jobs, timers, remediation jobs)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from service.batch import Batch, DeadLetter, PageIntent, Stored
from service.context import Context
from service.models import PageAction
from service.store.pages import HandedPage, NewPage, PageJob, Reservation
from service.store.store import INCIDENTS, Effects
from service.store.tables import page_jobs


class DeadLetterSink(Protocol):
    async def __call__(self, dead: list[DeadLetter]) -> None: ...


class PageHandoff(Protocol):
    """The page worker (service/notify/worker.py), taking the jobs a batch stores as they are
    stored: the page is on its way without another transaction to claim it."""

    def reserve(self, wanted: int) -> Reservation: ...

    def hand(self, reservation: Reservation, pages: Sequence[HandedPage]) -> None: ...


class PersistStage:
    def __init__(
        self,
        ctx: Context,
        pagers: Sequence[str],
        closers: Sequence[str],
        dead_letters: DeadLetterSink,
        handoff: PageHandoff | None = None,
    ) -> None:
        """``pagers``: who gets each page; ``closers``: who else gets its close (the fallback
        pagers, in case a page went out through them); ``handoff``: who sends them."""
        self._store = ctx.store
        self._events = ctx.events
        self._pagers = list(pagers)
        self._closers = [*pagers, *(c for c in closers if c not in pagers)]
        self._dead_letters = dead_letters
        self._metrics = ctx.metrics
        self._wake_noise = ctx.wake_noise
        self._handoff = handoff

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
            handed = await self._commit(effects, batch)
            queues = set(effects.queues())
            if len(handed) == len(effects.pages):
                queues.discard(page_jobs.name)  # nothing left for a claim to find
            batch.stored = Stored(
                {*queues, *([INCIDENTS] if effects.incidents else [])},
                min((t.due_at.timestamp() for t in batch.timers), default=None),
            )
        if batch.holds_may_lift:
            self._wake_noise()
        self._count(batch)
        return batch

    async def _commit(self, effects: Effects, batch: Batch) -> list[PageJob]:
        """Store ``effects``; the page jobs leased in that transaction are handed to the page
        worker, and returned."""
        if self._handoff is None or not effects.pages:
            await self._store.commit(effects, batch.now)
            return []
        handoff, handed = self._handoff, list[PageJob]()
        reservation = handoff.reserve(len({(p.incident_id, p.integration) for p in effects.pages}))

        async def lease(conn: AsyncConnection) -> None:
            ids = sorted({p.incident_id for p in effects.pages if p.integration in reservation.integrations})
            handed[:] = await self._store.pages.lease_new(
                conn, ids, set(reservation.integrations), batch.now, reservation.slots
            )

        try:
            await self._store.commit(effects, batch.now, then=lease if reservation.slots else None)
        except BaseException:
            handoff.hand(reservation, [])
            raise
        # Each incident as that transaction stored it (one version on from the one read).
        stored = {i.id: dataclasses.replace(i, version=i.version + 1) for i in effects.incidents}
        handoff.hand(reservation, [HandedPage(job, stored.get(job.incident_id)) for job in handed])
        return handed

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
        # The alerts of a batch share their receipt time: one observation each, at once.
        received = Counter(a.received_at for a in batch.alerts if a.received_at is not None)
        for at, times in received.items():
            m.processing_latency.observe_times(max(0.0, (stored_at - at).total_seconds()), times)
