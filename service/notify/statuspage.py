"""A public incident on an Atlassian Statuspage page (Statuspage REST API v1, httpx).

- The first page of an incident whose severity says ``status_page: true`` (severities.yaml)
  creates a Statuspage incident (``POST /v1/pages/{page_id}/incidents``, status
  ``investigating``); escalations, backups and pages to people do not.
- Each ``[UPDATE]`` (``comms``) updates it (``PATCH .../incidents/{id}``): the incident's
  phase as the Statuspage status (investigating, identified, mitigating -> monitoring) and
  the update's text as the body.
- The close resolves it (status ``resolved``).

No local state: our incident is found among the page's unresolved incidents
(``GET .../incidents/unresolved``) by the opening's idempotency key in its ``metadata``, or
the reference line the first update's body ends with. A create looks first, so a retry
after a lost answer never opens a second one. Auth: ``Authorization: OAuth <api key>``.
"""

from __future__ import annotations

from typing import Any

import httpx

from service.config import Settings
from service.models import PageAction
from service.notify.base import (
    PageRequest,
    idempotency_key,
)
from service.notify.http import call, json_object, refused
from service.store.timers import REMINDER

STATUS = {
    "investigating": "investigating",
    "identified": "identified",
    "mitigating": "monitoring",
    "resolved": "resolved",
}
IMPACT = {"P1": "critical", "P2": "major", "P3": "minor"}


class StatuspageNotifier:
    name = "statuspage"
    comms = True  # takes the [UPDATE]s, to update the public incident

    def __init__(
        self,
        api_key: str,
        page_id: str,
        api_url: str = "https://api.statuspage.io",
        timeout: float = 10.0,
    ) -> None:
        if not api_key.strip() or not page_id.strip():
            raise ValueError("pager 'statuspage' needs a non-empty API key and page id")
        self._base = f"{api_url.rstrip('/')}/v1/pages/{page_id.strip()}/incidents"
        self._client = httpx.AsyncClient(
            timeout=timeout,
            follow_redirects=False,
            headers={"Authorization": f"OAuth {api_key.strip()}"},
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> StatuspageNotifier:
        if settings.statuspage_api_key is None or settings.statuspage_page_id is None:
            variables = (
                "INCIDENTD_STATUSPAGE_PAGE_ID and INCIDENTD_STATUSPAGE_API_KEY "
                "(or INCIDENTD_STATUSPAGE_API_KEY_FILE)"
            )
            raise ValueError(f"pager 'statuspage' needs {variables}")
        return cls(
            settings.statuspage_api_key.get_secret_value(),
            settings.statuspage_page_id,
            settings.statuspage_url,
            settings.statuspage_timeout_seconds,
        )

    async def send(self, request: PageRequest) -> str | None:
        if request.action is PageAction.TRIGGER:
            if request.target != "first" or not request.public:
                return None
            existing = await self._find(request)
            return existing["id"] if existing is not None else await self._create(request)
        if request.action is PageAction.ACK or (
            request.action is PageAction.CLOSE and request.target != "first"
        ):
            return None
        if request.action is PageAction.UPDATE and not request.target.startswith(REMINDER):
            # Only the [UPDATE]s meant for people at large (the cadence, a person's update, a
            # new phase): triage findings name pods, hosts and errors the public need not see.
            return None
        existing = await self._find(request)
        if existing is None:
            return None  # none was opened for this incident (its severity, or resolved already)
        # The [UPDATE] (or close note) as the page worker split it: first line, then the rest.
        body = "\n".join(part for part in (request.message, request.description) if part)
        if request.action is PageAction.CLOSE:
            status, body = "resolved", body or "This incident has been resolved."
        else:  # an [UPDATE]
            status = STATUS.get(str(request.incident.get("phase")), "investigating")
        await self._call("PATCH", f"/{existing['id']}", json={"incident": {"status": status, "body": body}})
        return str(existing["id"])

    async def _create(self, request: PageRequest) -> str:
        inc = request.incident
        incident: dict[str, Any] = {
            "name": inc["title"],
            "status": "investigating",
            "body": f"We are investigating: {inc.get('impact') or inc['title']}\n\n{reference(request)}",
            "metadata": {"incidentd": {"key": request.idempotency_key}},
        }
        if request.priority in IMPACT:
            incident["impact_override"] = IMPACT[request.priority]
        resp = await self._call("POST", "", json={"incident": incident})
        body = json_object(resp)
        return str(body.get("id") or "")

    async def _find(self, request: PageRequest) -> dict[str, Any] | None:
        """Our Statuspage incident for this opening among the unresolved ones, or None."""
        # The opening's key: an [UPDATE] or close carries its own target, the create the first.
        key, ref = _first_key(request), reference(request)
        listed = (await self._call("GET", "/unresolved")).json()
        for incident in listed if isinstance(listed, list) else []:
            if not isinstance(incident, dict):
                continue
            meta = incident.get("metadata") or {}
            ours = isinstance(meta, dict) and (meta.get("incidentd") or {}).get("key") == key
            bodies = [
                u.get("body") or "" for u in incident.get("incident_updates") or [] if isinstance(u, dict)
            ]
            if ours or any(ref in b for b in bodies):
                return incident
        return None

    async def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        resp = await call(self._client, "statuspage", method, self._base + path, **kw)
        if resp.is_success:
            return resp
        body = json_object(resp)
        raise refused(
            "statuspage", resp, str(body.get("error") or body.get("message") or ""), f" to {method}"
        )

    async def aclose(self) -> None:
        await self._client.aclose()


def reference(request: PageRequest) -> str:
    """The line that ties a Statuspage incident to an incident opening."""
    return f"(ref {request.incident_id}/{request.opening})"


def _first_key(request: PageRequest) -> str:
    return idempotency_key(request.incident_id, request.opening)
