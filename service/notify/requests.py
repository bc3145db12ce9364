"""What a page job asks of its pager: the request's text, and who it reaches.

Who a page reaches depends on its target (contacts.yaml):

- ``person:<name>``: that person's contact (``people``); a person with no contact on
  a pager that routes to people is not paged there (:func:`person_unreachable`);
- ``backup:<target>``: the roles' ``backup`` contacts, for a page nobody acknowledged;
- anything else (``first``, an escalation rule, ``remediation:<id>``,
  ``approval:<id>``): the roles' own contacts.

An acknowledgement or close reaches each trigger it answers as that trigger went out: with
the trigger's own target and roles (a role's PagerDuty routing key, say).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from service.batch import APPROVAL, BACKUP, PERSON
from service.models import Incident, PageAction
from service.notify.base import PageRequest, idempotency_key
from service.roles import COMMUNICATIONS, INCIDENT_COMMANDER, TECHNICAL_LEAD
from service.ruleset import RuleSet
from service.ruleset.durations import format_duration
from service.ruleset.models import ContactsFile, PagerContact, Reach
from service.store.pages import NewPage, PageJob, SentTrigger

log = logging.getLogger(__name__)

# Pagers that reach people only through contacts.yaml. (PagerDuty falls back to its
# default routing key, a real service; console and Slack reach a channel.)
ROUTED_PAGERS = ("opsgenie", "jsm")

# Pages that get no backup page of their own: a backup (no chains), a page to a person,
# an approval request (its own timeout decides).
NO_BACKUP = (BACKUP, PERSON, APPROVAL)


def is_backup(target: str) -> bool:
    return target.startswith(BACKUP)


def contact_for(contacts: ContactsFile, pager: str, target: str, role: str) -> PagerContact | None:
    """The contact a page to ``target`` for ``role`` reaches on ``pager``."""
    if target.startswith(PERSON):
        person = contacts.person(target.removeprefix(PERSON))
        return person.on(pager) if person is not None else None
    if is_backup(target):
        return contacts.backup(role, pager)
    contact = contacts.roles.get(role)
    return contact.on(pager) if contact is not None else None


def responders(contacts: ContactsFile, pager: str, sent: SentTrigger) -> list[dict[str, str]]:
    """This pager's contacts for the page, each once (Opsgenie responders, PagerDuty
    routing keys, Slack mentions)."""
    roles = sent.roles or (("",) if sent.target.startswith(PERSON) else ())
    out: list[dict[str, str]] = []
    for role in roles:
        contact = contact_for(contacts, pager, sent.target, role)
        if contact is None:
            continue
        responder = contact.responder() if hasattr(contact, "responder") else contact.model_dump()
        if responder not in out:
            out.append(responder)
    return out


def unrouted(contacts: ContactsFile, job: PageJob) -> list[str]:
    """Roles this page is for that the pager has no contact for (contacts.yaml)."""
    if job.integration not in ROUTED_PAGERS or job.target.startswith(PERSON):
        return []
    return [role for role in job.roles if contact_for(contacts, job.integration, job.target, role) is None]


def person_unreachable(contacts: ContactsFile, job: PageJob) -> str | None:
    """Why a page to a person is not sent on this pager, or None. A person is paged only
    where contacts.yaml says how (console, which reaches everyone, always)."""
    if job.action is not PageAction.TRIGGER or not job.target.startswith(PERSON):
        return None
    if job.integration not in Reach.model_fields:
        return None
    name = job.target.removeprefix(PERSON)
    if contact_for(contacts, job.integration, job.target, "") is not None:
        return None
    return f"no {job.integration} contact for person {name!r} in contacts.yaml (people); not paged there"


def backup_pages(contacts: ContactsFile, job: PageJob, now: datetime) -> list[NewPage]:
    """The backup page a sent trigger leaves behind: due ``backup_after`` later, to the
    roles with a backup contact on this pager (made moot by an acknowledgement)."""
    if job.action is not PageAction.TRIGGER or job.target.startswith(NO_BACKUP):
        return []
    roles = [r for r in job.roles if contacts.backup(r, job.integration) is not None]
    if not roles:
        return []
    after = min(contacts.backup_after_for(r) for r in roles)
    return [
        NewPage(
            job.incident_id,
            job.integration,
            PageAction.TRIGGER,
            job.opening,
            f"{BACKUP}{job.target}",
            tuple(roles),
            job.message,
            job.by,
            due=now + after,
        )
    ]


def build_request(rules: RuleSet, inc: Incident, job: PageJob, sent: SentTrigger) -> PageRequest:
    """The pager call for ``job``: for a trigger, ``sent`` is the job's own target and
    roles; for an ack or close, the trigger it answers."""
    snapshot = inc.snapshot()
    message, _, description = _text(rules, inc, snapshot, job, sent).partition("\n")
    if job.action is PageAction.TRIGGER and is_backup(sent.target):
        after = min((rules.contacts.backup_after_for(r) for r in sent.roles), default=None)
        waited = f" for {format_duration(after)}" if after is not None else ""
        note = f"- Backup page: the page to {', '.join(sent.roles)} went unacknowledged{waited}"
        description = f"{description}\n{note}" if description else note
    return PageRequest(
        action=job.action,
        incident=snapshot,
        opening=job.opening,
        idempotency_key=idempotency_key(inc.id, job.opening, sent.target),
        message=message,
        description=description,
        priority=rules.severity(inc.severity).opsgenie_priority,
        public=rules.severity(inc.severity).status_page,
        target=sent.target,
        roles=sent.roles,
        responders=tuple(responders(rules.contacts, job.integration, sent)),
    )


def _text(rules: RuleSet, inc: Incident, snapshot: dict[str, Any], job: PageJob, sent: SentTrigger) -> str:
    if job.action is PageAction.UPDATE or job.message is not None:
        # Reminders, remediation hand-overs and approval requests carry their own text.
        return job.message or ""
    if job.action is PageAction.ACK:
        lines = [f"[UPDATE] {inc.severity}: {inc.title}", f"- Status: Acknowledged by {job.by or 'unknown'}"]
        return "\n".join([*lines, *role_lines(inc.roles)])
    templates = rules.templates
    template = templates.incident if job.action is PageAction.TRIGGER else templates.close_note
    ctx = {**snapshot, "alert_count": len(inc.alerts), "paged_roles": list(sent.roles)}
    try:
        return template.render(incident=ctx).strip()
    except Exception as exc:  # any error in a user's template, not only Jinja's own
        log.warning("page template failed for %s: %s: %s", inc.id, type(exc).__name__, exc)
        return f"[INCIDENT] {inc.severity}: {inc.title}"


def role_lines(roles: Mapping[str, str]) -> list[str]:
    """Who holds the runbook's roles, as the templates show them (incident.md.j2): the
    Incident Commander always (``@unassigned`` when nobody is), the others when assigned."""
    lines = [f"- IC: @{roles.get(INCIDENT_COMMANDER) or 'unassigned'}"]
    lines += [f"- {role}: @{roles[role]}" for role in (COMMUNICATIONS, TECHNICAL_LEAD) if roles.get(role)]
    return lines


def page_part(job: PageJob, request: PageRequest, attempt: int, **outcome: Any) -> dict[str, Any]:
    """The ``page`` part of page.* events; ``outcome``: reference, error, retrying, failover."""
    part = {
        "integration": job.integration,
        "action": job.action,
        "target": request.target,
        "roles": list(request.roles),
        "opening": job.opening,
        "idempotency_key": request.idempotency_key,
        "attempt": attempt,
        "retrying": outcome.get("retrying", False),
        "error": outcome.get("error"),
        "reference": outcome.get("reference"),
    }
    if outcome.get("failover"):
        part["failover"] = outcome["failover"]
    return part
