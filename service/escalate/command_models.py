"""The commands people give an incident, as the API, the board, Slack, the pager apps
and the ``incidents.commands`` topic carry them. Each is idempotent: a repeat changes
nothing, so a command delivered twice is safe."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from service.models import Name, Phase
from service.remediate.approval import Approve, Deny
from service.roles import AnyRole, AssignableRole

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)]
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
Severity = Annotated[str, StringConstraints(pattern=r"^SEV-[0-9]+$")]
# A person a role is given to: paged under the page target ``person:<name>``, which the
# page table holds in 128 characters.
Person = Annotated[Name, StringConstraints(max_length=100)]


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
    role: AssignableRole
    who: Person
    by: Name = "unknown"


class SetStatus(_Command):
    """The runbook's Status line (the snapshot's ``phase``), with root cause and ETA."""

    command: Literal["status"] = "status"
    phase: Phase
    root_cause: Text | None = None
    eta: ShortText | None = None
    by: Name = "unknown"


class AddNote(_Command):
    command: Literal["note"] = "note"
    text: Text
    by: Name = "unknown"


class PostUpdate(_Command):
    """Post an [UPDATE] now; restarts the update cadence."""

    command: Literal["update"] = "update"
    text: Text | None = None
    by: Name = "unknown"


class Declare(_Command):
    """An incident opened by a person, without an alert."""

    command: Literal["declare"] = "declare"
    title: ShortText
    severity: Severity
    impact: Text | None = None
    roles: dict[AssignableRole, Person] = {}
    by: Name = "unknown"


class SetSeverity(_Command):
    command: Literal["severity"] = "severity"
    severity: Severity
    reason: Text | None = None
    by: Name = "unknown"


class Escalate(_Command):
    """Page these roles now (``incident.escalated`` with kind ``manual``)."""

    command: Literal["escalate"] = "escalate"
    roles: list[AnyRole] = Field(min_length=1, max_length=20)
    reason: Text
    by: Name = "unknown"


class AddActionItem(_Command):
    """A postmortem action item (the runbook's Item, Owner, Due Date)."""

    command: Literal["action_item"] = "action_item"
    item: ShortText
    owner: Person | None = None
    due: date | None = None
    by: Name = "unknown"


class PostmortemDone(_Command):
    """The postmortem is written: its reminders stop."""

    command: Literal["postmortem_done"] = "postmortem_done"
    url: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)] | None = None
    by: Name = "unknown"


# The commands on an existing incident (Declare makes one).
IncidentCommand = (
    Ack
    | Resolve
    | Assign
    | SetStatus
    | AddNote
    | PostUpdate
    | SetSeverity
    | Escalate
    | AddActionItem
    | PostmortemDone
)
Command = Annotated[IncidentCommand, Field(discriminator="command")]
# What ``incidents.commands`` carries: the incident commands, declare and remediation decisions.
AnyCommand = Annotated[IncidentCommand | Declare | Approve | Deny, Field(discriminator="command")]


class KafkaCommand(BaseModel):
    """A record on ``incidents.commands``: the command plus the incident it is for."""

    model_config = ConfigDict(extra="forbid")
    incident_id: Name
    command: AnyCommand
    # The sender's id of this command: another record with the same id is a repeat. Without
    # one, the record's own coordinates (topic, partition, offset, timestamp) are its id.
    command_id: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
