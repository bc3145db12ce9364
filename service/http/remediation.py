"""The remediation API: state, the kill switch, per-target resume, approve/deny."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, StringConstraints
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.http.bodies import command
from service.models import Name
from service.remediate.approval import Approvals, Approve, Deny
from service.remediate.control import RemediationControl
from service.store.control import Hold, Pause

Endpoint = Callable[[Request], Awaitable[Response]]


class PauseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: Name = "unknown"
    reason: Annotated[str, StringConstraints(max_length=2000)] | None = None


class ResumeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: Name = "unknown"
    # Resume one target that automation stopped on; without it, lift the kill switch.
    target: Annotated[str, StringConstraints(min_length=1, max_length=600)] | None = None


def pause_json(p: Pause) -> dict[str, Any]:
    at = p.at.timestamp() if p.at else None
    return {"paused": p.paused, "paused_by": p.by, "paused_at": at, "reason": p.reason}


def hold_json(h: Hold) -> dict[str, Any]:
    return {
        "target_key": h.target_key,
        "remediation_id": h.remediation_id,
        "reason": h.reason,
        "since": h.since.timestamp(),
    }


def remediation_routes(control: RemediationControl, approvals: Approvals) -> list[Route]:
    async def state(request: Request) -> Response:
        s = await control.state()
        return JSONResponse(
            {
                "mode": s.mode,
                "cluster": s.cluster,
                "rules_mode": s.rules_mode,
                "paused": s.paused,
                "paused_by_config": s.paused_by_config,
                "pause": pause_json(s.pause),
                "holds": [hold_json(h) for h in s.holds],
                "remediations": [j.to_json() for j in s.remediations],
            }
        )

    async def pause(request: Request) -> Response:
        cmd = await command(request, PauseBody)
        if isinstance(cmd, Response):
            return cmd
        return JSONResponse({"paused": True, "pause": pause_json(await control.pause(cmd.by, cmd.reason))})

    async def resume(request: Request) -> Response:
        cmd = await command(request, ResumeBody)
        if isinstance(cmd, Response):
            return cmd
        if cmd.target is not None:
            holds = await control.resume_target(cmd.target)
            return JSONResponse({"resumed": cmd.target, "holds": [hold_json(h) for h in holds]})
        return JSONResponse({"paused": False, "pause": pause_json(await control.resume(cmd.by))})

    async def show(request: Request) -> Response:
        job = await control.job(request.path_params["remediation_id"])
        return JSONResponse({"remediation": job.to_json()})

    def decide(model: type[Approve] | type[Deny]) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            rid = request.path_params["remediation_id"]
            cmd: Approve | Deny | Response = await command(request, model, remediation_id=rid)
            if isinstance(cmd, Response):
                return cmd
            return JSONResponse({"remediation": (await approvals.decide(cmd)).to_json()})

        return endpoint

    base = "/api/v1/remediation"
    return [
        Route(base, state, methods=["GET"]),
        Route(f"{base}/pause", pause, methods=["POST"]),
        Route(f"{base}/resume", resume, methods=["POST"]),
        Route(f"{base}/actions/{{remediation_id}}", show, methods=["GET"]),
        Route(f"{base}/actions/{{remediation_id}}/approve", decide(Approve), methods=["POST"]),
        Route(f"{base}/actions/{{remediation_id}}/deny", decide(Deny), methods=["POST"]),
    ]
