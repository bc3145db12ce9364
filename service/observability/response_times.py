"""Time to acknowledge and time to resolve, observed once per incident opening.

Observed from the effects of a committed transaction (``Store.on_commit``), never where the
decision is made: a batch read again after a crash, an alert delivered twice or a command
repeated finds the incident already acknowledged or resolved, emits no event and commits
nothing, so nothing is observed twice; a transaction that fails observes nothing at all.
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import Histogram

from service.models import Incident
from service.observability.metrics import Metrics
from service.store.store import Effects

ACKNOWLEDGED = "incident.acknowledged"
RESOLVED = "incident.resolved"


class ResponseTimes:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def __call__(self, effects: Effects) -> None:
        changes = [
            (e.timeline.incident_id, e.timeline.type)
            for e in effects.events
            if e.timeline is not None and e.timeline.type in (ACKNOWLEDGED, RESOLVED)
        ]
        if not changes:
            return
        incidents = {inc.id: inc for inc in effects.incidents}
        for incident_id, kind in changes:
            inc = incidents.get(incident_id)
            if inc is not None:
                self._observe(inc, kind)

    def _observe(self, inc: Incident, kind: str) -> None:
        start = inc.opening_started_at or inc.opened_at
        if kind == ACKNOWLEDGED:
            _observe_since(self._metrics.time_to_acknowledge.labels(inc.severity), start, inc.acknowledged_at)
        else:
            # None if the same batch reopened it after resolving it: that opening's end is gone.
            _observe_since(self._metrics.time_to_resolve.labels(inc.severity), start, inc.resolved_at)


def _observe_since(histogram: Histogram, start: datetime, end: datetime | None) -> None:
    if end is not None:
        histogram.observe(max(0.0, (end - start).total_seconds()))
