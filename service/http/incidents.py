"""The incident API: list, show (with timeline and pages), acknowledge, resolve, assign."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.escalate.commands import Command, Conflict, UnknownIncident
from service.http.bodies import error, invalid, json_object
from service.runtime import Runtime

_COMMAND = TypeAdapter(Command)
STATUSES = ("open", "resolved")


def incident_routes(runtime: Runtime, authorised: Any) -> list[Route]:
    severities = set(runtime.rules.severities)

    async def list_incidents(request: Request) -> Response:
        if not authorised(request):
            return error(401, "missing or wrong bearer token")
        status = request.query_params.get("status")
        severity = request.query_params.get("severity")
        limit_raw = request.query_params.get("limit", "100")
        problems = []
        if status is not None and status not in STATUSES:
            problems.append(f"status must be one of {', '.join(STATUSES)}")
        if severity is not None and severity not in severities:
            problems.append(f"severity must be one of {', '.join(sorted(severities))}")
        if not limit_raw.isdigit() or not 1 <= int(limit_raw) <= 1000:
            problems.append("limit must be an integer from 1 to 1000")
        if problems:
            return error(422, "; ".join(problems))
        found = await runtime.store.list_incidents(status, severity, int(limit_raw))
        return JSONResponse({"incidents": [inc.snapshot() for inc in found]})

    async def show(request: Request) -> Response:
        if not authorised(request):
            return error(401, "missing or wrong bearer token")
        incident_id = request.path_params["incident_id"]
        inc = await runtime.store.get_incident(incident_id)
        if inc is None:
            return error(404, f"no incident {incident_id}")
        pages = [
            {k: job[k] for k in ("integration", "action", "opening", "status", "attempts", "last_error")}
            for job in await runtime.store.page_jobs_for(incident_id)
        ]
        return JSONResponse(
            {
                "incident": inc.snapshot(),
                "timeline": await runtime.store.timeline_for(incident_id),
                "pages": pages,
                "remediations": await runtime.remediation_jobs.list(incident_id),
            }
        )

    def command_endpoint(name: str) -> Any:
        async def endpoint(request: Request) -> Response:
            if not authorised(request):
                return error(401, "missing or wrong bearer token")
            body = await json_object(request)
            if isinstance(body, Response):
                return body
            try:
                command = _COMMAND.validate_python({**body, "command": name})
            except ValidationError as exc:
                return invalid(exc, skip=1)
            try:
                inc = await runtime.commands.apply(request.path_params["incident_id"], command, "api")
            except UnknownIncident as exc:
                return error(404, f"no incident {exc}")
            except Conflict as exc:
                return error(409, str(exc))
            return JSONResponse({"incident": inc.snapshot()})

        return endpoint

    return [
        Route("/api/v1/incidents", list_incidents, methods=["GET"]),
        Route("/api/v1/incidents/{incident_id}", show, methods=["GET"]),
        Route("/api/v1/incidents/{incident_id}/ack", command_endpoint("ack"), methods=["POST"]),
        Route("/api/v1/incidents/{incident_id}/resolve", command_endpoint("resolve"), methods=["POST"]),
        Route("/api/v1/incidents/{incident_id}/assign", command_endpoint("assign"), methods=["POST"]),
    ]
