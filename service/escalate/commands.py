"""What people do to incidents: acknowledge, resolve, assign a runbook role, set the
phase, root cause and ETA, add notes, post an [UPDATE], declare an incident by hand,
change its severity and escalate it to roles on purpose.

The same commands come over HTTP, the board, Slack, the pager apps' webhooks and the
``incidents.commands`` topic. Each is idempotent (a repeat changes nothing), so a
command delivered twice is safe. :mod:`service.escalate.decisions` decides; this module
loads the incident and stores the decision with everything it causes.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from service.batch import PageIntent
from service.context import Context
from service.errors import Conflict, Invalid, NotFound
from service.escalate.command_models import (
    Ack,
    AddNote,
    AnyCommand,
    Assign,
    Command,
    Declare,
    Escalate,
    IncidentCommand,
    KafkaCommand,
    PostUpdate,
    Resolve,
    SetSeverity,
    SetStatus,
)
from service.escalate.decisions import PERSON, Change, Decisions
from service.escalate.policy import EscalationPolicy
from service.models import Incident, IncidentStatus, PageAction
from service.ruleset.models import RuleSet
from service.store.pages import NewPage
from service.store.store import ConcurrentUpdate, Effects

__all__ = [
    "Ack",
    "AddNote",
    "AnyCommand",
    "Assign",
    "Command",
    "CommandHandler",
    "Declare",
    "Escalate",
    "IncidentCommand",
    "KafkaCommand",
    "PostUpdate",
    "Resolve",
    "SetSeverity",
    "SetStatus",
    "UnknownIncident",
]

# Where a person acted. A pager named here is where the ack or resolve came from: it is
# not sent back there (the pager app already shows it).
SOURCES = ("api", "kafka", "ui", "slack", "pagerduty", "opsgenie")


class UnknownIncident(NotFound):
    def __init__(self, incident_id: str) -> None:
        super().__init__(f"no incident {incident_id}")
        self.incident_id = incident_id


class CommandHandler:
    """``pagers``: every pager acks and closes go to; ``comms``: those that carry [UPDATE]s."""

    def __init__(self, ctx: Context, pagers: Sequence[str], comms: Sequence[str] = ()) -> None:
        self._on_change = ctx.on_effects
        self._store = ctx.store
        self._events = ctx.events
        self._clock = ctx.clock
        self._rules = ctx.rules
        self._decisions = Decisions(ctx.rules)
        self._policy = EscalationPolicy(ctx.rules)
        self._pagers = list(pagers)
        self._comms = list(comms)

    async def apply(
        self, incident_id: str, command: IncidentCommand, source: str, answered: str | None = None
    ) -> Incident:
        """``answered``: the page (its target) a person acked or resolved in the ``source``
        pager's app; the others of that pager are still acknowledged or closed there."""
        # Optimistic: the alert consumer may change the same incident at the same time.
        for _ in range(5):
            inc = await self._store.incidents.get(incident_id)
            if inc is None:
                raise UnknownIncident(incident_id)
            try:
                await self._apply(inc, command, Origin(source, answered))
                return inc
            except ConcurrentUpdate:
                continue
        raise Conflict(f"incident {incident_id} kept changing; try again")

    async def declare(self, command: Declare, source: str, incident_id: str | None = None) -> Incident:
        """Open an incident without an alert: paged and clocked like any other. With
        ``incident_id`` (the command topic's), a repeat returns the incident declared first."""
        if incident_id is not None:
            if len(incident_id) > 64:
                raise Invalid("incident_id of a declare must be at most 64 characters")
            existing = await self._store.incidents.get(incident_id)
            if existing is not None:
                return existing
        if command.severity not in self._rules.severities:
            known = ", ".join(self._rules.severities)
            raise Invalid(f"severity must be one of {known}; got {command.severity}")
        now = self._clock.now()
        inc = _declared(command, incident_id or f"inc-{uuid.uuid4().hex[:20]}", now, self._rules)
        part = _part(command, source)
        event = self._events.build("incident.opened", inc.snapshot(), {"command": part}, now)
        first = PageIntent(inc.id, PageAction.TRIGGER, inc.opening, "first", self._policy.first_page_roles)
        people = [
            PageIntent(inc.id, PageAction.TRIGGER, inc.opening, f"{PERSON}{who}", [role])
            for role, who in inc.roles.items()
        ]
        pages = [p for page in (first, *people) for p in NewPage.fan_out(page, self._pagers)]
        effects = Effects(incidents=[inc], events=[event], pages=pages, timers=self._policy.timers(inc))
        await self._store.commit(effects, now)
        self._on_change()
        return inc

    async def _apply(self, inc: Incident, command: IncidentCommand, origin: Origin) -> None:
        now = self._clock.now()
        if isinstance(command, PostUpdate):
            if inc.status is IncidentStatus.RESOLVED:
                raise Conflict(f"incident {inc.id} is resolved; post the close note instead")
            latest = await self._store.timers.latest_reminder(inc.id, inc.opening)
            change = self._decisions.decide_update(inc, command, now, latest)
        else:
            change = self._decisions.decide(inc, command, now)
        if change.suffix is None:
            return
        await self._store.commit(self._effects(inc, command, change, origin), now)
        self._on_change()

    def _effects(self, inc: Incident, command: IncidentCommand, change: Change, origin: Origin) -> Effects:
        now = self._clock.now()
        assert change.suffix is not None
        part = {**_part(command, origin.source), **change.part}
        extra: dict[str, Any] = {"command": part, **change.extra}
        if change.reasons:
            extra["reasons"] = change.reasons
        events = [self._events.build(change.suffix, inc.snapshot(), extra, now)]
        events += [self._events.build(e.type, e.incident, e.extra, now) for e in change.events]
        pages = [p for page in change.pages for p in self._pages(page, change, origin)]
        return Effects(incidents=[inc], events=events, pages=pages, timers=change.timers)

    def _pages(self, page: PageIntent, change: Change, origin: Origin) -> list[NewPage]:
        pages = NewPage.fan_out(page, self._comms if change.comms_only else self._pagers)
        if page.action not in (PageAction.ACK, PageAction.CLOSE) or origin.source in self._comms:
            # A channel (Slack) still hears who acknowledged, wherever they pressed.
            return pages
        # The pager app the person pressed in already shows that page acknowledged or
        # resolved; echoing it back could only race their next action there. Its other
        # pages of the opening (escalations, backups) are still closed there.
        mine = [p for p in pages if p.integration == origin.source]
        others = [p for p in pages if p.integration != origin.source]
        if origin.answered is None:
            return others
        return others + [dataclasses.replace(p, answered=origin.answered) for p in mine]


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a person acted: ``source`` (api, ui, kafka or a pager) and, from a pager's app,
    the page they answered there."""

    source: str
    answered: str | None = None


def _part(command: IncidentCommand | Declare, source: str) -> dict[str, Any]:
    return {"command": command.command, "by": command.by, "source": source}


def _declared(command: Declare, incident_id: str, now: datetime, rules: RuleSet) -> Incident:
    sev = rules.severity(command.severity)
    return Incident(
        id=incident_id,
        # A group of its own: no alert ever joins a declared incident.
        group_key=f"declared/{incident_id}",
        group_labels={},
        title=command.title,
        impact=command.impact or "",
        severity=sev.name,
        status=IncidentStatus.OPEN,
        opened_at=now,
        opening_started_at=now,
        response_due_at=now + sev.response_time,
        roles=dict(command.roles),
        declared_by=command.by,
    )
