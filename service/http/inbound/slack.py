"""Slack interactivity: the Acknowledge and Resolve buttons of the ``[INCIDENT]`` message.

Set up: in the Slack app that owns the incoming webhook, turn on Interactivity with the
Request URL ``https://<incidentd>/api/v1/inbound/slack/interactivity``, and give incidentd
the app's Signing Secret as ``INCIDENTD_SLACK_SIGNING_SECRET`` (or ``..._FILE``).

Slack signs every request as its SDK's ``SignatureVerifier`` checks it:
``X-Slack-Signature: v0=<hex HMAC-SHA256(signing secret, "v0:<timestamp>:<raw body>")>``
with ``X-Slack-Request-Timestamp`` in Unix seconds, refused more than five minutes from
the service clock (a captured request cannot be replayed later). The body is a form with
one ``payload`` field, a JSON ``block_actions`` document: ``actions[0].action_id`` (which
button) and ``.value`` (the incident and opening the message was for, written by
``notify/slack.py``), ``user.username`` / ``user.name`` / ``user.id`` (who pressed).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.http.inbound.common import (
    Inbound,
    Refused,
    apply_to_incident,
    check_fresh,
    command_for,
    hmac_hex,
    ignored,
    not_configured,
    read_body,
    same,
)
from service.notify.slack import ACK_ACTION, RESOLVE_ACTION
from service.store.pages import PageKey

PATH = "/api/v1/inbound/slack/interactivity"
SOURCE = "slack"
MAX_AGE_SECONDS = 5 * 60  # Slack's own advice and slack_sdk's check
COMMANDS = {ACK_ACTION: "ack", RESOLVE_ACTION: "resolve"}


def verify(secret: bytes, headers: Any, body: bytes, now: datetime) -> None:
    """Raise :class:`Refused` (401) unless Slack signed ``body`` within the time window."""
    stamp, signature = headers.get("x-slack-request-timestamp"), headers.get("x-slack-signature")
    if not stamp or not signature:
        raise Refused(401, "missing X-Slack-Request-Timestamp or X-Slack-Signature")
    if not stamp.isascii() or not stamp.isdigit():
        raise Refused(401, "X-Slack-Request-Timestamp is not a Unix time in seconds")
    expected = "v0=" + hmac_hex(secret, b"v0:" + stamp.encode() + b":" + body)
    if not same(signature, expected):
        raise Refused(401, "X-Slack-Signature does not match the body (wrong signing secret?)")
    check_fresh(datetime.fromtimestamp(int(stamp), UTC), now, MAX_AGE_SECONDS, "X-Slack-Request-Timestamp")


def payload_of(body: bytes) -> dict[str, Any]:
    """The interaction payload from the form body."""
    try:
        form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        raise Refused(400, "the body is not UTF-8 form data") from None
    fields = form.get("payload")
    if not fields or len(fields) != 1:
        raise Refused(400, "expected a form (application/x-www-form-urlencoded) with one 'payload' field")
    try:
        payload = json.loads(fields[0])
    except ValueError as exc:
        raise Refused(400, f"the 'payload' field is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise Refused(400, "the 'payload' field is not a JSON object")
    return payload


def pressed(payload: dict[str, Any]) -> tuple[str, str]:
    """The first action's ``(action_id, value)``."""
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        raise Refused(400, "payload.actions: expected a non-empty list of actions")
    action_id, value = actions[0].get("action_id"), actions[0].get("value")
    if not isinstance(action_id, str):
        raise Refused(400, "payload.actions[0].action_id: expected a string")
    return action_id, value if isinstance(value, str) else ""


def target_of(value: str) -> tuple[str, int]:
    """The incident and opening a button's value names (``notify/slack.py`` writes it)."""
    try:
        doc = json.loads(value)
        incident, opening = doc["incident"], doc["opening"]
    except (ValueError, TypeError, KeyError):
        raise Refused(400, 'payload.actions[0].value: expected {"incident": ..., "opening": ...}') from None
    if not isinstance(incident, str) or not incident or type(opening) is not int:
        raise Refused(400, "payload.actions[0].value: incident must be a string and opening an integer")
    return incident, opening


def presser(payload: dict[str, Any]) -> str:
    user = payload.get("user")
    if isinstance(user, dict):
        for field in ("username", "name", "id"):
            if isinstance(user.get(field), str) and user[field].strip():
                return str(user[field])
    raise Refused(400, "payload.user: expected username, name or id")


async def interactivity(inbound: Inbound, request: Request) -> Response:
    secret = inbound.secrets.slack
    if secret is None:
        return not_configured("Slack interactivity", "INCIDENTD_SLACK_SIGNING_SECRET")
    try:
        body = await read_body(request)
        verify(secret, request.headers, body, inbound.clock.now())
        payload = payload_of(body)
        if payload.get("type") != "block_actions":
            return ignored(SOURCE, f"interaction type {payload.get('type')!r} is not a button press")
        action_id, value = pressed(payload)
        if action_id not in COMMANDS:
            return ignored(SOURCE, f"action {action_id!r} is not one of incidentd's buttons")
        incident_id, opening = target_of(value)
        command = command_for(COMMANDS[action_id], presser(payload))
    except Refused as refused:
        return refused.response(SOURCE)
    # The buttons are on the [INCIDENT] message, the first page of that opening.
    return await apply_to_incident(inbound, PageKey(incident_id, opening, "first", SOURCE), command)


def route(inbound: Inbound) -> Route:
    async def slack_interactivity(request: Request) -> Response:
        return await interactivity(inbound, request)

    return Route(PATH, slack_interactivity, methods=["POST"])
