"""The persist stage: dead letters to Kafka, then everything the batch decided in one
transaction (incidents, events, page jobs, timers, remediation jobs)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from service.batch import Batch, DeadLetter
from service.emit.cloudevents import EventFactory
from service.observability.metrics import Metrics
from service.store.pages import NewPage
from service.store.store import Effects, Store


class DeadLetterSink(Protocol):
    async def __call__(self, dead: list[DeadLetter]) -> None: ...


class PersistStage:
    def __init__(
        self,
        store: Store,
        events: EventFactory,
        pagers: Sequence[str],
        dead_letters: DeadLetterSink,
        metrics: Metrics,
    ) -> None:
        self._store = store
        self._events = events
        self._pagers = list(pagers)
        self._dead_letters = dead_letters
        self._metrics = metrics

    async def __call__(self, batch: Batch) -> Batch:
        if batch.dead:
            # Confirmed by Kafka before the batch commits: a record is processed or dead-lettered.
            await self._dead_letters(batch.dead)
        effects = Effects(
            incidents=list(batch.changed.values()),
            events=[self._events.build(e.type, e.incident, e.extra, batch.now) for e in batch.events],
            pages=[page for p in batch.pages for page in NewPage.fan_out(p, self._pagers)],
            timers=batch.timers,
            remediations=batch.remediations,
        )
        if effects:
            await self._store.commit(effects, batch.now)
        self._count(batch)
        return batch

    def _count(self, batch: Batch) -> None:
        """Counted once the batch is stored, so a batch read again is not counted twice."""
        m = self._metrics
        m.alerts_received.labels("kafka").inc(len(batch.alerts))
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
