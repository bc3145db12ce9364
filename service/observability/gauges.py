"""The open-incident gauges, counted in the store (every replica sees every incident)."""

from __future__ import annotations

from collections.abc import Sequence

from service.clock import Clock
from service.observability.metrics import Metrics
from service.scheduling import DueWorker
from service.store.incidents import Incidents

REFRESH_SECONDS = 15.0


class OpenIncidentGauges(DueWorker):
    name = "incident gauges"
    # At most one count query a second under load, however often woken.
    pace = 1.0

    def __init__(
        self, incidents: Incidents, metrics: Metrics, severities: Sequence[str], clock: Clock
    ) -> None:
        super().__init__(clock)
        self._incidents = incidents
        self._metrics = metrics
        self._severities = list(severities)

    async def run_once(self) -> int:
        counts = await self._incidents.open_counts()
        for name in self._severities:
            self._metrics.incidents_open.labels(name).set(counts.get(name, 0))
        return 0

    async def next_due(self) -> float:
        return self._clock.now().timestamp() + REFRESH_SECONDS
