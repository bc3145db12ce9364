"""Dedup, grouping, resolve and reopen: the incident state machine, in memory.

The correlator works on one batch at a time against the incidents the store
loaded for the batch's group keys; it returns what changed and what to emit,
and the store writes all of it in one transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from service.batch import FLAPPING, EventIntent, PageIntent
from service.clock import iso
from service.correlate.fingerprint import groups_of
from service.models import (
    EXPIRED,
    Alert,
    AlertState,
    AlertStatus,
    Flapping,
    Incident,
    IncidentStatus,
    PageAction,
    Phase,
)
from service.ruleset.durations import format_duration
from service.ruleset.models import RuleSet

# An update event lists at most this many alerts; a storm gives several events
# rather than one that Kafka refuses (1 MiB) and that blocks the outbox.
MAX_ALERTS_PER_EVENT = 100


@dataclass(slots=True)
class Outcome:
    changed: dict[str, Incident] = field(default_factory=dict)
    events: list[EventIntent] = field(default_factory=list)
    pages: list[PageIntent] = field(default_factory=list)
    duplicates: int = 0
    ignored: int = 0
    # incident id -> (incident, its incident.updated still open for merging in this batch)
    _open_update: dict[str, tuple[Incident, EventIntent]] = field(default_factory=dict)

    def emit(self, type_: str, inc: Incident, alert: Alert, *reasons: str) -> None:
        """Record an event; consecutive updates of one incident merge into one event.

        A storm adds thousands of alerts to one incident in a batch: merging keeps
        the topic readable, and the merged event's snapshot is taken once, when the
        merge ends, so the batch stays linear in its alerts.
        """
        part = _alert_part(alert)
        if type_ == "incident.updated":
            open_ = self._open_update.get(inc.id)
            if open_ is not None:
                pending = open_[1]
                pending.extra["alerts"].append(part)
                known = pending.extra["reasons"]
                for reason in reasons:
                    if reason not in known:
                        known.append(reason)
                return
            event = EventIntent(type_, {}, {"reasons": list(reasons), "alerts": [part]})
            self._open_update[inc.id] = (inc, event)
        else:
            event = EventIntent(type_, inc.snapshot(), {"alerts": [part]})
        self.events.append(event)

    def prepare(self, inc: Incident, type_: str) -> None:
        """Call before changing ``inc`` for an event of ``type_``.

        An open update that this change will not merge into is snapshotted now,
        so it shows the incident as it was when that update ended.
        """
        open_ = self._open_update.get(inc.id)
        if open_ is not None and (
            type_ != "incident.updated" or len(open_[1].extra["alerts"]) >= MAX_ALERTS_PER_EVENT
        ):
            self._close_update(inc.id)

    def _close_update(self, incident_id: str) -> None:
        open_ = self._open_update.pop(incident_id, None)
        if open_ is not None:
            inc, event = open_
            event.incident = inc.snapshot()

    def finish(self) -> Outcome:
        """Snapshot the updates still open; call once the batch is applied."""
        for incident_id in list(self._open_update):
            self._close_update(incident_id)
        return self


def assign_groups(alerts: Sequence[Alert], rules: RuleSet) -> set[str]:
    """Set each alert's incident group key (once per alert); the keys. The alerts of one
    group (a webhook's, as Alertmanager sends them) share one computation."""
    todo = [a for a in alerts if not a.group_key]
    for alert, (key, labels) in zip(
        todo, groups_of([a.labels for a in todo], rules.grouping.group_by), strict=True
    ):
        alert.group_key, alert.group_labels = key, labels
    return {a.group_key for a in alerts}


class Correlator:
    def __init__(self, rules: RuleSet, describe: Callable[[Alert], Alert] = lambda a: a) -> None:
        self._rules = rules
        self._describe = describe

    def apply(self, alerts: list[Alert], current: dict[str, Incident], now: datetime) -> Outcome:
        """Fold ``alerts`` into ``current`` (group key -> current incident), in order."""
        out = Outcome()
        assign_groups(alerts, self._rules)
        for alert in alerts:
            self._apply_one(alert, current, now, out)
        return out.finish()

    def _apply_one(self, alert: Alert, current: dict[str, Incident], now: datetime, out: Outcome) -> None:
        key = alert.group_key
        inc = current.get(key)
        stored = inc.alerts.get(alert.fingerprint) if inc else None
        if stored is not None and (_outlived(stored, alert) or _is_duplicate_or_stale(stored, alert)):
            if inc is not None and _extends(stored, alert):
                # Prometheus re-sends a firing alert with a later endsAt: it is alive.
                stored.ends_at = alert.ends_at
                out.changed[inc.id] = inc
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
            current[key] = self._open(alert, now, out)
            return
        if inc.status is IncidentStatus.RESOLVED:
            self._reopen(inc, alert, now, out)
            return
        self._add_to_open(inc, alert, now, out)

    def _state(self, alert: Alert, previous: AlertState | None) -> AlertState:
        # A revived alert's resolve was our expiry, not its producer's word: forget it.
        revived = previous is not None and previous.expired and alert.status is AlertStatus.FIRING
        resolved_at = previous.resolved_starts_at if previous and not revived else None
        if alert.status is AlertStatus.RESOLVED and (resolved_at is None or alert.starts_at > resolved_at):
            resolved_at = alert.starts_at
        firing = alert.status is AlertStatus.FIRING
        expired = alert.status is AlertStatus.RESOLVED and EXPIRED in alert.annotations
        return AlertState(
            status=alert.status,
            starts_at=alert.starts_at,
            severity=alert.severity,
            alertname=alert.labels.get("alertname", ""),
            resolved_starts_at=resolved_at,
            labels=alert.labels,
            ends_at=alert.ends_at if firing or expired else None,
            expired=expired,
        )

    def _open(self, alert: Alert, now: datetime, out: Outcome) -> Incident:
        sev = self._rules.severity(alert.severity)
        self._describe(alert)
        inc = Incident(
            id=f"inc-{uuid.uuid4().hex[:20]}",
            group_key=alert.group_key,
            # Its own copy: the alerts of a group share theirs (assign_groups).
            group_labels=dict(alert.group_labels),
            title=alert.title,
            impact=alert.impact,
            severity=alert.severity,
            status=IncidentStatus.OPEN,
            opened_at=now,
            opening_started_at=now,
            response_due_at=now + sev.response_time,
            alerts={alert.fingerprint: self._state(alert, None)},
        )
        out.changed[inc.id] = inc
        out.emit("incident.opened", inc, alert)
        out.pages.append(PageIntent(inc.id, PageAction.TRIGGER, inc.opening))
        return inc

    def _reopen(self, inc: Incident, alert: Alert, now: datetime, out: Outcome) -> None:
        rule = self._rules.noise.flapping
        if rule is not None:
            inc.reopens = [t for t in inc.reopens if now - t <= rule.within] + [now]
            if inc.flapping is not None:
                self._flap(inc, alert, now, rule.quiet, out)
                return
        out.prepare(inc, "incident.reopened")
        inc.status = IncidentStatus.OPEN
        inc.resolved_at = None
        inc.acknowledged_at = None
        # A new opening is investigated afresh; the old root cause stays as a lead.
        inc.phase = Phase.INVESTIGATING
        inc.eta = None
        inc.opening += 1
        inc.opening_started_at = now
        inc.set_alert(alert.fingerprint, self._state(alert, inc.alerts.get(alert.fingerprint)))
        self._raise_severity(inc, alert, now)
        inc.response_due_at = now + self._rules.severity(inc.severity).response_time
        out.changed[inc.id] = inc
        out.emit("incident.reopened", inc, alert)
        out.pages.append(PageIntent(inc.id, PageAction.TRIGGER, inc.opening))
        if rule is not None and len(inc.reopens) > rule.reopens:
            self._start_flapping(inc, alert, now, out)

    def _start_flapping(self, inc: Incident, alert: Alert, now: datetime, out: Outcome) -> None:
        """This reopen's page is the series' one page; an [UPDATE] says why no more follow."""
        rule = self._rules.noise.flapping
        assert rule is not None
        inc.flapping = Flapping(since=now, quiet_until=now + rule.quiet)
        out.prepare(inc, "incident.updated")
        out.emit("incident.updated", inc, alert, "flapping")
        message = (
            f"[UPDATE] {inc.title}: flapping - resolved and fired again {len(inc.reopens)} times "
            f"within {format_duration(rule.within)}. Further reopens page no one and the pagers' "
            f"incident stays open until it has been quiet for {format_duration(rule.quiet)}."
        )
        out.pages.append(PageIntent(inc.id, PageAction.UPDATE, inc.opening, FLAPPING, message=message))

    def _flap(self, inc: Incident, alert: Alert, now: datetime, quiet: timedelta, out: Outcome) -> None:
        """A reopen while flapping: the same opening goes on; no page, no clock restarted."""
        assert inc.flapping is not None
        out.prepare(inc, "incident.reopened")
        inc.status = IncidentStatus.OPEN
        inc.resolved_at = None
        inc.flapping.flaps += 1
        inc.flapping.quiet_until = now + quiet
        inc.set_alert(alert.fingerprint, self._state(alert, inc.alerts.get(alert.fingerprint)))
        self._raise_severity(inc, alert, now)
        out.changed[inc.id] = inc
        out.emit("incident.reopened", inc, alert)
        out.events[-1].extra["flap"] = True

    def _add_to_open(self, inc: Incident, alert: Alert, now: datetime, out: Outcome) -> None:
        out.prepare(inc, "incident.updated")
        inc.set_alert(alert.fingerprint, self._state(alert, inc.alerts.get(alert.fingerprint)))
        before = inc.severity
        self._raise_severity(inc, alert, now)
        out.changed[inc.id] = inc
        reasons = ["alert_added"]
        if inc.severity != before:
            reasons.append(f"severity_raised:{before}->{inc.severity}")
        out.emit("incident.updated", inc, alert, *reasons)

    def _raise_severity(self, inc: Incident, alert: Alert, now: datetime) -> None:
        # Severity only rises on its own; lowering it is a human decision.
        if alert.severity == inc.severity:
            return
        new = self._rules.severity(alert.severity)
        if new.rank < self._rules.severity(inc.severity).rank:
            inc.severity = alert.severity
            # A SEV-3 that becomes SEV-1 needs a response within SEV-1's time from now,
            # unless its old deadline is sooner.
            inc.response_due_at = min(inc.response_due_at, now + new.response_time)

    def _resolve_alert(self, inc: Incident, alert: Alert, now: datetime, out: Outcome) -> None:
        # Only a firing alert gets here (a resolved one would be a duplicate).
        last_firing = inc.status is IncidentStatus.OPEN and inc.firing_count == 1
        out.prepare(inc, "incident.resolved" if last_firing else "incident.updated")
        inc.set_alert(alert.fingerprint, self._state(alert, inc.alerts.get(alert.fingerprint)))
        out.changed[inc.id] = inc
        if last_firing:
            inc.status = IncidentStatus.RESOLVED
            inc.resolved_at = now
            out.emit("incident.resolved", inc, alert)
            if inc.flapping is not None:
                # The pagers' incident stays open until the series has been quiet.
                out.events[-1].extra["flap"] = True
                return
            out.pages.append(PageIntent(inc.id, PageAction.CLOSE, inc.opening))
        else:
            out.emit("incident.updated", inc, alert, "alert_resolved")


def _same_episode(stored: AlertState, alert: Alert) -> bool:
    return alert.starts_at == stored.starts_at or not alert.starts_at_given


def _later_end(stored: AlertState, alert: Alert) -> bool:
    return alert.ends_at is not None and stored.ends_at is not None and alert.ends_at > stored.ends_at


def _extends(stored: AlertState, alert: Alert) -> bool:
    """A re-send of the same firing episode that pushes its endsAt later."""
    return (
        alert.status is AlertStatus.FIRING
        and stored.status is AlertStatus.FIRING
        and _same_episode(stored, alert)
        and _later_end(stored, alert)
    )


def _outlived(stored: AlertState, alert: Alert) -> bool:
    """Our expiry of an alert that a re-send extended meanwhile (the resolve waited in Kafka
    behind it): the alert lives on."""
    return (
        alert.status is AlertStatus.RESOLVED
        and EXPIRED in alert.annotations
        and stored.status is AlertStatus.FIRING
        and alert.ends_at is not None
        and stored.ends_at is not None
        and stored.ends_at > alert.ends_at
    )


def _is_duplicate_or_stale(stored: AlertState, alert: Alert) -> bool:
    if alert.status is stored.status:
        # Same episode re-sent (HA peers, repeat_interval), or a producer that
        # sends no startsAt reporting a still-firing alert again.
        return True
    if alert.status is AlertStatus.RESOLVED:
        # Alertmanager keeps one alert per fingerprint, so a resolve is its latest
        # word even when its startsAt is older than ours (it replaces an alert whose
        # end was set before its start, e.g. `amtool alert add --end` in the past)...
        # unless it is the resolve of an episode we already saw resolved, delivered
        # late (a lagging HA peer): that one must not close the episode firing now.
        last = stored.resolved_starts_at
        return last is not None and alert.starts_at <= last
    if stored.expired and _same_episode(stored, alert) and _later_end(stored, alert):
        # We resolved it when its endsAt passed; its producer re-sent it since: it lives.
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
        "starts_at": iso(alert.starts_at),
        "generator_url": alert.generator_url,
    }
