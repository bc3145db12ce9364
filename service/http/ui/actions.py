"""The board's forms: each builds the command the API would and applies it through the
same service (``CommandHandler``, ``Approvals``, ``RemediationControl``), source ``ui``."""

from __future__ import annotations

import hashlib
import time

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from service.escalate.commands import CommandHandler, Declare, Origin
from service.http.remediation import PauseBody, ResumeBody
from service.http.ui.forms import Form, FormError, build, incident_command, read_form
from service.http.ui.gate import problem, to_login
from service.http.ui.render import page
from service.http.ui.session import Session, Sessions, clear_cookie, csrf_ok, same_origin, set_cookie
from service.models import Name
from service.remediate.approval import Approvals, Approve, Deny
from service.remediate.control import RemediationControl

SOURCE = "ui"


class Actions:
    def __init__(self, commands: CommandHandler, control: RemediationControl, approvals: Approvals) -> None:
        self._commands = commands
        self._control = control
        self._approvals = approvals

    async def incident(self, request: Request, session: Session, form: Form) -> str:
        incident_id = request.path_params["incident_id"]
        command = incident_command(request.path_params["action"], form, session.who)
        once = form.get("once")
        # A form posted twice (a double click, a resend) is one command: keyed by the
        # rendering's id and the session, so nobody else's form can stand in for it.
        digest = hashlib.sha256(f"{session.who}\0{once}".encode()).hexdigest()
        command_id = f"ui:{digest}" if 0 < len(once) <= 64 else None
        await self._commands.apply(incident_id, command, Origin(SOURCE, command_id=command_id))
        return f"/ui/incidents/{incident_id}"

    async def declare(self, request: Request, session: Session, form: Form) -> str:
        values: dict[str, object] = {"title": form.get("title"), "severity": form.get("severity")}
        values["by"] = session.who
        if form.get("impact"):
            values["impact"] = form.get("impact")
        inc = await self._commands.declare(build(Declare, values), SOURCE)
        return f"/ui/incidents/{inc.id}"

    async def approve(self, request: Request, session: Session, form: Form) -> str:
        return await self._decide(Approve, request, session)

    async def deny(self, request: Request, session: Session, form: Form) -> str:
        return await self._decide(Deny, request, session)

    async def _decide(self, model: type[Approve] | type[Deny], request: Request, session: Session) -> str:
        rid = request.path_params["remediation_id"]
        command: Approve | Deny = build(model, {"remediation_id": rid, "by": session.who})
        job = await self._approvals.decide(command)
        return f"/ui/incidents/{job.incident_id}"

    async def pause(self, request: Request, session: Session, form: Form) -> str:
        body = build(PauseBody, {"by": session.who, "reason": form.get("reason") or None})
        await self._control.pause(body.by, body.reason)
        return "/ui/"

    async def resume(self, request: Request, session: Session, form: Form) -> str:
        target = form.get("target") or None
        body = build(ResumeBody, {"by": session.who, "target": target})
        if body.target is not None:
            await self._control.resume_target(body.target)
        else:
            await self._control.resume(body.by)
        return "/ui/"


class Login:
    """The login form: the API's token (compared in constant time) and a name to sign
    commands with. The cookie gets an HMAC of the token, never the token."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    async def show(self, request: Request) -> Response:
        return self._form(200, "")

    def _form(self, status: int, message: str) -> Response:
        return page("login.html", {"open": self._sessions.open, "message": message, "session": None}, status)

    async def submit(self, request: Request) -> Response:
        if not same_origin(request):
            return problem(403, "refused: the login was posted from another site", None, "/ui/login")
        try:
            form = await read_form(request)
        except FormError as exc:
            return self._form(exc.status, exc.message)
        if not self._sessions.token_ok(form.get("token")):
            return self._form(401, "Wrong token.")
        try:
            who = build(_Who, {"who": form.get("who") or "ui"}).who
        except FormError as exc:
            return self._form(422, exc.message)
        session = self._sessions.issue(who, time.time())
        response = RedirectResponse("/ui/", status_code=303)
        set_cookie(response, request, session)
        return response

    async def logout(self, request: Request) -> Response:
        """Ends the session in this browser (same origin and CSRF token, like every form)."""
        session = self._sessions.from_request(request, time.time())
        if session is None:
            return to_login(request)
        try:
            form = await read_form(request)
        except FormError as exc:
            return problem(exc.status, exc.message, session)
        if not same_origin(request) or not csrf_ok(session, form.get("csrf")):
            return problem(403, "refused: the form's origin or CSRF token is wrong", session)
        response = RedirectResponse("/ui/login", status_code=303)
        clear_cookie(response)
        return response


class _Who(BaseModel):
    who: Name
