"""What people look at: incidents with their timeline, pages and remediation jobs."""

from __future__ import annotations

from dataclasses import dataclass

from service.models import Incident
from service.store.outbox import TimelineItem
from service.store.pages import PageView
from service.store.remediations import RemediationJob
from service.store.store import Store


@dataclass(frozen=True, slots=True)
class IncidentDetail:
    incident: Incident
    timeline: list[TimelineItem]
    pages: list[PageView]
    remediations: list[RemediationJob]


class IncidentViews:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def list(self, status: str | None, severity: str | None, limit: int) -> list[Incident]:
        return await self._store.incidents.list(status, severity, limit)

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
