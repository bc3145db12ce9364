"""noise.yaml: maintenance windows, inhibition, flap dampening, open thresholds, heartbeats.

Windows and inhibition are written in Alertmanager's own syntax (``time_intervals``,
``inhibit_rules`` with ``source_matchers`` / ``target_matchers`` / ``equal``), so a team
can copy them from its Alertmanager configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from pydantic import Field, model_validator

from service.ruleset.base import SEVERITY_NAME, MatcherField, Strict, reject_duplicates
from service.ruleset.durations import Duration
from service.ruleset.time_intervals import NamedTimeInterval


def _all_match(matchers: list[MatcherField], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


class Maintenance(Strict):
    """Alerts its matchers select page nobody while one of its time intervals is on."""

    name: str = Field(min_length=1)
    matchers: list[MatcherField] = Field(min_length=1)
    time_intervals: list[str] = Field(min_length=1)
    comment: str = ""

    def matches(self, labels: Mapping[str, str]) -> bool:
        return _all_match(self.matchers, labels)


class InhibitRule(Strict):
    """Alertmanager's inhibit rule: a firing source mutes the targets that agree with it on
    every ``equal`` label."""

    name: str = ""
    source_matchers: list[MatcherField] = Field(min_length=1)
    target_matchers: list[MatcherField] = Field(min_length=1)
    equal: list[str] = []

    def label(self, index: int) -> str:
        return self.name or f"inhibit_rules[{index}]"


class FlapRule(Strict):
    """An incident that reopens more than ``reopens`` times within ``within`` is flapping
    until it has not reopened for ``quiet``."""

    reopens: int = Field(ge=1)
    within: Duration
    quiet: Duration


class Burst(Strict):
    count: int = Field(ge=2)
    within: Duration


class Threshold(Strict):
    """An incident of these alerts opens (and pages) only once one condition holds: at least
    ``min_firing`` alerts firing, an alert firing for ``firing_for``, or ``burst.count``
    alerts started within ``burst.within``. Until then it is pending."""

    name: str = Field(min_length=1)
    matchers: list[MatcherField] = Field(min_length=1)
    min_firing: int | None = Field(default=None, ge=2)
    firing_for: Duration | None = None
    burst: Burst | None = None

    @model_validator(mode="after")
    def _one_condition(self) -> Threshold:
        if self.min_firing is None and self.firing_for is None and self.burst is None:
            raise ValueError("give at least one of min_firing, firing_for or burst")
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        return _all_match(self.matchers, labels)


class Heartbeat(Strict):
    """Alerts that must keep arriving (Alertmanager's always-firing ``Watchdog``): when none
    has arrived for ``interval``, an incident opens; it resolves when one arrives again."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    matchers: list[MatcherField] = Field(min_length=1)
    interval: Duration
    severity: str = Field(default="SEV-2", pattern=SEVERITY_NAME.pattern)
    summary: str = ""

    def matches(self, labels: Mapping[str, str]) -> bool:
        return _all_match(self.matchers, labels)


class NoiseFile(Strict):
    time_intervals: list[NamedTimeInterval] = []
    maintenance: list[Maintenance] = []
    inhibit_rules: list[InhibitRule] = []
    flapping: FlapRule | None = None
    thresholds: list[Threshold] = []
    heartbeats: list[Heartbeat] = []

    @model_validator(mode="after")
    def _unique_names(self) -> NoiseFile:
        reject_duplicates([t.name for t in self.time_intervals], "time interval defined twice")
        reject_duplicates([m.name for m in self.maintenance], "maintenance window defined twice")
        reject_duplicates([t.name for t in self.thresholds], "threshold defined twice")
        reject_duplicates([h.name for h in self.heartbeats], "heartbeat defined twice")
        return self

    def intervals(self, maintenance: Maintenance) -> list[NamedTimeInterval]:
        names = set(maintenance.time_intervals)
        return [t for t in self.time_intervals if t.name in names]

    def window_on(
        self, labels: Mapping[str, str], now: datetime
    ) -> tuple[Maintenance, datetime | None] | None:
        """The maintenance window muting these labels now, and when it ends (if within a week)."""
        for m in self.maintenance:
            if not m.matches(labels):
                continue
            on = [t for t in self.intervals(m) if t.contains(now)]
            if on:
                ends = [t.next_change(now) for t in on]
                return m, max((e for e in ends if e is not None), default=None)
        return None

    def next_window_change(self, now: datetime, horizon: timedelta) -> datetime | None:
        """When any window next starts or ends (within ``horizon``)."""
        found = [t.next_change(now, horizon) for t in self.time_intervals]
        return min((f for f in found if f is not None), default=None)

    def threshold_for(self, labels: Mapping[str, str]) -> Threshold | None:
        return next((t for t in self.thresholds if t.matches(labels)), None)

    def heartbeat_for(self, labels: Mapping[str, str]) -> Heartbeat | None:
        return next((h for h in self.heartbeats if h.matches(labels)), None)
