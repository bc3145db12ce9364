"""Runs remediation jobs through their steps, durably, one leased step at a time.

    pending -> [awaiting_approval] -> acting -> verifying -> succeeded | failed
       \\-> skipped (a guardrail stopped it: the event names which)

Each step reads the job from the store, does its part and stores the outcome with
its events in one transaction, so a crash repeats at most one step; every step is
safe to repeat (plans are pinned, applying an applied plan changes nothing, the
reserved slot is kept). In ``dry-run`` mode a job stops after the server-side dry
run. In ``enforce`` mode every write is preceded by the same write with
``dryRun=All``; after it, recovery is verified, and if it does not come the target
is put on hold and a person is paged with what was tried.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from service.clock import Clock, iso
from service.config import Settings
from service.correlate.correlator import PageIntent
from service.emit.cloudevents import EventFactory
from service.models import AlertStatus, Incident, IncidentStatus
from service.observability.metrics import Metrics
from service.pipeline import page_row
from service.remediate.actions.base import Action, Refused, Verdict, refuse_unless_changed_within
from service.remediate.actions.registry import ACTIONS
from service.remediate.audit import part
from service.remediate.kube import Kube, KubeError
from service.remediate.target import Target
from service.ruleset.durations import format_duration
from service.ruleset.models import RuleSet
from service.ruleset.remediation import Mode, Policy, strictest
from service.scheduling import run_due_work
from service.store.remediations import Limits, RemediationJob, RemediationStore
from service.store.store import OutboxRecord, Store

log = logging.getLogger(__name__)

# A step is a few API calls of at most INCIDENTD_KUBE_TIMEOUT_SECONDS each; a drain of many
# pods is the longest. Jobs are claimed one at a time, so the lease covers one step.
LEASE_SECONDS = 300.0
MAX_ATTEMPTS = 5
RETRY_SECONDS = 5.0
LOCK_POLL = timedelta(seconds=15)
# Statuses worth another try: the API was unreachable, overloaded, or the object
# changed between our read and our write (409: re-read and re-apply).
TRANSIENT = {0, 409, 429, 500, 502, 503, 504}
STAGES = {"pending": "plan", "acting": "apply", "verifying": "verify"}


class RemediationWorker:
    def __init__(
        self,
        store: Store,
        jobs: RemediationStore,
        rules: RuleSet,
        events: EventFactory,
        clock: Clock,
        metrics: Metrics,
        settings: Settings,
        pagers: list[str],
        on_effects: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._jobs = jobs
        self._rules = rules.remediation
        self._params = rules.remediation_params
        self._events = events
        self._clock = clock
        self._metrics = metrics
        self._settings = settings
        self._pagers = pagers
        self._on_effects = on_effects
        self._wake = asyncio.Event()
        self.kube: Kube | None = None

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        await run_due_work(
            "remediation worker",
            self.run_once,
            self._jobs.next_due,
            self._clock,
            self._wake,
            log,
            until_idle=True,
        )

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
            inc = await self._store.get_incident(job.incident_id)
            await self._retry(job, inc, reason)
        except Exception:
            if job.attempts + 1 < MAX_ATTEMPTS:
                raise  # the store is down: the lease expires and the step runs again
            # Giving up properly failed too: end the job bare rather than loop on it.
            log.exception("remediation %s: cannot record its failure; ending it", job.id)
            await self._jobs.finish(job, {"status": "failed", "reason": reason}, [], self._clock.now())

    # -- steps -----------------------------------------------------------------

    async def _step(self, job: RemediationJob) -> None:
        inc = await self._store.get_incident(job.incident_id)
        policy = next((p for p in self._rules.policies if p.name == job.policy), None)
        refused = self._still_allowed(job, inc, policy)
        if refused is not None:
            if job.started_at is not None:
                # The change was (perhaps partly) made: a person takes it from here.
                reason = f"{refused[1]} while the action was under way"
                await self._end(job, inc, "failed", reason=reason, stage=STAGES.get(job.status), hold=True)
            else:
                await self._end(job, inc, "skipped", guardrail=refused[0], reason=refused[1])
            return
        assert inc is not None and policy is not None and job.target is not None
        ctx = _Ctx(
            job, inc, policy, ACTIONS[job.action], Target.from_json(job.target), self._params[policy.name]
        )
        steps = {
            "pending": self._plan,
            "awaiting_approval": self._await_approval,
            "acting": self._act,
            "verifying": self._verify,
        }
        try:
            await steps[job.status](ctx)
        except Refused as exc:
            if job.started_at is not None:
                # Refused after the change began (a retry found the target changed): a
                # person looks, the target is held.
                await self._fail(job, inc, f"{exc.guardrail}: {exc.reason}", STAGES.get(job.status))
            else:
                await self._end(job, inc, "skipped", guardrail=exc.guardrail, reason=exc.reason)
        except KubeError as exc:
            await self._kube_failed(ctx, exc)

    def _still_allowed(
        self, job: RemediationJob, inc: Incident | None, policy: Policy | None
    ) -> tuple[str, str] | None:
        """The rules as they are now, not as they were when the job was planned: a mode
        lowered, a target taken off the allowlist or a policy changed stops the job."""
        if inc is None:
            return ("rules", "the incident no longer exists")
        if policy is None or policy.action != job.action or job.target is None:
            return ("rules", f"policy {job.policy} no longer exists or now does something else")
        if job.inputs.get("params") != self._params[policy.name].model_dump():
            # The plan was bounded by the old parameters (max_replicas, max_pods).
            return ("rules", f"policy {job.policy}'s parameters changed since the job was planned")
        approval = policy.approval
        if (
            job.status == "acting"
            and job.decision != "approved"
            and approval is not None
            and inc.severity in approval.severities
        ):
            return ("approval", f"policy {job.policy} now asks for approval")
        planned: Mode = "enforce" if job.mode == "enforce" else "dry-run"
        mode = strictest(self._settings.remediation_mode, self._rules.mode, policy.mode, planned)
        if mode == "off":
            return ("mode", "remediation was switched off")
        if mode != job.mode:
            if job.status != "pending":
                return ("mode", f"remediation mode lowered to {mode} before the action started")
            job.mode = mode
        if not Target.from_json(job.target).allowed_by(self._rules.allowlist):
            return ("allowlist", f"{job.target_key} is no longer in the allowlist")
        return None

    async def _plan(self, c: _Ctx) -> None:
        await self._guard(c)
        kube = self._kube()
        now = self._clock.now()
        within = c.policy.preconditions.changed_within
        if within is not None:
            await refuse_unless_changed_within(kube, c.target, within, now)
        plan = await c.action.plan(kube, c.target, c.params, now)
        c.job.plan = plan
        if c.job.mode != "enforce":
            dry = await c.action.apply(kube, c.target, c.params, plan, dry_run=True)
            planned = self._event("remediation.planned", c.job, c.inc, plan=plan)
            reason = "dry-run mode: the server-side dry run passed; nothing was changed"
            await self._end(
                c.job, c.inc, "skipped", guardrail="mode", reason=reason, dry_run=dry, first=[planned]
            )
            return
        approval = c.policy.approval
        if approval is not None and c.inc.severity in approval.severities:
            due = now + approval.timeout
            info = {"required": True, "due_at": iso(due)}
            event = self._event("remediation.planned", c.job, c.inc, plan=plan, approval=info)
            values = {"status": "awaiting_approval", "plan": plan, "approval_due_at": due.timestamp()}
            await self._save(c.job, values, [event], next_at=due)
            log.info(
                "remediation %s (%s on %s) waits for approval until %s",
                c.job.id,
                c.job.action,
                c.target.key,
                due,
            )
            return
        event = self._event("remediation.planned", c.job, c.inc, plan=plan)
        await self._save(c.job, {"status": "acting", "plan": plan, "attempts": 0}, [event], next_at=now)

    async def _await_approval(self, c: _Ctx) -> None:
        job, now = c.job, self._clock.now()
        if job.decision == "approved":  # decided before the timeout (the store refuses later ones)
            await self._save(job, {"status": "acting", "attempts": 0}, [], next_at=now)
        elif job.decision == "denied":
            raise Refused("approval", f"denied by {job.decided_by}")
        elif job.approval_due_at is not None and now.timestamp() >= job.approval_due_at:
            raise Refused("approval", "no answer before the approval timeout: denied")
        else:
            await self._save(job, {}, [], next_at=_at(job.approval_due_at) if job.approval_due_at else now)

    async def _act(self, c: _Ctx) -> None:
        job, kube, plan = c.job, self._kube(), c.job.plan or {}
        if job.started_at is None:
            await self._guard(c)
            if await self._jobs.lock_holder(job) is not None:
                # One actor per target: wait for the other job (cheaply: no dry run until it
                # is done); its cooldown decides after.
                await self._save(job, {}, [], next_at=self._clock.now() + LOCK_POLL)
                return
            dry = await c.action.apply(kube, c.target, c.params, plan, dry_run=True)
            now = self._clock.now()
            lock_seconds = c.policy.verify.timeout.total_seconds() + LEASE_SECONDS
            # Long enough for the change itself: a drain makes two calls per pod.
            lease_seconds = (
                LEASE_SECONDS + 2 * len(plan.get("pods", [])) * self._settings.kube_timeout_seconds
            )
            started = self._event(
                "remediation.started", job, c.inc, plan=plan, dry_run=dry, approval=_approval(job)
            )
            # Recorded, with the kill switch, hold, lock and limits checked in the same
            # transaction, before the change is made: a crash from here on resumes.
            refused = await self._jobs.reserve(
                job, now, self._limits(c.policy), lock_seconds, lease_seconds, started, dry
            )
            if refused is not None and refused[0] == "lock":
                await self._save(job, {}, [], next_at=now + LOCK_POLL)
                return
            if refused is not None and refused[0] == "lease":
                log.warning("remediation %s: %s", job.id, refused[1])
                return
            if refused is not None:
                raise Refused(*refused)
            self._on_effects()
            self._metrics.remediations.labels(job.action, "started").inc()
        elif await self._paused() is not None:
            # A retry of an action already under way: with the kill switch on, hand it over.
            reason = "remediation was paused while the action was under way; not retried"
            await self._end(job, c.inc, "failed", reason=reason, stage="apply", hold=True)
            return
        result = await c.action.apply(kube, c.target, c.params, plan, dry_run=False)
        now = self._clock.now()
        verify_due = now + c.policy.verify.timeout
        values = {
            "status": "verifying",
            "result": result,
            "verify_due_at": verify_due.timestamp(),
            "attempts": 0,
        }
        await self._save(job, values, [], next_at=now)
        log.warning("remediation %s: %s on %s: %s", job.id, job.action, c.target.key, result.get("detail"))

    async def _verify(self, c: _Ctx) -> None:
        job, now = c.job, self._clock.now()
        try:
            # Drains retry evictions while verifying; not while paused.
            act = await self._paused() is None
            verdict = await c.action.verify(self._kube(), c.target, job.plan or {}, act=act)
        except KubeError as exc:
            verdict = Verdict(False, f"cannot check: {exc}")
        checks = [verdict]
        if c.policy.verify.alert_resolved:
            checks.append(_alert_resolved(c.inc, job))
        detail = "; ".join(v.detail for v in checks)
        if all(v.done for v in checks):
            await self._end(job, c.inc, "succeeded", verification=detail)
            return
        if job.verify_due_at is not None and now.timestamp() >= job.verify_due_at:
            reason = f"no recovery within {format_duration(c.policy.verify.timeout)}: {detail}"
            await self._end(
                job, c.inc, "failed", reason=reason, verification=detail, stage="verify", hold=True
            )
            return
        interval = timedelta(seconds=self._settings.remediation_verify_interval_seconds)
        await self._save(job, {}, [], next_at=min(now + interval, _at(job.verify_due_at or now.timestamp())))

    # -- guardrails ------------------------------------------------------------

    async def _paused(self) -> str | None:
        """Why the kill switch is on, or None."""
        control = await self._jobs.control()
        why: str | None = None
        if self._settings.remediation_paused:
            why = "remediation is paused by configuration (INCIDENTD_REMEDIATION_PAUSED)"
        elif control["paused"]:
            why = f"remediation is paused by {control['paused_by']}"
            why += f": {control['reason']}" if control.get("reason") else ""
        self._metrics.remediation_paused.set(0 if why is None else 1)
        return why

    async def _guard(self, c: _Ctx) -> None:
        """What stops a new action: the kill switch, recovery, a hold on the target."""
        paused = await self._paused()
        if paused is not None:
            raise Refused("kill_switch", paused)
        resolved = _alert_resolved(c.inc, c.job)
        if resolved.done:
            raise Refused("recovered", f"nothing to remediate: {resolved.detail}")
        hold = await self._jobs.hold_of(c.job.target_key)
        if hold is not None:
            raise Refused("hold", f"automation is stopped for {c.job.target_key} until resumed: {hold}")
        if c.job.mode == "enforce":
            # Checked again, atomically, when the slot is reserved; here it spares the cluster reads.
            refused = await self._jobs.check_limits(c.job, self._clock.now(), self._limits(c.policy))
            if refused is not None:
                raise Refused(*refused)

    def _limits(self, policy: Policy) -> Limits:
        limit = policy.rate_limit
        return Limits(
            self._rules.cooldown_for(policy).total_seconds(),
            (limit.max, limit.per.total_seconds()) if limit else None,
            self._rules.budget_per_hour,
        )

    def _kube(self) -> Kube:
        if self.kube is None:
            raise Refused(
                "cluster", "no Kubernetes API configured (INCIDENTD_KUBE_API_URL, in-cluster or kubeconfig)"
            )
        return self.kube

    # -- outcomes --------------------------------------------------------------

    async def _kube_failed(self, c: _Ctx, exc: KubeError) -> None:
        job = c.job
        if exc.status == 404 and job.started_at is None:
            await self._end(job, c.inc, "skipped", guardrail="target", reason=f"{c.target.key}: {exc}")
            return
        stage = "dry_run" if exc.dry_run else STAGES.get(job.status, job.status)
        if exc.status in TRANSIENT:
            await self._retry(job, c.inc, str(exc), stage)
            return
        await self._fail(job, c.inc, str(exc), stage)

    async def _fail(self, job: RemediationJob, inc: Incident | None, reason: str, stage: str | None) -> None:
        # Once something may have changed (a drain half done, a retry's dry run refused),
        # a person looks before automation touches the target again.
        await self._end(job, inc, "failed", reason=reason, stage=stage, hold=job.started_at is not None)

    async def _retry(
        self, job: RemediationJob, inc: Incident | None, reason: str, stage: str | None = None
    ) -> None:
        if job.attempts + 1 >= MAX_ATTEMPTS:
            await self._fail(job, inc, f"{reason} (gave up after {MAX_ATTEMPTS} attempts)", stage)
            return
        now = self._clock.now()
        delay = RETRY_SECONDS * 2**job.attempts
        log.warning("remediation %s: %s; retrying in %.0fs", job.id, reason, delay)
        await self._save(
            job, {"attempts": job.attempts + 1, "reason": reason}, [], next_at=now + timedelta(seconds=delay)
        )

    async def _end(
        self,
        job: RemediationJob,
        inc: Incident | None,
        status: str,
        *,
        guardrail: str | None = None,
        reason: str | None = None,
        dry_run: dict[str, Any] | None = None,
        verification: str | None = None,
        stage: str | None = None,
        hold: bool = False,
        first: list[OutboxRecord] | None = None,
    ) -> None:
        now = self._clock.now()
        events = list(first or [])
        pages: list[dict[str, Any]] = []
        if inc is not None:
            failure = {"stage": stage, "reason": reason} if status == "failed" else None
            events.append(
                self._event(
                    f"remediation.{status}",
                    job,
                    inc,
                    plan=job.plan,
                    dry_run=dry_run or job.dry_run,
                    result=job.result,
                    verification=verification,
                    guardrail=guardrail,
                    reason=reason if status == "skipped" else None,
                    failure=failure,
                    approval=_approval(job),
                )
            )
            if hold:
                pages = self._page_human(job, inc, reason or "", verification)
        values: dict[str, Any] = {
            "status": status,
            "guardrail": guardrail,
            "reason": reason,
            "plan": job.plan,
            "mode": job.mode,
        }
        if dry_run is not None:
            values["dry_run"] = dry_run
        recorded = await self._jobs.finish(
            job, values, events, now, pages=pages, hold=reason if hold else None
        )
        if not recorded:
            log.warning("remediation %s: lease lost before its outcome (%s) was recorded", job.id, status)
            return
        self._on_effects()
        if first:
            self._metrics.remediations.labels(job.action, "planned").inc(len(first))
        self._metrics.remediations.labels(job.action, status).inc()
        if guardrail is not None:
            self._metrics.remediations_skipped.labels(guardrail).inc()
        level = logging.ERROR if status == "failed" else logging.INFO
        log.log(
            level,
            "remediation %s (%s on %s) %s: %s",
            job.id,
            job.action,
            job.target_key,
            status,
            reason or verification,
        )

    def _page_human(
        self, job: RemediationJob, inc: Incident, reason: str, verification: str | None
    ) -> list[dict[str, Any]]:
        tried = job.plan or {}
        message = (
            f"[REMEDIATION FAILED] {inc.severity}: {job.action} on {job.target_key} did not bring recovery"
        )
        lines = [
            message,
            f"- Incident: {inc.id} ({inc.title})",
            f"- Policy: {job.policy}",
            f"- Tried: {job.action} with plan {_brief(tried)}",
            f"- Outcome: {reason}",
            f"- Automation is stopped for {job.target_key} until resumed (POST /api/v1/remediation/resume)",
        ]
        intent = PageIntent(
            inc.id,
            "trigger",
            inc.opening,
            f"remediation:{job.id}",
            list(self._rules.page_roles),
            {"message": "\n".join(lines)},
        )
        return [page_row(intent, name) for name in self._pagers]

    async def _save(
        self, job: RemediationJob, values: dict[str, Any], events: list[OutboxRecord], *, next_at: datetime
    ) -> None:
        recorded = await self._jobs.finish(
            job, {**values, "next_attempt_at": next_at.timestamp()}, events, self._clock.now()
        )
        if not recorded:
            log.warning("remediation %s: lease lost; another replica continues it", job.id)
        elif events:
            self._on_effects()
            self._metrics.remediations.labels(job.action, "planned").inc(len(events))

    def _event(self, suffix: str, job: RemediationJob, inc: Incident, **outcome: Any) -> OutboxRecord:
        extra = part(
            id=job.id,
            policy=job.policy,
            action=job.action,
            mode=job.mode,
            target=job.target,
            inputs=job.inputs,
            **outcome,
        )
        return self._events.build(suffix, inc.snapshot(), {"remediation": extra}, self._clock.now())


@dataclass(slots=True)
class _Ctx:
    """One job's step: the job and what it refers to."""

    job: RemediationJob
    inc: Incident
    policy: Policy
    action: Action
    target: Target
    params: Any


def _alert_resolved(inc: Incident, job: RemediationJob) -> Verdict:
    if inc.status is IncidentStatus.RESOLVED or inc.opening != job.opening:
        return Verdict(True, "the incident resolved")
    state = inc.alerts.get(job.fingerprint)
    if state is None or state.status is AlertStatus.RESOLVED:
        return Verdict(True, "the alert resolved")
    return Verdict(False, "the alert is still firing")


def _approval(job: RemediationJob) -> dict[str, Any] | None:
    if job.approval_due_at is None:
        return None
    return {
        "required": True,
        "due_at": iso(_at(job.approval_due_at)),
        "decision": job.decision,
        "by": job.decided_by,
    }


def _brief(plan: dict[str, Any]) -> str:
    shown = {k: v for k, v in plan.items() if k != "template"}
    return ", ".join(f"{k}={v}" for k, v in shown.items())[:500] or "(none)"


def _at(stamp: float) -> datetime:
    return datetime.fromtimestamp(stamp, UTC)
