"""What a hold starting or lifting does to an incident: the events, pages and timers.

Shared by the quiet stage (a batch of alerts) and the noise worker (a silence or window that
ended, a source incident that resolved, a threshold met with time): one decision, one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from service.batch import EventIntent, PageIntent, TimerIntent
from service.clock import iso
from service.escalate.policy import TAG, Escalation, EscalationPolicy, escalation_key
from service.models import AlertStatus, Hold, Incident, PageAction
from service.ruleset.models import RuleSet
from service.store.timers import REMINDER

# The timer that ends a flapping series once it has been quiet (name: flap-quiet:<epoch>).
FLAP_QUIET = "flap-quiet:"


@dataclass(slots=True)
class Lifted:
    events: list[EventIntent] = field(default_factory=list)
    pages: list[PageIntent] = field(default_factory=list)
    timers: list[TimerIntent] = field(default_factory=list)


def start_hold(inc: Incident, hold: Hold) -> EventIntent | None:
    """Put ``inc`` under ``hold``; an ``incident.suppressed`` when it is a new hold (a
    different kind or cause; a later end of the same hold is no news)."""
    old = inc.hold
    inc.hold = hold
    if old is not None and (old.kind, old.by) == (hold.kind, hold.by):
        return None
    return EventIntent("incident.suppressed", inc.snapshot(), {"suppression": hold.to_json()})


def lift(inc: Incident, now: datetime, rules: RuleSet, policy: EscalationPolicy, reminders: int) -> Lifted:
    """The hold ends: the incident proceeds from ``now``. An opening that never paged pages
    now and its response clock starts now; one that had paged resumes: its deadline moves by
    the time held, and its escalations and reminders (skipped while held) start again.
    ``reminders``: the highest reminder number of the opening so far."""
    old = inc.hold
    assert old is not None
    inc.hold = None
    out = Lifted()
    sev = rules.severity(inc.severity)
    if old.paged:
        inc.response_due_at += now - old.since
    else:
        inc.opening_started_at = now
        inc.response_due_at = now + sev.response_time
        inc.paged = inc.opening
        page = PageIntent(inc.id, PageAction.TRIGGER, inc.opening, roles=policy.first_page_roles)
        out.pages.append(page)
        # The condition rules its alerts matched while held escalate now, with the first page.
        for esc in _conditions(inc, policy):
            page.roles = page.roles + [r for r in esc.roles if r not in page.roles]
            inc.escalations[escalation_key(inc, esc.rule)] = iso(now)
            out.events.append(EventIntent("incident.escalated", inc.snapshot(), {"escalation": esc.part()}))
    tag = f"{TAG}{int(now.timestamp())}"
    out.timers = [t for t in policy.timers(inc, start=now, tag=tag) if not t.name.startswith(REMINDER)]
    if sev.follow_up is not None:
        # Numbered after every reminder of the opening: those planned before were skipped.
        inc.update_sequence = max(reminders, inc.update_sequence) + 1
        out.timers.append(
            TimerIntent(inc.id, inc.opening, f"{REMINDER}{inc.update_sequence}", now + sev.follow_up)
        )
    extra = {"suppression": old.to_json(), "alerts": _firing_parts(inc)}
    out.events.append(EventIntent("incident.unsuppressed", inc.snapshot(), extra))
    return out


def _conditions(inc: Incident, policy: EscalationPolicy) -> list[Escalation]:
    found: dict[str, Escalation] = {}
    for a in inc.alerts.values():
        if a.status is AlertStatus.FIRING:
            # Labels only: annotations are not kept per alert (README, Noise control).
            for esc in policy.conditions(inc, a.labels, {}):
                found.setdefault(esc.rule, esc)
    return list(found.values())


def flap_quiet_timer(inc: Incident) -> TimerIntent | None:
    if inc.flapping is None:
        return None
    due = inc.flapping.quiet_until
    return TimerIntent(inc.id, inc.opening, f"{FLAP_QUIET}{int(due.timestamp())}", due)


def _firing_parts(inc: Incident) -> list[dict[str, Any]]:
    """The firing alerts as events carry them (what triage and remediation plan from)."""
    return [
        {
            "fingerprint": fp,
            "status": a.status.value,
            "labels": a.labels,
            "annotations": {},
            "severity": a.severity,
            "rule": "",
            "starts_at": iso(a.starts_at),
            "generator_url": "",
        }
        for fp, a in inc.alerts.items()
        if a.status is AlertStatus.FIRING
    ]
