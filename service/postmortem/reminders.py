"""The postmortem-due timer: scheduled when an incident resolves (the severity's
``postmortem_due`` in severities.yaml), it pages the Incident Commander until the
postmortem is marked done, again every :data:`REPEAT`."""

from __future__ import annotations

from datetime import datetime, timedelta

from service.batch import PageIntent, TimerIntent
from service.clock import iso
from service.models import Incident, PageAction
from service.roles import INCIDENT_COMMANDER
from service.ruleset.models import RuleSet

# The timer name and page target prefix: postmortem:<n>, the n-th reminder of the opening.
POSTMORTEM = "postmortem:"
# After the first reminder, one a day until the postmortem is marked done.
REPEAT = timedelta(hours=24)


def first_reminder(rules: RuleSet, inc: Incident, resolved_at: datetime) -> list[TimerIntent]:
    """The first postmortem-due timer of a resolved incident (none for a severity without
    ``postmortem_due``, or when the postmortem is already done)."""
    sev = rules.severities.get(inc.severity)
    if sev is None or sev.postmortem_due is None or inc.postmortem_done is not None:
        return []
    return [TimerIntent(inc.id, inc.opening, f"{POSTMORTEM}1", resolved_at + sev.postmortem_due)]


def sequence(name: str) -> int:
    return int(name.removeprefix(POSTMORTEM))


def is_due(inc: Incident, opening: int) -> bool:
    """Is a reminder of this opening still wanted: resolved (not reopened) and not done?"""
    return inc.resolved_at is not None and inc.opening == opening and inc.postmortem_done is None


def reminder_page(inc: Incident, n: int) -> PageIntent:
    resolved = iso(inc.resolved_at) if inc.resolved_at else "?"
    message = (
        f"[POSTMORTEM DUE] {inc.severity}: {inc.title} (incident {inc.id}, resolved {resolved}): "
        f"the postmortem is not marked done (reminder {n})"
    )
    return PageIntent(
        inc.id, PageAction.TRIGGER, inc.opening, f"{POSTMORTEM}{n}", [INCIDENT_COMMANDER], message=message
    )


def next_reminder(inc: Incident, n: int, due_at: datetime) -> TimerIntent:
    return TimerIntent(inc.id, inc.opening, f"{POSTMORTEM}{n + 1}", due_at + REPEAT)
