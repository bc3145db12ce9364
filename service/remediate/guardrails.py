"""What stops a remediation: the rules as they are now, the kill switch, recovery, holds,
one actor per target, cooldowns, rate limits and the budget.

Every check here raises :class:`Refused` naming its guardrail. The cheap ones run at
every step; :meth:`Guardrails.reserve` runs them again, with the target's lock and the
budget slot, in the one transaction that records the action's start.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from service.context import Context
from service.models import AlertStatus, Incident, IncidentStatus
from service.observability.metrics import Metrics
from service.remediate.actions.base import Verdict
from service.remediate.target import Refused
from service.ruleset.remediation import Mode, Policy, RemediationFile, strictest
from service.store.control import ControlState
from service.store.outbox import OutboxRecord
from service.store.remediations import (
    ApprovalDecision,
    JobStatus,
    JsonObject,
    RemediationJob,
    RemediationJobs,
)
from service.store.store import Store


@dataclass(frozen=True, slots=True)
class Limits:
    cooldown: timedelta
    rate: tuple[int, timedelta] | None  # (max actions, per) for the job's policy
    budget_per_hour: int


@dataclass(frozen=True, slots=True)
class Start:
    """What :meth:`Guardrails.reserve` records when an action may start."""

    lock_until: datetime  # the target's lock, for as long as the job may run
    started: OutboxRecord  # the remediation.started event
    dry_run: JsonObject


def alert_resolved(inc: Incident, job: RemediationJob) -> Verdict:
    if inc.status is IncidentStatus.RESOLVED or inc.opening != job.opening:
        return Verdict(True, "the incident resolved")
    state = inc.alerts.get(job.fingerprint)
    if state is None or state.status is AlertStatus.RESOLVED:
        return Verdict(True, "the alert resolved")
    return Verdict(False, "the alert is still firing")


class Guardrails:
    def __init__(self, ctx: Context) -> None:
        self._store: Store = ctx.store
        self._jobs: RemediationJobs = ctx.store.remediations
        self._control: ControlState = ctx.store.control
        self._rules: RemediationFile = ctx.rules.remediation
        self._params = ctx.rules.remediation_params
        self._settings = ctx.settings
        self._metrics: Metrics = ctx.metrics

    def still_allowed(self, job: RemediationJob, inc: Incident | None, policy: Policy | None) -> None:
        """The rules as they are now, not as they were when the job was planned: a mode
        lowered, a target taken off the allowlist or a policy changed stops the job.
        May lower ``job.mode`` for a job that has not been planned yet."""
        if inc is None:
            raise Refused("rules", "the incident no longer exists")
        if policy is None or policy.action != job.action or job.target is None:
            raise Refused("rules", f"policy {job.policy} no longer exists or now does something else")
        if job.inputs.params != self._params[policy.name].model_dump():
            # The plan was bounded by the old parameters (max_replicas, max_pods).
            raise Refused("rules", f"policy {job.policy}'s parameters changed since the job was planned")
        approval = policy.approval
        if (
            job.status is JobStatus.ACTING
            and job.decision is not ApprovalDecision.APPROVED
            and approval is not None
            and inc.severity in approval.severities
        ):
            raise Refused("approval", f"policy {job.policy} now asks for approval")
        planned: Mode = "enforce" if job.mode == "enforce" else "dry-run"
        mode = strictest(self._settings.remediation_mode, self._rules.mode, policy.mode, planned)
        if mode == "off":
            raise Refused("mode", "remediation was switched off")
        if mode != job.mode:
            if job.status is not JobStatus.PENDING:
                raise Refused("mode", f"remediation mode lowered to {mode} before the action started")
            job.mode = mode
        if not job.target.allowed_by(self._rules.allowlist):
            raise Refused("allowlist", f"{job.target_key} is no longer in the allowlist")

    async def paused(self) -> str | None:
        """Why the kill switch is on, or None."""
        pause = await self._control.pause_state()
        why: str | None = None
        if self._settings.remediation_paused:
            why = "remediation is paused by configuration (INCIDENTD_REMEDIATION_PAUSED)"
        elif pause.paused:
            why = f"remediation is paused by {pause.by}" + (f": {pause.reason}" if pause.reason else "")
        self._metrics.remediation_paused.set(0 if why is None else 1)
        return why

    async def before_acting(self, job: RemediationJob, inc: Incident, policy: Policy, now: datetime) -> None:
        """What stops a new action: the kill switch, recovery, a hold on the target, and
        (read-only, to spare the cluster reads) the limits."""
        paused = await self.paused()
        if paused is not None:
            raise Refused("kill_switch", paused)
        resolved = alert_resolved(inc, job)
        if resolved.done:
            raise Refused("recovered", f"nothing to remediate: {resolved.detail}")
        hold = await self._control.hold_of(job.target_key)
        if hold is not None:
            raise Refused("hold", f"automation is stopped for {job.target_key} until resumed: {hold}")
        if job.mode == "enforce":
            async with self._store.db.read() as conn:
                await self._within_limits(conn, job, now, self.limits(policy))

    def limits(self, policy: Policy) -> Limits:
        limit = policy.rate_limit
        return Limits(
            self._rules.cooldown_for(policy),
            (limit.max, limit.per) if limit else None,
            self._rules.budget_per_hour,
        )

    async def lock_holder(self, job: RemediationJob, conn: AsyncConnection | None = None) -> str | None:
        """Another running job that holds this job's target. The lock is free if nobody has
        it, it is this job's, or its job has ended; a job still running (verifying,
        retrying) keeps it however long that takes."""
        holder = await self._control.lock_of(job.target_key, conn)
        if holder is None or holder == job.id:
            return None
        if conn is None:
            async with self._store.db.read() as own:
                status = await self._jobs.status_of(own, holder)
        else:
            status = await self._jobs.status_of(conn, holder)
        return holder if status is not None and status.active else None

    async def reserve(self, job: RemediationJob, now: datetime, limits: Limits, start: Start) -> None:
        """Check the lease, the kill switch and the target's hold, take the target's lock
        and a slot under the cooldown, rate limit and budget, and record the job as
        started with its event, in one transaction; or raise :class:`Refused` and write
        nothing (guardrail "lease": another worker has the job; "lock": wait)."""
        async with self._store.db.write() as conn:
            await self._control.serialise(conn)
            if not await self._jobs.is_ours_to_start(conn, job, now):
                raise Refused("lease", f"remediation {job.id} is no longer ours to start")
            pause = await self._control.pause_state(conn)
            if pause.paused:
                raise Refused("kill_switch", f"remediation is paused by {pause.by}")
            if await self.lock_holder(job, conn) is not None:
                raise Refused("lock", f"another remediation is acting on {job.target_key}")
            hold = await self._control.hold_of(job.target_key, conn)
            if hold is not None:
                raise Refused("hold", f"automation is stopped for {job.target_key} until resumed: {hold}")
            await self._within_limits(conn, job, now, limits)
            await self._control.take_lock(conn, job.target_key, job.id, start.lock_until)
            await self._jobs.mark_started(conn, job, now, start.dry_run)
            await self._store.outbox.add(conn, [start.started], now)
        # Raised inside the transaction, a refusal rolled it back; here it committed.
        job.started_at, job.dry_run = now, start.dry_run

    async def _within_limits(
        self, conn: AsyncConnection, job: RemediationJob, now: datetime, limits: Limits
    ) -> None:
        last = await self._jobs.last_started(conn, job.target_key, besides=job.id)
        if last is not None and last > now - limits.cooldown:
            wait = int((last + limits.cooldown - now).total_seconds())
            ago = int((now - last).total_seconds())
            raise Refused("cooldown", f"{job.target_key} was acted on {ago}s ago; cooldown has {wait}s left")
        if limits.rate is not None:
            most, per = limits.rate
            count = await self._jobs.started_since(conn, now - per, besides=job.id, policy=job.policy)
            if count >= most:
                seconds = int(per.total_seconds())
                raise Refused(
                    "rate_limit", f"policy {job.policy} acted {count} times in {seconds}s (limit {most})"
                )
        used = await self._jobs.started_since(conn, now - timedelta(hours=1), besides=job.id)
        if used >= limits.budget_per_hour:
            raise Refused(
                "budget", f"{used} actions in the last hour; the global budget is {limits.budget_per_hour}"
            )
