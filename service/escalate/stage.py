"""The escalate stage: first-page roles, condition escalations and the timers an
incident needs, decided for each batch before it is stored."""

from __future__ import annotations

from datetime import datetime

from service.batch import Batch, EventIntent, PageIntent
from service.clock import iso
from service.escalate.policy import Escalation, EscalationPolicy, escalation_key
from service.models import Incident, IncidentStatus, PageAction
from service.postmortem.reminders import first_reminder
from service.ruleset.models import RuleSet


class EscalateStage:
    def __init__(self, policy: EscalationPolicy, rules: RuleSet) -> None:
        self._policy = policy
        self._rules = rules

    async def __call__(self, batch: Batch) -> Batch:
        first_pages = {(p.incident_id, p.opening): p for p in batch.pages if p.target == "first"}
        events: list[EventIntent] = []
        for event in batch.events:
            events.append(event)
            inc = batch.changed.get(event.incident["id"])
            if inc is not None and event.extra.get("flap"):
                continue  # a flap of a flapping incident: its series planned everything
            if (
                event.type == "incident.resolved"
                and inc is not None
                and inc.resolved_at is not None
                and inc.paged == inc.opening  # an opening held throughout needs no postmortem
            ):
                # The last alert resolved it (and it stayed resolved in this batch): the
                # postmortem is due. A person's resolve schedules it in decisions.py.
                batch.timers.extend(first_reminder(self._rules, inc, inc.resolved_at))
            if inc is None or inc.status is IncidentStatus.RESOLVED or inc.hold is not None:
                continue  # resolved, or held (noise control): nothing to plan
            if event.type in ("incident.opened", "incident.reopened"):
                page = first_pages.get((inc.id, inc.opening))
                if page is not None and page.action is PageAction.TRIGGER:
                    page.roles = self._policy.first_page_roles
                batch.timers.extend(self._policy.timers(inc))
                for esc in self._conditions(inc, event):
                    # Matched at opening: the roles join the first page itself.
                    if page is not None:
                        page.roles = _merge(page.roles, esc.roles)
                    events.append(self._escalated(inc, esc, batch.now))
            elif event.type == "incident.updated":
                for esc in self._conditions(inc, event):
                    batch.pages.append(
                        PageIntent(inc.id, PageAction.TRIGGER, inc.opening, esc.rule, esc.roles)
                    )
                    events.append(self._escalated(inc, esc, batch.now))
                if any(r.startswith("severity_raised") for r in event.extra.get("reasons", [])):
                    batch.timers.extend(self._policy.timers(inc))
        batch.events = events
        return batch

    def _conditions(self, inc: Incident, event: EventIntent) -> list[Escalation]:
        found: dict[str, Escalation] = {}
        for alert in event.extra.get("alerts", []):
            for esc in self._policy.conditions(inc, alert["labels"], alert["annotations"]):
                found.setdefault(esc.rule, esc)
        return list(found.values())

    @staticmethod
    def _escalated(inc: Incident, esc: Escalation, now: datetime) -> EventIntent:
        inc.escalations[escalation_key(inc, esc.rule)] = iso(now)
        return EventIntent("incident.escalated", inc.snapshot(), {"escalation": esc.part()})


def _merge(a: list[str], b: list[str]) -> list[str]:
    return a + [r for r in b if r not in a]
