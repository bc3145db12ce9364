"""Remediation state: jobs, the per-target lock and holds, the kill switch, budgets.

Everything that must hold across restarts and replicas lives here, and every
check-then-act is one transaction: reserving a slot locks the single control
row first, so two replicas count cooldowns and budgets one after the other.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from service.store.store import OutboxRecord, Store
from service.store.tables import remediation_control, remediation_holds, remediation_locks, remediations

ACTIVE = ("pending", "awaiting_approval", "acting", "verifying")
TERMINAL = ("succeeded", "failed", "skipped")
JSON_COLUMNS = ("plan", "dry_run", "result")


@dataclass(frozen=True, slots=True)
class Limits:
    cooldown_seconds: float
    rate: tuple[int, float] | None  # (max actions, per seconds) for the job's policy
    budget_per_hour: int


@dataclass(slots=True)
class RemediationJob:
    id: str
    incident_id: str
    opening: int
    fingerprint: str
    policy: str
    action: str
    target_key: str
    target: dict[str, Any] | None
    inputs: dict[str, Any]
    mode: str
    status: str
    plan: dict[str, Any] | None
    dry_run: dict[str, Any] | None
    result: dict[str, Any] | None
    approval_due_at: float | None
    decision: str | None
    decided_by: str | None
    started_at: float | None
    verify_due_at: float | None
    attempts: int
    lease: str = ""


def _job(row: Any, lease: str = "") -> RemediationJob:
    return RemediationJob(
        row.id,
        row.incident_id,
        row.opening,
        row.fingerprint,
        row.policy,
        row.action,
        row.target_key,
        json.loads(row.target),
        json.loads(row.inputs),
        row.mode,
        row.status,
        json.loads(row.plan) if row.plan else None,
        json.loads(row.dry_run) if row.dry_run else None,
        json.loads(row.result) if row.result else None,
        row.approval_due_at,
        row.decision,
        row.decided_by,
        row.started_at,
        row.verify_due_at,
        row.attempts,
        lease,
    )


def public(row: Any) -> dict[str, Any]:
    """A job as the API shows it."""
    data = dict(row._mapping)
    for key in ("target", "inputs", "plan", "dry_run", "result"):
        data[key] = json.loads(data[key]) if data.get(key) else None
    for key in ("lease_until", "lease_owner"):
        data.pop(key, None)
    return data


class _Refusal(Exception):
    def __init__(self, guardrail: str, reason: str) -> None:
        super().__init__(reason)
        self.guardrail = guardrail
        self.reason = reason


class Decision(Exception):
    """An approve/deny that does not apply: ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RemediationStore:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def start(self) -> None:
        async with self._store._write() as conn:
            await conn.execute(
                self._store._insert_ignore(remediation_control),
                [{"id": 1, "paused": False, "reservations": 0}],
            )

    # -- planning (the pipeline) ---------------------------------------------

    async def existing_keys(self, incident_ids: Iterable[str]) -> set[tuple[str, int, str, str]]:
        ids = list(set(incident_ids))
        if not ids:
            return set()
        t = remediations
        async with self._store.engine.connect() as conn:
            rows = await conn.execute(
                select(t.c.incident_id, t.c.opening, t.c.policy, t.c.target_key).where(
                    t.c.incident_id.in_(ids)
                )
            )
            return {(r.incident_id, r.opening, r.policy, r.target_key) for r in rows}

    # -- the worker --------------------------------------------------------------

    async def claim_due(self, now: datetime, limit: int, lease_seconds: float) -> list[RemediationJob]:
        stamp = now.timestamp()
        t = remediations
        unleased = or_(t.c.lease_until.is_(None), t.c.lease_until < stamp)
        due = and_(t.c.status.in_(ACTIVE), t.c.next_attempt_at <= stamp, unleased)
        # The worker is woken after every alert batch; nearly always nothing is due, and a
        # read does not queue behind the consumer's writes as a write transaction would.
        async with self._store.engine.connect() as conn:
            if (await conn.execute(select(t.c.id).where(due).limit(1))).first() is None:
                return []
        async with self._store._write() as conn:
            rows = (
                await conn.execute(select(t).where(due).order_by(t.c.next_attempt_at, t.c.id).limit(limit))
            ).all()
            claimed = []
            for r in rows:
                owner = await self._store._lease(conn, t, r.id, stamp, lease_seconds, t.c.status.in_(ACTIVE))
                if owner is not None:
                    claimed.append(_job(r, owner))
            return claimed

    async def next_due(self) -> float | None:
        t = remediations
        lease = func.coalesce(t.c.lease_until, 0.0)
        runnable_at = case((lease > t.c.next_attempt_at, lease), else_=t.c.next_attempt_at)
        async with self._store.engine.connect() as conn:
            value = (await conn.execute(select(func.min(runnable_at)).where(t.c.status.in_(ACTIVE)))).scalar()
            return float(value) if value is not None else None

    async def finish(
        self,
        job: RemediationJob,
        values: dict[str, Any],
        events: Sequence[OutboxRecord],
        now: datetime,
        *,
        pages: Sequence[dict[str, Any]] = (),
        hold: str | None = None,
    ) -> bool:
        """Record one step of a job with its events (and pages); False if the lease was lost.

        A terminal status releases the target's lock; ``hold`` stops automation on the
        target until a person resumes it."""
        stamp = now.timestamp()
        encoded = {k: json.dumps(v) if k in JSON_COLUMNS and v is not None else v for k, v in values.items()}
        async with self._store._write() as conn:
            if values.get("status") in TERMINAL or hold is not None:
                await self._serialise(conn)
            result = await conn.execute(
                update(remediations)
                .where(remediations.c.id == job.id, remediations.c.lease_owner == job.lease)
                .values(**encoded, lease_until=None, lease_owner=None, updated_at=stamp)
            )
            if result.rowcount != 1:
                return False
            if values.get("status") in TERMINAL:
                await self._unlock(conn, job)
            if hold is not None:
                await conn.execute(
                    self._store._insert_ignore(remediation_holds),
                    [
                        {
                            "target_key": job.target_key,
                            "remediation_id": job.id,
                            "reason": hold,
                            "since": stamp,
                        }
                    ],
                )
            await self._store._add_effects(conn, events, pages, (), now)
            return True

    async def reserve(
        self,
        job: RemediationJob,
        now: datetime,
        limits: Limits,
        lock_seconds: float,
        lease_seconds: float,
        started: OutboxRecord,
        dry_run: dict[str, Any],
    ) -> tuple[str, str] | None:
        """Check the lease, the kill switch and the target's hold, take the target's lock
        and a slot under the cooldown, rate limit and budget, record the job as started
        with its ``started`` event and extend its lease to ``lease_seconds`` for the
        change, in one transaction. Returns None when reserved, else (guardrail, reason)
        and nothing is written; ("lease", ...) means another worker has the job."""
        stamp = now.timestamp()
        t = remediations
        try:
            async with self._store._write() as conn:
                await self._serialise(conn)
                mine = and_(
                    t.c.id == job.id,
                    t.c.lease_owner == job.lease,
                    t.c.lease_until >= stamp,
                    t.c.started_at.is_(None),
                )
                if (await conn.execute(select(t.c.id).where(mine))).first() is None:
                    raise _Refusal("lease", f"remediation {job.id} is no longer ours to start")
                ctl = remediation_control
                control = (
                    await conn.execute(select(ctl.c.paused, ctl.c.paused_by).where(ctl.c.id == 1))
                ).first()
                if control is not None and control.paused:
                    raise _Refusal("kill_switch", f"remediation is paused by {control.paused_by}")
                if await self._lock_holder(conn, job) is not None:
                    raise _Refusal("lock", f"another remediation is acting on {job.target_key}")
                hold = await self._hold(conn, job.target_key)
                if hold is not None:
                    raise _Refusal(
                        "hold", f"automation is stopped for {job.target_key} until resumed: {hold}"
                    )
                refused = await self._limits(conn, job, stamp, limits)
                if refused is not None:
                    raise _Refusal(*refused)
                await self._take_lock(conn, job, stamp + lock_seconds)
                await conn.execute(
                    update(t)
                    .where(mine)
                    .values(
                        started_at=stamp,
                        dry_run=json.dumps(dry_run),
                        lease_until=stamp + lease_seconds,
                        updated_at=stamp,
                    )
                )
                await self._store._add_outbox(conn, [started], now)
        except _Refusal as refusal:  # raised inside the transaction: it rolled back
            return (refusal.guardrail, refusal.reason)
        job.started_at, job.dry_run = stamp, dry_run
        return None

    @staticmethod
    async def _serialise(conn: AsyncConnection) -> None:
        """First statement of every transaction that reads or changes a target's lock or
        hold: on PostgreSQL the row lock on the control row makes them take turns (SQLite
        has one writer anyway)."""
        ctl = remediation_control
        await conn.execute(update(ctl).where(ctl.c.id == 1).values(reservations=ctl.c.reservations + 1))

    @staticmethod
    async def _hold(conn: AsyncConnection, target_key: str) -> str | None:
        h = remediation_holds
        row = (await conn.execute(select(h.c.reason).where(h.c.target_key == target_key))).first()
        return str(row.reason) if row else None

    async def lock_holder(self, job: RemediationJob) -> str | None:
        """Read-only: the id of another running job that holds this job's target."""
        async with self._store.engine.connect() as conn:
            return await self._lock_holder(conn, job)

    @staticmethod
    async def _lock_holder(conn: AsyncConnection, job: RemediationJob) -> str | None:
        """The lock is free if nobody has it, it is this job's, or its job has ended; a
        job still running (verifying, retrying) keeps it however long that takes."""
        lk, t = remediation_locks, remediations
        row = (
            await conn.execute(select(lk.c.remediation_id).where(lk.c.target_key == job.target_key))
        ).first()
        if row is None or row.remediation_id == job.id:
            return None
        holder = (await conn.execute(select(t.c.status).where(t.c.id == row.remediation_id))).first()
        return str(row.remediation_id) if holder is not None and holder.status in ACTIVE else None

    @staticmethod
    async def _take_lock(conn: AsyncConnection, job: RemediationJob, until: float) -> None:
        lk = remediation_locks
        taken = await conn.execute(
            update(lk).where(lk.c.target_key == job.target_key).values(remediation_id=job.id, until=until)
        )
        if taken.rowcount == 0:
            await conn.execute(
                insert(lk).values(target_key=job.target_key, remediation_id=job.id, until=until)
            )

    @staticmethod
    async def _unlock(conn: AsyncConnection, job: RemediationJob) -> None:
        lk = remediation_locks
        await conn.execute(
            lk.delete().where(lk.c.target_key == job.target_key, lk.c.remediation_id == job.id)
        )

    async def _limits(
        self, conn: AsyncConnection, job: RemediationJob, stamp: float, limits: Limits
    ) -> tuple[str, str] | None:
        t = remediations
        enforced = and_(t.c.started_at.is_not(None), t.c.id != job.id)
        last = (
            await conn.execute(
                select(func.max(t.c.started_at)).where(enforced, t.c.target_key == job.target_key)
            )
        ).scalar()
        cooldown = limits.cooldown_seconds
        if last is not None and last > stamp - cooldown:
            wait = int(last + cooldown - stamp)
            return (
                "cooldown",
                f"{job.target_key} was acted on {int(stamp - last)}s ago; cooldown has {wait}s left",
            )
        rate, budget = limits.rate, limits.budget_per_hour
        if rate is not None:
            count = (
                await conn.execute(
                    select(func.count()).where(
                        enforced, t.c.policy == job.policy, t.c.started_at > stamp - rate[1]
                    )
                )
            ).scalar_one()
            if count >= rate[0]:
                return (
                    "rate_limit",
                    f"policy {job.policy} acted {count} times in {int(rate[1])}s (limit {rate[0]})",
                )
        used = (
            await conn.execute(select(func.count()).where(enforced, t.c.started_at > stamp - 3600))
        ).scalar_one()
        if used >= budget:
            return ("budget", f"{used} actions in the last hour; the global budget is {budget}")
        return None

    async def check_limits(
        self, job: RemediationJob, now: datetime, limits: Limits
    ) -> tuple[str, str] | None:
        """The same limits as :meth:`reserve`, read-only: an early, cheap refusal."""
        async with self._store.engine.connect() as conn:
            return await self._limits(conn, job, now.timestamp(), limits)

    # -- guardrail state ---------------------------------------------------------

    async def control(self) -> dict[str, Any]:
        async with self._store.engine.connect() as conn:
            row = (
                await conn.execute(select(remediation_control).where(remediation_control.c.id == 1))
            ).first()
        if row is None:
            return {"paused": False, "paused_by": None, "paused_at": None, "reason": None}
        return {k: getattr(row, k) for k in ("paused", "paused_by", "paused_at", "reason")}

    async def set_paused(self, paused: bool, by: str, reason: str | None, now: datetime) -> None:
        async with self._store._write() as conn:
            await conn.execute(
                update(remediation_control)
                .where(remediation_control.c.id == 1)
                .values(paused=paused, paused_by=by, paused_at=now.timestamp(), reason=reason)
            )

    async def hold_of(self, target_key: str) -> str | None:
        async with self._store.engine.connect() as conn:
            return await self._hold(conn, target_key)

    async def holds(self) -> list[dict[str, Any]]:
        async with self._store.engine.connect() as conn:
            rows = await conn.execute(select(remediation_holds).order_by(remediation_holds.c.since))
            return [dict(r._mapping) for r in rows]

    async def clear_hold(self, target_key: str) -> bool:
        async with self._store._write() as conn:
            result = await conn.execute(
                remediation_holds.delete().where(remediation_holds.c.target_key == target_key)
            )
            return bool(result.rowcount)

    # -- approvals and the API -------------------------------------------------------

    async def decide(self, remediation_id: str, decision: str, by: str, now: datetime) -> dict[str, Any]:
        """Approve or deny a job waiting for approval; repeating the same decision is a no-op."""
        t = remediations
        async with self._store._write() as conn:
            result = await conn.execute(
                update(t)
                .where(
                    t.c.id == remediation_id,
                    t.c.status == "awaiting_approval",
                    t.c.decision.is_(None),
                    # Silence until the timeout is a deny; a late answer cannot undo it.
                    t.c.approval_due_at > now.timestamp(),
                )
                .values(
                    decision=decision,
                    decided_by=by,
                    next_attempt_at=now.timestamp(),
                    updated_at=now.timestamp(),
                )
            )
            row = (await conn.execute(select(t).where(t.c.id == remediation_id))).first()
        if row is None:
            raise Decision(404, f"no remediation {remediation_id}")
        if result.rowcount != 1 and row.decision != decision:
            if row.decision:
                state = f"already {row.decision} by {row.decided_by}"
            elif row.status == "awaiting_approval":
                state = "was not answered before its approval timeout (denied)"
            else:
                state = f"is {row.status}"
            raise Decision(409, f"remediation {remediation_id} {state}; it is not waiting for approval")
        return public(row)

    async def get(self, remediation_id: str) -> dict[str, Any] | None:
        async with self._store.engine.connect() as conn:
            row = (
                await conn.execute(select(remediations).where(remediations.c.id == remediation_id))
            ).first()
            return public(row) if row else None

    async def list(self, incident_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        # Newest first (ids are hashes: they do not order).
        query = (
            select(remediations).order_by(remediations.c.created_at.desc(), remediations.c.id).limit(limit)
        )
        if incident_id is not None:
            query = query.where(remediations.c.incident_id == incident_id)
        async with self._store.engine.connect() as conn:
            return [public(r) for r in await conn.execute(query)]


__all__ = ["Decision", "Limits", "RemediationJob", "RemediationStore"]
