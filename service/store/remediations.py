"""Remediation jobs: one per (incident opening, policy, target), stepped by the worker.

The plan is stored before any change is made; ``started_at`` is set when an enforced
action reserves its slot, and cooldowns, rate limits and the budget count those.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Row, and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from service.batch import RemediationRequest
from service.clock import from_epoch
from service.models import RemediationInputs, Target
from service.store.database import Database
from service.store.queue import WorkQueue
from service.store.tables import remediations

# A JSON document from the Kubernetes API or an action (plans, dry runs, results).
JsonObject = dict[str, Any]


class JobStatus(StrEnum):
    PENDING = "pending"
    AWAITING_APPROVAL = "awaiting_approval"
    ACTING = "acting"
    VERIFYING = "verifying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"

    @property
    def active(self) -> bool:
        return self in ACTIVE


ACTIVE = frozenset({JobStatus.PENDING, JobStatus.AWAITING_APPROVAL, JobStatus.ACTING, JobStatus.VERIFYING})
_ACTIVE_VALUES = [s.value for s in ACTIVE]


class ApprovalDecision(StrEnum):
    APPROVED = "approved"
    DENIED = "denied"


@dataclass(slots=True)
class RemediationJob:
    id: str
    incident_id: str
    opening: int
    fingerprint: str
    policy: str
    action: str
    target_key: str
    target: Target | None
    inputs: RemediationInputs
    mode: str
    status: JobStatus
    guardrail: str | None
    reason: str | None
    plan: JsonObject | None
    dry_run: JsonObject | None
    result: JsonObject | None
    approval_due_at: datetime | None
    decision: ApprovalDecision | None
    decided_by: str | None
    started_at: datetime | None
    verify_due_at: datetime | None
    next_attempt_at: datetime
    attempts: int
    created_at: datetime
    updated_at: datetime
    lease: str = ""

    def to_json(self) -> dict[str, Any]:
        """The job as the API shows it (times as epoch seconds, as they always were)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "lease":
                continue
            if isinstance(value, datetime):
                value = value.timestamp()
            elif isinstance(value, Target | RemediationInputs):
                value = value.to_json()
            out[f.name] = value
        return out


@dataclass(frozen=True, slots=True)
class JobUpdate:
    """One step's change to a job; None leaves a field as it is. A terminal status
    also writes ``guardrail`` and ``reason`` when None, so an outcome never shows an
    earlier attempt's reason."""

    status: JobStatus | None = None
    mode: str | None = None
    guardrail: str | None = None
    reason: str | None = None
    plan: JsonObject | None = None
    dry_run: JsonObject | None = None
    result: JsonObject | None = None
    attempts: int | None = None
    next_attempt_at: datetime | None = None
    approval_due_at: datetime | None = None
    verify_due_at: datetime | None = None

    @property
    def terminal(self) -> bool:
        return self.status is not None and not self.status.active

    def values(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and not (self.terminal and f.name in ("guardrail", "reason")):
                continue
            if isinstance(value, datetime):
                value = value.timestamp()
            elif isinstance(value, StrEnum):
                value = value.value
            elif f.name in ("plan", "dry_run", "result"):
                value = json.dumps(value)
            out[f.name] = value
        return out


def _loads(raw: str | None) -> Any:
    return json.loads(raw) if raw else None


def _at(stamp: float | None) -> datetime | None:
    return from_epoch(stamp) if stamp is not None else None


def _job(row: Row[Any], lease: str = "") -> RemediationJob:
    target = _loads(row.target)
    return RemediationJob(
        id=row.id,
        incident_id=row.incident_id,
        opening=row.opening,
        fingerprint=row.fingerprint,
        policy=row.policy,
        action=row.action,
        target_key=row.target_key,
        target=Target.from_json(target) if target else None,
        inputs=RemediationInputs.from_json(json.loads(row.inputs)),
        mode=row.mode,
        status=JobStatus(row.status),
        guardrail=row.guardrail,
        reason=row.reason,
        plan=_loads(row.plan),
        dry_run=_loads(row.dry_run),
        result=_loads(row.result),
        approval_due_at=_at(row.approval_due_at),
        decision=ApprovalDecision(row.decision) if row.decision else None,
        decided_by=row.decided_by,
        started_at=_at(row.started_at),
        verify_due_at=_at(row.verify_due_at),
        next_attempt_at=from_epoch(row.next_attempt_at),
        attempts=row.attempts,
        created_at=from_epoch(row.created_at),
        updated_at=from_epoch(row.updated_at),
        lease=lease,
    )


class RemediationJobs:
    def __init__(self, db: Database) -> None:
        self._db = db
        t = remediations
        self.queue = WorkQueue(
            db,
            t,
            runnable=t.c.status.in_(_ACTIVE_VALUES),
            due=t.c.next_attempt_at,
        )

    # -- planning (the pipeline) ---------------------------------------------

    async def add(self, conn: AsyncConnection, requests: Sequence[RemediationRequest], now: datetime) -> None:
        """Store the jobs a batch asks for: one per (incident opening, policy, target),
        however often asked; a refused one is stored as skipped."""
        await self.add_rows(conn, self.rows(requests, now))

    async def add_rows(self, conn: AsyncConnection, rows: list[dict[str, object]]) -> None:
        if rows:
            await conn.execute(self._db.insert_ignore(remediations), rows)

    @staticmethod
    def rows(requests: Sequence[RemediationRequest], now: datetime) -> list[dict[str, object]]:
        stamp = now.timestamp()
        return [
            {
                "id": r.id,
                "incident_id": r.incident_id,
                "opening": r.opening,
                "fingerprint": r.fingerprint,
                "policy": r.policy,
                "action": r.action,
                "target_key": r.target_key,
                "target": json.dumps(r.target.to_json() if r.target else None),
                "inputs": json.dumps(r.inputs.to_json()),
                "mode": r.mode,
                "status": (JobStatus.SKIPPED if r.refused else JobStatus.PENDING).value,
                # Every row has the same keys: a batch's rows are one multi-row insert.
                "guardrail": r.refused[0] if r.refused else None,
                "reason": r.refused[1] if r.refused else None,
                "attempts": 0,
                "next_attempt_at": stamp,
                "created_at": stamp,
                "updated_at": stamp,
            }
            for r in requests
        ]

    async def existing_keys(self, incident_ids: Iterable[str]) -> set[tuple[str, int, str, str]]:
        """(incident id, opening, policy, target key) of the jobs these incidents have."""
        ids = list(set(incident_ids))
        if not ids:
            return set()
        t = remediations
        async with self._db.read() as conn:
            rows = await conn.execute(
                select(t.c.incident_id, t.c.opening, t.c.policy, t.c.target_key).where(
                    t.c.incident_id.in_(ids)
                )
            )
            return {(r.incident_id, r.opening, r.policy, r.target_key) for r in rows}

    # -- the worker --------------------------------------------------------------

    async def claim_due(self, now: datetime, limit: int, lease_seconds: float) -> list[RemediationJob]:
        claim = await self.queue.claim_if_due(now, limit, lease_seconds)
        return [_job(r, claim.owner) for r in claim.rows]

    async def next_due(self) -> float | None:
        return await self.queue.next_due()

    async def update(
        self, conn: AsyncConnection, job: RemediationJob, change: JobUpdate, now: datetime
    ) -> bool:
        """Record one step and end its lease; False if the lease was lost."""
        return await self.queue.finish(conn, job.id, job.lease, **change.values(), updated_at=now.timestamp())

    async def mark_started(
        self, conn: AsyncConnection, job: RemediationJob, now: datetime, dry_run: JsonObject
    ) -> bool:
        """Record that an enforced action starts (its slot is reserved), keeping the lease
        (renewed while this process lives); False if the job is no longer ours or already
        started."""
        t = remediations
        result = await conn.execute(
            update(t)
            .where(self._still_ours(job, now), t.c.started_at.is_(None))
            .values(started_at=now.timestamp(), dry_run=json.dumps(dry_run), updated_at=now.timestamp())
        )
        return bool(result.rowcount == 1)

    def _still_ours(self, job: RemediationJob, now: datetime) -> Any:
        return and_(self.queue.held(job.id, job.lease), remediations.c.lease_until >= now.timestamp())

    async def is_ours_to_start(self, conn: AsyncConnection, job: RemediationJob, now: datetime) -> bool:
        t = remediations
        query = select(t.c.id).where(self._still_ours(job, now), t.c.started_at.is_(None))
        return (await conn.execute(query)).first() is not None

    # -- what the guardrails count ----------------------------------------------------

    @staticmethod
    async def status_of(conn: AsyncConnection, job_id: str) -> JobStatus | None:
        t = remediations
        row = (await conn.execute(select(t.c.status).where(t.c.id == job_id))).first()
        return JobStatus(row.status) if row else None

    @staticmethod
    async def last_started(conn: AsyncConnection, target_key: str, besides: str) -> datetime | None:
        """When an enforced action last started on this target (another job than ``besides``)."""
        t = remediations
        value = (
            await conn.execute(
                select(func.max(t.c.started_at)).where(
                    t.c.started_at.is_not(None), t.c.id != besides, t.c.target_key == target_key
                )
            )
        ).scalar()
        return from_epoch(value) if value is not None else None

    @staticmethod
    async def started_since(
        conn: AsyncConnection, since: datetime, besides: str, policy: str | None = None
    ) -> int:
        """Enforced actions started after ``since`` (of one policy, or all)."""
        t = remediations
        query = select(func.count()).where(
            t.c.started_at.is_not(None), t.c.id != besides, t.c.started_at > since.timestamp()
        )
        if policy is not None:
            query = query.where(t.c.policy == policy)
        return int((await conn.execute(query)).scalar_one())

    # -- approvals and the API ---------------------------------------------------------

    async def decide(
        self, conn: AsyncConnection, job_id: str, decision: ApprovalDecision, by: str, now: datetime
    ) -> bool:
        """Record a decision on a job waiting for one, before its approval timeout (silence
        until then is a deny; a late answer cannot undo it). False if it did not apply."""
        t = remediations
        result = await conn.execute(
            update(t)
            .where(
                t.c.id == job_id,
                t.c.status == JobStatus.AWAITING_APPROVAL.value,
                t.c.decision.is_(None),
                t.c.approval_due_at > now.timestamp(),
            )
            .values(
                decision=decision.value,
                decided_by=by,
                next_attempt_at=now.timestamp(),
                updated_at=now.timestamp(),
            )
        )
        return bool(result.rowcount == 1)

    async def get(self, job_id: str, conn: AsyncConnection | None = None) -> RemediationJob | None:
        row = await self._db.first(select(remediations).where(remediations.c.id == job_id), conn)
        return _job(row) if row else None

    async def list(self, incident_id: str | None = None, limit: int = 100) -> list[RemediationJob]:
        """Newest first (ids are hashes: they do not order)."""
        t = remediations
        query = select(t).order_by(t.c.created_at.desc(), t.c.id).limit(limit)
        if incident_id is not None:
            query = query.where(t.c.incident_id == incident_id)
        async with self._db.read() as conn:
            return [_job(r) for r in await conn.execute(query)]
