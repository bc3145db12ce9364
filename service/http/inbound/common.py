"""What the three inbound endpoints share: their services, the body, the signature and
time checks, and applying an acknowledgement or resolve to the incident a page is for.

Answers, chosen for webhook senders that retry (or give up on) anything that is not 2xx:

- 404: the endpoint's secret is not configured (the endpoint is off, say which variable);
- 401: a missing, wrong or stale signature; nothing is read further, nothing changes;
- 400: a body that is not what the sender documents, with the exact problem;
- 200 ``{"result": "ignored", "reason": ...}``: signed and well formed but not ours to apply
  (a page incidentd never sent, an event type we do not act on, a page of an earlier
  opening, an ack of a resolved incident), logged; a retry could not change the answer;
- 200 ``{"result": "acknowledged" | "resolved" | "unchanged", ...}``: applied, or a repeat.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from service.batch import APPROVAL
from service.clock import Clock
from service.errors import Conflict
from service.escalate.commands import Ack, CommandHandler, Origin, Resolve
from service.http.bodies import BodyTooLarge, error, read_limited
from service.models import IncidentStatus
from service.store.pages import PageKey
from service.store.store import Store

log = logging.getLogger("service.http.inbound")

# Slack and PagerDuty bodies are a few kB; PagerDuty guarantees delivery up to 55 KB.
MAX_INBOUND_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class InboundSecrets:
    slack: bytes | None = None  # the Slack app's signing secret
    pagerduty: bytes | None = None  # the V3 webhook subscription's secret
    opsgenie: bytes | None = None  # the token the webhook integration sends


@dataclass(frozen=True, slots=True)
class Inbound:
    """What the inbound endpoints use: the page keys and incidents, the commands, the clock."""

    store: Store
    commands: CommandHandler
    clock: Clock
    secrets: InboundSecrets


class Refused(Exception):
    """A request answered 401 (``status``) or 400 with ``reason``; nothing was applied."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason

    def response(self, source: str) -> Response:
        if self.status == 401:
            log.warning("%s webhook refused: %s", source, self.reason)
        return error(self.status, self.reason)


def command_for(kind: str, by: str, note: str | None = None) -> Ack | Resolve:
    """``ack`` or ``resolve`` by ``by`` (a person's name as the sender gives it)."""
    try:
        return Ack(by=by) if kind == "ack" else Resolve(by=by, note=note)
    except ValidationError as exc:
        problem = "; ".join(e["msg"] for e in exc.errors())
        raise Refused(400, f"who pressed ({by[:50]!r}) is not a usable name: {problem}") from None


def not_configured(source: str, variable: str) -> Response:
    return error(404, f"the {source} endpoint is off: set {variable} (or {variable}_FILE) to turn it on")


async def read_body(request: Request) -> bytes:
    try:
        return await read_limited(request, MAX_INBOUND_BYTES)
    except BodyTooLarge:
        raise Refused(413, f"body larger than {MAX_INBOUND_BYTES} bytes") from None
    except ClientDisconnect:
        raise Refused(400, "client disconnected before the body was read") from None


def hmac_hex(secret: bytes, message: bytes) -> str:
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def same(given: str, expected: str) -> bool:
    """Constant-time comparison of two ASCII tokens (anything else never matches)."""
    try:
        return hmac.compare_digest(given.encode("ascii"), expected.encode("ascii"))
    except UnicodeEncodeError:
        return False


def check_fresh(when: datetime, now: datetime, max_age: float, what: str) -> None:
    """Refuse (401) a request stamped more than ``max_age`` seconds away from now."""
    skew = abs((now - when).total_seconds())
    if skew > max_age:
        raise Refused(401, f"stale request: {what} is {skew:.0f}s from now (at most {max_age:.0f}s)")


def ignored(source: str, reason: str) -> Response:
    log.info("%s webhook ignored: %s", source, reason)
    return JSONResponse({"result": "ignored", "reason": reason})


async def apply_to_page(inbound: Inbound, key: str, command: Ack | Resolve, source: str) -> Response:
    """Apply ``command`` to the incident whose trigger page went out under ``key``."""
    page = await inbound.store.pages.find_by_key(key, source)
    if page is None:
        return ignored(source, f"no page of incidentd has the key {key!r}")
    if page.target.startswith(APPROVAL):
        # An approval request: clearing it in the pager app says nothing about the incident
        # (approve or deny on the board or the API). A remediation hand-over is the incident's.
        return ignored(source, f"the page {page.target} asks about a remediation, not the incident")
    # Recorded under the sender's name even when the key was found on another pager's row.
    return await apply_to_incident(inbound, dataclasses.replace(page, integration=source), command)


async def apply_to_incident(inbound: Inbound, page: PageKey, command: Ack | Resolve) -> Response:
    """Apply ``command``, recorded as coming from the page's pager, if the page is for the
    incident's current opening (an old page never acts on a reopened incident)."""
    incident_id, opening, source = page.incident_id, page.opening, page.integration
    inc = await inbound.store.incidents.get(incident_id)
    if inc is None:
        return ignored(source, f"no incident {incident_id}")
    if inc.opening != opening:
        return ignored(
            source, f"the page is for opening {opening} of {incident_id}, now at opening {inc.opening}"
        )
    if isinstance(command, Ack) and inc.status is IncidentStatus.RESOLVED:
        return ignored(source, f"incident {incident_id} is resolved; it cannot be acknowledged")
    if isinstance(command, Ack):
        result = "acknowledged" if inc.acknowledged_at is None else "unchanged"
    else:
        result = "resolved" if inc.status is IncidentStatus.OPEN else "unchanged"
    try:
        after = await inbound.commands.apply(incident_id, command, Origin(source, answered=page.target))
    except Conflict as exc:
        # Resolved between the read above and the command: a 4xx would count against the
        # sender's subscription, and there is nothing left to do.
        return ignored(source, str(exc))
    log.info("%s webhook: %s %s by %s", source, command.command, incident_id, command.by)
    return JSONResponse(
        {
            "result": result,
            "incident": after.id,
            "status": after.status.value,
            "acknowledged_by": after.acknowledged_by,
        }
    )
