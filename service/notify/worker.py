"""Durable page delivery: jobs live in the store, retries back off, nothing blocks.

A job per (incident opening, integration, action) is written with the state
change that caused it. The worker leases due jobs, calls the pager, and records
the outcome with its ``page.sent`` / ``page.failed`` event in one transaction.
A crash mid-call means the lease expires and the call is made again, under the
same idempotency key, so the pager deduplicates it.

A trigger is tried for as long as somebody still has to answer it (its incident open,
in the same opening, not acknowledged), with no attempt limit, and is handed to the
roles' fallback pager as well once its own pager has failed a few times. Everything
else gives up after ``page_max_attempts``.

A trigger sent while nobody has answered leaves a delayed backup page for the roles'
backup contacts, due ``backup_after`` later and moot once somebody acknowledges. What each
request says, and whom it reaches (roles, backups, people), is ``requests.py``'s.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

from service.batch import ACTION_ITEM
from service.context import Context
from service.models import Incident, IncidentStatus, PageAction
from service.notify.base import Notifier, PageError, PageRequest
from service.notify.failover import Failover
from service.notify.requests import (
    backup_pages,
    build_request,
    is_backup,
    page_part,
    person_unreachable,
    unrouted,
)
from service.notify.timing import timed_send
from service.notify.wanted import asked_before_ack, awaits_answer, echo
from service.postmortem.reminders import POSTMORTEM
from service.ruleset.models import FOLLOW_UP_NAMES
from service.scheduling import DueWorker
from service.store.outbox import OutboxRecord
from service.store.pages import (
    HandedPage,
    NewPage,
    PageJob,
    PageOutcome,
    PageStatus,
    Reservation,
    SentTrigger,
)
from service.store.queue import LEASE_SECONDS
from service.store.store import Effects

log = logging.getLogger(__name__)

# Whether the job this task runs still holds a pager-call slot (a list: set once per task,
# changed in place).
_CALLING: ContextVar[list[bool] | None] = ContextVar("page_calling", default=None)

# Failed attempts of a trigger before its roles' fallback pager is paged too. One failure is
# often a blip (a timeout, a 503 during a deploy) that the next try rides out; three in a row,
# with the default backoff about 6 s plus up to three request timeouts, means the pager is
# down for now. Waiting longer eats into a SEV-1's 15-minute response time, and a page too
# many on a second channel costs far less than a page lost.
PAGE_FAILOVER_AFTER = 3


class PageWorker(DueWorker):
    """``notifiers``: the INCIDENTD_PAGERS; ``fallbacks``: the other pagers contacts.yaml
    names as fallbacks, used only for the pages failed over to them."""

    name = "page worker"

    def __init__(
        self,
        ctx: Context,
        notifiers: dict[str, Notifier],
        fallbacks: dict[str, Notifier] | None = None,
        *,
        failover_after: int = PAGE_FAILOVER_AFTER,
    ) -> None:
        super().__init__(ctx.clock)
        self._store = ctx.store
        self._jobs = ctx.store.pages
        # A pager that is configured and also a fallback keeps its one notifier; jobs of
        # both kinds are claimed, so the pages failed over to a fallback get sent.
        self._notifiers = {**(fallbacks or {}), **notifiers}
        self._failover = Failover(ctx.rules, set(self._notifiers), self._jobs, failover_after)
        self._rules = ctx.rules
        self._events = ctx.events
        self._metrics = ctx.metrics
        self._settings = ctx.settings
        self._on_events = ctx.on_effects
        self._in_flight: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # Jobs whose pager call has not ended: INCIDENTD_PAGE_CONCURRENCY bounds these. A job
        # recording its outcome holds no slot (the store writes outcomes in groups), only its
        # lease and its incident's place in line.
        self._calling = 0
        # Jobs the persist stage leased for us as it stored them, waiting for a free slot or
        # for their incident's job in flight; and the slots kept for jobs about to be handed.
        self._handed: list[HandedPage] = []
        self._reserved = 0
        # What the last round may have left in the store: jobs due now (no free slot), and
        # those of the incidents its claim skipped (a job of theirs in flight). Only for these
        # does a job that ends start a round: in a storm every page was handed, and a round
        # after each cost a claim's transaction and a next-due read that found nothing.
        self._left_due = True
        self._skipped: set[str] = set()

    def _free(self) -> int:
        return self._settings.page_concurrency - self._calling - self._reserved - len(self._handed)

    def reserve(self, wanted: int) -> Reservation:
        """Keep up to ``wanted`` slots for the jobs a batch is storing (:meth:`hand` ends it).
        None when all are busy: those jobs wait for a claim, most severe first."""
        slots = max(0, min(wanted, self._free()))
        self._reserved += slots
        return Reservation(slots, frozenset(self._notifiers) if slots else frozenset())

    def hand(self, reservation: Reservation, pages: Sequence[HandedPage]) -> None:
        """Start the jobs leased for us in the transaction that stored them: a first page
        goes out without a claim's transaction or a read of its incident."""
        self._reserved -= reservation.slots
        self._handed.extend(pages)
        self._handed.sort(key=lambda h: h.incident.severity if h.incident is not None else "~")
        self._start_handed()

    def _start_handed(self) -> None:
        for page in list(self._handed):
            if self._calling >= self._settings.page_concurrency:
                return
            if page.job.incident_id not in self._in_flight:
                self._handed.remove(page)
                self._start(page.job, page.incident, handed=True)

    def _start(self, job: PageJob, inc: Incident | None, *, handed: bool = False) -> None:
        self._in_flight.add(job.incident_id)
        self._calling += 1
        task = asyncio.create_task(self._guarded(job, inc, handed))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def next_due(self) -> float | None:
        now = self._clock.now()
        due = await self._jobs.next_due(set(self._notifiers), now)
        self._left_due = due is not None and due <= now.timestamp()
        return due

    def _slot_freed(self, incident_id: str | None = None) -> None:
        """A pager call or a job ended: start what waits in memory, and a round if the last
        one may have left something in the store for this slot or this incident."""
        self._start_handed()
        if self._left_due or incident_id in self._skipped:
            self._wake.set()

    async def run_once(self) -> int:
        """Start every due job; return how many were started."""
        self._start_handed()
        # Claim only what can start now: a claimed job waiting for a free slot would
        # hold work another replica could do meanwhile.
        self._skipped = set(self._in_flight) | {h.job.incident_id for h in self._handed}
        jobs = await self._jobs.claim_due(
            self._clock.now(),
            limit=self._free(),
            lease_seconds=LEASE_SECONDS,
            skip_incidents=self._skipped,
            integrations=set(self._notifiers),
        )
        # Their incidents in one read, not one each (a backlog is claimed eight at a time).
        incidents = {i.id: i for i in await self._store.incidents.get_many([j.incident_id for j in jobs])}
        for job in jobs:
            self._start(job, incidents.get(job.incident_id))
        return len(jobs)

    async def drain(self) -> None:
        """Wait for every started job (tests and shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def cancel(self) -> None:
        """Stop the jobs still running (a shutdown out of time); their leases are given
        back, and another replica sends them again under the same idempotency key."""
        for task in self._tasks:
            task.cancel()
        await self.drain()

    async def _guarded(self, job: PageJob, inc: Incident | None, handed: bool) -> None:
        calling = _CALLING.set([True])
        try:
            await self._process(job, inc, handed)
        except Exception:
            # The lease expires and the job runs again; never lose it.
            log.exception("page job %s failed to record its outcome", job.id)
        finally:
            self._call_ended()
            _CALLING.reset(calling)
            self._in_flight.discard(job.incident_id)
            self._slot_freed(job.incident_id)

    def _call_ended(self) -> None:
        """This task's pager call is over (or never came): its slot is free for the next."""
        flag = _CALLING.get()
        if flag and flag[0]:
            flag[0] = False
            self._calling -= 1
            self._slot_freed()

    async def _process(self, job: PageJob, inc: Incident | None, handed: bool) -> None:
        """``inc``: as read with the claim or stored with the job (``handed``); None: read now."""
        if inc is None:
            inc = await self._store.incidents.get(job.incident_id)
        if inc is None:
            log.error("page job %s: incident %s not found; giving up", job.id, job.incident_id)
            self._metrics.pages_failed.labels(job.integration, "false").inc()
            await self._finish(job, PageOutcome(PageStatus.FAILED, job.attempts, "incident not found"))
            return
        superseded = PageOutcome(PageStatus.SUPERSEDED, job.attempts)
        notifier = self._notifiers[job.integration]
        close_only = getattr(notifier, "close_only", False)
        if close_only and job.action is not PageAction.CLOSE and not job.target.startswith(ACTION_ITEM):
            # A follow-up (a Jira ticket) acts on the close of an opening (and its action items) only.
            await self._finish(job, superseded)
            return
        if job.action is PageAction.TRIGGER and await self._moot(job, inc, handed):
            await self._finish(job, superseded)
            return
        skipped = person_unreachable(self._rules.contacts, job)
        if skipped is not None:
            log.info("incident %s: %s", inc.id, skipped)
            await self._finish(job, PageOutcome(PageStatus.SUPERSEDED, job.attempts, skipped))
            return
        sent = [SentTrigger(job.target, tuple(job.roles))]
        if job.action in (PageAction.ACK, PageAction.CLOSE):
            # Acknowledge or close every page of this opening that went out (the first, each
            # escalation, backup and hand-over), each routed as its trigger was.
            sent = await self._jobs.sent_trigger_targets(job)
        if job.action is PageAction.CLOSE and job.integration in FOLLOW_UP_NAMES:
            # A follow-up's close is one call for the opening, under the first page's
            # idempotency key, whatever was sent before (a ticket filed, a status page resolved).
            sent = [SentTrigger("first")]
        requests = [build_request(self._rules, inc, job, s) for s in sent]
        requests = [r for r in requests if not echo(notifier, r, job.answered)]
        if not requests:
            await self._finish(job, superseded)
            return
        await self._send(job, inc, requests)

    async def _send(self, job: PageJob, inc: Incident, requests: list[PageRequest]) -> None:
        notifier = self._notifiers[job.integration]  # claims are filtered by our pagers
        request = requests[0]
        attempt = job.attempts + 1
        missing = unrouted(self._rules.contacts, job)
        if missing and attempt == 1:
            await self._report_unrouted(job, inc, request, missing)
        try:
            for request in requests:
                reference = await timed_send(self._metrics, job.integration, notifier, request)
        except PageError as exc:
            await self._failed(job, inc, request, exc)
            return
        except Exception as exc:
            reason = f"{job.integration} notifier error: {exc.__class__.__name__}: {exc}"
            await self._failed(job, inc, request, PageError(reason, retryable=True))
            return
        now = self._clock.now()
        part = page_part(job, request, attempt, reference=reference)
        event = self._events.build("page.sent", inc.snapshot(), {"page": part}, now)
        # Nobody has answered yet: the roles' backups are paged if nobody does in time.
        backups = backup_pages(self._rules.contacts, job, now) if awaits_answer(inc, job) else []
        await self._finish(job, PageOutcome(PageStatus.SENT, attempt), [event], backups)
        self._metrics.pages_sent.labels(job.integration, job.action).inc()

    async def _moot(self, job: PageJob, inc: Incident, handed: bool) -> bool:
        """Has this trigger no one left to reach? Then it is superseded, never sent."""
        if job.target.startswith(POSTMORTEM):
            # A postmortem-due reminder is for a resolved incident (the timer decided it is due).
            return inc.opening != job.opening or inc.postmortem_done is not None
        if inc.status is not IncidentStatus.OPEN or inc.opening != job.opening:
            # Resolved or reopened since: that opening's pages are closed, and a trigger
            # never goes out for a key that was closed (the pager would revive or ignore it).
            return True
        answered = asked_before_ack(inc, job, self._rules) or (
            is_backup(job.target) and inc.acknowledged_at is not None
        )
        # Somebody already answered; paging them (or the backups) now would be noise. A status
        # page tells the public, not a person: an acknowledgement does not answer it.
        if answered and job.integration not in FOLLOW_UP_NAMES:
            return True
        # Resolved since the incident was read with the claim (its close is queued with the
        # resolution). A handed job's incident is the one its own transaction stored.
        return not handed and await self._jobs.has_sibling(job, PageAction.CLOSE, PageStatus.PENDING)

    async def _failed(self, job: PageJob, inc: Incident, request: PageRequest, exc: PageError) -> None:
        now, attempt, reason = self._clock.now(), job.attempts + 1, exc.reason
        # A trigger nobody has answered yet never gives up: a pager outage of any length must
        # not lose the page. The backoff cap (and Retry-After) keeps it to one call per
        # INCIDENTD_PAGE_BACKOFF_MAX_SECONDS at most.
        unanswered = awaits_answer(inc, job, self._rules)
        retrying = exc.retryable and (unanswered or attempt < self._settings.page_max_attempts)
        next_at = now + timedelta(seconds=self._backoff(attempt, exc.retry_after)) if retrying else None
        failover = await self._failover.pages(job, attempt, retrying)
        fallbacks = [p.integration for p in failover]
        part = page_part(job, request, attempt, error=reason, retrying=retrying, failover=fallbacks)
        event = self._events.build("page.failed", inc.snapshot(), {"page": part}, now)
        status = PageStatus.PENDING if retrying else PageStatus.FAILED
        outcome = PageOutcome(status, attempt, reason, next_at)
        recorded = await self._finish(job, outcome, [event], failover)
        self._metrics.pages_failed.labels(job.integration, str(retrying).lower()).inc()
        log.warning(
            "page %s for %s via %s failed (attempt %d, %s): %s",
            job.action,
            job.incident_id,
            job.integration,
            attempt,
            _retry_note(retrying, unanswered and attempt >= self._settings.page_max_attempts),
            reason,
        )
        if recorded and fallbacks:
            for fallback in fallbacks:
                self._metrics.page_failovers.labels(job.integration, fallback).inc()
            log.error(
                "page %s for %s (%s) failing via %s (attempt %d): paging through fallback %s as well",
                job.action,
                job.incident_id,
                job.target,
                job.integration,
                attempt,
                ", ".join(fallbacks),
            )

    async def _finish(
        self,
        job: PageJob,
        outcome: PageOutcome,
        events: list[OutboxRecord] | None = None,
        pages: Sequence[NewPage] = (),
    ) -> bool:
        """The attempt's outcome, its events and the pages it hands over, in one
        transaction, if we still hold the job; False if the lease was lost."""
        self._call_ended()
        now = self._clock.now()

        async def finish(conn: Any) -> bool:
            return await self._jobs.finish(conn, job, outcome, now)

        recorded = await self._store.commit(Effects(events=events or [], pages=pages), now, guard=finish)
        due = [p.due or now for p in pages]
        if outcome.status is PageStatus.PENDING:
            due.append(outcome.next_attempt_at or now)
        if recorded and due:
            # A retry, a failover page now, a backup in minutes: looked for by their time.
            self.wake_by(min(due).timestamp())
        if not recorded:
            log.warning(
                "page job %s: lease lost before its outcome (%s) was recorded", job.id, outcome.status
            )
        elif events:
            self._on_events()
        return recorded

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        s = self._settings
        base = min(s.page_backoff_max_seconds, s.page_backoff_initial_seconds * 2 ** (attempt - 1))
        jittered = base * random.uniform(0.8, 1.2)
        return float(max(jittered, retry_after or 0.0))

    async def _report_unrouted(
        self, job: PageJob, inc: Incident, request: PageRequest, roles: list[str]
    ) -> None:
        # Loud, not silent: the page still goes out to the roles that can be reached.
        reason = f"no {job.integration} contact for role(s) {', '.join(roles)} in contacts.yaml"
        part = page_part(job, request, 1, error=reason)
        part["unrouted_roles"] = roles
        now = self._clock.now()
        event = self._events.build("page.failed", inc.snapshot(), {"page": part}, now)
        await self._store.commit(Effects(events=[event]), now)
        self._on_events()
        for role in roles:
            self._metrics.escalations_unrouted.labels(job.integration, role).inc()
        log.error("incident %s: %s", inc.id, reason)


def _retry_note(retrying: bool, past_limit: bool) -> str:
    if not retrying:
        return "giving up"
    return "will retry until acknowledged or resolved" if past_limit else "will retry"
