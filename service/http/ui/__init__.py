"""The incident board at ``/ui/``: server-rendered (Jinja2), live by htmx polling, with the
same token as the API (a login form, then an HMAC session cookie; CSRF tokens on every
form). Every button calls the same services as the JSON API; nothing here decides
anything about incidents or remediation.

The bearer middleware leaves ``/`` and ``/ui`` (``EXEMPT``) to this package, which
refuses a page or form without a valid session.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from service.http.ui.actions import Actions, Login
from service.http.ui.gate import Gate
from service.http.ui.pages import Pages
from service.http.ui.render import HERE
from service.http.ui.session import Sessions

if TYPE_CHECKING:
    from service.http.app import HttpServices

# Paths (and everything under them) the bearer middleware leaves to the board's own session.
EXEMPT = ("/", "/ui")


async def _to_board(request: Request) -> Response:
    return RedirectResponse("/ui/", status_code=303)


def ui_routes(services: HttpServices, token: bytes | None) -> list[BaseRoute]:
    sessions = Sessions(token)
    gate = Gate(sessions)
    pages = Pages(services.incidents, services.remediation, services.severities, services.commands.rules)
    actions = Actions(services.commands, services.remediation, services.approvals)
    login = Login(sessions)
    incident = "/ui/incidents/{incident_id}"
    return [
        Route("/", _to_board, methods=["GET"]),
        Route("/ui", _to_board, methods=["GET"]),
        Route("/ui/", gate.viewer(pages.board), methods=["GET"]),
        Route("/ui/live", gate.viewer(pages.board_live), methods=["GET"]),
        Route("/ui/login", login.show, methods=["GET"]),
        Route("/ui/login", login.submit, methods=["POST"]),
        Route("/ui/logout", login.logout, methods=["POST"]),
        Route(incident, gate.viewer(pages.incident), methods=["GET"]),
        Route(f"{incident}/live", gate.viewer(pages.incident_live), methods=["GET"]),
        Route(f"{incident}/postmortem", gate.viewer(pages.postmortem), methods=["GET"]),
        Route(f"{incident}/{{action}}", gate.actor(actions.incident), methods=["POST"]),
        Route("/ui/declare", gate.actor(actions.declare), methods=["POST"]),
        Route("/ui/remediation/pause", gate.actor(actions.pause), methods=["POST"]),
        Route("/ui/remediation/resume", gate.actor(actions.resume), methods=["POST"]),
        Route("/ui/remediation/{remediation_id}/approve", gate.actor(actions.approve), methods=["POST"]),
        Route("/ui/remediation/{remediation_id}/deny", gate.actor(actions.deny), methods=["POST"]),
        Mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static"),
    ]
