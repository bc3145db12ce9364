"""The public shape of ``data`` in every incident event; the JSON Schema is generated from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "incident-event-data.schema.json"


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AlertPart(_Closed):
    fingerprint: str = Field(pattern=r"^[0-9a-f]{16}$")
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str]
    severity: str = Field(pattern=r"^SEV-[1-9]$")
    rule: str
    starts_at: str
    generator_url: str


class PagePart(_Closed):
    integration: str
    action: Literal["trigger", "ack", "close", "update"]
    target: str = Field(default="first", description="first page, an escalation rule, or reminder:n")
    roles: list[str] = []
    unrouted_roles: list[str] = []
    opening: int = Field(ge=1)
    idempotency_key: str
    attempt: int = Field(ge=1)
    retrying: bool = False
    error: str | None = None
    reference: str | None = None


class CommandPart(_Closed):
    command: Literal["ack", "resolve", "assign"]
    by: str
    note: str | None = None
    role: str | None = None
    who: str | None = None
    source: Literal["api", "kafka"]


class EscalationPart(_Closed):
    rule: str
    kind: Literal["first_page", "time", "condition", "sla", "response_overdue"]
    roles: list[str]
    reason: str


class CommsPart(_Closed):
    message: str
    sequence: int = Field(ge=1)
    next_update: str


class IncidentEventData(_Closed):
    """The incident snapshot, plus the part specific to the event type."""

    id: str
    title: str
    impact: str
    severity: str = Field(pattern=r"^SEV-[1-9]$")
    status: Literal["open", "resolved"]
    group_key: str
    group_labels: dict[str, str]
    fingerprints: list[str]
    firing_fingerprints: list[str]
    opening: int = Field(ge=1)
    opened_at: str
    acknowledged_at: str | None
    acknowledged_by: str | None
    roles: dict[str, str] = Field(description="runbook roles: IC, Communications, Technical Lead -> who")
    escalations: dict[str, str] = Field(description='"<opening>:<rule>" -> when that escalation fired')
    resolved_at: str | None
    response_due_at: str
    alerts: list[AlertPart] | None = Field(
        default=None, description="incident.*: the alerts that caused this event"
    )
    alerts_omitted: int | None = Field(
        default=None, description="how many alerts were left out of `alerts` to keep the event under 1 MiB"
    )
    reasons: list[str] | None = Field(default=None, description="incident.updated: why")
    page: PagePart | None = Field(default=None, description="page.sent / page.failed")
    escalation: EscalationPart | None = Field(default=None, description="incident.escalated")
    comms: CommsPart | None = Field(default=None, description="comms.update: the [UPDATE] message")
    command: CommandPart | None = Field(
        default=None, description="incident.acknowledged / resolved / updated when a person acted"
    )


def json_schema() -> dict[str, Any]:
    schema = IncidentEventData.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://incidentd.dev/schemas/incident-event-data.schema.json"
    return schema


def write_schema(path: Path = SCHEMA_PATH) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_schema(), indent=2, sort_keys=True) + "\n")
