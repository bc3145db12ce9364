"""PagerDuty V3 webhooks: an incident acknowledged or resolved in PagerDuty.

Set up: a V3 webhook subscription (service or team filter) for ``incident.acknowledged``
and ``incident.resolved`` to ``https://<incidentd>/api/v1/inbound/pagerduty``; its signing
secret (shown once, when the subscription is made) is ``INCIDENTD_PAGERDUTY_WEBHOOK_SECRET``.

PagerDuty signs the raw body: ``X-PagerDuty-Signature: v1=<hex HMAC-SHA256(secret, body)>``,
several comma-separated while a secret is rotated; one matching ``v1`` is enough
(developer.pagerduty.com, Webhooks > Verifying Signatures). The signature carries no
time, so the signed ``event.occurred_at`` is the freshness check: PagerDuty retries for
about 20 minutes, and an event more than an hour old is refused.

The payload (Webhooks > V3 Overview): ``event.event_type``, ``event.occurred_at``,
``event.agent`` (who: ``summary`` is the user's name; ``type`` says user or service), and
``event.data``, the incident, whose ``incident_key`` is the Events API ``dedup_key``
incidentd sent (its page's idempotency key). PagerDuty gives up on a 4xx and turns the
subscription off after three in a row, so everything signed and well formed is a 200.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.http.inbound.common import (
    Inbound,
    Refused,
    apply_to_page,
    check_fresh,
    command_for,
    hmac_hex,
    ignored,
    not_configured,
    read_body,
    same,
)

PATH = "/api/v1/inbound/pagerduty"
SOURCE = "pagerduty"
MAX_AGE_SECONDS = 60 * 60
COMMANDS = {"incident.acknowledged": "ack", "incident.resolved": "resolve"}


def verify(secret: bytes, header: str | None, body: bytes) -> None:
    if not header:
        raise Refused(401, "missing X-PagerDuty-Signature")
    expected = "v1=" + hmac_hex(secret, body)
    given = [part.strip() for part in header.split(",") if part.strip().startswith("v1=")]
    if not given:
        raise Refused(401, "X-PagerDuty-Signature has no v1 signature")
    if not any([same(g, expected) for g in given]):  # every one compared, whichever matches
        raise Refused(401, "X-PagerDuty-Signature does not match the body (wrong secret?)")


def event_of(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise Refused(400, f"the body is not JSON: {exc}") from None
    event = doc.get("event") if isinstance(doc, dict) else None
    if not isinstance(event, dict):
        raise Refused(400, "expected a V3 webhook body, a JSON object with an 'event' object")
    if not isinstance(event.get("event_type"), str):
        raise Refused(400, "event.event_type: expected a string")
    return event


def occurred_at(event: dict[str, Any]) -> datetime:
    value = event.get("occurred_at")
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise Refused(400, f"event.occurred_at: expected an ISO 8601 time, got {value!r}") from None
    if when.tzinfo is None:
        raise Refused(400, f"event.occurred_at: expected a time with its zone, got {value!r}")
    return when


def incident_key(event: dict[str, Any]) -> str | None:
    data = event.get("data")
    if not isinstance(data, dict):
        raise Refused(400, "event.data: expected the incident object")
    key = data.get("incident_key")
    return key if isinstance(key, str) and key else None


def agent_of(event: dict[str, Any]) -> str:
    """Who acted: the agent's summary (a user's name, or the service for automatic ones)."""
    agent = event.get("agent")
    if isinstance(agent, dict):
        for field in ("summary", "email", "id"):
            if isinstance(agent.get(field), str) and agent[field].strip():
                return str(agent[field])
    return "PagerDuty"


async def webhook(inbound: Inbound, request: Request) -> Response:
    secret = inbound.secrets.pagerduty
    if secret is None:
        return not_configured("PagerDuty webhook", "INCIDENTD_PAGERDUTY_WEBHOOK_SECRET")
    try:
        body = await read_body(request)
        verify(secret, request.headers.get("x-pagerduty-signature"), body)
        event = event_of(body)
        check_fresh(occurred_at(event), inbound.clock.now(), MAX_AGE_SECONDS, "event.occurred_at")
        kind = COMMANDS.get(event["event_type"])
        if kind is None:
            return ignored(SOURCE, f"event type {event['event_type']!r} is not acted on")
        key = incident_key(event)
        if key is None:
            return ignored(SOURCE, "the incident has no incident_key (not paged by incidentd)")
        command = command_for(kind, agent_of(event))
    except Refused as refused:
        return refused.response(SOURCE)
    return await apply_to_page(inbound, key, command, SOURCE)


def route(inbound: Inbound) -> Route:
    async def pagerduty_webhook(request: Request) -> Response:
        return await webhook(inbound, request)

    return Route(PATH, pagerduty_webhook, methods=["POST"])
