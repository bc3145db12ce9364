"""Incidents built directly, for tests of the store and the page worker."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from service.models import Incident, IncidentStatus
from tests.support.time import T0


def make_incident(
    inc_id: str = "inc-1", alertname: str = "ApiDown", severity: str = "SEV-1", at: datetime = T0
) -> Incident:
    return Incident(
        id=inc_id,
        group_key=json.dumps({"alertname": alertname}),
        group_labels={"alertname": alertname},
        title=alertname,
        impact="",
        severity=severity,
        status=IncidentStatus.OPEN,
        opened_at=at,
        response_due_at=at + timedelta(minutes=15),
    )
