"""What people do to incidents: acknowledge, resolve, assign a runbook role.

The same commands come over HTTP and over the ``incidents.commands`` topic. Each
is idempotent (a repeat changes nothing), so a command delivered twice is safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from service.batch import PageIntent
from service.context import Context
from service.errors import Conflict, NotFound
from service.models import Incident, IncidentStatus, Name, PageAction
from service.remediate.approval import Approve, Deny
from service.store.pages import NewPage
from service.store.store import ConcurrentUpdate, Effects

ROLES = ("IC", "Communications", "Technical Lead")


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Ack(_Command):
    command: Literal["ack"] = "ack"
    by: Name = "unknown"


class Resolve(_Command):
    command: Literal["resolve"] = "resolve"
    by: Name = "unknown"
    note: Annotated[str, StringConstraints(max_length=2000)] | None = None


class Assign(_Command):
    command: Literal["assign"] = "assign"
    role: Literal["IC", "Communications", "Technical Lead"]
    who: Name
    by: Name = "unknown"


Command = Annotated[Ack | Resolve | Assign, Field(discriminator="command")]
# What ``incidents.commands`` carries: the incident commands and remediation decisions.
AnyCommand = Annotated[Ack | Resolve | Assign | Approve | Deny, Field(discriminator="command")]


class KafkaCommand(BaseModel):
    """A record on ``incidents.commands``: the command plus the incident it is for."""

    model_config = ConfigDict(extra="forbid")
    incident_id: Name
    command: AnyCommand


class UnknownIncident(NotFound):
    def __init__(self, incident_id: str) -> None:
        super().__init__(f"no incident {incident_id}")
        self.incident_id = incident_id


class CommandHandler:
    def __init__(self, ctx: Context, pagers: Sequence[str]) -> None:
        self._on_change = ctx.on_effects
        self._store = ctx.store
        self._events = ctx.events
        self._clock = ctx.clock
        self._pagers = list(pagers)

    async def apply(self, incident_id: str, command: Ack | Resolve | Assign, source: str) -> Incident:
        # Optimistic: the alert consumer may change the same incident at the same time.
        for _ in range(5):
            inc = await self._store.incidents.get(incident_id)
            if inc is None:
                raise UnknownIncident(incident_id)
            try:
                await self._apply(inc, command, source)
                return inc
            except ConcurrentUpdate:
                continue
        raise Conflict(f"incident {incident_id} kept changing; try again")

    async def _apply(self, inc: Incident, command: Ack | Resolve | Assign, source: str) -> None:
        now = self._clock.now()
        part: dict[str, Any] = {"command": command.command, "by": command.by, "source": source}
        page: PageIntent | None = None
        reasons: list[str] = []
        if isinstance(command, Ack):
            if inc.status is IncidentStatus.RESOLVED:
                raise Conflict(f"incident {inc.id} is resolved; it cannot be acknowledged")
            if inc.acknowledged_at is not None:
                return
            inc.acknowledged_at, inc.acknowledged_by = now, command.by
            suffix = "incident.acknowledged"
            # Acknowledge the pages too (PagerDuty acknowledge, Opsgenie acknowledge).
            page = PageIntent(inc.id, PageAction.ACK, inc.opening, by=command.by)
        elif isinstance(command, Resolve):
            if inc.status is IncidentStatus.RESOLVED:
                return
            inc.status, inc.resolved_at = IncidentStatus.RESOLVED, now
            part["note"] = command.note
            suffix = "incident.resolved"
            # Close the pages of this opening; the worker skips pagers that were never paged.
            page = PageIntent(inc.id, PageAction.CLOSE, inc.opening)
        else:
            if inc.roles.get(command.role) == command.who:
                return
            inc.roles[command.role] = command.who
            part.update(role=command.role, who=command.who)
            suffix = "incident.updated"
            reasons.append(f"assigned:{command.role}")
        extra: dict[str, Any] = {"command": part}
        if reasons:
            extra["reasons"] = reasons
        event = self._events.build(suffix, inc.snapshot(), extra, now)
        pages = NewPage.fan_out(page, self._pagers) if page else []
        await self._store.commit(Effects(incidents=[inc], events=[event], pages=pages), now)
        self._on_change()
