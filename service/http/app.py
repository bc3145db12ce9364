"""The HTTP surface (Starlette): the webhook, the incident and remediation APIs, health,
readiness and metrics, each route given the services it uses and nothing else.

Status codes are chosen so that Alertmanager retries exactly when it should: it
retries 5xx only, so a 2xx is given only for what Kafka has acknowledged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.errors import Conflict, Invalid, NotFound
from service.escalate.commands import CommandHandler
from service.http.alerts_v2 import ALERTS_V2, alerts_v2_route, intake_endpoint
from service.http.auth import BearerAuth
from service.http.bodies import error
from service.http.inbound import PATHS as INBOUND_PATHS
from service.http.inbound import Inbound, inbound_routes
from service.http.incidents import incident_routes
from service.http.noise import noise_routes
from service.http.remediation import remediation_routes
from service.http.silences import SilenceService, silence_routes
from service.http.ui import ui_routes
from service.ingest.intake import WEBHOOK_SOURCE, Accepted, AlertIntake
from service.observability.metrics import Metrics
from service.observability.readiness import Readiness
from service.remediate.approval import Approvals
from service.remediate.control import RemediationControl
from service.store.views import IncidentViews

log = logging.getLogger(__name__)

WEBHOOK = "/api/v1/alerts/alertmanager"


@dataclass(frozen=True, slots=True)
class HttpServices:
    intake: AlertIntake
    incidents: IncidentViews
    commands: CommandHandler
    remediation: RemediationControl
    approvals: Approvals
    readiness: Readiness
    metrics: Metrics
    severities: Sequence[str]
    inbound: Inbound  # the Slack, PagerDuty and Opsgenie acknowledgements
    silences: SilenceService  # Alertmanager's v2 silences API (amtool)


@dataclass(frozen=True, slots=True)
class HttpSettings:
    token: bytes | None  # the bearer token every non-public route asks for
    public_paths: frozenset[str]
    max_body_bytes: int


def webhook_route(intake: AlertIntake, metrics: Metrics, max_body: int) -> Route:
    def accepted_answer(accepted: Accepted) -> Response:
        answer = {"status": "accepted", "alerts": accepted.alerts, "records": accepted.records}
        return JSONResponse(answer, status_code=202)

    endpoint = intake_endpoint(intake.accept, accepted_answer, metrics, max_body, WEBHOOK_SOURCE)
    return Route(WEBHOOK, endpoint, methods=["POST"], name="alertmanager_webhook")


def probe_routes(readiness: Readiness, metrics: Metrics) -> list[Route]:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        checks = await readiness.check()
        ready = all(v == "ok" for v in checks.values())
        body = {"status": "ready" if ready else "not ready", "checks": checks}
        return JSONResponse(body, status_code=200 if ready else 503)

    async def metrics_endpoint(request: Request) -> Response:
        await metrics.refresh()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]


async def _not_found(request: Request, exc: Exception) -> Response:
    return error(404, str(exc))


async def _conflict(request: Request, exc: Exception) -> Response:
    return error(409, str(exc))


async def _invalid(request: Request, exc: Exception) -> Response:
    return error(422, str(exc))


async def _http_exception(request: Request, exc: Exception) -> Response:
    """The router's own answers (404 no such path, 405 with ``Allow``) in the one error shape."""
    assert isinstance(exc, HTTPException)
    message = f"{exc.detail}: {request.method} {request.url.path}"
    allow = (exc.headers or {}).get("Allow")
    if allow:
        message += f" (allowed: {allow})"
    return error(exc.status_code, message, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    # The one error shape even for a bug; the traceback goes to the log (Starlette re-raises
    # after answering), never to the client.
    return error(500, "internal error")


def create_app(
    services: HttpServices,
    settings: HttpSettings,
    lifespan: Any = None,
) -> Starlette:
    """``lifespan``: a context manager factory run around serving (the runtime's)."""
    s = services

    def refused(path: str) -> None:
        if path == WEBHOOK:
            s.metrics.alerts_invalid.labels("http", "unauthorized").inc()
        if path in (WEBHOOK, ALERTS_V2):
            s.metrics.webhook_refused.labels("401").inc()

    routes = [
        webhook_route(s.intake, s.metrics, settings.max_body_bytes),
        alerts_v2_route(s.intake, s.metrics, settings.max_body_bytes),
        *probe_routes(s.readiness, s.metrics),
        *incident_routes(s.incidents, s.commands, s.severities),
        *remediation_routes(s.remediation, s.approvals),
        *inbound_routes(s.inbound),
        *silence_routes(s.silences),
        *noise_routes(s.incidents, s.commands.rules.noise),
    ]
    # The inbound endpoints check their senders' own signatures instead of the bearer token.
    public = settings.public_paths | INBOUND_PATHS
    auth = Middleware(BearerAuth, token=settings.token, public=public, routes=routes, on_refused=refused)
    return Starlette(
        # The board (/ and /ui/...) checks its own session cookie: not in the bearer's routes.
        routes=[*routes, *ui_routes(s, settings.token)],
        middleware=[auth],
        exception_handlers={
            NotFound: _not_found,
            Conflict: _conflict,
            Invalid: _invalid,
            HTTPException: _http_exception,
            Exception: _internal_error,
        },
        lifespan=lifespan,
    )
