"""Durable page delivery: jobs live in the store, retries back off, nothing blocks.

A job per (incident opening, integration, action) is written with the state
change that caused it. The worker leases due jobs, calls the pager, and records
the outcome with its ``page.sent`` / ``page.failed`` event in one transaction.
A crash mid-call means the lease expires and the call is made again, under the
same idempotency key, so the pager deduplicates it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal

from service.clock import Clock
from service.config import Settings
from service.emit.cloudevents import EventFactory
from service.models import Incident
from service.notify.base import Notifier, PageError, PageRequest, idempotency_key
from service.observability.metrics import Metrics
from service.ruleset.models import RuleSet
from service.scheduling import run_due_work
from service.store.store import PageJob, Store

log = logging.getLogger(__name__)

LEASE_SECONDS = 120.0
# Pagers that reach people only through contacts.yaml. (PagerDuty falls back to its
# default routing key, a real service; console and Slack reach a channel.)
ROUTED_PAGERS = ("opsgenie",)


class PageWorker:
    def __init__(
        self,
        store: Store,
        notifiers: dict[str, Notifier],
        rules: RuleSet,
        events: EventFactory,
        clock: Clock,
        metrics: Metrics,
        settings: Settings,
        on_events: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._notifiers = notifiers
        self._rules = rules
        self._events = events
        self._clock = clock
        self._metrics = metrics
        self._settings = settings
        self._on_events = on_events
        self._wake = asyncio.Event()
        self._in_flight: set[str] = set()
        self._sem = asyncio.Semaphore(settings.page_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        await run_due_work("page worker", self.run_once, self._next_due, self._clock, self._wake, log)

    async def _next_due(self) -> float | None:
        return await self._store.next_page_due(set(self._notifiers))

    async def run_once(self) -> int:
        """Start every due job; return how many were started."""
        # Claim only what can start now: a claimed job waiting for a free slot would
        # burn its lease, and another replica could take it meanwhile.
        jobs = await self._store.claim_due_pages(
            self._clock.now(),
            limit=self._settings.page_concurrency - len(self._tasks),
            lease_seconds=LEASE_SECONDS,
            skip_incidents=set(self._in_flight),
            integrations=set(self._notifiers),
        )
        for job in jobs:
            self._in_flight.add(job.incident_id)
            task = asyncio.create_task(self._guarded(job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(jobs)

    async def drain(self) -> None:
        """Wait for every started job (tests and shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _guarded(self, job: PageJob) -> None:
        try:
            async with self._sem:
                await self._process(job)
        except Exception:
            # The lease expires and the job runs again; never lose it.
            log.exception("page job %s failed to record its outcome", job.id)
        finally:
            self._in_flight.discard(job.incident_id)
            self._wake.set()

    async def _process(self, job: PageJob) -> None:
        inc = await self._store.get_incident(job.incident_id)
        notifier = self._notifiers[job.integration]  # claims are filtered by our pagers
        now = self._clock.now()
        if inc is None:
            log.error("page job %s: incident %s not found; giving up", job.id, job.incident_id)
            self._metrics.pages_failed.labels(job.integration, "false").inc()
            await self._finish(job, "failed", job.attempts, None, "incident not found", [], now)
            return
        if job.action == "trigger" and await self._store.sibling_page_job(job, "close", "pending"):
            # Resolved before anyone could be paged: a page now would be noise.
            await self._finish(job, "superseded", job.attempts, None, None, [], now)
            return
        targets = [job.target]
        if job.action in ("ack", "close"):
            # Acknowledge or close every page of this opening that went out: the first and
            # each escalation.
            targets = await self._store.sent_trigger_targets(job)
            if not targets:
                await self._finish(job, "superseded", job.attempts, None, None, [], now)
                return
        requests = [self._request(inc, job, target) for target in targets]
        request = requests[0]
        attempt = job.attempts + 1
        unrouted = self._unrouted(job)
        if unrouted and attempt == 1:
            await self._report_unrouted(job, inc, request, unrouted, now)
        try:
            for request in requests:
                reference = await notifier.send(request)
        except PageError as exc:
            await self._failed(job, inc, request, attempt, exc.reason, exc.retryable, exc.retry_after)
            return
        except Exception as exc:
            reason = f"{job.integration} notifier error: {exc.__class__.__name__}: {exc}"
            await self._failed(job, inc, request, attempt, reason, True, None)
            return
        now = self._clock.now()
        part = self._page_part(job, request, attempt, reference=reference)
        event = self._events.build("page.sent", inc.snapshot(), {"page": part}, now)
        await self._finish(job, "sent", attempt, None, None, [event], now)
        self._metrics.pages_sent.labels(job.integration, job.action).inc()

    async def _failed(
        self,
        job: PageJob,
        inc: Incident,
        request: PageRequest,
        attempt: int,
        reason: str,
        retryable: bool,
        retry_after: float | None,
    ) -> None:
        now = self._clock.now()
        retrying = retryable and attempt < self._settings.page_max_attempts
        next_at = now + timedelta(seconds=self._backoff(attempt, retry_after)) if retrying else None
        part = self._page_part(job, request, attempt, error=reason, retrying=retrying)
        event = self._events.build("page.failed", inc.snapshot(), {"page": part}, now)
        status = "pending" if retrying else "failed"
        await self._finish(job, status, attempt, next_at, reason, [event], now)
        self._metrics.pages_failed.labels(job.integration, str(retrying).lower()).inc()
        log.warning(
            "page %s for %s via %s failed (attempt %d, %s): %s",
            job.action,
            job.incident_id,
            job.integration,
            attempt,
            "will retry" if retrying else "giving up",
            reason,
        )

    async def _finish(
        self,
        job: PageJob,
        status: str,
        attempts: int,
        next_at: datetime | None,
        error: str | None,
        events: list[Any],
        now: datetime,
    ) -> None:
        recorded = await self._store.finish_page(
            job,
            status=status,
            attempts=attempts,
            next_attempt_at=next_at,
            error=error,
            events=events,
            now=now,
        )
        if not recorded:
            log.warning("page job %s: lease lost before its outcome (%s) was recorded", job.id, status)
        elif events:
            self._on_events()

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        s = self._settings
        base = min(s.page_backoff_max_seconds, s.page_backoff_initial_seconds * 2 ** (attempt - 1))
        jittered = base * random.uniform(0.8, 1.2)
        return float(max(jittered, retry_after or 0.0))

    def _request(self, inc: Incident, job: PageJob, target: str) -> PageRequest:
        snapshot = inc.snapshot()
        if job.action == "update" or "message" in job.payload:
            # Reminders and remediation hand-overs carry their own text.
            text = str(job.payload.get("message", ""))
        elif job.action == "ack":
            by = job.payload.get("by", "unknown")
            text = f"[UPDATE] {inc.severity}: {inc.title}\n- Status: Acknowledged by {by}"
        else:
            template = (
                self._rules.templates.incident
                if job.action == "trigger"
                else self._rules.templates.close_note
            )
            ctx = {**snapshot, "alert_count": len(inc.alerts), "paged_roles": job.roles}
            try:
                text = template.render(incident=ctx).strip()
            except Exception as exc:  # any error in a user's template, not only Jinja's own
                log.warning("page template failed for %s: %s: %s", inc.id, type(exc).__name__, exc)
                text = f"[INCIDENT] {inc.severity}: {inc.title}"
        message, _, description = text.partition("\n")
        actions: dict[str, Literal["trigger", "ack", "close", "update"]] = {
            "trigger": "trigger",
            "ack": "ack",
            "close": "close",
            "update": "update",
        }
        action = actions[job.action]
        return PageRequest(
            action=action,
            incident=snapshot,
            opening=job.opening,
            idempotency_key=idempotency_key(inc.id, job.opening, target),
            message=message,
            description=description,
            priority=self._rules.severity(inc.severity).opsgenie_priority,
            target=target,
            roles=tuple(job.roles),
            responders=tuple(self._responders(job)),
        )

    def _contact(self, role: str, integration: str) -> Any:
        contact = self._rules.contacts.roles.get(role)
        return getattr(contact, integration, None) if contact is not None else None

    def _responders(self, job: PageJob) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        for role in job.roles:
            contact = self._contact(role, job.integration)
            if contact is None:
                continue
            responder = contact.responder() if hasattr(contact, "responder") else contact.model_dump()
            if responder not in out:
                out.append(responder)
        return out

    def _unrouted(self, job: PageJob) -> list[str]:
        """Roles this page is for that the pager has no contact for (contacts.yaml)."""
        if job.integration not in ROUTED_PAGERS:
            return []
        return [role for role in job.roles if self._contact(role, job.integration) is None]

    async def _report_unrouted(
        self, job: PageJob, inc: Incident, request: PageRequest, roles: list[str], now: datetime
    ) -> None:
        # Loud, not silent: the page still goes out to the roles that can be reached.
        reason = f"no {job.integration} contact for role(s) {', '.join(roles)} in contacts.yaml"
        part = self._page_part(job, request, 1, error=reason)
        part["unrouted_roles"] = roles
        event = self._events.build("page.failed", inc.snapshot(), {"page": part}, now)
        await self._store.add_events([event], now)
        self._on_events()
        for role in roles:
            self._metrics.escalations_unrouted.labels(job.integration, role).inc()
        log.error("incident %s: %s", inc.id, reason)

    @staticmethod
    def _page_part(
        job: PageJob,
        request: PageRequest,
        attempt: int,
        *,
        reference: str | None = None,
        error: str | None = None,
        retrying: bool = False,
    ) -> dict[str, Any]:
        return {
            "integration": job.integration,
            "action": job.action,
            "target": request.target,
            "roles": list(request.roles),
            "opening": job.opening,
            "idempotency_key": request.idempotency_key,
            "attempt": attempt,
            "retrying": retrying,
            "error": error,
            "reference": reference,
        }
