"""The remediation API: state, the kill switch, per-target resume, approve/deny."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, StringConstraints
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.http.bodies import command, error, unauthorised
from service.models import Name
from service.remediate.approval import Approve, Deny
from service.runtime import Runtime
from service.store.remediations import Decision


class Pause(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: Name = "unknown"
    reason: Annotated[str, StringConstraints(max_length=2000)] | None = None


class Resume(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: Name = "unknown"
    # Resume one target that automation stopped on; without it, lift the kill switch.
    target: Annotated[str, StringConstraints(min_length=1, max_length=600)] | None = None


def remediation_routes(runtime: Runtime, authorised: Any) -> list[Route]:
    jobs = runtime.remediation_jobs
    settings = runtime.settings

    async def state(request: Request) -> Response:
        if not authorised(request):
            return unauthorised()
        control = await jobs.control()
        return JSONResponse(
            {
                "mode": settings.remediation_mode,
                "cluster": runtime.remediation.kube is not None,
                "rules_mode": runtime.rules.remediation.mode,
                "paused": bool(settings.remediation_paused or control["paused"]),
                "paused_by_config": settings.remediation_paused,
                "pause": control,
                "holds": await jobs.holds(),
                "remediations": await jobs.list(limit=50),
            }
        )

    async def pause(request: Request) -> Response:
        cmd = await command(request, authorised, Pause)
        if isinstance(cmd, Response):
            return cmd
        await jobs.set_paused(True, cmd.by, cmd.reason, runtime.clock.now())
        runtime.metrics.remediation_paused.set(1)
        return JSONResponse({"paused": True, "pause": await jobs.control()})

    async def resume(request: Request) -> Response:
        cmd = await command(request, authorised, Resume)
        if isinstance(cmd, Response):
            return cmd
        if cmd.target is not None:
            if not await jobs.clear_hold(cmd.target):
                return error(404, f"automation is not stopped for {cmd.target}")
            return JSONResponse({"resumed": cmd.target, "holds": await jobs.holds()})
        if settings.remediation_paused:
            return error(409, "paused by configuration (INCIDENTD_REMEDIATION_PAUSED); change it there")
        await jobs.set_paused(False, cmd.by, None, runtime.clock.now())
        runtime.metrics.remediation_paused.set(0)
        runtime.remediation.wake()
        return JSONResponse({"paused": False, "pause": await jobs.control()})

    async def show(request: Request) -> Response:
        if not authorised(request):
            return unauthorised()
        job = await jobs.get(request.path_params["remediation_id"])
        if job is None:
            return error(404, f"no remediation {request.path_params['remediation_id']}")
        return JSONResponse({"remediation": job})

    def decide(model: type[Approve] | type[Deny]) -> Any:
        async def endpoint(request: Request) -> Response:
            rid = request.path_params["remediation_id"]
            cmd: Approve | Deny | Response = await command(request, authorised, model, remediation_id=rid)
            if isinstance(cmd, Response):
                return cmd
            try:
                job = await runtime.approvals.decide(cmd)
            except Decision as exc:
                return error(exc.status, exc.message)
            return JSONResponse({"remediation": job})

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
