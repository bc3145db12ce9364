"""Page jobs: one per (incident opening, pager, action, target), sent by the page worker."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BindParameter, ColumnElement, Row, bindparam, case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from service.batch import PageIntent
from service.models import Incident, PageAction
from service.notify.base import idempotency_key
from service.store.database import Database
from service.store.queue import CLAIM_STAMP, LEASE_SECONDS, Backlog, Claiming, Narrowing, WorkQueue
from service.store.tables import incidents, page_jobs


class PageStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    # Not sent because it no longer made sense (resolved before the page went out).
    SUPERSEDED = "superseded"


@dataclass(frozen=True, slots=True)
class NewPage:
    """A page job to store: a :class:`PageIntent` for one pager."""

    incident_id: str
    integration: str
    action: PageAction
    opening: int
    target: str = "first"
    roles: tuple[str, ...] = ()
    message: str | None = None
    by: str | None = None
    # When it may first be sent (a backup page, after its primary went unanswered); now if None.
    due: datetime | None = None
    # An ack or close: the page a person answered in this pager's own app, not sent back there.
    answered: str | None = None

    @classmethod
    def fan_out(cls, intent: PageIntent, integrations: Sequence[str]) -> list[NewPage]:
        return [
            cls(
                intent.incident_id,
                name,
                intent.action,
                intent.opening,
                intent.target,
                tuple(intent.roles),
                intent.message,
                intent.by,
            )
            for name in integrations
        ]


@dataclass(slots=True)
class PageJob:
    """A claimed page job; ``lease`` must accompany its outcome."""

    id: int
    incident_id: str
    integration: str
    action: PageAction
    opening: int
    attempts: int
    lease: str = ""
    target: str = "first"
    roles: list[str] = field(default_factory=list)
    message: str | None = None
    by: str | None = None
    answered: str | None = None


@dataclass(frozen=True, slots=True)
class Reservation:
    """Slots a page worker keeps free for the jobs a batch is about to store, and the
    pagers it sends through (service/persist/stage.py hands it those jobs, leased)."""

    slots: int
    integrations: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class HandedPage:
    """A job leased by the transaction that stored it, with its incident as stored there
    (None: the worker reads it)."""

    job: PageJob
    incident: Incident | None = None


@dataclass(frozen=True, slots=True)
class PageOutcome:
    status: PageStatus
    attempts: int
    error: str | None = None
    next_attempt_at: datetime | None = None  # when it is tried again (status pending)


@dataclass(frozen=True, slots=True)
class PageKey:
    """Which page an idempotency key (PagerDuty dedup_key, Opsgenie alias) names."""

    incident_id: str
    opening: int
    target: str
    integration: str


@dataclass(frozen=True, slots=True)
class SentTrigger:
    """A trigger that went out: its target and the roles it was for."""

    target: str
    roles: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PageView:
    """A page job as the incident API shows it."""

    integration: str
    action: str
    target: str
    opening: int
    status: str
    attempts: int
    last_error: str | None


def _payload(page: NewPage) -> str:
    fields = (("message", page.message), ("by", page.by), ("answered", page.answered))
    return json.dumps({k: v for k, v in fields if v is not None})


def _dedup_key(page: NewPage) -> str | None:
    """The key the pager knows a trigger by; acks and closes reuse their trigger's."""
    if page.action is not PageAction.TRIGGER:
        return None
    return idempotency_key(page.incident_id, page.opening, page.target)


def _waiting(stamp: float | ColumnElement[float]) -> ColumnElement[bool]:
    """Delayed jobs not yet due at ``stamp``: stored to start later than they were written,
    never tried."""
    t = page_jobs.c
    return (t.attempts == 0) & (t.next_attempt_at > t.created_at) & (t.next_attempt_at > stamp)


def _job(row: Row[Any], lease: str) -> PageJob:
    payload = json.loads(row.payload)
    return PageJob(
        row.id,
        row.incident_id,
        row.integration,
        PageAction(row.action),
        row.opening,
        row.attempts,
        lease,
        row.target,
        json.loads(row.roles),
        payload.get("message"),
        payload.get("by"),
        payload.get("answered"),
    )


# The most severe incident's pages are claimed first ("SEV-1" < "SEV-2": one digit, by the rules).
_severity = select(incidents.c.severity).where(incidents.c.id == page_jobs.c.incident_id).scalar_subquery()


class PageJobs:
    def __init__(self, db: Database) -> None:
        self._db = db
        self.queue = WorkQueue(
            db,
            page_jobs,
            runnable=page_jobs.c.status == PageStatus.PENDING,
            due=page_jobs.c.next_attempt_at,
            # The most severe incident's pages first ("SEV-1" < "SEV-2": one digit, by the rules).
            claiming=Claiming(rank=_severity),
        )
        # The claims' narrowings, built once (queue.Narrowing): the pagers bound as
        # "pagers", the incidents as "incidents", the incidents left out as "skip".
        pagers: BindParameter[Any] = bindparam("pagers", expanding=True)
        self._due = self._first_pending(pagers, CLAIM_STAMP)
        self._due_skipping = self._due & page_jobs.c.incident_id.not_in(bindparam("skip", expanding=True))
        self._new = self._first_pending(pagers, CLAIM_STAMP, bindparam("incidents", expanding=True))
        # next_due's: the first pending jobs, and the delayed ones still waiting for their time.
        self._next = self._due | (_waiting(CLAIM_STAMP) & page_jobs.c.integration.in_(pagers))

    @staticmethod
    def _first_pending(
        integrations: set[str] | BindParameter[Any],
        stamp: float | ColumnElement[float] | None = None,
        incident_ids: Sequence[str] | BindParameter[Any] | None = None,
    ) -> ColumnElement[bool]:
        """The oldest pending job of each incident and pager: jobs of one incident run
        in order, so a close never overtakes its trigger. A delayed job still waiting for
        its time (as of ``stamp``) holds up nobody: an ack or close goes out meanwhile.
        ``incident_ids``: only theirs (all when None)."""
        pending = (page_jobs.c.status == PageStatus.PENDING) & page_jobs.c.integration.in_(integrations)
        if stamp is not None:
            pending = pending & ~_waiting(stamp)
        if incident_ids is not None:
            pending = pending & page_jobs.c.incident_id.in_(incident_ids)
        first = (
            select(func.min(page_jobs.c.id))
            .where(pending)
            .group_by(page_jobs.c.incident_id, page_jobs.c.integration)
        )
        return page_jobs.c.id.in_(first)

    async def add(self, conn: AsyncConnection, pages: Sequence[NewPage], now: datetime) -> None:
        """Store page jobs; one already stored under the same key is left as it is."""
        await self.add_rows(conn, self.rows(pages, now))

    async def add_rows(self, conn: AsyncConnection, rows: list[dict[str, object]]) -> None:
        if rows:
            await conn.execute(self._db.insert_ignore(page_jobs), rows)

    @staticmethod
    def rows(pages: Sequence[NewPage], now: datetime) -> list[dict[str, object]]:
        stamp = now.timestamp()
        return [
            {
                "incident_id": p.incident_id,
                "integration": p.integration,
                "action": p.action.value,
                "opening": p.opening,
                "target": p.target,
                "roles": json.dumps(list(p.roles)),
                "payload": _payload(p),
                "status": PageStatus.PENDING.value,
                "attempts": 0,
                "next_attempt_at": p.due.timestamp() if p.due is not None else stamp,
                "created_at": stamp,
                "updated_at": stamp,
                "dedup_key": _dedup_key(p),
            }
            for p in pages
        ]

    async def find_by_key(self, key: str, integration: str | None = None) -> PageKey | None:
        """The trigger page stored under this idempotency key, preferring ``integration``'s
        (the same key goes to every pager of the page); None if incidentd never sent it."""
        query = select(
            page_jobs.c.incident_id, page_jobs.c.opening, page_jobs.c.target, page_jobs.c.integration
        ).where(page_jobs.c.dedup_key == key, page_jobs.c.action == PageAction.TRIGGER.value)
        async with self._db.read() as conn:
            rows = (await conn.execute(query.order_by(page_jobs.c.id))).all()
        if not rows:
            return None
        row = next((r for r in rows if r.integration == integration), rows[0])
        return PageKey(row.incident_id, row.opening, row.target, row.integration)

    async def claim_due(
        self,
        now: datetime,
        limit: int,
        lease_seconds: float,
        skip_incidents: set[str],
        integrations: set[str],
    ) -> list[PageJob]:
        """Lease up to ``limit`` due jobs, oldest first, for the pagers this replica has,
        leaving out incidents this worker is already paging for."""
        if limit <= 0 or not integrations:
            return []
        pagers = {"pagers": sorted(integrations)}
        where = (
            Narrowing(self._due_skipping, {**pagers, "skip": sorted(skip_incidents)})
            if skip_incidents
            else Narrowing(self._due, pagers)
        )
        claim = await self.queue.claim(now, limit, lease_seconds, where=where)
        return [_job(r, claim.owner) for r in claim.rows]

    async def lease_new(
        self,
        conn: AsyncConnection,
        incident_ids: Sequence[str],
        integrations: set[str],
        now: datetime,
        limit: int,
    ) -> list[PageJob]:
        """:meth:`claim_due` for these incidents, in ``conn``'s transaction: the jobs it just
        stored, leased before they are visible, so no other worker or replica claims them."""
        if limit <= 0 or not integrations or not incident_ids:
            return []
        where = Narrowing(self._new, {"pagers": sorted(integrations), "incidents": list(incident_ids)})
        claim = await self.queue.claim_in(conn, now, limit, LEASE_SECONDS, where=where)
        return [_job(r, claim.owner) for r in claim.rows]

    async def finish(self, conn: AsyncConnection, job: PageJob, outcome: PageOutcome, now: datetime) -> bool:
        """Record an attempt's outcome; False if the lease was lost (another replica
        took the job and records the outcome, not us)."""
        values: dict[str, Any] = {
            "status": outcome.status.value,
            "attempts": outcome.attempts,
            "last_error": outcome.error,
            "updated_at": now.timestamp(),
        }
        if outcome.next_attempt_at is not None:
            values["next_attempt_at"] = outcome.next_attempt_at.timestamp()
        return await self.queue.finish(conn, job.id, job.lease, **values)

    async def next_due(self, integrations: set[str], now: datetime) -> float | None:
        """When the next claimable job can run. Only the first pending job of each
        incident counts, so a close queued behind a trigger in backoff does not make
        the worker spin; and each delayed job still waiting for its time (as of ``now``)."""
        if not integrations:
            return None
        return await self.queue.next_due(Narrowing(self._next, {"pagers": sorted(integrations)}), now)

    async def has_sibling(self, job: PageJob, action: PageAction, status: PageStatus) -> bool:
        """Is there a job for the same incident opening and pager with this action and
        status? A trigger whose close is queued need not be sent."""
        query = select(page_jobs.c.id).where(
            page_jobs.c.incident_id == job.incident_id,
            page_jobs.c.integration == job.integration,
            page_jobs.c.opening == job.opening,
            page_jobs.c.action == action.value,
            page_jobs.c.status == status.value,
        )

        async def read(conn: AsyncConnection) -> bool:
            return (await conn.execute(query)).first() is not None

        # Inline: a claimed trigger asks before it is sent (Database.read_inline).
        return await self._db.read_inline(read)

    async def sent_trigger_targets(self, job: PageJob) -> list[SentTrigger]:
        """The pages of this opening that went out, so an ack or close reaches each, routed
        as its trigger was (the trigger's roles choose a PagerDuty routing key, say)."""
        async with self._db.read() as conn:
            rows = await conn.execute(
                select(page_jobs.c.target, page_jobs.c.roles)
                .where(
                    page_jobs.c.incident_id == job.incident_id,
                    page_jobs.c.integration == job.integration,
                    page_jobs.c.opening == job.opening,
                    page_jobs.c.action == PageAction.TRIGGER.value,
                    page_jobs.c.status == PageStatus.SENT.value,
                )
                .order_by(page_jobs.c.id)
            )
            return [SentTrigger(r.target, tuple(json.loads(r.roles))) for r in rows]

    async def for_incident(self, incident_id: str) -> list[PageView]:
        async with self._db.read() as conn:
            rows = await conn.execute(
                select(page_jobs).where(page_jobs.c.incident_id == incident_id).order_by(page_jobs.c.id)
            )
            return [
                PageView(r.integration, r.action, r.target, r.opening, r.status, r.attempts, r.last_error)
                for r in rows
            ]

    async def backlog(self, now: datetime) -> Backlog:
        """Pending jobs that are due (being sent, or retrying), and since when the oldest has
        been due: its due time while never tried, else its creation (a retry moves
        ``next_attempt_at``; a retried backup page is counted from its creation). Read
        through the ``(status, next_attempt_at)`` index at each scrape."""
        t = page_jobs.c
        due_since = case((t.attempts == 0, t.next_attempt_at), else_=t.created_at)
        query = select(func.count(), func.min(due_since)).where(
            t.status == PageStatus.PENDING.value, ~_waiting(now.timestamp())
        )
        async with self._db.read() as conn:
            row = (await conn.execute(query)).one()
            return Backlog(int(row[0]), row[1])

    async def abandon(self, job: PageJob) -> None:
        """Give the job back at once (shutdown) instead of at the end of its lease."""
        await self.queue.release([job.id], job.lease)
