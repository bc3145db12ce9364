"""Dedup, grouping, resolve and reopen: the incident state machine, in memory.

The correlator works on one batch at a time against the incidents the store
loaded for the batch's group keys; it returns what changed and what to emit,
and the store writes all of it in one transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from service.correlate.fingerprint import group_key
from service.models import Alert, AlertState, AlertStatus, Incident, IncidentStatus
from service.ruleset.models import RuleSet


@dataclass(slots=True)
class EventIntent:
    """An incident event to publish once the batch is stored."""

    type: str  # suffix such as "incident.opened"
    incident: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class PageIntent:
    incident_id: str
    action: str  # "trigger" | "close"
    opening: int


@dataclass(slots=True)
class Outcome:
    changed: dict[str, Incident] = field(default_factory=dict)
    events: list[EventIntent] = field(default_factory=list)
    pages: list[PageIntent] = field(default_factory=list)
    duplicates: int = 0
    ignored: int = 0
    # incident id -> its incident.updated event still open for merging in this batch
    _open_update: dict[str, EventIntent] = field(default_factory=dict)

    def emit(self, type_: str, inc: Incident, alert: Alert, *reasons: str) -> None:
        """Record an event; consecutive updates of one incident merge into one event.

        A storm adds thousands of alerts to one incident in a batch; one
        ``incident.updated`` per batch keeps the topic readable and the hot path
        linear instead of one full snapshot per alert.
        """
        part = _alert_part(alert)
        if type_ == "incident.updated":
            pending = self._open_update.get(inc.id)
            if pending is not None:
                pending.incident = inc.snapshot()
                pending.extra["alerts"].append(part)
                known = pending.extra["reasons"]
                known.extend(r for r in reasons if r not in known)
                return
            event = EventIntent(type_, inc.snapshot(), {"reasons": list(reasons), "alerts": [part]})
            self._open_update[inc.id] = event
        else:
            self._open_update.pop(inc.id, None)
            event = EventIntent(type_, inc.snapshot(), {"alerts": [part]})
        self.events.append(event)


def assign_group(alert: Alert, rules: RuleSet) -> str:
    """Set the alert's incident group key (once per alert) and return it."""
    if not alert.group_key:
        alert.group_key, alert.group_labels = group_key(alert.labels, rules.grouping.group_by)
    return alert.group_key


class Correlator:
    def __init__(self, rules: RuleSet, describe: Callable[[Alert], Alert] = lambda a: a) -> None:
        self._rules = rules
        self._describe = describe

    def apply(self, alerts: list[Alert], current: dict[str, Incident], now: datetime) -> Outcome:
        """Fold ``alerts`` into ``current`` (group key -> current incident), in order."""
        out = Outcome()
        for alert in alerts:
            key = assign_group(alert, self._rules)
            self._apply_one(alert, key, alert.group_labels, current, now, out)
        return out

    def _apply_one(
        self,
        alert: Alert,
        key: str,
        group_labels: dict[str, str],
        current: dict[str, Incident],
        now: datetime,
        out: Outcome,
    ) -> None:
        inc = current.get(key)
        stored = inc.alerts.get(alert.fingerprint) if inc else None
        if stored is not None and _is_duplicate_or_stale(stored, alert):
            out.duplicates += 1
            return
        if alert.status is AlertStatus.RESOLVED:
            if inc is None or stored is None:
                # A resolve for an alert we never saw firing: nothing to close.
                out.ignored += 1
                return
            self._resolve_alert(inc, alert, now, out)
            return
        if inc is None or (
            inc.status is IncidentStatus.RESOLVED
            and inc.resolved_at is not None
            and now - inc.resolved_at > self._rules.grouping.reopen_window
        ):
            if inc is not None:
                inc.is_current = False
                out.changed[inc.id] = inc
            current[key] = self._open(alert, key, group_labels, now, out)
            return
        if inc.status is IncidentStatus.RESOLVED:
            self._reopen(inc, alert, now, out)
            return
        self._add_to_open(inc, alert, out)

    def _state(self, alert: Alert) -> AlertState:
        return AlertState(
            status=alert.status,
            starts_at=alert.starts_at,
            severity=alert.severity,
            alertname=alert.labels.get("alertname", ""),
        )

    def _open(
        self, alert: Alert, key: str, group_labels: dict[str, str], now: datetime, out: Outcome
    ) -> Incident:
        sev = self._rules.severity(alert.severity)
        self._describe(alert)
        inc = Incident(
            id=f"inc-{uuid.uuid4().hex[:20]}",
            group_key=key,
            group_labels=group_labels,
            title=alert.title,
            impact=alert.impact,
            severity=alert.severity,
            status=IncidentStatus.OPEN,
            opened_at=now,
            response_due_at=now + sev.response_time,
            alerts={alert.fingerprint: self._state(alert)},
        )
        out.changed[inc.id] = inc
        out.emit("incident.opened", inc, alert)
        out.pages.append(PageIntent(inc.id, "trigger", inc.opening))
        return inc

    def _reopen(self, inc: Incident, alert: Alert, now: datetime, out: Outcome) -> None:
        inc.status = IncidentStatus.OPEN
        inc.resolved_at = None
        inc.acknowledged_at = None
        inc.opening += 1
        inc.alerts[alert.fingerprint] = self._state(alert)
        self._raise_severity(inc, alert)
        inc.response_due_at = now + self._rules.severity(inc.severity).response_time
        out.changed[inc.id] = inc
        out.emit("incident.reopened", inc, alert)
        out.pages.append(PageIntent(inc.id, "trigger", inc.opening))

    def _add_to_open(self, inc: Incident, alert: Alert, out: Outcome) -> None:
        inc.alerts[alert.fingerprint] = self._state(alert)
        before = inc.severity
        self._raise_severity(inc, alert)
        out.changed[inc.id] = inc
        reasons = ["alert_added"]
        if inc.severity != before:
            reasons.append(f"severity_raised:{before}->{inc.severity}")
        out.emit("incident.updated", inc, alert, *reasons)

    def _raise_severity(self, inc: Incident, alert: Alert) -> None:
        # Severity only rises on its own; lowering it is a human decision.
        if self._rules.severity(alert.severity).rank < self._rules.severity(inc.severity).rank:
            inc.severity = alert.severity

    def _resolve_alert(self, inc: Incident, alert: Alert, now: datetime, out: Outcome) -> None:
        inc.alerts[alert.fingerprint] = self._state(alert)
        out.changed[inc.id] = inc
        if inc.status is IncidentStatus.OPEN and not inc.firing:
            inc.status = IncidentStatus.RESOLVED
            inc.resolved_at = now
            out.emit("incident.resolved", inc, alert)
            out.pages.append(PageIntent(inc.id, "close", inc.opening))
        else:
            out.emit("incident.updated", inc, alert, "alert_resolved")


def _is_duplicate_or_stale(stored: AlertState, alert: Alert) -> bool:
    if alert.status is stored.status:
        # Same episode re-sent (HA peers, repeat_interval), or a producer that
        # sends no startsAt reporting a still-firing alert again.
        return True
    if alert.status is AlertStatus.RESOLVED:
        # Alertmanager keeps one alert per fingerprint, so a resolve is its latest
        # word even when its startsAt is older than ours (it replaces an alert whose
        # end was set before its start, e.g. `amtool alert add --end` in the past).
        return False
    # Firing after resolved: a new episode only if it started later; the same or an
    # older startsAt is the old firing delivered late.
    return alert.starts_at <= stored.starts_at


def _alert_part(alert: Alert) -> dict[str, Any]:
    return {
        "fingerprint": alert.fingerprint,
        "status": alert.status.value,
        "labels": alert.labels,
        "annotations": alert.annotations,
        "severity": alert.severity,
        "rule": alert.rule,
        "starts_at": alert.starts_at.isoformat().replace("+00:00", "Z"),
        "generator_url": alert.generator_url,
    }
