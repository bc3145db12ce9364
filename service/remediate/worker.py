"""Runs remediation jobs through their steps (``steps.py``), durably, one leased step at
a time.

Each step reads the job from the store, does its part and stores the outcome with its
events in one transaction, so a crash repeats at most one step. In ``dry-run`` mode a
job stops after the server-side dry run. In ``enforce`` mode every write is preceded
by the same write with ``dryRun=All``; after it, recovery is verified, and if it does
not come the target is put on hold and a person is paged with what was tried.
"""

from __future__ import annotations

import logging

from service.context import Context
from service.models import Incident
from service.remediate.actions.registry import ACTIONS
from service.remediate.guardrails import Guardrails
from service.remediate.kube import Kube, KubeError
from service.remediate.outcomes import MAX_ATTEMPTS, Ending, Outcomes
from service.remediate.steps import Step, Steps
from service.remediate.target import Refused
from service.scheduling import DueWorker
from service.store.queue import LEASE_SECONDS
from service.store.remediations import JobStatus, RemediationJob

log = logging.getLogger(__name__)

# Statuses worth another try: the API was unreachable, overloaded, or the object
# changed between our read and our write (409: re-read and re-apply).
TRANSIENT = {0, 409, 429, 500, 502, 503, 504}
STAGES = {JobStatus.PENDING: "plan", JobStatus.ACTING: "apply", JobStatus.VERIFYING: "verify"}


class RemediationWorker(DueWorker):
    name = "remediation worker"
    until_idle = True

    def __init__(self, ctx: Context, pagers: list[str], kube: Kube | None) -> None:
        super().__init__(ctx.clock)
        self._store = ctx.store
        self._jobs = ctx.store.remediations
        self._rules = ctx.rules.remediation
        self._params = ctx.rules.remediation_params
        self.guardrails = Guardrails(ctx)
        self._out = Outcomes(ctx, pagers)
        self._steps = Steps(ctx, kube, self.guardrails, self._out)

    async def next_due(self) -> float | None:
        return await self._jobs.next_due()

    async def run_once(self) -> int:
        """Run one step of the next due job; return how many ran (0 or 1)."""
        jobs = await self._jobs.claim_due(self._clock.now(), 1, LEASE_SECONDS)
        for job in jobs:
            try:
                await self._step(job)
            except Exception as exc:
                # A bug or a store outage: try the step again later, never lose the job.
                log.exception("remediation %s: step %s failed", job.id, job.status)
                await self._after_error(job, f"internal error: {exc.__class__.__name__}: {exc}")
        return len(jobs)

    async def _after_error(self, job: RemediationJob, reason: str) -> None:
        try:
            inc = await self._store.incidents.get(job.incident_id)
            await self._out.retry(job, inc, reason)
        except Exception:
            if job.attempts + 1 < MAX_ATTEMPTS:
                raise  # the store is down: the lease expires and the step runs again
            # Giving up properly failed too: end the job bare rather than loop on it.
            log.exception("remediation %s: cannot record its failure; ending it", job.id)
            await self._out.end(job, None, Ending(JobStatus.FAILED, reason=reason))

    async def _step(self, job: RemediationJob) -> None:
        inc = await self._store.incidents.get(job.incident_id)
        policy = next((p for p in self._rules.policies if p.name == job.policy), None)
        try:
            self.guardrails.still_allowed(job, inc, policy)
        except Refused as refused:
            if job.started_at is not None:
                # The change was (perhaps partly) made: a person takes it from here.
                reason = f"{refused.reason} while the action was under way"
                ending = Ending(JobStatus.FAILED, reason=reason, stage=STAGES.get(job.status), hold=True)
            else:
                ending = Ending(JobStatus.SKIPPED, guardrail=refused.guardrail, reason=refused.reason)
            await self._out.end(job, inc, ending)
            return
        assert inc is not None and policy is not None and job.target is not None
        step = Step(job, inc, policy, ACTIONS[job.action], job.target, self._params[policy.name])
        try:
            await self._steps.run(step)
        except Refused as exc:
            await self._refused(job, inc, exc)
        except KubeError as exc:
            await self._kube_failed(step, exc)

    async def _refused(self, job: RemediationJob, inc: Incident, exc: Refused) -> None:
        if job.started_at is not None:
            # Refused after the change began (a retry found the target changed): a person
            # looks, the target is held.
            await self._out.fail(job, inc, f"{exc.guardrail}: {exc.reason}", STAGES.get(job.status))
        else:
            await self._out.end(
                job, inc, Ending(JobStatus.SKIPPED, guardrail=exc.guardrail, reason=exc.reason)
            )

    async def _kube_failed(self, s: Step, exc: KubeError) -> None:
        job = s.job
        if exc.status == 404 and job.started_at is None:
            ending = Ending(JobStatus.SKIPPED, guardrail="target", reason=f"{s.target.key}: {exc}")
            await self._out.end(job, s.inc, ending)
            return
        stage = "dry_run" if exc.dry_run else STAGES.get(job.status, job.status)
        if exc.status in TRANSIENT:
            await self._out.retry(job, s.inc, str(exc), stage)
            return
        await self._out.fail(job, s.inc, str(exc), stage)
