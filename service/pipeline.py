"""The pipeline, assembled in one place (Alertmanager's notify pipeline is the model).

    parse -> classify -> correlate -> escalate -> remediate -> persist

Each stage takes the batch and returns it. A batch is one Kafka poll: one store
transaction and one offset commit for up to ``kafka_max_batch`` records.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from service.classify.classifier import Classifier
from service.correlate.correlator import Correlator, Outcome, PageIntent, assign_group
from service.emit.cloudevents import EventFactory
from service.escalate.policy import EscalationPolicy
from service.escalate.stage import EscalateStage
from service.ingest.parse import PayloadError, parse
from service.models import Alert, Incident
from service.observability.metrics import Metrics
from service.remediate.stage import RemediateStage
from service.ruleset.models import RuleSet
from service.ruleset.remediation import Mode
from service.store.remediations import RemediationStore
from service.store.store import OutboxRecord, Store

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Record:
    """A Kafka record as the pipeline sees it."""

    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None


@dataclass(slots=True)
class DeadLetter:
    record: Record
    reason: str


@dataclass(slots=True)
class Batch:
    records: Sequence[Record]
    now: datetime
    alerts: list[Alert] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    current: dict[str, Incident] = field(default_factory=dict)
    outcome: Outcome = field(default_factory=Outcome)
    # Remediation jobs (store rows) the batch asks for; stored with it.
    remediations: list[dict[str, Any]] = field(default_factory=list)


class Stage(Protocol):
    async def __call__(self, batch: Batch) -> Batch: ...


class ParseStage:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def __call__(self, batch: Batch) -> Batch:
        for rec in batch.records:
            if not rec.value:
                batch.dead.append(DeadLetter(rec, "empty record value"))
                continue
            try:
                alerts = parse(rec.value, batch.now)
            except PayloadError as exc:
                batch.dead.append(DeadLetter(rec, exc.reason))
                continue
            if rec.timestamp_ms:
                # The producer's timestamp: for the HTTP path, when the webhook was accepted.
                received = datetime.fromtimestamp(rec.timestamp_ms / 1000, UTC)
                for alert in alerts:
                    alert.received_at = received
            batch.alerts.extend(alerts)
        return batch


class ClassifyStage:
    def __init__(self, classifier: Classifier) -> None:
        self._classifier = classifier

    async def __call__(self, batch: Batch) -> Batch:
        self._classifier.classify_all(batch.alerts)
        return batch


class CorrelateStage:
    def __init__(self, store: Store, correlator: Correlator, rules: RuleSet) -> None:
        self._store = store
        self._correlator = correlator
        self._rules = rules

    async def __call__(self, batch: Batch) -> Batch:
        keys = {assign_group(a, self._rules) for a in batch.alerts}
        batch.current = await self._store.load_current(keys) if keys else {}
        batch.outcome = self._correlator.apply(batch.alerts, batch.current, batch.now)
        return batch


class DeadLetterSink(Protocol):
    async def __call__(self, dead: list[DeadLetter]) -> None: ...


class PersistStage:
    """Dead letters to Kafka first, then state + outbox + page jobs in one transaction."""

    def __init__(
        self,
        store: Store,
        events: EventFactory,
        pagers: list[str],
        dead_letters: DeadLetterSink,
        metrics: Metrics,
    ) -> None:
        self._store = store
        self._events = events
        self._pagers = pagers
        self._dead_letters = dead_letters
        self._metrics = metrics

    async def __call__(self, batch: Batch) -> Batch:
        if batch.dead:
            await self._dead_letters(batch.dead)
        out = batch.outcome
        records: list[OutboxRecord] = [
            self._events.build(e.type, e.incident, e.extra, batch.now) for e in out.events
        ]
        pages = [page_row(p, name) for p in out.pages for name in self._pagers]
        if out.changed or records or pages or out.timers or batch.remediations:
            await self._store.commit_batch(
                out.changed.values(), records, pages, batch.now, out.timers, batch.remediations
            )
        m = self._metrics
        # Counted once the batch is stored, so a batch read again is not counted twice.
        m.alerts_received.labels("kafka").inc(len(batch.alerts))
        m.alerts_deduplicated.inc(out.duplicates)
        m.alerts_ignored.inc(out.ignored)
        for e in out.events:
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
        return batch


def page_row(p: PageIntent, integration: str) -> dict[str, Any]:
    return {
        "incident_id": p.incident_id,
        "integration": integration,
        "action": p.action,
        "opening": p.opening,
        "target": p.target,
        "roles": json.dumps(p.roles),
        "payload": json.dumps(p.payload),
    }


class Pipeline:
    def __init__(self, stages: list[Stage]) -> None:
        self.stages = stages

    async def process(self, records: Sequence[Record], now: datetime) -> Batch:
        batch = Batch(records=records, now=now)
        for stage in self.stages:
            batch = await stage(batch)
        return batch


def build_pipeline(
    rules: RuleSet,
    store: Store,
    events: EventFactory,
    pagers: list[str],
    dead_letters: DeadLetterSink,
    metrics: Metrics,
    remediation_mode: Mode = "dry-run",
) -> Pipeline:
    classifier = Classifier(rules)
    return Pipeline(
        [
            ParseStage(metrics),
            ClassifyStage(classifier),
            CorrelateStage(store, Correlator(rules, describe=classifier.describe), rules),
            EscalateStage(EscalationPolicy(rules)),
            RemediateStage(rules, RemediationStore(store), remediation_mode),
            PersistStage(store, events, pagers, dead_letters, metrics),
        ]
    )
