"""Incident <-> the JSON kept in ``incidents.data``."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from service.clock import iso
from service.models import AlertState, Incident, IncidentStatus


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _iso(value: datetime | None) -> str | None:
    return iso(value) if value else None


def dump_incident(inc: Incident) -> str:
    return json.dumps(
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
            "opening_started_at": _iso(inc.opening_started_at),
            "alerts": {fp: a.to_json() for fp, a in inc.alerts.items()},
        },
        separators=(",", ":"),
    )


def load_incident(row: Any) -> Incident:
    d = json.loads(row.data)
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
        roles=d.get("roles", {}),
        acknowledged_by=d.get("acknowledged_by"),
        escalations=d.get("escalations", {}),
        opening_started_at=_dt(d.get("opening_started_at")),
        alerts={fp: AlertState.from_json(a) for fp, a in d["alerts"].items()},
        is_current=bool(row.is_current),
        version=row.version,
    )
