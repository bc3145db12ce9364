"""The triage stage: when an incident opens (or reopens), choose its probes from
triage.yaml, keep the plan on the incident and schedule the ``triage`` timer, due at once.

Nothing runs here: the batch (and the first page with it) is stored without waiting on any
probe; the triage worker fires the timer afterwards.
"""

from __future__ import annotations

import logging
from typing import Any

from service.batch import Batch, TimerIntent
from service.models import IncidentStatus
from service.ruleset.triage import TriageFile
from service.store.timers import TRIAGE

log = logging.getLogger(__name__)

# An opening is triaged when it pages: at once, or when its hold lifts (noise control).
TRIAGED = ("incident.opened", "incident.reopened", "incident.unsuppressed")


class TriageStage:
    def __init__(self, triage: TriageFile, enabled: bool = True) -> None:
        self._triage = triage
        self._enabled = enabled and bool(triage.rules)

    async def __call__(self, batch: Batch) -> Batch:
        if not self._enabled:
            return batch
        for event in batch.events:
            if event.type not in TRIAGED or event.extra.get("flap"):
                continue
            inc = batch.changed.get(event.incident["id"])
            if inc is None or inc.status is IncidentStatus.RESOLVED or inc.hold is not None:
                continue
            plan = self.plan(event.extra.get("alerts", []))
            if not plan:
                inc.triage = None
                continue
            inc.triage = {"status": "pending", "plan": plan, "findings": [], "summary": None, "at": None}
            batch.timers.append(TimerIntent(inc.id, inc.opening, TRIAGE, batch.now))
        return batch

    def plan(self, alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Every alert's probes, rendered from its labels and annotations, once each."""
        out: list[dict[str, Any]] = []
        for alert in alerts:
            try:
                targets = self._triage.targets(
                    dict(alert.get("labels") or {}), dict(alert.get("annotations") or {})
                )
            except Exception as exc:  # a rule's template must not stop the batch
                log.warning("triage: cannot render the probes for an alert: %s", exc)
                continue
            out.extend(t for t in targets if t not in out)
        return out
