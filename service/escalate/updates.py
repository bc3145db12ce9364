"""The runbook's [UPDATE] message: rendered from what the commander set (phase, root
cause, ETA, the latest note), posted on the cadence or on demand, each restarting the
clock for the next one."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from service.batch import EventIntent, PageIntent, TimerIntent
from service.clock import iso
from service.escalate.policy import OVERDUE
from service.models import Incident, PageAction
from service.ruleset.models import RuleSet
from service.store.timers import REMINDER

log = logging.getLogger(__name__)


@dataclass(slots=True)
class UpdatePost:
    """An [UPDATE] to post now and the reminder that follows it."""

    event: EventIntent
    page: PageIntent
    following: list[TimerIntent] = field(default_factory=list)


def render_update(
    rules: RuleSet, inc: Incident, next_update: datetime | None, text: str | None = None
) -> str:
    ctx: dict[str, Any] = {**inc.snapshot(), "text": text, "escalated": escalated(rules, inc)}
    when = iso(next_update) if next_update else None
    try:
        return str(rules.templates.update.render(incident=ctx, next_update=when)).strip()
    except Exception as exc:  # a user's template must not stop the cadence
        log.warning("update template failed for %s: %s", inc.id, exc)
        return f"[UPDATE] {inc.severity}: {inc.title}\n- Status: {inc.phase.value.title()}"


def escalated(rules: RuleSet, inc: Incident) -> list[dict[str, Any]]:
    """The escalations of the current opening so far, in the order they fired: each
    ``{"rule", "roles", "at"}``. A matrix rule's roles are the rule's; a manual
    escalation's (``manual:<n>``) the ones the person named."""
    esc = rules.escalation
    by_rule = {r.name: list(r.roles) for r in esc.rules} | {OVERDUE: list(esc.response_overdue)}
    prefix = f"{inc.opening}:"
    fired = sorted(
        ((key.removeprefix(prefix), at) for key, at in inc.escalations.items() if key.startswith(prefix)),
        key=lambda item: item[1],
    )
    return [
        {"rule": rule, "roles": inc.manual_roles.get(prefix + rule) or by_rule.get(rule, []), "at": at}
        for rule, at in fired
    ]


def post_update(
    rules: RuleSet, inc: Incident, sequence: int, due: datetime, text: str | None = None
) -> UpdatePost:
    """[UPDATE] number ``sequence``, due at ``due`` (a reminder's due time, or now), and
    the reminder ``sequence + 1`` one follow-up period after ``due``.

    From the due time, not from now: a late reminder after a restart does not shift the
    cadence, and missed ones each fire once, at once.
    """
    follow_up = rules.severity(inc.severity).follow_up
    next_due = due + follow_up if follow_up is not None else None
    message = render_update(rules, inc, next_due, text)
    comms: dict[str, Any] = {
        "message": message,
        "sequence": sequence,
        "next_update": iso(next_due) if next_due else None,
    }
    event = EventIntent("comms.update", inc.snapshot(), {"comms": comms})
    page = PageIntent(inc.id, PageAction.UPDATE, inc.opening, f"{REMINDER}{sequence}", message=message)
    post = UpdatePost(event, page)
    if next_due is not None:
        post.following.append(TimerIntent(inc.id, inc.opening, f"{REMINDER}{sequence + 1}", next_due))
    return post


def reminder_sequence(name: str) -> int:
    return int(name.removeprefix(REMINDER))
