"""The public shape of ``data`` in every incident event; the JSON Schema is generated from it.

The models are closed (``extra="forbid"``) so that the tests catch a field the service emits
without documenting it here. The published schema is open (see :func:`json_schema`): within a
major version fields are only added, and a consumer validating with an older copy must accept
them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# The major version of the event contract. Only a breaking change bumps it (and with it the
# dataschema URI and the file name); additive changes keep it. See the README's "Event contract".
SCHEMA_MAJOR = 1
# Every event's CloudEvents ``dataschema``, and the published schema's ``$id``. An identifier,
# not a download location: the path mirrors the file in this repository (schemas/...), so a
# consumer maps the URI to the committed file without fetching anything.
DATASCHEMA_URI = f"https://incidentd.dev/schemas/incident-event-data/v{SCHEMA_MAJOR}.json"
SCHEMA_PATH = (
    Path(__file__).resolve().parents[2] / "schemas" / "incident-event-data" / f"v{SCHEMA_MAJOR}.json"
)
_REF_TEMPLATE = "#/$defs/{model}"
# A value set that grows as features do (commands, pagers, remediation actions...). The published
# schema lists its values under `examples`, not `enum`: a new value is an additive change, and a
# consumer must expect one it does not know. The closed sets (status, phase, modes) stay enums.
_OPEN_ENUM = "x-incidentd-open-enum"
OPEN_ENUM: dict[str, Any] = {_OPEN_ENUM: True}
# Every event type (after INCIDENTD_EVENT_TYPE_PREFIX). A new one is an additive change.
EVENT_TYPES = (
    "incident.opened",
    "incident.updated",
    "incident.escalated",
    "incident.acknowledged",
    "incident.resolved",
    "incident.reopened",
    "incident.suppressed",
    "incident.unsuppressed",
    "page.sent",
    "page.failed",
    "comms.update",
    "remediation.planned",
    "remediation.started",
    "remediation.succeeded",
    "remediation.failed",
    "remediation.skipped",
)


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
    action: Literal["trigger", "ack", "close", "update"] = Field(json_schema_extra=OPEN_ENUM)
    target: str = Field(default="first", description="first page, an escalation rule, or reminder:n")
    roles: list[str] = []
    unrouted_roles: list[str] = []
    opening: int = Field(ge=1)
    idempotency_key: str
    attempt: int = Field(ge=1)
    retrying: bool = False
    error: str | None = None
    reference: str | None = None
    failover: list[str] = Field(
        default=[],
        description="page.failed: the fallback pagers this failed trigger was handed to as well",
    )


class CommandPart(_Closed):
    command: Literal[
        "ack",
        "resolve",
        "assign",
        "status",
        "note",
        "update",
        "declare",
        "severity",
        "escalate",
        "action_item",
        "postmortem_done",
    ] = Field(json_schema_extra=OPEN_ENUM)
    by: str
    note: str | None = None
    role: str | None = None
    who: str | None = None
    phase: str | None = Field(default=None, description="status: the phase set")
    root_cause: str | None = None
    eta: str | None = None
    text: str | None = Field(default=None, description="note / update: what the person wrote")
    severity: str | None = Field(default=None, description="severity: the new severity")
    reason: str | None = Field(default=None, description="severity / escalate: why")
    item: str | None = Field(default=None, description="action_item: the postmortem action item")
    owner: str | None = Field(default=None, description="action_item: who owns it")
    due: str | None = Field(default=None, description="action_item: its due date (YYYY-MM-DD)")
    url: str | None = Field(default=None, description="postmortem_done: where the postmortem is")
    source: Literal["api", "kafka", "ui", "slack", "pagerduty", "opsgenie"] = Field(
        json_schema_extra=OPEN_ENUM,
        description="where the person acted: the API, the command topic, the board, or a pager's app",
    )


class EscalationPart(_Closed):
    rule: str
    kind: Literal["first_page", "time", "condition", "sla", "response_overdue", "manual"] = Field(
        json_schema_extra=OPEN_ENUM
    )
    roles: list[str]
    reason: str
    by: str | None = Field(default=None, description="manual: who escalated")


class CommsPart(_Closed):
    message: str
    sequence: int = Field(ge=1)
    next_update: str | None = Field(description="null for a severity with no follow-up cadence")


class RemediationTarget(_Closed):
    kind: Literal["deployment", "node"] = Field(json_schema_extra=OPEN_ENUM)
    name: str
    namespace: str | None = None
    pod: str | None = None


class RemediationFailure(_Closed):
    stage: str | None = Field(description="plan, dry_run, apply or verify")
    reason: str | None


class RemediationApproval(_Closed):
    required: bool
    due_at: str
    decision: Literal["approved", "denied"] | None = None
    by: str | None = None


class RemediationPart(_Closed):
    id: str = Field(
        pattern=r"^rem-[0-9a-f]{20}$", description="stable per incident opening, policy and target"
    )
    policy: str
    action: Literal["rollback", "scale", "restart", "delete_pods", "drain_node"] = Field(
        json_schema_extra=OPEN_ENUM
    )
    mode: Literal["off", "dry-run", "enforce"]
    target: RemediationTarget | None = Field(description="null when no valid target could be named")
    inputs: dict[str, Any] = Field(description="the alert, the labels that named the target, the parameters")
    plan: dict[str, Any] | None = Field(
        default=None, description="what the action will do, fixed before it runs"
    )
    dry_run: dict[str, Any] | None = Field(default=None, description="the server-side dry run's result")
    result: dict[str, Any] | None = Field(default=None, description="what the enforced action changed")
    verification: str | None = Field(default=None, description="what recovery checks found")
    guardrail: str | None = Field(
        default=None,
        description="remediation.skipped: mode, kill_switch, target, allowlist, precondition, bounds, "
        "cooldown, rate_limit, budget, hold, approval, recovered, cluster, rules",
    )
    reason: str | None = None
    failure: RemediationFailure | None = None
    approval: RemediationApproval | None = None


class TriageFinding(_Closed):
    probe: str = Field(description="health, pods, rollouts, prometheus, postgres or redis")
    ok: bool = Field(description="the probe ran and found nothing wrong")
    summary: str = Field(description="one line")
    target: str = Field(description="what was probed (a URL without credentials, a namespace, $ENV_VAR)")
    details: dict[str, Any] = Field(description="plain values: status, latency, pods, revisions, rate...")
    took_ms: int = Field(ge=0)


class TriagePart(_Closed):
    findings: list[TriageFinding]
    summary: str = Field(description="the short summary the [UPDATE] carries")


class SuppressionPart(_Closed):
    kind: Literal["silenced", "maintenance", "inhibited", "pending"] = Field(
        json_schema_extra=OPEN_ENUM,
        description="silenced (a silence), maintenance (a window), inhibited (caused by another "
        "open incident), pending (its open threshold not met yet)",
    )
    by: str = Field(description="the silence ids, the window or threshold name, or the source incident id")
    reason: str
    since: str
    until: str | None = Field(description="when it ends, if known")
    paged: bool = Field(description="the opening had paged before the hold began")


class FlappingPart(_Closed):
    since: str
    quiet_until: str = Field(description="it stops flapping if it does not reopen before this")
    flaps: int = Field(ge=0, description="reopens since it began flapping")


class ActionItemPart(_Closed):
    item: str
    owner: str | None = Field(description="who owns it")
    due: str | None = Field(description="its due date (YYYY-MM-DD)")
    by: str | None = Field(description="who added it")
    at: str | None = Field(description="when it was added")


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
    roles: dict[str, str] = Field(
        description="runbook roles: Incident Commander, Communications, Technical Lead -> who"
    )
    escalations: dict[str, str] = Field(description='"<opening>:<rule>" -> when that escalation fired')
    resolved_at: str | None
    response_due_at: str
    phase: Literal["investigating", "identified", "mitigating", "resolved"] = Field(
        description="the runbook's Status line, as the commander set it"
    )
    duration_seconds: int | None = Field(description="opened (this opening) to resolved; null while open")
    response_met: bool | None = Field(
        description="acknowledged (or resolved) within the severity's response time; null while undecided"
    )
    root_cause: str | None
    eta: str | None
    latest_note: dict[str, str] | None = Field(description="the latest note: text, by, at")
    action_items: list[ActionItemPart] = Field(
        description="the postmortem's action items, in the order they were added"
    )
    declared_by: str | None = Field(
        description="who declared the incident by hand; null if an alert opened it"
    )
    suppression: SuppressionPart | None = Field(
        description="why it pages nobody now (null: it pages); on incident.unsuppressed, the hold that ended"
    )
    flapping: FlappingPart | None = Field(description="set while it is flapping")
    flap: bool | None = Field(
        default=None,
        description="incident.reopened / resolved: a flap of a flapping incident (no page, no clock)",
    )
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
    remediation: RemediationPart | None = Field(default=None, description="remediation.*")
    triage: TriagePart | None = Field(default=None, description="incident.updated (reasons: triage)")


class CloudEvent(BaseModel):
    """The CloudEvents 1.0 envelope (structured JSON mode) of every record on the events topic.

    Open: CloudEvents lets producers add extension attributes."""

    specversion: Literal["1.0"]
    id: str = Field(description="fixed when the event is stored: a re-publication repeats it")
    source: str = Field(description="INCIDENTD_EVENT_SOURCE")
    type: str = Field(description="INCIDENTD_EVENT_TYPE_PREFIX + '.' + the event type, e.g. incident.opened")
    subject: str = Field(description="the incident id, also the Kafka key")
    time: str = Field(description="when the event was stored (RFC 3339)")
    datacontenttype: Literal["application/json"]
    dataschema: Literal[DATASCHEMA_URI] = Field(  # type: ignore[valid-type]
        description="the schema `data` follows; its major version changes only with a breaking change"
    )
    data: IncidentEventData


def json_schema(closed: bool = False, ref_template: str = _REF_TEMPLATE) -> dict[str, Any]:
    """The JSON Schema of ``data``. ``closed``: as the models are, refusing undocumented fields
    (the tests check the service's own events with it); otherwise the published, open one."""
    schema = IncidentEventData.model_json_schema(ref_template=ref_template)
    schema = open_enums(schema, closed=True) if closed else published(schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = DATASCHEMA_URI
    return schema


def published(schema: dict[str, Any]) -> dict[str, Any]:
    """A generated schema as consumers get it: open objects, open value sets as ``examples``."""
    opened: dict[str, Any] = open_objects(open_enums(schema, closed=False))
    return opened


def open_enums(schema: Any, closed: bool, inside: bool = False) -> Any:
    """The open value sets (``OPEN_ENUM``) as ``examples`` of a string, or, ``closed``, as the
    models have them (enums)."""
    if isinstance(schema, list):
        return [open_enums(item, closed, inside) for item in schema]
    if not isinstance(schema, dict):
        return schema
    inside = inside or bool(schema.get(_OPEN_ENUM))
    out = {k: open_enums(v, closed, inside) for k, v in schema.items() if k != _OPEN_ENUM}
    if inside and not closed and "enum" in out:
        out["examples"] = out.pop("enum")
    return out


def open_objects(schema: Any) -> Any:
    """``schema`` without ``additionalProperties: false`` anywhere: a field added in a later
    1.x, at the top of ``data`` or inside one of its parts, still validates. Types, required
    fields, enumerations and patterns stay as strict as the models."""
    if isinstance(schema, dict):
        return {
            key: open_objects(value)
            for key, value in schema.items()
            if not (key == "additionalProperties" and value is False)
        }
    if isinstance(schema, list):
        return [open_objects(item) for item in schema]
    return schema


def write_schema(path: Path = SCHEMA_PATH) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_schema(), indent=2, sort_keys=True) + "\n")
