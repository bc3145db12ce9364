"""The state store: incidents, the event outbox and page jobs, on SQLite or PostgreSQL.

Every batch of alerts becomes exactly one transaction; Kafka offsets are
committed only after it, which is what makes processing at-least-once and the
side effects idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import case, delete, func, insert, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from service.escalate.policy import TimerIntent
from service.models import Incident
from service.store.codec import dump_incident, load_incident
from service.store.tables import incidents, metadata, outbox, page_jobs, remediations, timeline
from service.store.tables import timers as timers_table


class ConcurrentUpdate(Exception):
    """Another worker changed an incident this batch read; the batch must be redone."""


@dataclass(slots=True)
class OutboxRecord:
    topic: str
    key: bytes
    value: bytes
    # The incident timeline entry this event makes (none for records without one).
    timeline: tuple[str, str, str] | None = None  # (incident id, event type, summary)


@dataclass(slots=True)
class PageJob:
    id: int
    incident_id: str
    integration: str
    action: str
    opening: int
    attempts: int
    lease: str = ""
    target: str = "first"
    roles: list[str] = field(default_factory=list)
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class TimerJob:
    id: int
    incident_id: str
    opening: int
    name: str
    due_at: datetime
    lease: str


def _ts(value: datetime) -> float:
    return value.timestamp()


class Store:
    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        self.dialect = parsed.get_backend_name()
        sqlite = self.dialect == "sqlite"
        self.engine: AsyncEngine = create_async_engine(url, pool_pre_ping=not sqlite)
        # SQLite has one write lock; writers that queue for it in SQLite's busy handler
        # sleep and retry (measured: 15 ms per one-row write under load). Queue them
        # in-process instead.
        self._write_lock = asyncio.Lock() if sqlite else None

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
        else:
            async with self._write_lock, self.engine.begin() as conn:
                yield conn

    async def start(self) -> None:
        async with self._write() as conn:
            if self.dialect == "sqlite":
                # WAL lets the HTTP readiness probe read while the consumer writes.
                await conn.execute(text("PRAGMA journal_mode=WAL"))
            await conn.run_sync(metadata.create_all)

    async def close(self) -> None:
        await self.engine.dispose()

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    def _insert_ignore(self, table: Any) -> Any:
        ins = pg_insert if self.dialect == "postgresql" else sqlite_insert
        return ins(table).on_conflict_do_nothing()

    # -- incidents ---------------------------------------------------------

    async def load_current(self, group_keys: Iterable[str]) -> dict[str, Incident]:
        keys = list(set(group_keys))
        found: dict[str, Incident] = {}
        async with self.engine.connect() as conn:
            for chunk in _chunks(keys, 500):
                rows = await conn.execute(
                    select(incidents).where(incidents.c.group_key.in_(chunk), incidents.c.is_current)
                )
                for row in rows:
                    found[row.group_key] = load_incident(row)
        return found

    async def get_incident(self, incident_id: str) -> Incident | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(incidents).where(incidents.c.id == incident_id))).first()
        return load_incident(row) if row else None

    async def open_counts(self) -> dict[str, int]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(incidents.c.severity, func.count())
                .where(incidents.c.status == "open")
                .group_by(incidents.c.severity)
            )
            return {sev: n for sev, n in rows}

    async def commit_batch(
        self,
        changed: Iterable[Incident],
        events: Sequence[OutboxRecord],
        pages: Sequence[dict[str, Any]],
        now: datetime,
        timers: Sequence[TimerIntent] = (),
        remediation_jobs: Sequence[dict[str, Any]] = (),
    ) -> None:
        """Store a batch's incident changes, events, page jobs, timers and remediation
        jobs atomically."""
        async with self._write() as conn:
            for inc in changed:
                await self._write_incident(conn, inc)
            await self._add_effects(conn, events, pages, timers, now)
            if remediation_jobs:
                stamp = _ts(now)
                rows = [
                    {"attempts": 0, "next_attempt_at": stamp, "created_at": stamp, "updated_at": stamp, **r}
                    for r in remediation_jobs
                ]
                # One job per (incident opening, policy, target), however often asked.
                await conn.execute(self._insert_ignore(remediations), rows)

    async def add_events(self, events: Sequence[OutboxRecord], now: datetime) -> None:
        async with self._write() as conn:
            await self._add_outbox(conn, events, now)

    async def _add_effects(
        self,
        conn: AsyncConnection,
        events: Sequence[OutboxRecord],
        pages: Sequence[dict[str, Any]],
        timers: Sequence[TimerIntent],
        now: datetime,
    ) -> None:
        await self._add_outbox(conn, events, now)
        stamp = _ts(now)
        if pages:
            rows = [
                {
                    "target": "first",
                    "roles": "[]",
                    "payload": "{}",
                    **p,
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": stamp,
                    "created_at": stamp,
                    "updated_at": stamp,
                }
                for p in pages
            ]
            await conn.execute(self._insert_ignore(page_jobs), rows)
        if timers:
            # A timer is scheduled once per (incident opening, name), however often asked.
            rows = [
                {
                    "incident_id": t.incident_id,
                    "opening": t.opening,
                    "name": t.name,
                    "due_at": _ts(t.due_at),
                    "status": "pending",
                }
                for t in timers
            ]
            await conn.execute(self._insert_ignore(timers_table), rows)

    @staticmethod
    async def _lease(
        conn: AsyncConnection, table: Any, row_id: int, stamp: float, seconds: float, active: Any = None
    ) -> str | None:
        """Lease one pending (or ``active``) row of page_jobs, timers or remediations; None
        if another worker holds it or finished it between our read and this write.
        Returns the owner token that must accompany the outcome."""
        owner = uuid.uuid4().hex
        unleased = or_(table.c.lease_until.is_(None), table.c.lease_until < stamp)
        result = await conn.execute(
            update(table)
            .where(table.c.id == row_id, table.c.status == "pending" if active is None else active, unleased)
            .values(lease_until=stamp + seconds, lease_owner=owner)
        )
        return owner if result.rowcount == 1 else None

    # -- timers ----------------------------------------------------------------

    async def claim_due_timers(self, now: datetime, limit: int, lease_seconds: float) -> list[TimerJob]:
        stamp = _ts(now)
        unleased = or_(timers_table.c.lease_until.is_(None), timers_table.c.lease_until < stamp)
        async with self._write() as conn:
            rows = (
                await conn.execute(
                    select(timers_table)
                    .where(timers_table.c.status == "pending", timers_table.c.due_at <= stamp, unleased)
                    .order_by(timers_table.c.due_at, timers_table.c.id)
                    .limit(limit)
                )
            ).all()
            claimed: list[TimerJob] = []
            for r in rows:
                owner = await self._lease(conn, timers_table, r.id, stamp, lease_seconds)
                if owner is not None:
                    due = datetime.fromtimestamp(r.due_at, UTC)
                    claimed.append(TimerJob(r.id, r.incident_id, r.opening, r.name, due, owner))
            return claimed

    async def fire_timer(
        self,
        timer: TimerJob,
        *,
        status: str,
        incident: Incident | None,
        events: Sequence[OutboxRecord],
        pages: Sequence[dict[str, Any]],
        timers: Sequence[TimerIntent],
        now: datetime,
    ) -> bool:
        """A timer's outcome with everything it causes, in one transaction; False if
        the lease was lost (another replica fires it)."""
        async with self._write() as conn:
            result = await conn.execute(
                update(timers_table)
                .where(timers_table.c.id == timer.id, timers_table.c.lease_owner == timer.lease)
                .values(status=status, fired_at=_ts(now), lease_until=None, lease_owner=None)
            )
            if result.rowcount != 1:
                return False
            if incident is not None:
                await self._write_incident(conn, incident)
            await self._add_effects(conn, events, pages, timers, now)
            return True

    async def release_timer(self, timer: TimerJob) -> None:
        async with self._write() as conn:
            await conn.execute(
                update(timers_table)
                .where(timers_table.c.id == timer.id, timers_table.c.lease_owner == timer.lease)
                .values(lease_until=None, lease_owner=None)
            )

    async def next_timer_due(self) -> float | None:
        lease = func.coalesce(timers_table.c.lease_until, 0.0)
        runnable_at = case((lease > timers_table.c.due_at, lease), else_=timers_table.c.due_at)
        async with self.engine.connect() as conn:
            value = (
                await conn.execute(select(func.min(runnable_at)).where(timers_table.c.status == "pending"))
            ).scalar()
            return float(value) if value is not None else None

    async def timers_for(self, incident_id: str) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(timers_table)
                .where(timers_table.c.incident_id == incident_id)
                .order_by(timers_table.c.id)
            )
            return [dict(r._mapping) for r in rows]

    async def _write_incident(self, conn: AsyncConnection, inc: Incident) -> None:
        values = {
            "group_key": inc.group_key,
            "is_current": inc.is_current,
            "status": inc.status.value,
            "severity": inc.severity,
            "opened_at": _ts(inc.opened_at),
            "data": dump_incident(inc),
        }
        if inc.version == 0:
            await conn.execute(insert(incidents).values(id=inc.id, version=1, **values))
        else:
            result = await conn.execute(
                update(incidents)
                .where(incidents.c.id == inc.id, incidents.c.version == inc.version)
                .values(version=inc.version + 1, **values)
            )
            if result.rowcount != 1:
                raise ConcurrentUpdate(inc.id)

    async def _add_outbox(self, conn: AsyncConnection, events: Sequence[OutboxRecord], now: datetime) -> None:
        if events:
            stamp = _ts(now)
            entries = [
                {"incident_id": e.timeline[0], "type": e.timeline[1], "summary": e.timeline[2], "at": stamp}
                for e in events
                if e.timeline
            ]
            if entries:
                await conn.execute(insert(timeline), entries)
            await conn.execute(
                insert(outbox),
                [{"topic": e.topic, "key": e.key, "value": e.value, "created_at": stamp} for e in events],
            )

    # -- outbox ------------------------------------------------------------

    async def fetch_outbox(self, limit: int) -> list[tuple[int, OutboxRecord]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(outbox).order_by(outbox.c.id).limit(limit))
            return [(r.id, OutboxRecord(r.topic, r.key, r.value)) for r in rows]

    async def delete_outbox(self, ids: Sequence[int]) -> None:
        async with self._write() as conn:
            for chunk in _chunks(list(ids), 500):
                await conn.execute(delete(outbox).where(outbox.c.id.in_(chunk)))

    # -- page jobs -----------------------------------------------------------

    def _first_pending(self, integrations: set[str]) -> Any:
        """The oldest pending job of each incident and pager: jobs of one incident run
        in order, so a close never overtakes its trigger."""
        return (
            select(func.min(page_jobs.c.id))
            .where(page_jobs.c.status == "pending", page_jobs.c.integration.in_(integrations))
            .group_by(page_jobs.c.incident_id, page_jobs.c.integration)
        )

    async def claim_due_pages(
        self,
        now: datetime,
        limit: int,
        lease_seconds: float,
        skip_incidents: set[str],
        integrations: set[str],
    ) -> list[PageJob]:
        """Lease up to ``limit`` due jobs, oldest first, for the pagers this replica has.

        The lease keeps two replicas from sending the same page at once; the claim
        re-checks status and lease in its UPDATE, so a job another replica finished
        or holds between our read and our write is not taken.
        """
        if limit <= 0 or not integrations:
            return []
        stamp = _ts(now)
        unleased = or_(page_jobs.c.lease_until.is_(None), page_jobs.c.lease_until < stamp)
        async with self._write() as conn:
            rows = (
                await conn.execute(
                    select(page_jobs)
                    .where(
                        page_jobs.c.id.in_(self._first_pending(integrations)),
                        page_jobs.c.next_attempt_at <= stamp,
                        unleased,
                    )
                    .order_by(page_jobs.c.next_attempt_at, page_jobs.c.id)
                    .limit(limit + len(skip_incidents))
                )
            ).all()
            jobs = [r for r in rows if r.incident_id not in skip_incidents][:limit]
            claimed: list[PageJob] = []
            for r in jobs:
                owner = await self._lease(conn, page_jobs, r.id, stamp, lease_seconds)
                if owner is not None:
                    claimed.append(
                        PageJob(
                            r.id,
                            r.incident_id,
                            r.integration,
                            r.action,
                            r.opening,
                            r.attempts,
                            owner,
                            r.target,
                            json.loads(r.roles),
                            json.loads(r.payload),
                        )
                    )
            return claimed

    async def sibling_page_job(self, job: PageJob, action: str, status: str) -> bool:
        """Is there a job for the same incident opening and pager with this action and status?

        A trigger whose close is already queued need not be sent; a close whose
        trigger was never sent has nothing to close.
        """
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(page_jobs.c.id).where(
                        page_jobs.c.incident_id == job.incident_id,
                        page_jobs.c.integration == job.integration,
                        page_jobs.c.opening == job.opening,
                        page_jobs.c.action == action,
                        page_jobs.c.status == status,
                    )
                )
            ).first()
            return row is not None

    async def finish_page(
        self,
        job: PageJob,
        *,
        status: str,
        attempts: int,
        next_attempt_at: datetime | None,
        error: str | None,
        events: Sequence[OutboxRecord],
        now: datetime,
    ) -> bool:
        """Record a page attempt's outcome and its events in one transaction.

        Returns False when the lease was lost (it expired and another replica took
        the job): that replica records the outcome, not us.
        """
        values: dict[str, Any] = {
            "status": status,
            "attempts": attempts,
            "lease_until": None,
            "lease_owner": None,
            "last_error": error,
            "updated_at": _ts(now),
        }
        if next_attempt_at is not None:
            values["next_attempt_at"] = _ts(next_attempt_at)
        async with self._write() as conn:
            result = await conn.execute(
                update(page_jobs)
                .where(page_jobs.c.id == job.id, page_jobs.c.lease_owner == job.lease)
                .values(**values)
            )
            if result.rowcount != 1:
                return False
            await self._add_outbox(conn, events, now)
            return True

    async def next_page_due(self, integrations: set[str]) -> float | None:
        """When the next claimable job can run (epoch seconds). Only the first pending
        job of each incident counts, and a leased one from when its lease ends, so a
        close queued behind a trigger in backoff does not make the worker spin."""
        if not integrations:
            return None
        lease = func.coalesce(page_jobs.c.lease_until, 0.0)
        runnable_at = case((lease > page_jobs.c.next_attempt_at, lease), else_=page_jobs.c.next_attempt_at)
        async with self.engine.connect() as conn:
            value = (
                await conn.execute(
                    select(func.min(runnable_at)).where(page_jobs.c.id.in_(self._first_pending(integrations)))
                )
            ).scalar()
            return float(value) if value is not None else None

    async def sent_trigger_targets(self, job: PageJob) -> list[str]:
        """The pages of this opening that went out, so a close closes each of them."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(page_jobs.c.target)
                .where(
                    page_jobs.c.incident_id == job.incident_id,
                    page_jobs.c.integration == job.integration,
                    page_jobs.c.opening == job.opening,
                    page_jobs.c.action == "trigger",
                    page_jobs.c.status == "sent",
                )
                .order_by(page_jobs.c.id)
            )
            return [r.target for r in rows]

    async def timeline_for(self, incident_id: str) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(timeline.c.at, timeline.c.type, timeline.c.summary)
                .where(timeline.c.incident_id == incident_id)
                .order_by(timeline.c.id)
            )
            return [{"at": _iso_ts(r.at), "type": r.type, "summary": r.summary} for r in rows]

    async def list_incidents(self, status: str | None, severity: str | None, limit: int) -> list[Incident]:
        query = select(incidents).order_by(incidents.c.opened_at.desc()).limit(limit)
        if status:
            query = query.where(incidents.c.status == status)
        if severity:
            query = query.where(incidents.c.severity == severity)
        async with self.engine.connect() as conn:
            return [load_incident(r) for r in await conn.execute(query)]

    async def save_incident(
        self, inc: Incident, events: Sequence[OutboxRecord], pages: Sequence[dict[str, Any]], now: datetime
    ) -> None:
        """A person's change to one incident, with its events and pages (optimistic)."""
        await self.commit_batch([inc], events, pages, now)

    async def page_jobs_for(self, incident_id: str) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(page_jobs).where(page_jobs.c.incident_id == incident_id).order_by(page_jobs.c.id)
            )
            return [dict(r._mapping) for r in rows]


def _iso_ts(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).isoformat().replace("+00:00", "Z")


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


__all__ = ["ConcurrentUpdate", "OutboxRecord", "PageJob", "Store"]
