"""The HTTP surface: Alertmanager webhook, health, readiness and metrics (Starlette).

Status codes are chosen so that Alertmanager retries exactly when it should:
it retries 5xx only, so a 2xx is given only for what Kafka has acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.http.incidents import incident_routes
from service.http.remediation import remediation_routes
from service.ingest.parse import PayloadError, decode, parse_document
from service.ingest.records import split_by_group
from service.runtime import Runtime

log = logging.getLogger(__name__)

READY_TIMEOUT = 2.0
# Kafka's default record limit (1 MiB) less room for the record's own framing.
MAX_RECORD_BYTES = 1_000_000


class _TooLarge(Exception):
    pass


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(runtime: Runtime, *, manage_runtime: bool = True) -> Starlette:
    settings = runtime.settings
    metrics = runtime.metrics
    token = settings.webhook_token.get_secret_value().encode() if settings.webhook_token else None
    group_by = list(runtime.rules.grouping.group_by)

    def authorised(request: Request) -> bool:
        if token is None:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token)

    async def alertmanager_webhook(request: Request) -> Response:
        if not authorised(request):
            metrics.alerts_invalid.labels("http", "unauthorized").inc()
            return JSONResponse(
                {"error": "missing or wrong bearer token"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="incidentd"'},
            )
        try:
            body = await _read_limited(request, settings.http_max_body_bytes)
        except _TooLarge:
            metrics.alerts_invalid.labels("http", "too_large").inc()
            return _error(413, f"body larger than {settings.http_max_body_bytes} bytes")
        except ClientDisconnect:
            return _error(400, "client disconnected before the body was read")
        now = runtime.clock.now()
        try:
            doc = decode(body)
            if "alerts" not in doc and "version" not in doc:
                raise PayloadError(
                    "invalid", "not an Alertmanager webhook: 'version' and 'alerts' are required"
                )
            alerts = parse_document(doc, now)
        except PayloadError as exc:
            metrics.alerts_invalid.labels("http", exc.kind).inc()
            status = 400 if exc.kind == "malformed" else 422
            return _error(status, exc.reason, details=exc.details)
        if not alerts:
            return JSONResponse({"status": "accepted", "alerts": 0, "records": 0}, status_code=202)
        records = split_by_group(doc, alerts, group_by)
        if any(len(value) > MAX_RECORD_BYTES for _, value in records):
            metrics.alerts_invalid.labels("http", "too_large").inc()
            return _error(
                413,
                f"the alerts of one incident group exceed Kafka's record limit ({MAX_RECORD_BYTES} bytes)",
            )
        try:
            await asyncio.wait_for(_publish(runtime, records), settings.kafka_publish_timeout_seconds)
        except Exception as exc:
            log.warning("webhook not persisted, answering 503: %s: %s", exc.__class__.__name__, exc)
            return JSONResponse(
                {"error": "Kafka did not acknowledge the alerts; retry later"},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        metrics.alerts_received.labels("http").inc(len(alerts))
        return JSONResponse(
            {"status": "accepted", "alerts": len(alerts), "records": len(records)}, status_code=202
        )

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        checks: dict[str, str] = {}
        try:
            await asyncio.wait_for(runtime.store.ping(), READY_TIMEOUT)
            checks["store"] = "ok"
        except Exception as exc:
            checks["store"] = f"unreachable: {exc.__class__.__name__}"
        try:
            ok = await runtime.broker.ping(timeout=READY_TIMEOUT)
            checks["kafka"] = "ok" if ok else "unreachable"
        except Exception as exc:
            checks["kafka"] = f"unreachable: {exc.__class__.__name__}"
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage_runtime:
            async with runtime.running():
                yield
        else:
            yield

    return Starlette(
        routes=[
            Route("/api/v1/alerts/alertmanager", alertmanager_webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            *incident_routes(runtime, authorised),
            *remediation_routes(runtime, authorised),
        ],
        lifespan=lifespan,
    )


async def _publish(runtime: Runtime, records: list[tuple[bytes, bytes]]) -> None:
    topic = runtime.settings.kafka_alerts_topic
    futures = [await runtime.broker.publish(value, topic, key=key, no_confirm=True) for key, value in records]
    await asyncio.gather(*futures)
