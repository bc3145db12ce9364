"""The incident API: list, show (with timeline and pages), acknowledge, resolve, assign."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.clock import iso
from service.escalate.commands import Ack, Assign, CommandHandler, Resolve
from service.http.bodies import command, error
from service.store.views import IncidentDetail, IncidentViews

STATUSES = ("open", "resolved")
Endpoint = Callable[[Request], Awaitable[Response]]


def detail_json(d: IncidentDetail) -> dict[str, Any]:
    return {
        "incident": d.incident.snapshot(),
        "timeline": [{"at": iso(t.at), "type": t.type, "summary": t.summary} for t in d.timeline],
        "pages": [
            {
                "integration": p.integration,
                "action": p.action,
                "opening": p.opening,
                "status": p.status,
                "attempts": p.attempts,
                "last_error": p.last_error,
            }
            for p in d.pages
        ],
        "remediations": [j.to_json() for j in d.remediations],
    }


def incident_routes(views: IncidentViews, commands: CommandHandler, severities: Sequence[str]) -> list[Route]:
    known = set(severities)

    async def list_incidents(request: Request) -> Response:
        status = request.query_params.get("status")
        severity = request.query_params.get("severity")
        limit_raw = request.query_params.get("limit", "100")
        problems = []
        if status is not None and status not in STATUSES:
            problems.append(f"status must be one of {', '.join(STATUSES)}")
        if severity is not None and severity not in known:
            problems.append(f"severity must be one of {', '.join(sorted(known))}")
        if not limit_raw.isdigit() or not 1 <= int(limit_raw) <= 1000:
            problems.append("limit must be an integer from 1 to 1000")
        if problems:
            return error(422, "; ".join(problems))
        found = await views.list(status, severity, int(limit_raw))
        return JSONResponse({"incidents": [inc.snapshot() for inc in found]})

    async def show(request: Request) -> Response:
        incident_id = request.path_params["incident_id"]
        detail = await views.detail(incident_id)
        if detail is None:
            return error(404, f"no incident {incident_id}")
        return JSONResponse(detail_json(detail))

    def command_endpoint(model: type[Ack | Resolve | Assign]) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            # The model's own default names the command; a body that names another one
            # (``{"command": "resolve"}`` sent to /ack) is refused by its Literal.
            cmd = await command(request, model)
            if isinstance(cmd, Response):
                return cmd
            inc = await commands.apply(request.path_params["incident_id"], cmd, "api")
            return JSONResponse({"incident": inc.snapshot()})

        return endpoint

    base = "/api/v1/incidents"
    return [
        Route(base, list_incidents, methods=["GET"]),
        Route(f"{base}/{{incident_id}}", show, methods=["GET"]),
        Route(f"{base}/{{incident_id}}/ack", command_endpoint(Ack), methods=["POST"]),
        Route(f"{base}/{{incident_id}}/resolve", command_endpoint(Resolve), methods=["POST"]),
        Route(f"{base}/{{incident_id}}/assign", command_endpoint(Assign), methods=["POST"]),
    ]
