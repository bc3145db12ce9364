"""The board's pages: the incident board, one incident, and the parts htmx polls."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from service.http.ui.gate import problem
from service.http.ui.render import board, card, page
from service.http.ui.session import Session
from service.models import Phase
from service.postmortem.draft import render as render_postmortem
from service.remediate.control import RemediationControl
from service.roles import ASSIGNABLE
from service.ruleset.models import RuleSet
from service.store.remediations import JobStatus, RemediationJob
from service.store.views import IncidentViews, hold_in_force

RECENTLY_RESOLVED = 8


def job_view(job: RemediationJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "incident_id": job.incident_id,
        "action": job.action,
        "policy": job.policy,
        "target": job.target_key,
        "mode": job.mode,
        "status": str(job.status),
        "awaiting": job.status is JobStatus.AWAITING_APPROVAL and job.decision is None,
        "why": job.reason or job.guardrail or "",
        "decision": f"{job.decision} by {job.decided_by}" if job.decision else "",
        "approval_due_at": job.approval_due_at,
        "updated_at": job.updated_at,
    }


class Pages:
    def __init__(
        self,
        views: IncidentViews,
        control: RemediationControl,
        severities: Sequence[str],
        rules: RuleSet | None = None,
    ) -> None:
        self._views = views
        self._rules = rules
        self._control = control
        self._severities = list(severities)

    def _base(self, session: Session) -> dict[str, Any]:
        now = datetime.now(UTC)
        return {"session": session, "now": now, "now_ms": int(now.timestamp() * 1000)}

    async def _board(self, session: Session) -> dict[str, Any]:
        ctx = self._base(session)
        open_ = await self._views.list("open", None, 500)
        resolved = await self._views.list("resolved", None, RECENTLY_RESOLVED)
        state = await self._control.state(newest=20)
        shown = board(open_, self._severities, ctx["now"])
        return {
            **ctx,
            "groups": shown.groups,
            "open_count": shown.paging,
            "held": shown.held,
            "noise": await self._views.noise(self._rules.noise) if self._rules is not None else None,
            "resolved": [card(i, ctx["now"]) for i in resolved],
            "remediation": state,
            "jobs": [job_view(j) for j in state.remediations],
            "severities": self._severities,
        }

    async def board(self, request: Request, session: Session) -> Response:
        return page("board.html", await self._board(session))

    async def board_live(self, request: Request, session: Session) -> Response:
        return page("_board_live.html", await self._board(session))

    async def _incident(self, request: Request, session: Session) -> dict[str, Any] | None:
        detail = await self._views.detail(request.path_params["incident_id"])
        if detail is None:
            return None
        ctx = self._base(session)
        hold = hold_in_force(detail.incident)
        return {
            **ctx,
            "inc": card(detail.incident, ctx["now"]),
            "hold": hold,
            "sources": detail.sources,
            "caused": detail.caused,
            "timeline": detail.timeline,
            "pages": detail.pages,
            "jobs": [job_view(j) for j in detail.remediations],
            "triage": detail.incident.triage,
            "roles": ASSIGNABLE,
            "phases": [p.value for p in Phase],
            "severities": self._severities,
        }

    async def incident(self, request: Request, session: Session) -> Response:
        ctx = await self._incident(request, session)
        if ctx is None:
            return problem(404, f"no incident {request.path_params['incident_id']}", session)
        return page("incident.html", ctx)

    async def incident_live(self, request: Request, session: Session) -> Response:
        ctx = await self._incident(request, session)
        if ctx is None:
            return problem(404, f"no incident {request.path_params['incident_id']}", session)
        return page("_incident_live.html", ctx)

    async def postmortem(self, request: Request, session: Session) -> Response:
        """The postmortem draft (markdown, as the API gives it) in a <pre>."""
        d = await self._views.detail(request.path_params["incident_id"])
        if d is None:
            return problem(404, f"no incident {request.path_params['incident_id']}", session)
        text = render_postmortem(d.incident, d.timeline, d.pages, d.remediations, self._rules)
        return page("postmortem.html", {**self._base(session), "inc": d.incident, "text": text})
