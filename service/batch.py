"""The stage contract: what a batch is, what a stage does with it, and how stages compose.

A batch is one Kafka poll: one store transaction and one offset commit for up to
``kafka_max_batch`` records. Each stage takes the batch and returns it, adding what it
decided; the persist stage stores all of it at once. (Alertmanager's
``notify/notify.go`` is the model: one ``Stage`` interface, its combinators, and a
builder elsewhere, in ``service/pipeline.py``.)

This module imports no stage: every stage depends on it, never on another stage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from service.models import Alert, Incident, PageAction, RemediationInputs, Target


@dataclass(slots=True)
class Record:
    """A Kafka record as the pipeline sees it."""

    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None
    # The intake's seal header (``ingest/seal.py``), if the record has one.
    seal: bytes | None = None


@dataclass(slots=True)
class DeadLetter:
    record: Record
    reason: str


@dataclass(slots=True)
class EventIntent:
    """An incident event to publish once the batch is stored."""

    type: str  # suffix such as "incident.opened"
    incident: dict[str, Any]  # the snapshot, as event data carries it
    extra: dict[str, Any] = field(default_factory=dict)


# Page targets besides "first", an escalation rule's name, reminder:<n> and manual:<n>: a
# person assigned a role, a backup page for one nobody answered, an approval request.
PERSON = "person:"
BACKUP = "backup:"
APPROVAL = "approval:"
MANUAL = "manual:"
# An action item added to a resolved incident (its n-th): an [UPDATE] job for the follow-up
# ticket only, which adds it to the ticket filed at the resolve (a comment).
ACTION_ITEM = "action_item:"
# The [UPDATE] that says an incident is flapping (once per opening).
FLAPPING = "flapping"


@dataclass(slots=True)
class PageIntent:
    """A page to send through every pager (or the comms pagers only, for updates)."""

    incident_id: str
    action: PageAction
    opening: int
    target: str = "first"  # the first page, an escalation rule, reminder:<n>, remediation:<id>
    roles: list[str] = field(default_factory=list)
    # The text when it is not rendered from the incident (reminders, hand-overs), or who acked.
    message: str | None = None
    by: str | None = None


@dataclass(frozen=True, slots=True)
class TimerIntent:
    """A durable timer: once per (incident opening, name), however often asked."""

    incident_id: str
    opening: int
    name: str
    due_at: datetime


@dataclass(frozen=True, slots=True)
class RemediationRequest:
    """A remediation job the remediate stage asks for; stored with the batch."""

    id: str
    incident_id: str
    opening: int
    fingerprint: str
    policy: str
    action: str
    target_key: str
    target: Target | None  # None: the target was refused
    inputs: RemediationInputs
    mode: str
    refused: tuple[str, str] | None = None  # (guardrail, reason): stored as skipped


@dataclass(slots=True)
class Stored:
    """What a stored batch changed: the work queues it added to, and whether any incident
    changed ("incidents"); the workers of those are woken, no others. ``timers_due``: the
    earliest timer it added (epoch seconds): the timer worker is woken only if that is
    sooner than it would look anyway."""

    queues: set[str] = field(default_factory=set)
    timers_due: float | None = None


@dataclass(slots=True)
class Batch:
    records: Sequence[Record]
    now: datetime
    alerts: list[Alert] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    # The incidents the batch's group keys had before it (group key -> incident).
    current: dict[str, Incident] = field(default_factory=dict)
    # What the stages decided, stored in one transaction by the persist stage.
    changed: dict[str, Incident] = field(default_factory=dict)
    events: list[EventIntent] = field(default_factory=list)
    pages: list[PageIntent] = field(default_factory=list)
    timers: list[TimerIntent] = field(default_factory=list)
    remediations: list[RemediationRequest] = field(default_factory=list)
    duplicates: int = 0
    ignored: int = 0
    # An incident that may inhibit others resolved: once stored, the noise worker looks.
    holds_may_lift: bool = False
    stored: Stored = field(default_factory=Stored)
    # Turns of the event loop the pipeline leaves to others after each stage (its lane's).
    turns: int = 1


class Stage(Protocol):
    async def __call__(self, batch: Batch) -> Batch: ...


class Pipeline:
    """Stages run in order on one batch (Alertmanager's ``MultiStage``)."""

    def __init__(self, stages: list[Stage]) -> None:
        self.stages = stages

    async def __call__(self, batch: Batch) -> Batch:
        for stage in self.stages:
            batch = await stage(batch)
            # A stage that never waits runs without letting anyone else run: a storm slice's
            # stages would hold the event loop for their whole CPU time, and the urgent lane,
            # the webhooks and the pages with it.
            for _ in range(batch.turns):
                await asyncio.sleep(0)
        return batch

    async def process(self, records: Sequence[Record], now: datetime, turns: int = 1) -> Batch:
        return await self(Batch(records=records, now=now, turns=turns))
