"""Alertmanager webhook bodies as Alertmanager 0.25 sends them."""

from __future__ import annotations

import json
from typing import Any

from service.correlate.fingerprint import fingerprint


def alert(
    alertname: str,
    status: str = "firing",
    starts_at: str = "2026-11-26T10:00:00Z",
    ends_at: str = "0001-01-01T00:00:00Z",
    **labels: str,
) -> dict[str, Any]:
    all_labels = {"alertname": alertname, **labels}
    return {
        "status": status,
        "labels": all_labels,
        "annotations": {"summary": f"{alertname} is happening"},
        "startsAt": starts_at,
        "endsAt": ends_at,
        "generatorURL": "http://prometheus.local/graph",
        "fingerprint": fingerprint(all_labels),
    }


def webhook(*alerts: dict[str, Any], receiver: str = "incidentd") -> dict[str, Any]:
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return {
        "version": "4",
        "groupKey": '{}:{alertname="x"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.local",
        "alerts": list(alerts),
    }


def body(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()
