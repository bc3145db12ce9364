"""The incident API: list, show (with timeline and pages), acknowledge, resolve, assign."""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.escalate.commands import Command, Conflict, UnknownIncident
from service.runtime import Runtime

_COMMAND = TypeAdapter(Command)
MAX_COMMAND_BYTES = 64 * 1024
STATUSES = ("open", "resolved")


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def incident_routes(runtime: Runtime, authorised: Any) -> list[Route]:
    severities = set(runtime.rules.severities)

    async def list_incidents(request: Request) -> Response:
        if not authorised(request):
            return _error(401, "missing or wrong bearer token")
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
            return _error(422, "; ".join(problems))
        found = await runtime.store.list_incidents(status, severity, int(limit_raw))
        return JSONResponse({"incidents": [inc.snapshot() for inc in found]})

    async def show(request: Request) -> Response:
        if not authorised(request):
            return _error(401, "missing or wrong bearer token")
        incident_id = request.path_params["incident_id"]
        inc = await runtime.store.get_incident(incident_id)
        if inc is None:
            return _error(404, f"no incident {incident_id}")
        pages = [
            {k: job[k] for k in ("integration", "action", "opening", "status", "attempts", "last_error")}
            for job in await runtime.store.page_jobs_for(incident_id)
        ]
        return JSONResponse(
            {
                "incident": inc.snapshot(),
                "timeline": await runtime.store.timeline_for(incident_id),
                "pages": pages,
            }
        )

    def command_endpoint(name: str) -> Any:
        async def endpoint(request: Request) -> Response:
            if not authorised(request):
                return _error(401, "missing or wrong bearer token")
            raw = await request.body()
            if len(raw) > MAX_COMMAND_BYTES:
                return _error(413, f"body larger than {MAX_COMMAND_BYTES} bytes")
            try:
                body = json.loads(raw) if raw.strip() else {}
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                return _error(400, f"body is not valid JSON: {exc}")
            if not isinstance(body, dict):
                return _error(422, "expected a JSON object")
            try:
                command = _COMMAND.validate_python({**body, "command": name})
            except ValidationError as exc:
                details = [
                    {"loc": ".".join(str(p) for p in e["loc"][1:]), "msg": e["msg"]} for e in exc.errors()
                ]
                return _error(422, "invalid command", details=details)
            try:
                inc = await runtime.commands.apply(request.path_params["incident_id"], command, "api")
            except UnknownIncident as exc:
                return _error(404, f"no incident {exc}")
            except Conflict as exc:
                return _error(409, str(exc))
            return JSONResponse({"incident": inc.snapshot()})

        return endpoint

    return [
        Route("/api/v1/incidents", list_incidents, methods=["GET"]),
        Route("/api/v1/incidents/{incident_id}", show, methods=["GET"]),
        Route("/api/v1/incidents/{incident_id}/ack", command_endpoint("ack"), methods=["POST"]),
        Route("/api/v1/incidents/{incident_id}/resolve", command_endpoint("resolve"), methods=["POST"]),
        Route("/api/v1/incidents/{incident_id}/assign", command_endpoint("assign"), methods=["POST"]),
    ]
