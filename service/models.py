"""Domain objects shared by the pipeline stages."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Protocol

from pydantic import StringConstraints

from service.clock import iso

# Who did something (ack, approve, pause), as commands over HTTP and Kafka name them.
# No NUL: PostgreSQL text cannot hold it (a command on Kafka is not checked by HTTP first).
Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=r"^[^\x00]+$")
]


# The annotation on the resolve the noise worker publishes for an alert whose endsAt passed.
EXPIRED = "incidentd_expired"


class AlertStatus(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class IncidentStatus(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class Phase(StrEnum):
    """The runbook's [UPDATE] Status line, set by the commander (``status`` stays open/resolved)."""

    INVESTIGATING = "investigating"
    IDENTIFIED = "identified"
    MITIGATING = "mitigating"
    RESOLVED = "resolved"


class HoldKind(StrEnum):
    """Why an open incident does not page (noise control, service/quiet)."""

    SILENCED = "silenced"  # a silence (the v2 silences API, amtool) mutes its firing alerts
    MAINTENANCE = "maintenance"  # a maintenance window (noise.yaml, time_intervals) mutes them
    INHIBITED = "inhibited"  # an open incident it is caused by (inhibit_rules) mutes them
    PENDING = "pending"  # its open threshold is not met yet


@dataclass(slots=True)
class Hold:
    """An incident kept from paging: it records its alerts but pages nobody, starts no
    escalation or reminder and asks for no remediation until the hold lifts."""

    kind: HoldKind
    by: str  # the silence ids, window or threshold name, or the source incident id
    reason: str
    since: datetime
    # When it ends if that is known now (a silence's or window's end, a firing-for threshold).
    until: datetime | None = None
    # The opening had paged before the hold began: lifting resumes its clocks, pages no one.
    paged: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "by": self.by,
            "reason": self.reason,
            "since": iso(self.since),
            "until": iso(self.until) if self.until else None,
            "paged": self.paged,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Hold:
        until = raw.get("until")
        return cls(
            HoldKind(raw["kind"]),
            raw["by"],
            raw["reason"],
            datetime.fromisoformat(raw["since"]),
            datetime.fromisoformat(until) if until else None,
            bool(raw.get("paged", False)),
        )


@dataclass(slots=True)
class Flapping:
    """An incident that resolved and re-fired too often (noise.yaml ``flapping``): its series
    paged once; reopens page no one and restart no clock, resolves close nothing, until it
    has been quiet (no reopen) until ``quiet_until``."""

    since: datetime
    quiet_until: datetime
    flaps: int = 0  # reopens since it began flapping

    def to_json(self) -> dict[str, Any]:
        return {"since": iso(self.since), "quiet_until": iso(self.quiet_until), "flaps": self.flaps}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Flapping:
        return cls(
            datetime.fromisoformat(raw["since"]),
            datetime.fromisoformat(raw["quiet_until"]),
            int(raw["flaps"]),
        )


class PageAction(StrEnum):
    TRIGGER = "trigger"
    ACK = "ack"  # acknowledge the pages sent (PagerDuty acknowledge, Opsgenie acknowledge)
    CLOSE = "close"
    UPDATE = "update"  # an [UPDATE] message, for the comms pagers only


@dataclass(slots=True)
class Alert:
    """One alert as it entered the pipeline, normalised from any producer."""

    fingerprint: str
    status: AlertStatus
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    ends_at: datetime | None
    generator_url: str = ""
    received_at: datetime | None = None
    # False when the producer gave no startsAt (it is then the time of receipt): a re-send
    # of such an alert is the same episode whatever its startsAt.
    starts_at_given: bool = True
    # Filled by the correlate stage, once per alert.
    group_key: str = ""
    group_labels: dict[str, str] = field(default_factory=dict)
    # Filled by the classify stage (title and impact only for alerts that open an incident).
    severity: str = ""
    title: str = ""
    impact: str = ""
    rule: str = ""


@dataclass(slots=True)
class AlertState:
    """What an incident remembers of each of its alerts: enough to deduplicate."""

    status: AlertStatus
    starts_at: datetime
    severity: str
    alertname: str
    # startsAt of the latest episode seen resolved: a late resolve of an older
    # episode must not close the one firing now.
    resolved_starts_at: datetime | None = None
    # Its labels: silences, windows and inhibition are decided on them after the batch that
    # brought the alert (a silence that ends, a source incident that resolves).
    labels: dict[str, str] = field(default_factory=dict)
    # A pushed alert's endsAt (POST /api/v2/alerts): resolved when it passes without a re-send.
    ends_at: datetime | None = None
    # Resolved because its endsAt passed (the noise worker), not by its producer: a late
    # re-send of the same episode revives it.
    expired: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "starts_at": iso(self.starts_at),
            "severity": self.severity,
            "alertname": self.alertname,
            "resolved_starts_at": iso(self.resolved_starts_at) if self.resolved_starts_at else None,
            "labels": self.labels,
            "ends_at": iso(self.ends_at) if self.ends_at else None,
            "expired": self.expired,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> AlertState:
        resolved = raw.get("resolved_starts_at")
        ends = raw.get("ends_at")
        return cls(
            status=AlertStatus(raw["status"]),
            starts_at=datetime.fromisoformat(raw["starts_at"]),
            severity=raw["severity"],
            alertname=raw["alertname"],
            resolved_starts_at=datetime.fromisoformat(resolved) if resolved else None,
            # Stored before labels were kept: the alertname is the one label known.
            labels=raw.get("labels") or {"alertname": raw["alertname"]},
            ends_at=datetime.fromisoformat(ends) if ends else None,
            expired=bool(raw.get("expired", False)),
        )


@dataclass(slots=True)
class Incident:
    id: str
    group_key: str
    group_labels: dict[str, str]
    title: str
    impact: str
    severity: str
    status: IncidentStatus
    opened_at: datetime
    response_due_at: datetime
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None
    # 1 for the first opening, +1 per reopen: pages are keyed per opening.
    opening: int = 1
    alerts: dict[str, AlertState] = field(default_factory=dict)
    is_current: bool = True
    # Who holds the runbook's roles (IC, Communications, Technical Lead), and who acknowledged.
    roles: dict[str, str] = field(default_factory=dict)
    acknowledged_by: str | None = None
    # "<opening>:<escalation rule>" -> when it fired: each escalates once per opening.
    escalations: dict[str, str] = field(default_factory=dict)
    # The roles a person escalated to, by escalation key (a matrix rule's roles are the rule's).
    manual_roles: dict[str, list[str]] = field(default_factory=dict)
    # When the current opening began (opened_at, or the reopen time).
    opening_started_at: datetime | None = None
    # What the commander says (the runbook's [UPDATE] Status, Root cause and ETA lines).
    phase: Phase = Phase.INVESTIGATING
    root_cause: str | None = None
    eta: str | None = None
    # The latest note ({"text", "by", "at"}), which the next [UPDATE] carries.
    latest_note: dict[str, str] | None = None
    # The reminder sequence in force: a manual [UPDATE] restarts the cadence under a new
    # sequence, and reminders of an older one are skipped when they come due.
    update_sequence: int = 0
    # Who declared it by hand (None: opened by an alert).
    declared_by: str | None = None
    # The postmortem's action items ({"item", "owner", "due", "by", "at"}), in the order added,
    # and, once it is marked done, {"by", "at", "url"}: the postmortem-due reminders stop.
    action_items: list[dict[str, str | None]] = field(default_factory=list)
    postmortem_done: dict[str, str | None] | None = None
    # Triage on open (service/triage) of the current opening: {"status": "pending" | "done",
    # "plan": [probe targets], "findings": [...], "summary", "at"}; None: no probes.
    triage: dict[str, Any] | None = None
    # Noise control (service/quiet): why it does not page now, the opening whose first page
    # went out (0: none yet; a pending incident opens at its threshold), its recent reopens
    # (flap detection) and whether it is flapping.
    hold: Hold | None = None
    paged: int = 0
    reopens: list[datetime] = field(default_factory=list)
    flapping: Flapping | None = None
    # Optimistic concurrency: the store refuses a write from a stale copy.
    version: int = 0

    # Kept in step by set_alert so "is anything still firing?" is O(1) per resolve.
    firing_count: int = -1

    def __post_init__(self) -> None:
        self.firing_count = sum(1 for a in self.alerts.values() if a.status is AlertStatus.FIRING)

    def set_alert(self, fingerprint: str, state: AlertState) -> None:
        old = self.alerts.get(fingerprint)
        if old is not None and old.status is AlertStatus.FIRING:
            self.firing_count -= 1
        if state.status is AlertStatus.FIRING:
            self.firing_count += 1
        self.alerts[fingerprint] = state

    @property
    def duration_seconds(self) -> int | None:
        """Opened to resolved, of the current opening (None while open)."""
        if self.resolved_at is None:
            return None
        start = self.opening_started_at or self.opened_at
        return int((self.resolved_at - start).total_seconds())

    @property
    def response_met(self) -> bool | None:
        """Was it acknowledged within the severity's response time? None while that is still
        open to either answer (open, unacknowledged, not yet due)."""
        if self.acknowledged_at is not None:
            return self.acknowledged_at <= self.response_due_at
        if self.resolved_at is not None:
            return self.resolved_at <= self.response_due_at
        return None

    @property
    def firing(self) -> list[str]:
        return [fp for fp, a in self.alerts.items() if a.status is AlertStatus.FIRING]

    def snapshot(self) -> dict[str, Any]:
        """The public shape of an incident, as every event's ``data`` carries it."""
        return {
            "id": self.id,
            "title": self.title,
            "impact": self.impact,
            "severity": self.severity,
            "status": self.status.value,
            "group_key": self.group_key,
            "group_labels": self.group_labels,
            "fingerprints": sorted(self.alerts),
            "firing_fingerprints": sorted(self.firing),
            "opening": self.opening,
            "opened_at": iso(self.opened_at),
            "acknowledged_at": iso(self.acknowledged_at) if self.acknowledged_at else None,
            "acknowledged_by": self.acknowledged_by,
            "roles": dict(self.roles),
            "escalations": dict(self.escalations),
            "resolved_at": iso(self.resolved_at) if self.resolved_at else None,
            "response_due_at": iso(self.response_due_at),
            "phase": self.phase.value,
            "duration_seconds": self.duration_seconds,
            "response_met": self.response_met,
            "root_cause": self.root_cause,
            "eta": self.eta,
            "latest_note": dict(self.latest_note) if self.latest_note else None,
            "action_items": [dict(a) for a in self.action_items],
            "declared_by": self.declared_by,
            # Why it pages nobody now: a resolved incident pages nobody anyway.
            "suppression": self.hold.to_json() if self.hold and self.status is IncidentStatus.OPEN else None,
            "flapping": self.flapping.to_json() if self.flapping else None,
        }


TargetKind = Literal["deployment", "node"]


class _Allowlist(Protocol):
    def allows_node(self, name: str) -> bool: ...

    def allows_workload(self, namespace: str, name: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class Target:
    """The Kubernetes object a remediation acts on, named by an alert's labels."""

    kind: TargetKind
    name: str
    namespace: str | None = None
    # A deployment action narrowed to one of its pods (delete_pods).
    pod: str | None = None

    @property
    def key(self) -> str:
        """One key per Kubernetes object: cooldowns, holds and the lock are per key."""
        if self.kind == "node":
            return f"node/{self.name}"
        return f"deployment/{self.namespace}/{self.name}"

    def allowed_by(self, allowlist: _Allowlist) -> bool:
        if self.kind == "node":
            return allowlist.allows_node(self.name)
        return allowlist.allows_workload(self.namespace or "", self.name)

    def to_json(self) -> dict[str, str | None]:
        return {"kind": self.kind, "namespace": self.namespace, "name": self.name, "pod": self.pod}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Target:
        return cls(raw["kind"], raw["name"], raw.get("namespace"), raw.get("pod"))


@dataclass(frozen=True, slots=True)
class RemediationInputs:
    """What a remediation was asked with, as its audit events show it."""

    alert: str  # the fingerprint of the alert that asked
    labels: dict[str, str]  # the labels that named the target
    params: dict[str, Any]  # the policy's parameters, as validated when the rules loaded
    severity: str

    def to_json(self) -> dict[str, Any]:
        return {"alert": self.alert, "labels": self.labels, "params": self.params, "severity": self.severity}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> RemediationInputs:
        return cls(raw["alert"], dict(raw["labels"]), dict(raw["params"]), raw["severity"])
