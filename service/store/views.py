"""What people look at: incidents with their timeline, pages and remediation jobs."""

from __future__ import annotations

from dataclasses import dataclass

from service.models import Incident
from service.store.outbox import TimelineItem
from service.store.pages import PageView
from service.store.remediations import RemediationJob
from service.store.store import Store


@dataclass(frozen=True, slots=True)
class IncidentFilter:
    """``status``: open, triggered (open, unacknowledged), acknowledged (open, acknowledged)
    or resolved; ``phase``: the commander's phase."""

    status: str | None = None
    severity: str | None = None
    phase: str | None = None

    def wants(self, inc: Incident) -> bool:
        if self.phase is not None and inc.phase.value != self.phase:
            return False
        if self.status == "triggered":
            return inc.acknowledged_at is None
        if self.status == "acknowledged":
            return inc.acknowledged_at is not None
        return True


@dataclass(frozen=True, slots=True)
class IncidentDetail:
    incident: Incident
    timeline: list[TimelineItem]
    pages: list[PageView]
    remediations: list[RemediationJob]


class IncidentViews:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def list(
        self, status: str | None, severity: str | None, limit: int, phase: str | None = None
    ) -> list[Incident]:
        """Newest first. Status and severity are columns; acknowledgement and phase live in
        the incident's document, so those filters read pages of the narrowed rows."""
        where = IncidentFilter(status, severity, phase)
        stored = "open" if where.status in ("triggered", "acknowledged") else where.status
        if where.status == stored and where.phase is None:
            return await self._store.incidents.list(stored, where.severity, limit)
        found: list[Incident] = []
        offset, page = 0, max(limit, 200)
        while len(found) < limit:
            rows = await self._store.incidents.list(stored, where.severity, page, offset)
            found += [inc for inc in rows if where.wants(inc)]
            if len(rows) < page:
                break
            offset += page
        return found[:limit]

    async def detail(self, incident_id: str) -> IncidentDetail | None:
        inc = await self._store.incidents.get(incident_id)
        if inc is None:
            return None
        return IncidentDetail(
            inc,
            await self._store.outbox.timeline(incident_id),
            await self._store.pages.for_incident(incident_id),
            await self._store.remediations.list(incident_id),
        )
