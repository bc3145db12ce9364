"""Who may see the board and post its forms: the session cookie, the CSRF token, the
origin. Every page and form goes through ``viewer`` or ``actor``; no route checks by hand."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from service.errors import Conflict, Invalid, NotFound
from service.http.ui.forms import Form, FormError, read_form
from service.http.ui.render import page
from service.http.ui.session import Session, Sessions, csrf_ok, same_origin, set_cookie

LOGIN = "/ui/login"
Endpoint = Callable[[Request], Awaitable[Response]]
View = Callable[[Request, Session], Awaitable[Response]]
# A form's work: the page to go back to (Post/Redirect/Get).
Action = Callable[[Request, Session, Form], Awaitable[str]]


def to_login(request: Request) -> Response:
    if request.headers.get("hx-request"):
        # htmx polling after the session ended: htmx follows HX-Redirect.
        return Response("login required", status_code=401, headers={"HX-Redirect": LOGIN})
    return RedirectResponse(LOGIN, status_code=303)


def problem(status: int, message: str, session: Session | None, back: str = "/ui/") -> Response:
    context = {"status": status, "message": message, "session": session, "back": back}
    return page("problem.html", context, status)


def safe_next(target: str, default: str) -> str:
    """Only a page of the board: never an open redirect to another site."""
    if target.startswith("/ui/") and "//" not in target and "\\" not in target:
        return target
    return default


def back_of(path: str) -> str:
    """The page a form was on: its incident's page, or the board."""
    if path.startswith("/ui/incidents/"):
        return path.rsplit("/", 1)[0]
    return "/ui/"


class Gate:
    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    def viewer(self, view: View) -> Endpoint:
        """A page: with a valid session, or (no token configured) a new one."""

        async def endpoint(request: Request) -> Response:
            now = time.time()
            session = self.sessions.from_request(request, now)
            if session is not None:
                return await view(request, session)
            if not self.sessions.open:
                return to_login(request)
            session = self.sessions.issue("ui", now)
            response = await view(request, session)
            set_cookie(response, request, session)
            return response

        return endpoint

    def actor(self, action: Action) -> Endpoint:
        """A form post: session, same origin and CSRF token first, then the command;
        a refused command is a page naming why, with its 4xx."""

        async def endpoint(request: Request) -> Response:
            session = self.sessions.from_request(request, time.time())
            if session is None:
                return to_login(request)
            back = back_of(request.url.path)
            if not same_origin(request):
                return problem(403, "refused: the form was posted from another site", session, back)
            try:
                form = await read_form(request)
                if not csrf_ok(session, form.get("csrf")):
                    raise FormError(403, "refused: the form's CSRF token is missing or wrong; reload")
                target = await action(request, session, form)
            except FormError as exc:
                return problem(exc.status, exc.message, session, back)
            except NotFound as exc:
                return problem(404, str(exc), session, back)
            except Conflict as exc:
                return problem(409, str(exc), session, back)
            except Invalid as exc:
                return problem(422, str(exc), session, back)
            return RedirectResponse(safe_next(form.get("next"), target), status_code=303)

        return endpoint
