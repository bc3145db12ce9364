"""The incident API: list (by status, severity, phase, noise-control hold, flapping), show
(with timeline, pages and the incidents it inhibits), declare, and every command a
person gives an incident (acknowledge, resolve, assign, status, notes, updates,
severity, escalate, postmortem action items and done), and the postmortem draft."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.clock import iso
from service.escalate.commands import (
    Ack,
    AddActionItem,
    AddNote,
    Assign,
    CommandHandler,
    Declare,
    Escalate,
    IncidentCommand,
    Origin,
    PostmortemDone,
    PostUpdate,
    Resolve,
    SetSeverity,
    SetStatus,
)
from service.http.bodies import command, error
from service.models import Phase
from service.postmortem.draft import render as render_postmortem
from service.store.views import HOLDS, IncidentDetail, IncidentFilter, IncidentViews

# triggered: open and not acknowledged (PagerDuty's, Opsgenie's and Grafana OnCall's word).
STATUSES = ("open", "triggered", "acknowledged", "resolved")
PHASES = tuple(p.value for p in Phase)
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
        "caused": [{"id": c.id, "title": c.title} for c in d.caused],
    }


def idempotency_key(request: Request) -> str | Response | None:
    """The ``Idempotency-Key`` header: a client retrying a command with the same key gets it
    applied once (the IETF draft's header, as Stripe and PagerDuty's REST API use it)."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not 1 <= len(key) <= 200 or not key.isprintable():
        return error(400, "Idempotency-Key must be 1 to 200 printable characters")
    return key


def _by_method(get: Endpoint, post: Endpoint) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        return await (post if request.method == "POST" else get)(request)

    return endpoint


FLAGS = {"true": True, "false": False}


def _list_problems(query: Mapping[str, str], known: set[str]) -> list[str]:
    problems = []
    status, phase, hold = query.get("status"), query.get("phase"), query.get("hold")
    if status is not None and status not in STATUSES:
        problems.append(f"status must be one of {', '.join(STATUSES)}")
    if phase is not None and phase not in PHASES:
        problems.append(f"phase must be one of {', '.join(PHASES)}")
    if hold is not None and hold not in HOLDS:
        problems.append(f"hold must be one of {', '.join(HOLDS)}")
    if query.get("flapping", "true") not in FLAGS:
        problems.append("flapping must be true or false")
    severity = query.get("severity")
    if severity is not None and severity not in known:
        problems.append(f"severity must be one of {', '.join(sorted(known))}")
    limit = query.get("limit", "100")
    if not limit.isdigit() or not 1 <= int(limit) <= 1000:
        problems.append("limit must be an integer from 1 to 1000")
    return problems


def postmortem_endpoint(views: IncidentViews, commands: CommandHandler) -> Endpoint:
    """The postmortem draft, in the runbook's template, as markdown."""

    async def postmortem(request: Request) -> Response:
        incident_id = request.path_params["incident_id"]
        d = await views.detail(incident_id)
        if d is None:
            return error(404, f"no incident {incident_id}")
        text = render_postmortem(d.incident, d.timeline, d.pages, d.remediations, commands.rules)
        return Response(text, media_type="text/markdown; charset=utf-8")

    return postmortem


def incident_routes(views: IncidentViews, commands: CommandHandler, severities: Sequence[str]) -> list[Route]:
    known = set(severities)

    async def list_incidents(request: Request) -> Response:
        query = request.query_params
        problems = _list_problems(query, known)
        if problems:
            return error(422, "; ".join(problems))
        flapping = query.get("flapping")
        where = IncidentFilter(
            status=query.get("status"),
            severity=query.get("severity"),
            phase=query.get("phase"),
            hold=query.get("hold"),
            flapping=FLAGS[flapping] if flapping is not None else None,
        )
        found = await views.find(where, int(query.get("limit", "100")))
        return JSONResponse({"incidents": [inc.snapshot() for inc in found]})

    async def show(request: Request) -> Response:
        incident_id = request.path_params["incident_id"]
        detail = await views.detail(incident_id)
        if detail is None:
            return error(404, f"no incident {incident_id}")
        return JSONResponse(detail_json(detail))

    def command_endpoint(model: type[IncidentCommand]) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            # The model's own default names the command; a body that names another one
            # (``{"command": "resolve"}`` sent to /ack) is refused by its Literal.
            cmd = await command(request, model)
            if isinstance(cmd, Response):
                return cmd
            key = idempotency_key(request)
            if isinstance(key, Response):
                return key
            origin = Origin("api", command_id=f"api:{key}" if key else None)
            inc = await commands.apply(request.path_params["incident_id"], cmd, origin)
            return JSONResponse({"incident": inc.snapshot()})

        return endpoint

    async def declare(request: Request) -> Response:
        cmd = await command(request, Declare)
        if isinstance(cmd, Response):
            return cmd
        key = idempotency_key(request)
        if isinstance(key, Response):
            return key
        # A retried declare (same key) names the same incident, so it is declared once.
        incident_id = f"inc-{hashlib.sha256(key.encode()).hexdigest()[:20]}" if key else None
        inc = await commands.declare(cmd, "api", incident_id)
        return JSONResponse({"incident": inc.snapshot()}, status_code=201)

    base = "/api/v1/incidents"
    return [
        # One route, so a wrong method's 405 names both in Allow.
        Route(base, _by_method(list_incidents, declare), methods=["GET", "POST"]),
        Route(f"{base}/{{incident_id}}", show, methods=["GET"]),
        Route(f"{base}/{{incident_id}}/ack", command_endpoint(Ack), methods=["POST"]),
        Route(f"{base}/{{incident_id}}/resolve", command_endpoint(Resolve), methods=["POST"]),
        Route(f"{base}/{{incident_id}}/assign", command_endpoint(Assign), methods=["POST"]),
        Route(f"{base}/{{incident_id}}/status", command_endpoint(SetStatus), methods=["POST"]),
        Route(f"{base}/{{incident_id}}/notes", command_endpoint(AddNote), methods=["POST"]),
        Route(f"{base}/{{incident_id}}/updates", command_endpoint(PostUpdate), methods=["POST"]),
        Route(f"{base}/{{incident_id}}/severity", command_endpoint(SetSeverity), methods=["POST"]),
        Route(f"{base}/{{incident_id}}/escalate", command_endpoint(Escalate), methods=["POST"]),
        Route(f"{base}/{{incident_id}}/action-items", command_endpoint(AddActionItem), methods=["POST"]),
        # GET: the postmortem draft (markdown); POST: mark the postmortem done.
        Route(
            f"{base}/{{incident_id}}/postmortem",
            _by_method(postmortem_endpoint(views, commands), command_endpoint(PostmortemDone)),
            methods=["GET", "POST"],
        ),
    ]
