"""Incident <-> the JSON kept in ``incidents.data``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from service.clock import iso
from service.jsonfast import dumps_text, loads
from service.models import AlertState, Flapping, Hold, Incident, IncidentStatus, Phase
from service.roles import canonical


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _iso(value: datetime | None) -> str | None:
    return iso(value) if value else None


def dump_incident(inc: Incident) -> str:
    return dumps_text(
        {
            "group_labels": inc.group_labels,
            "title": inc.title,
            "impact": inc.impact,
            "severity": inc.severity,
            "status": inc.status.value,
            "opened_at": _iso(inc.opened_at),
            "response_due_at": _iso(inc.response_due_at),
            "acknowledged_at": _iso(inc.acknowledged_at),
            "resolved_at": _iso(inc.resolved_at),
            "opening": inc.opening,
            "roles": inc.roles,
            "acknowledged_by": inc.acknowledged_by,
            "escalations": inc.escalations,
            "manual_roles": inc.manual_roles,
            "opening_started_at": _iso(inc.opening_started_at),
            "phase": inc.phase.value,
            "root_cause": inc.root_cause,
            "eta": inc.eta,
            "latest_note": inc.latest_note,
            "update_sequence": inc.update_sequence,
            "declared_by": inc.declared_by,
            "triage": inc.triage,
            "action_items": inc.action_items,
            "postmortem_done": inc.postmortem_done,
            # AlertState as orjson writes a dataclass: AlertState.to_json()'s shape, field by
            # field (tests/test_codec.py holds the two equal).
            "alerts": inc.alerts,
            "hold": inc.hold.to_json() if inc.hold else None,
            "paged": inc.paged,
            "reopens": [iso(t) for t in inc.reopens],
            "flapping": inc.flapping.to_json() if inc.flapping else None,
        }
    )


def load_incident(row: Any) -> Incident:
    d = loads(row.data)
    opened = _dt(d["opened_at"])
    due = _dt(d["response_due_at"])
    assert opened is not None and due is not None
    return Incident(
        id=row.id,
        group_key=row.group_key,
        group_labels=d["group_labels"],
        title=d["title"],
        impact=d["impact"],
        severity=d["severity"],
        status=IncidentStatus(d["status"]),
        opened_at=opened,
        response_due_at=due,
        acknowledged_at=_dt(d["acknowledged_at"]),
        resolved_at=_dt(d["resolved_at"]),
        opening=d["opening"],
        # Stored before the role vocabulary was one ("IC"): read under the runbook's names.
        roles={canonical(role): who for role, who in d.get("roles", {}).items()},
        acknowledged_by=d.get("acknowledged_by"),
        escalations=d.get("escalations", {}),
        manual_roles=d.get("manual_roles", {}),
        opening_started_at=_dt(d.get("opening_started_at")),
        phase=Phase(d.get("phase", Phase.INVESTIGATING)),
        root_cause=d.get("root_cause"),
        eta=d.get("eta"),
        latest_note=d.get("latest_note"),
        update_sequence=d.get("update_sequence", 0),
        declared_by=d.get("declared_by"),
        triage=d.get("triage"),
        action_items=d.get("action_items", []),
        postmortem_done=d.get("postmortem_done"),
        alerts={fp: AlertState.from_json(a) for fp, a in d["alerts"].items()},
        hold=Hold.from_json(d["hold"]) if d.get("hold") else None,
        # Stored before noise control: its opening paged as every opening did.
        paged=d.get("paged", d["opening"]),
        reopens=[datetime.fromisoformat(t) for t in d.get("reopens", [])],
        flapping=Flapping.from_json(d["flapping"]) if d.get("flapping") else None,
        is_current=bool(row.is_current),
        version=row.version,
    )
