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
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from service.batch import PERSON, PageIntent
from service.context import Context
from service.errors import Conflict, Invalid, NotFound
from service.escalate.command_models import (
    Ack,
    AddActionItem,
    AddNote,
    AnyCommand,
    Assign,
    Command,
    Declare,
    Escalate,
    IncidentCommand,
    KafkaCommand,
    PostmortemDone,
    PostUpdate,
    Resolve,
    SetSeverity,
    SetStatus,
)
from service.escalate.decisions import Change, Decisions
from service.escalate.policy import EscalationPolicy
from service.models import Incident, IncidentStatus, PageAction
from service.ruleset.models import RuleSet
from service.store.pages import NewPage
from service.store.store import ConcurrentUpdate, Effects

__all__ = [
    "Ack",
    "AddActionItem",
    "AddNote",
    "AnyCommand",
    "Assign",
    "Command",
    "CommandHandler",
    "Declare",
    "Escalate",
    "IncidentCommand",
    "KafkaCommand",
    "Origin",
    "PostUpdate",
    "PostmortemDone",
    "Resolve",
    "SetSeverity",
    "SetStatus",
    "UnknownIncident",
]

# What an incident id may be (a declare names its own over Kafka): safe in a URL path.
INCIDENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

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

    @property
    def rules(self) -> RuleSet:
        """The rules commands are decided under (the postmortem draft reads them too)."""
        return self._rules

    async def apply(self, incident_id: str, command: IncidentCommand, origin: Origin | str) -> Incident:
        """``origin``: where the person acted (a source name, or an :class:`Origin` with the
        page they answered in a pager's app and the id of a command sent more than once)."""
        origin = origin if isinstance(origin, Origin) else Origin(origin)
        # Optimistic: the alert consumer may change the same incident at the same time.
        for _ in range(5):
            inc = await self._store.incidents.get(incident_id)
            if inc is None:
                raise UnknownIncident(incident_id)
            try:
                if await self._apply(inc, command, origin):
                    return inc
                # Applied before (the same command id): the incident as it is now.
                return await self._store.incidents.get(incident_id) or inc
            except ConcurrentUpdate:
                continue
        raise Conflict(f"incident {incident_id} kept changing; try again")

    async def declare(self, command: Declare, source: str, incident_id: str | None = None) -> Incident:
        """Open an incident without an alert: paged and clocked like any other. With
        ``incident_id`` (the command topic's, or derived from an Idempotency-Key), a repeat
        returns the incident declared first."""
        if incident_id is not None:
            existing = await self._declared_before(incident_id)
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
        try:
            await self._store.commit(effects, now)
        except IntegrityError:
            # The same declare, applied by another replica a moment ago.
            return await self._declared_before(inc.id) or inc
        self._on_change()
        return inc

    async def _declared_before(self, incident_id: str) -> Incident | None:
        if not INCIDENT_ID.fullmatch(incident_id):
            raise Invalid(f"incident_id must match {INCIDENT_ID.pattern}; got {incident_id!r}")
        existing = await self._store.incidents.get(incident_id)
        if existing is not None and existing.declared_by is None:
            raise Conflict(f"incident {incident_id} exists and was opened by an alert, not declared")
        return existing

    async def _apply(self, inc: Incident, command: IncidentCommand, origin: Origin) -> bool:
        """False if the command (by its id) was applied before."""
        now = self._clock.now()
        reminders = 0
        if isinstance(command, PostUpdate | SetSeverity | SetStatus):
            # Each may number an [UPDATE] reminder after those the opening has had.
            reminders = await self._store.timers.latest_reminder(inc.id, inc.opening)
        change = self._decisions.decide(inc, command, now, reminders)
        if change.suffix is None:
            return True
        command_id = origin.command_id

        async def first_time(conn: AsyncConnection) -> bool:
            return command_id is None or await self._store.commands.first_time(conn, command_id, now)

        if not await self._store.commit(self._effects(inc, command, change, origin), now, guard=first_time):
            return False
        self._on_change()
        return True

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
        names = self._comms if change.comms_only else self._pagers
        if change.only is not None:
            names = [name for name in names if name in change.only]
        pages = NewPage.fan_out(page, names)
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
    """Where a person acted: ``source`` (api, ui, kafka or a pager); from a pager's app,
    the page they ``answered`` there; and the ``command_id`` its sender gave, so a command
    delivered again is applied once."""

    source: str
    answered: str | None = None
    command_id: str | None = None


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
        paged=1,  # declaring pages at once: no threshold gates it
    )
