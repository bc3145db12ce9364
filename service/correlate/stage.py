"""The correlate stage: load the incidents of the batch's groups, fold the alerts in."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from service.batch import Batch
from service.correlate.correlator import Correlator, assign_groups
from service.models import Incident
from service.ruleset.models import RuleSet


class CurrentIncidents(Protocol):
    async def load_current(self, group_keys: Iterable[str]) -> dict[str, Incident]: ...


class CorrelateStage:
    def __init__(self, incidents: CurrentIncidents, correlator: Correlator, rules: RuleSet) -> None:
        self._incidents = incidents
        self._correlator = correlator
        self._rules = rules

    async def __call__(self, batch: Batch) -> Batch:
        keys = assign_groups(batch.alerts, self._rules)
        batch.current = await self._incidents.load_current(keys) if keys else {}
        out = self._correlator.apply(batch.alerts, batch.current, batch.now)
        batch.changed.update(out.changed)
        batch.events.extend(out.events)
        batch.pages.extend(out.pages)
        batch.duplicates += out.duplicates
        batch.ignored += out.ignored
        return batch
