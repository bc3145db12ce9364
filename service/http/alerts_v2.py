"""``POST /api/v2/alerts``: Prometheus pushing straight to incidentd, as to an Alertmanager
(``alerting.alertmanagers`` with ``api_version: v2``), and what every alert intake
endpoint shares: the bounded body read and the mapping of the intake's refusals to
statuses.

The statuses follow the webhook's contract. Prometheus looks only at 2xx and never
retries a refused batch; it re-sends its firing alerts every resend delay and its
resolved ones for 15 minutes, so a 503 costs one resend delay, never an alert.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from service.http.bodies import BodyTooLarge, error, read_limited
from service.ingest.intake import PUSH_SOURCE, Accepted, AlertIntake, TooLarge, Unavailable
from service.ingest.parse import PayloadError
from service.observability.metrics import Metrics

log = logging.getLogger(__name__)

ALERTS_V2 = "/api/v2/alerts"

Endpoint = Callable[[Request], Awaitable[Response]]


def intake_endpoint(
    accept: Callable[[bytes], Awaitable[Accepted]],
    answer: Callable[[Accepted], Response],
    metrics: Metrics,
    max_body: int,
    source: str,
) -> Endpoint:
    """An endpoint that hands the body to ``accept`` and ``answer``s what it accepted:
    413 over ``max_body``, 400/422 for what can never be processed, 503 with Retry-After
    when Kafka did not acknowledge. Every non-2xx answer is counted by its status
    (``incidentd_webhook_requests_refused_total``): a 503 is only a warning in the log, and
    the sender's retries hide it from everyone else."""

    async def endpoint(request: Request) -> Response:
        try:
            response = await answer_body(request)
        except Exception:
            # A bug: Starlette answers 500, and that is a refusal the sender sees too.
            metrics.webhook_refused.labels("500").inc()
            raise
        if response.status_code >= 300:
            metrics.webhook_refused.labels(str(response.status_code)).inc()
        return response

    async def answer_body(request: Request) -> Response:
        try:
            body = await read_limited(request, max_body)
        except BodyTooLarge:
            metrics.alerts_invalid.labels(source, "too_large").inc()
            return error(413, f"body larger than {max_body} bytes")
        except ClientDisconnect:
            return error(400, "client disconnected before the body was read")
        try:
            accepted = await accept(body)
        except PayloadError as exc:
            return error(400 if exc.kind == "malformed" else 422, exc.reason, details=exc.details)
        except TooLarge as exc:
            return error(413, str(exc))
        except Unavailable as exc:
            log.warning("%s %s not persisted, answering 503: %s", request.method, request.url.path, exc)
            return error(
                503, "Kafka did not acknowledge the alerts; retry later", headers={"Retry-After": "5"}
            )
        metrics.webhook_alerts_accepted.labels(source).inc(accepted.alerts)
        return answer(accepted)

    return endpoint


def _ok(accepted: Accepted) -> Response:
    # Alertmanager's answer: 200 and no body.
    return Response(status_code=200)


def alerts_v2_route(intake: AlertIntake, metrics: Metrics, max_body: int) -> Route:
    endpoint = intake_endpoint(intake.accept_pushed, _ok, metrics, max_body, PUSH_SOURCE)
    return Route(ALERTS_V2, endpoint, methods=["POST"], name="alerts_v2")
