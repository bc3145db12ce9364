"""What the inbound-webhook tests read back from the running service."""

from __future__ import annotations

from typing import Any

from tests.support.service import RunningService


async def shown(
    svc: RunningService, incident_id: str, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    resp = await svc.client.get(f"{svc.url}/api/v1/incidents/{incident_id}", headers=headers)
    assert resp.status_code == 200
    return dict(resp.json())


def events(svc: RunningService, incident_id: str, suffix: str) -> list[dict[str, Any]]:
    return [e for e in svc.events.of_type(suffix) if e["subject"] == incident_id]


def pages(detail: dict[str, Any], action: str) -> list[str]:
    return [p["integration"] for p in detail["pages"] if p["action"] == action]


async def assert_unchanged(
    svc: RunningService, incident_id: str, headers: dict[str, str] | None = None
) -> None:
    """Neither acknowledged nor resolved, and nothing of the kind on the timeline."""
    detail = await shown(svc, incident_id, headers)
    assert (detail["incident"]["acknowledged_by"], detail["incident"]["status"]) == (None, "open")
    assert not {"incident.acknowledged", "incident.resolved"} & {t["type"] for t in detail["timeline"]}
