"""The steps of a remediation job, one per status:

    pending -> [awaiting_approval] -> acting -> verifying -> succeeded | failed
       \\-> skipped (a guardrail stopped it: the event names which)

Each step does its part and records the outcome (``outcomes.py``); every step is safe
to repeat after a crash (plans are pinned, applying an applied plan changes nothing,
the reserved slot is kept).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from service.clock import iso
from service.context import Context
from service.models import Incident, Target
from service.remediate.actions.base import Action, Verdict, refuse_unless_changed_within
from service.remediate.guardrails import Guardrails, Start, alert_resolved
from service.remediate.kube import Kube, KubeError
from service.remediate.outcomes import Ending, Outcomes, approval_part
from service.remediate.target import Refused
from service.ruleset.durations import format_duration
from service.ruleset.remediation import Approval, Policy
from service.store.remediations import ApprovalDecision, JobStatus, JobUpdate, RemediationJob
from service.store.store import Effects

log = logging.getLogger(__name__)

# The target's lock outlasts the verification by this much (the lock is also released
# when its job ends, and a running job keeps it however long it takes).
LOCK_MARGIN_SECONDS = 300.0
LOCK_POLL = timedelta(seconds=15)


@dataclass(slots=True)
class Step:
    """One job's step: the job and what it refers to."""

    job: RemediationJob
    inc: Incident
    policy: Policy
    action: Action
    target: Target
    params: Any  # the action's parameter model


class Steps:
    def __init__(self, ctx: Context, kube: Kube | None, guardrails: Guardrails, outcomes: Outcomes) -> None:
        self._api = kube
        self._guard = guardrails
        self._out = outcomes
        self._clock = ctx.clock
        self._settings = ctx.settings
        self._metrics = ctx.metrics
        self._on_effects = ctx.on_effects

    async def run(self, s: Step) -> None:
        steps = {
            JobStatus.PENDING: self.plan,
            JobStatus.AWAITING_APPROVAL: self.await_approval,
            JobStatus.ACTING: self.act,
            JobStatus.VERIFYING: self.verify,
        }
        await steps[s.job.status](s)

    @property
    def _kube(self) -> Kube:
        if self._api is None:
            raise Refused(
                "cluster", "no Kubernetes API configured (INCIDENTD_KUBE_API_URL, in-cluster or kubeconfig)"
            )
        return self._api

    async def plan(self, s: Step) -> None:
        now = self._clock.now()
        await self._guard.before_acting(s.job, s.inc, s.policy, now)
        kube = self._kube
        within = s.policy.preconditions.changed_within
        if within is not None:
            await refuse_unless_changed_within(kube, s.target, within, now)
        plan = await s.action.plan(kube, s.target, s.params, now)
        s.job.plan = plan
        if s.job.mode != "enforce":
            dry = await s.action.apply(kube, s.target, s.params, plan, dry_run=True)
            planned = self._out.event("remediation.planned", s.job, s.inc, plan=plan)
            reason = "dry-run mode: the server-side dry run passed; nothing was changed"
            ending = Ending(JobStatus.SKIPPED, guardrail="mode", reason=reason, dry_run=dry, first=(planned,))
            await self._out.end(s.job, s.inc, ending)
            return
        approval = s.policy.approval
        if approval is not None and s.inc.severity in approval.severities:
            await self._ask_approval(s, approval, now)
            return
        event = self._out.event("remediation.planned", s.job, s.inc, plan=plan)
        await self._out.save(
            s.job, JobUpdate(status=JobStatus.ACTING, plan=plan, attempts=0), [event], next_at=now
        )

    async def _ask_approval(self, s: Step, approval: Approval, now: datetime) -> None:
        """Wait for a person's decision, and page the approvers, with the status change."""
        due = now + approval.timeout
        info = {"required": True, "due_at": iso(due)}
        event = self._out.event("remediation.planned", s.job, s.inc, plan=s.job.plan, approval=info)
        change = JobUpdate(status=JobStatus.AWAITING_APPROVAL, plan=s.job.plan, approval_due_at=due)
        pages = self._out.approval_pages(s.job, s.inc, approval.approvers, due)
        await self._out.save_effects(s.job, change, Effects(events=[event], pages=pages), next_at=due)
        log.info(
            "remediation %s (%s on %s) waits for approval until %s; paged %s",
            s.job.id,
            s.job.action,
            s.target.key,
            due,
            ", ".join(approval.approvers),
        )

    async def await_approval(self, s: Step) -> None:
        job, now = s.job, self._clock.now()
        if job.decision is ApprovalDecision.APPROVED:  # before the timeout (the store refuses later ones)
            await self._out.save(job, JobUpdate(status=JobStatus.ACTING, attempts=0), [], next_at=now)
        elif job.decision is ApprovalDecision.DENIED:
            raise Refused("approval", f"denied by {job.decided_by}")
        elif job.approval_due_at is not None and now >= job.approval_due_at:
            raise Refused("approval", "no answer before the approval timeout: denied")
        else:
            await self._out.save(job, JobUpdate(), [], next_at=job.approval_due_at or now)

    async def act(self, s: Step) -> None:
        job, plan, kube = s.job, s.job.plan or {}, self._kube
        if job.started_at is None:
            if not await self._start(s):
                return
        elif await self._guard.paused() is not None:
            # A retry of an action already under way: with the kill switch on, hand it over.
            reason = "remediation was paused while the action was under way; not retried"
            await self._out.end(job, s.inc, Ending(JobStatus.FAILED, reason=reason, stage="apply", hold=True))
            return
        result = await s.action.apply(kube, s.target, s.params, plan, dry_run=False)
        now = self._clock.now()
        change = JobUpdate(
            status=JobStatus.VERIFYING, result=result, verify_due_at=now + s.policy.verify.timeout, attempts=0
        )
        await self._out.save(job, change, [], next_at=now)
        log.warning("remediation %s: %s on %s: %s", job.id, job.action, s.target.key, result.get("detail"))

    async def _start(self, s: Step) -> bool:
        """Reserve the target and a slot, recording the start before anything changes;
        False when the job must wait or is no longer ours."""
        job, plan = s.job, s.job.plan or {}
        await self._guard.before_acting(job, s.inc, s.policy, self._clock.now())
        if await self._guard.lock_holder(job) is not None:
            # One actor per target: wait for the other job (cheaply: no dry run until it is
            # done); its cooldown decides after.
            await self._out.save(job, JobUpdate(), [], next_at=self._clock.now() + LOCK_POLL)
            return False
        dry = await s.action.apply(self._kube, s.target, s.params, plan, dry_run=True)
        now = self._clock.now()
        started = self._out.event(
            "remediation.started", job, s.inc, plan=plan, dry_run=dry, approval=approval_part(job)
        )
        start = Start(
            lock_until=now + s.policy.verify.timeout + timedelta(seconds=LOCK_MARGIN_SECONDS),
            started=started,
            dry_run=dry,
        )
        try:
            # Recorded, with the kill switch, hold, lock and limits checked in the same
            # transaction, before the change is made: a crash from here on resumes.
            await self._guard.reserve(job, now, self._guard.limits(s.policy), start)
        except Refused as refused:
            if refused.guardrail == "lock":
                await self._out.save(job, JobUpdate(), [], next_at=now + LOCK_POLL)
                return False
            if refused.guardrail == "lease":
                log.warning("remediation %s: %s", job.id, refused.reason)
                return False
            raise
        self._on_effects()
        self._metrics.remediations.labels(job.action, "started").inc()
        return True

    async def verify(self, s: Step) -> None:
        job, now = s.job, self._clock.now()
        try:
            # Drains retry evictions while verifying; not while paused.
            act = await self._guard.paused() is None
            verdict = await s.action.verify(self._kube, s.target, job.plan or {}, act=act)
        except KubeError as exc:
            verdict = Verdict(False, f"cannot check: {exc}")
        checks = [verdict]
        if s.policy.verify.alert_resolved:
            checks.append(alert_resolved(s.inc, job))
        detail = "; ".join(v.detail for v in checks)
        if all(v.done for v in checks):
            await self._out.end(job, s.inc, Ending(JobStatus.SUCCEEDED, verification=detail))
            return
        if job.verify_due_at is not None and now >= job.verify_due_at:
            reason = f"no recovery within {format_duration(s.policy.verify.timeout)}: {detail}"
            ending = Ending(JobStatus.FAILED, reason=reason, verification=detail, stage="verify", hold=True)
            await self._out.end(job, s.inc, ending)
            return
        interval = timedelta(seconds=self._settings.remediation_verify_interval_seconds)
        await self._out.save(job, JobUpdate(), [], next_at=min(now + interval, job.verify_due_at or now))
