"""The escalation matrix as decisions: who gets the first page, which timers an
incident needs, and whether a due timer still escalates when it fires."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from service.batch import TimerIntent
from service.models import Incident, IncidentStatus
from service.ruleset.matchers import RuleMatch
from service.ruleset.models import EscalationRule, RuleSet
from service.store.timers import REMINDER

OVERDUE = "response_overdue"
# Separates a timer's name from the tag of the severity change that planned it.
TAG = "@"


@dataclass(frozen=True, slots=True)
class Escalation:
    rule: str
    kind: str  # first_page | time | condition | sla | response_overdue
    roles: list[str]
    reason: str

    def part(self) -> dict[str, Any]:
        return {"rule": self.rule, "kind": self.kind, "roles": self.roles, "reason": self.reason}


def escalation_key(inc: Incident, rule: str) -> str:
    return f"{inc.opening}:{rule}"


class EscalationPolicy:
    def __init__(self, rules: RuleSet) -> None:
        self._rules = rules
        self._esc = rules.escalation
        self._by_name = {r.name: r for r in self._esc.rules}
        self._conditions = RuleMatch([(r.matchers, r) for r in self._esc.rules if r.kind == "condition"])

    @property
    def first_page_roles(self) -> list[str]:
        return list(self._esc.first_page)

    def conditions(
        self, inc: Incident, labels: dict[str, str], annotations: dict[str, str]
    ) -> list[Escalation]:
        """Condition rules an alert of ``inc`` matches that have not escalated this opening."""
        found = []
        for rule in self._conditions.all_over(labels, annotations):
            if escalation_key(inc, rule.name) in inc.escalations:
                continue
            if self._applies(rule, inc):
                matched = ", ".join(str(m) for m in rule.matchers)
                found.append(Escalation(rule.name, "condition", list(rule.roles), f"alert matched {matched}"))
        return found

    def timers(self, inc: Incident, start: datetime | None = None, tag: str = "") -> list[TimerIntent]:
        """The timers the incident's current opening and severity need (idempotent by name),
        counted from ``start`` (default: when the opening began; a person's change of
        severity starts the new severity's rules then, under a ``tag`` of its own: a timer
        of the same name may have come and gone under the severity before)."""
        sev = self._rules.severity(inc.severity)
        start = start or inc.opening_started_at or inc.opened_at
        out: list[TimerIntent] = []

        def add(name: str, due: datetime) -> None:
            out.append(TimerIntent(inc.id, inc.opening, name, due))

        for rule in self._esc.rules:
            if not self._applies(rule, inc):
                continue
            if rule.open_for is not None:
                add(f"rule:{rule.name}{tag}", start + rule.open_for)
            elif rule.response_share is not None:
                # Named per severity: a raised severity needs an earlier deadline.
                add(f"rule:{rule.name}:{sev.name}{tag}", start + sev.response_time * rule.response_share)
        if self._esc.response_overdue:
            add(f"{OVERDUE}:{sev.name}{tag}", inc.response_due_at)
        if sev.follow_up is not None:
            add(f"{REMINDER}1", start + sev.follow_up)
        return out

    def due_escalation(self, inc: Incident, timer: str, now: datetime) -> Escalation | None:
        """Does this escalation timer still escalate? Re-checked when it fires, since
        acknowledgement, resolution or a new opening may have happened since."""
        if inc.status is not IncidentStatus.OPEN:
            return None
        if timer.startswith(OVERDUE):
            if inc.acknowledged_at is not None:
                return None
            if now < inc.response_due_at or escalation_key(inc, OVERDUE) in inc.escalations:
                return None
            return Escalation(
                OVERDUE,
                "response_overdue",
                list(self._esc.response_overdue),
                f"no acknowledgement within the {inc.severity} response time",
            )
        rule = self._by_name.get(timer.split(":")[1].split(TAG)[0])
        if rule is None or not self._applies(rule, inc) or escalation_key(inc, rule.name) in inc.escalations:
            return None
        if rule.stops_on == "acknowledged" and inc.acknowledged_at is not None:
            return None
        state = "unresolved" if rule.stops_on == "resolved" else "unresolved and unacknowledged"
        if rule.open_for is not None:
            reason = f"{inc.severity} {state} for {_minutes(rule.open_for)}"
            return Escalation(rule.name, "time", list(rule.roles), reason)
        share = rule.response_share or 0.0
        sev = self._rules.severity(inc.severity)
        start = inc.opening_started_at or inc.opened_at
        if now < start + sev.response_time * share:
            return None
        reason = f"{int(share * 100)}% of the {inc.severity} response time passed {state}"
        return Escalation(rule.name, "sla", list(rule.roles), reason)

    def known_roles(self) -> set[str]:
        """Every role the matrix or contacts.yaml names: what a manual escalation may page."""
        esc = self._esc
        named = {*esc.first_page, *esc.response_overdue, *(r for rule in esc.rules for r in rule.roles)}
        return named | set(self._rules.contacts.roles)

    def follow_up(self, inc: Incident) -> timedelta | None:
        return self._rules.severity(inc.severity).follow_up

    def _applies(self, rule: EscalationRule, inc: Incident) -> bool:
        return not rule.severities or inc.severity in rule.severities


def _minutes(value: timedelta) -> str:
    return f"{int(value.total_seconds() // 60)} min"
