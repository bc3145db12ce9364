"""PagerDuty Events API v2 through httpx.

``dedup_key`` is the page's idempotency key, so a re-sent trigger is one
PagerDuty incident, and a close is a ``resolve`` of that key. A role's contact in
contacts.yaml may name its own routing key (another PagerDuty service); the page
then goes to each of those services, else to the configured default.
"""

from __future__ import annotations

import httpx

from service.config import Settings
from service.notify.base import PageRequest
from service.notify.http import call, json_object, refused

SEVERITY = {"P1": "critical", "P2": "error", "P3": "warning", "P4": "info", "P5": "info"}
SUMMARY_LIMIT = 1024


class PagerDutyNotifier:
    name = "pagerduty"
    comms = False

    def __init__(self, routing_key: str, api_url: str, timeout: float) -> None:
        if not routing_key.strip():
            raise ValueError("pager 'pagerduty' needs a non-empty routing key")
        self._routing_key = routing_key.strip()
        self._url = api_url.rstrip("/") + "/v2/enqueue"
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> PagerDutyNotifier:
        if settings.pagerduty_routing_key is None:
            variables = "INCIDENTD_PAGERDUTY_ROUTING_KEY or INCIDENTD_PAGERDUTY_ROUTING_KEY_FILE"
            raise ValueError(f"pager 'pagerduty' needs {variables}")
        return cls(
            settings.pagerduty_routing_key.get_secret_value(),
            settings.pagerduty_api_url,
            settings.pagerduty_timeout_seconds,
        )

    def routing_keys(self, request: PageRequest) -> list[str]:
        keys = [r["routing_key"] for r in request.responders if r.get("routing_key")]
        return list(dict.fromkeys(keys)) or [self._routing_key]

    async def send(self, request: PageRequest) -> str | None:
        if request.action == "update":
            return None  # [UPDATE] messages go to comms channels, not to PagerDuty
        dedup_key = None
        for key in self.routing_keys(request):
            dedup_key = await self._enqueue(self._event(request, key))
        return dedup_key

    def _event(self, request: PageRequest, routing_key: str) -> dict[str, object]:
        event: dict[str, object] = {
            "routing_key": routing_key,
            "event_action": {"trigger": "trigger", "ack": "acknowledge"}.get(request.action, "resolve"),
            "dedup_key": request.idempotency_key,
            "client": "incidentd",
        }
        if request.action == "trigger":
            inc = request.incident
            event["payload"] = {
                "summary": request.message[:SUMMARY_LIMIT] or f"{inc['severity']}: {inc['title']}",
                "source": "incidentd",
                "severity": SEVERITY.get(request.priority, "error"),
                "component": inc["group_labels"].get("namespace", ""),
                "group": inc["group_labels"].get("alertname", ""),
                "custom_details": {
                    "incident_id": inc["id"],
                    "severity": inc["severity"],
                    "roles": list(request.roles),
                    "response_due_at": inc["response_due_at"],
                    "group_labels": inc["group_labels"],
                    "description": request.description,
                },
            }
        return event

    async def _enqueue(self, event: dict[str, object]) -> str | None:
        resp = await call(self._client, "pagerduty", "POST", self._url, json=event)
        body = json_object(resp)
        if resp.status_code == 202:
            return str(body.get("dedup_key") or event["dedup_key"])
        errors = body.get("errors")
        listed = "; ".join(str(e) for e in errors) if isinstance(errors, list) else ""
        raise refused("pagerduty", resp, str(listed or body.get("message") or ""))

    async def aclose(self) -> None:
        await self._client.aclose()
