"""One bearer-token check for every route, with one 401 answer.

Every route that changes or reads incident data asks for the token (compared in
constant time); the probes and the metrics stay open unless configured otherwise. A
request that matches no route gets the router's own 404 or 405.

It guards the routes it is given. The incident board's routes (``service/http/ui``,
``/`` and ``/ui/...``) are not given to it: they check a session cookie of their own
(and a route added to the guarded list is guarded, so a mistake fails closed).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence

from starlette.datastructures import Headers
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from service.http.bodies import error

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="incidentd"'}


def bearer_ok(header: str, token: bytes) -> bool:
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token)


class BearerAuth:
    """ASGI middleware: 401 for any non-public path without ``Authorization: Bearer <token>``."""

    def __init__(
        self,
        app: ASGIApp,
        token: bytes | None,
        public: frozenset[str],
        routes: Sequence[BaseRoute],
        on_refused: Callable[[str], None] = lambda path: None,
    ) -> None:
        self._app = app
        self._token = token
        self._public = public
        self._routes = list(routes)
        self._on_refused = on_refused

    def _guarded(self, scope: Scope) -> bool:
        if scope["type"] != "http" or scope["path"] in self._public:
            return False
        return any(route.matches(scope)[0] is Match.FULL for route in self._routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._token is None or not self._guarded(scope):
            await self._app(scope, receive, send)
            return
        if bearer_ok(Headers(scope=scope).get("authorization", ""), self._token):
            await self._app(scope, receive, send)
            return
        self._on_refused(scope["path"])
        await error(401, "missing or wrong bearer token", headers=CHALLENGE)(scope, receive, send)
