"""How a remediation step is recorded: the job's change, its audit events, and, when
automation stops on a target, the page to a person, in one transaction each."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from service.batch import APPROVAL, PageIntent
from service.clock import iso
from service.context import Context
from service.models import Incident, PageAction
from service.remediate.audit import part
from service.store.control import Hold
from service.store.outbox import OutboxRecord
from service.store.pages import NewPage
from service.store.remediations import JobStatus, JobUpdate, JsonObject, RemediationJob
from service.store.store import Effects

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
RETRY_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Ending:
    """How a job ends, and everything its outcome event says."""

    status: JobStatus  # succeeded, failed or skipped
    guardrail: str | None = None  # the guardrail that skipped it
    reason: str | None = None
    dry_run: JsonObject | None = None
    verification: str | None = None
    stage: str | None = None  # where a failure happened: plan, dry_run, apply, verify
    hold: bool = False  # stop automation on the target and page a person
    # Events stored before the outcome's own (a dry run's remediation.planned).
    first: tuple[OutboxRecord, ...] = ()


class Outcomes:
    def __init__(self, ctx: Context, pagers: list[str]) -> None:
        self._store = ctx.store
        self._jobs = ctx.store.remediations
        self._control = ctx.store.control
        self._rules = ctx.rules.remediation
        self._events = ctx.events
        self._clock = ctx.clock
        self._metrics = ctx.metrics
        self._on_effects = ctx.on_effects
        self._pagers = pagers

    def event(self, suffix: str, job: RemediationJob, inc: Incident, **outcome: Any) -> OutboxRecord:
        extra = part(job, **outcome)
        return self._events.build(suffix, inc.snapshot(), {"remediation": extra}, self._clock.now())

    async def save(
        self, job: RemediationJob, change: JobUpdate, events: list[OutboxRecord], *, next_at: datetime
    ) -> None:
        """Record a step that does not end the job; it runs again at ``next_at``."""
        await self.save_effects(job, change, Effects(events=events), next_at=next_at)

    async def save_effects(
        self, job: RemediationJob, change: JobUpdate, effects: Effects, *, next_at: datetime
    ) -> None:
        """:meth:`save` with the pages it causes too, in the same transaction."""
        now = self._clock.now()
        change = replace(change, next_attempt_at=next_at)

        async def update(conn: Any) -> bool:
            return await self._jobs.update(conn, job, change, now)

        if not await self._store.commit(effects, now, guard=update):
            log.warning("remediation %s: lease lost; another replica continues it", job.id)
        elif effects:
            self._on_effects()
            if effects.events:
                self._metrics.remediations.labels(job.action, "planned").inc(len(effects.events))

    def approval_pages(
        self, job: RemediationJob, inc: Incident, approvers: list[str], due: datetime
    ) -> list[NewPage]:
        """The page asking the approvers to approve or deny ``job`` before ``due``. Sent
        after an acknowledgement too: approval is asked of people who already answered."""
        message = (
            f"[APPROVAL NEEDED] {inc.severity}: {job.action} on {job.target_key} waits for your approval"
        )
        api = f"/api/v1/remediation/actions/{job.id}"
        lines = [
            message,
            f"- Incident: {inc.id} ({inc.title})",
            f"- Policy: {job.policy}",
            f"- Asks: {job.action} on {job.target_key}, plan {_brief(job.plan or {})}",
            f"- Approve: POST {api}/approve (deny: POST {api}/deny), or on the incident board",
            f"- No answer by {iso(due)} means denied",
        ]
        intent = PageIntent(
            inc.id,
            PageAction.TRIGGER,
            inc.opening,
            f"{APPROVAL}{job.id}",
            list(approvers),
            message="\n".join(lines),
        )
        return NewPage.fan_out(intent, self._pagers)

    async def retry(
        self, job: RemediationJob, inc: Incident | None, reason: str, stage: str | None = None
    ) -> None:
        if job.attempts + 1 >= MAX_ATTEMPTS:
            await self.fail(job, inc, f"{reason} (gave up after {MAX_ATTEMPTS} attempts)", stage)
            return
        delay = RETRY_SECONDS * 2**job.attempts
        log.warning("remediation %s: %s; retrying in %.0fs", job.id, reason, delay)
        next_at = self._clock.now() + timedelta(seconds=delay)
        await self.save(job, JobUpdate(attempts=job.attempts + 1, reason=reason), [], next_at=next_at)

    async def fail(self, job: RemediationJob, inc: Incident | None, reason: str, stage: str | None) -> None:
        # Once something may have changed (a drain half done, a retry's dry run refused),
        # a person looks before automation touches the target again.
        ending = Ending(JobStatus.FAILED, reason=reason, stage=stage, hold=job.started_at is not None)
        await self.end(job, inc, ending)

    async def end(self, job: RemediationJob, inc: Incident | None, ending: Ending) -> None:
        now = self._clock.now()
        events = list(ending.first)
        pages: list[NewPage] = []
        if inc is not None:
            events.append(self._outcome_event(job, inc, ending))
            if ending.hold:
                pages = self._page_human(job, inc, ending)
        change = JobUpdate(
            status=ending.status,
            guardrail=ending.guardrail,
            reason=ending.reason,
            plan=job.plan,
            mode=job.mode,
            dry_run=ending.dry_run,
        )
        recorded = await self._record_end(job, change, Effects(events=events, pages=pages), ending, now)
        if not recorded:
            log.warning(
                "remediation %s: lease lost before its outcome (%s) was recorded", job.id, ending.status
            )
            return
        self._on_effects()
        self._count(job, ending)

    async def _record_end(
        self, job: RemediationJob, change: JobUpdate, effects: Effects, ending: Ending, now: datetime
    ) -> bool:
        """The job's end, its target's lock released and any hold, with the events and
        pages, in one transaction."""

        async def finish(conn: Any) -> bool:
            await self._control.serialise(conn)
            if not await self._jobs.update(conn, job, change, now):
                return False
            await self._control.unlock(conn, job.target_key, job.id)
            if ending.hold:
                await self._control.add_hold(conn, Hold(job.target_key, job.id, ending.reason or "", now))
            return True

        return await self._store.commit(effects, now, guard=finish)

    def _count(self, job: RemediationJob, ending: Ending) -> None:
        if ending.first:
            self._metrics.remediations.labels(job.action, "planned").inc(len(ending.first))
        self._metrics.remediations.labels(job.action, ending.status).inc()
        if ending.guardrail is not None:
            self._metrics.remediations_skipped.labels(ending.guardrail).inc()
        level = logging.ERROR if ending.status is JobStatus.FAILED else logging.INFO
        log.log(
            level,
            "remediation %s (%s on %s) %s: %s",
            job.id,
            job.action,
            job.target_key,
            ending.status,
            ending.reason or ending.verification,
        )

    def _outcome_event(self, job: RemediationJob, inc: Incident, ending: Ending) -> OutboxRecord:
        failed = ending.status is JobStatus.FAILED
        return self.event(
            f"remediation.{ending.status}",
            job,
            inc,
            plan=job.plan,
            dry_run=ending.dry_run or job.dry_run,
            result=job.result,
            verification=ending.verification,
            guardrail=ending.guardrail,
            reason=ending.reason if ending.status is JobStatus.SKIPPED else None,
            failure={"stage": ending.stage, "reason": ending.reason} if failed else None,
            approval=approval_part(job),
        )

    def _page_human(self, job: RemediationJob, inc: Incident, ending: Ending) -> list[NewPage]:
        message = (
            f"[REMEDIATION FAILED] {inc.severity}: {job.action} on {job.target_key} did not bring recovery"
        )
        lines = [
            message,
            f"- Incident: {inc.id} ({inc.title})",
            f"- Policy: {job.policy}",
            f"- Tried: {job.action} with plan {_brief(job.plan or {})}",
            f"- Outcome: {ending.reason or ''}",
            f"- Automation is stopped for {job.target_key} until resumed (POST /api/v1/remediation/resume)",
        ]
        intent = PageIntent(
            inc.id,
            PageAction.TRIGGER,
            inc.opening,
            f"remediation:{job.id}",
            list(self._rules.page_roles),
            message="\n".join(lines),
        )
        return NewPage.fan_out(intent, self._pagers)


def approval_part(job: RemediationJob) -> dict[str, Any] | None:
    if job.approval_due_at is None:
        return None
    return {
        "required": True,
        "due_at": iso(job.approval_due_at),
        "decision": job.decision,
        "by": job.decided_by,
    }


def _brief(plan: JsonObject) -> str:
    shown = {k: v for k, v in plan.items() if k != "template"}
    return ", ".join(f"{k}={v}" for k, v in shown.items())[:500] or "(none)"
