"""Whether a page is still wanted: somebody still has to answer it, or they already did."""

from __future__ import annotations

from datetime import datetime

from service.batch import MANUAL
from service.escalate.policy import escalation_key
from service.models import Incident, IncidentStatus, PageAction
from service.notify.base import Notifier, PageRequest
from service.ruleset.models import RuleSet
from service.store.pages import PageJob


def echo(notifier: Notifier, request: PageRequest, answered: str | None) -> bool:
    """Is this ack or close only what the person already did in the pager's app? The page
    they answered, when it went to one place there: a PagerDuty page to two roles' services
    is two PagerDuty incidents, and the other one still needs it."""
    if answered is None or request.target != answered:
        return False
    destinations = getattr(notifier, "routing_keys", None)
    return destinations is None or len(destinations(request)) <= 1


def awaits_answer(inc: Incident, job: PageJob, rules: RuleSet | None = None) -> bool:
    """Is this a trigger somebody still has to answer: its incident open, in the same
    opening, not acknowledged (or, given the ``rules``, a page an ack does not answer)?"""
    return (
        job.action is PageAction.TRIGGER
        and inc.status is IncidentStatus.OPEN
        and inc.opening == job.opening
        and (inc.acknowledged_at is None or (rules is not None and until_resolved(rules, job.target)))
    )


def until_resolved(rules: RuleSet, target: str) -> bool:
    """A page an acknowledgement does not answer: a matrix rule that waits until resolved
    ("SEV-1 > 30 min": Engineering Lead and CTO hear of it, acknowledged or not), or a
    person's manual escalation."""
    if target.startswith(MANUAL):
        return True
    rule = next((r for r in rules.escalation.rules if r.name == target), None)
    return rule is not None and rule.stops_on == "resolved"


def asked_before_ack(inc: Incident, job: PageJob, rules: RuleSet) -> bool:
    """Was this page asked for before the incident was acknowledged, and answered by it? The
    first page always was; an escalation if it fired before, unless its rule waits until
    resolved. A condition escalation that fires after the ack (a data breach found later)
    must still reach its roles, as must remediation hand-overs."""
    if inc.acknowledged_at is None or until_resolved(rules, job.target):
        return False
    if job.target == "first":
        return True
    fired = inc.escalations.get(escalation_key(inc, job.target))
    return fired is not None and datetime.fromisoformat(fired) <= inc.acknowledged_at
