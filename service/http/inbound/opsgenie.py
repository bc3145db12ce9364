"""Opsgenie (and Jira Service Management) webhook integration: an alert acknowledged or
closed in Opsgenie.

Set up: a Webhook integration posting to ``https://<incidentd>/api/v1/inbound/opsgenie``
for "alert is acknowledged" and "alert is closed", with the custom header
``X-Incidentd-Token: <secret>``; the same secret is ``INCIDENTD_OPSGENIE_WEBHOOK_SECRET``.

Opsgenie does not sign its webhooks: the shared secret in a header is the check
(compared in constant time; a header, not a query parameter, so it stays out of access
logs). The payload (Opsgenie docs, "Alert action data"): ``action`` (``Acknowledge``,
``Close``, ...), ``alert.alias`` (the page's idempotency key, which incidentd sent as the
alias), ``alert.username`` (who acted), ``alert.updatedAt`` (nanoseconds since the epoch
in Opsgenie's examples; the unit is read from the magnitude), ``source.name``/``type``.
An action whose ``alert.updatedAt`` is more than an hour old is refused as stale: not a
security boundary (the token is static), it keeps a long-delayed delivery from acting.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
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
    ignored,
    not_configured,
    read_body,
    same,
)

PATH = "/api/v1/inbound/opsgenie"
SOURCE = "opsgenie"
TOKEN_HEADER = "x-incidentd-token"
MAX_AGE_SECONDS = 60 * 60
COMMANDS = {"Acknowledge": "ack", "Close": "resolve"}


def verify(secret: bytes, token: str | None) -> None:
    if not token:
        raise Refused(401, "missing X-Incidentd-Token (the webhook integration's custom header)")
    if not same(token, secret.decode()):
        raise Refused(401, "X-Incidentd-Token is wrong")


def document(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise Refused(400, f"the body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise Refused(400, "expected a JSON object")
    if not isinstance(doc.get("action"), str):
        raise Refused(400, "action: expected a string")
    if not isinstance(doc.get("alert"), dict):
        raise Refused(400, "alert: expected an object")
    return doc


def updated_at(alert: dict[str, Any]) -> datetime | None:
    """``alert.updatedAt`` in seconds, nanoseconds, micro- or milliseconds (by size)."""
    value = alert.get("updatedAt")
    if value is None:
        return None
    # Finite and below 1e20 (nanoseconds reach 1.8e18 today): JSON's 1e400 is infinity, and
    # dividing infinity down to seconds would never end.
    if type(value) not in (int, float) or not 0 < value < 1e20:
        raise Refused(400, f"alert.updatedAt: expected a positive epoch time, got {value!r}")
    seconds = float(value)
    while seconds > 1e11:  # past year 5138 in seconds: a finer unit
        seconds /= 1000
    return datetime.fromtimestamp(seconds, UTC)


def alias_of(alert: dict[str, Any]) -> str | None:
    alias = alert.get("alias")
    return alias if isinstance(alias, str) and alias else None


def actor(doc: dict[str, Any]) -> str:
    source = doc.get("source")
    named = source.get("name") if isinstance(source, dict) else None
    for value in (doc["alert"].get("username"), named):
        if isinstance(value, str) and value.strip():
            return value
    return "Opsgenie"


async def webhook(inbound: Inbound, request: Request) -> Response:
    secret = inbound.secrets.opsgenie
    if secret is None:
        return not_configured("Opsgenie webhook", "INCIDENTD_OPSGENIE_WEBHOOK_SECRET")
    try:
        verify(secret, request.headers.get(TOKEN_HEADER))
        doc = document(await read_body(request))
        when = updated_at(doc["alert"])
        if when is not None:
            check_fresh(when, inbound.clock.now(), MAX_AGE_SECONDS, "alert.updatedAt")
        kind = COMMANDS.get(doc["action"])
        if kind is None:
            return ignored(SOURCE, f"action {doc['action']!r} is not acted on")
        alias = alias_of(doc["alert"])
        if alias is None:
            return ignored(SOURCE, "the alert has no alias (not paged by incidentd)")
        command = command_for(kind, actor(doc))
    except Refused as refused:
        return refused.response(SOURCE)
    return await apply_to_page(inbound, alias, command, SOURCE)


def route(inbound: Inbound) -> Route:
    async def opsgenie_webhook(request: Request) -> Response:
        return await webhook(inbound, request)

    return Route(PATH, opsgenie_webhook, methods=["POST"])
