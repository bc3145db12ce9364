"""What each command does to an incident, as a pure decision: the incident is changed in
place and the :class:`Change` says what it causes (the event, pages, timers). No I/O:
the handler loads, decides, and stores the change with its effects in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from service.batch import ACTION_ITEM, MANUAL, PERSON, EventIntent, PageIntent, TimerIntent
from service.clock import iso
from service.errors import Conflict, Invalid
from service.escalate.command_models import (
    Ack,
    AddActionItem,
    AddNote,
    Assign,
    Escalate,
    IncidentCommand,
    PostmortemDone,
    PostUpdate,
    Resolve,
    SetSeverity,
    SetStatus,
)
from service.escalate.policy import TAG, EscalationPolicy, escalation_key
from service.escalate.updates import post_update
from service.models import Incident, IncidentStatus, PageAction, Phase
from service.postmortem.reminders import first_reminder
from service.ruleset.models import RuleSet
from service.store.timers import REMINDER


@dataclass(slots=True)
class Change:
    """What a command caused. ``suffix`` None: nothing changed (a repeat)."""

    suffix: str | None
    part: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    pages: list[PageIntent] = field(default_factory=list)
    timers: list[TimerIntent] = field(default_factory=list)
    # Events besides the command's own (comms.update for an [UPDATE] posted).
    events: list[EventIntent] = field(default_factory=list)
    # Whether ``pages`` go to the comms pagers only ([UPDATE] messages).
    comms_only: bool = False
    # The only pagers ``pages`` go to (those of them configured), if not all.
    only: tuple[str, ...] | None = None


NOTHING = Change(None)

# The pagers that keep a follow-up ticket, to which action items added after a resolve go.
TICKET_PAGERS = ("jira",)


class Decisions:
    def __init__(self, rules: RuleSet) -> None:
        self._rules = rules
        self._policy = EscalationPolicy(rules)

    def decide(self, inc: Incident, cmd: IncidentCommand, now: datetime, reminders: int = 0) -> Change:
        """``reminders``: the highest [UPDATE] reminder sequence of the opening so far (the
        store's; an update and a change of severity number theirs after it)."""
        if inc.status is IncidentStatus.RESOLVED and _for_open_only(inc, cmd):
            return NOTHING
        match cmd:
            case Ack():
                return self._ack(inc, cmd, now)
            case Resolve():
                return self._resolve(inc, cmd, now)
            case Assign():
                return self._assign(inc, cmd, now)
            case SetStatus():
                return self._status(inc, cmd, now, reminders)
            case AddNote():
                return self._note(inc, cmd, now)
            case SetSeverity():
                return self._severity(inc, cmd, now, reminders)
            case Escalate():
                return self._escalate(inc, cmd, now)
            case PostUpdate():
                return self._update(inc, cmd, now, reminders)
            case AddActionItem():
                return self._action_item(inc, cmd, now)
            case PostmortemDone():
                return self._postmortem_done(inc, cmd, now)
        raise AssertionError(f"no decision for {cmd.command}")

    @staticmethod
    def _ack(inc: Incident, cmd: Ack, now: datetime) -> Change:
        if inc.acknowledged_at is not None:
            return NOTHING
        inc.acknowledged_at, inc.acknowledged_by = now, cmd.by
        # Acknowledge the pages too (PagerDuty acknowledge, Opsgenie acknowledge).
        return Change(
            "incident.acknowledged", pages=[PageIntent(inc.id, PageAction.ACK, inc.opening, by=cmd.by)]
        )

    def _resolve(self, inc: Incident, cmd: Resolve, now: datetime) -> Change:
        if inc.status is IncidentStatus.RESOLVED:
            return NOTHING
        inc.status, inc.resolved_at, inc.phase = IncidentStatus.RESOLVED, now, Phase.RESOLVED
        # Close the pages of this opening; the worker skips pagers that were never paged.
        page = PageIntent(inc.id, PageAction.CLOSE, inc.opening)
        # The postmortem is due (severities.yaml postmortem_due): reminders until it is done.
        timers = first_reminder(self._rules, inc, now)
        return Change("incident.resolved", part={"note": cmd.note}, pages=[page], timers=timers)

    @staticmethod
    def _assign(inc: Incident, cmd: Assign, now: datetime) -> Change:
        if inc.roles.get(cmd.role) == cmd.who:
            return NOTHING
        inc.roles[cmd.role] = cmd.who
        # The person is paged through their own contact (contacts.yaml `people`), if any.
        page = PageIntent(inc.id, PageAction.TRIGGER, inc.opening, f"{PERSON}{cmd.who}", [cmd.role])
        return Change(
            "incident.updated",
            part={"role": cmd.role, "who": cmd.who},
            reasons=[f"assigned:{cmd.role}"],
            pages=[page],
        )

    def _status(self, inc: Incident, cmd: SetStatus, now: datetime, reminders: int) -> Change:
        if cmd.phase is Phase.RESOLVED:
            change = self._resolve(inc, Resolve(by=cmd.by, note=cmd.root_cause), now)
            _set_cause_and_eta(inc, cmd, change.reasons)
            change.part.update(phase=cmd.phase.value)
            return change
        reasons: list[str] = []
        if inc.phase is not cmd.phase:
            inc.phase = cmd.phase
            reasons.append(f"phase:{cmd.phase.value}")
        _set_cause_and_eta(inc, cmd, reasons)
        if not reasons:
            return NOTHING
        part = {"phase": cmd.phase.value, "root_cause": cmd.root_cause, "eta": cmd.eta}
        change = Change("incident.updated", part=part, reasons=reasons)
        if reasons[0].startswith("phase:"):
            # A new phase is news: an [UPDATE] goes out now (to the channel and the status
            # page) and the cadence restarts from it.
            post = self._update(inc, PostUpdate(by=cmd.by), now, reminders)
            change.pages, change.timers, change.events = post.pages, post.timers, post.events
            change.comms_only = True
        return change

    @staticmethod
    def _note(inc: Incident, cmd: AddNote, now: datetime) -> Change:
        inc.latest_note = {"text": cmd.text, "by": cmd.by, "at": iso(now)}
        return Change("incident.updated", part={"text": cmd.text}, reasons=["note"])

    def _severity(self, inc: Incident, cmd: SetSeverity, now: datetime, reminders: int) -> Change:
        if cmd.severity not in self._rules.severities:
            raise Invalid(f"severity must be one of {', '.join(self._rules.severities)}; got {cmd.severity}")
        if cmd.severity == inc.severity:
            return NOTHING
        old, new = self._rules.severity(inc.severity), self._rules.severity(cmd.severity)
        inc.severity = new.name
        if inc.acknowledged_at is None:
            # The response clock is re-planned from now under the new severity's time.
            inc.response_due_at = now + new.response_time
        direction = "raised" if new.rank < old.rank else "lowered"
        # The new severity's matrix rules start now (a rule of the old one no longer applies
        # when its timer fires), tagged with this change: the same rule may have been
        # planned, and skipped, under this severity before.
        planned = self._policy.timers(inc, start=now, tag=f"{TAG}{int(now.timestamp())}")
        timers = [t for t in planned if not t.name.startswith(REMINDER)]
        if new.follow_up is not None and old.follow_up is None:
            # A severity with an [UPDATE] cadence where there was none: it starts now, and any
            # reminder left from before is superseded.
            inc.update_sequence = max(reminders, inc.update_sequence) + 1
            timers.append(
                TimerIntent(inc.id, inc.opening, f"{REMINDER}{inc.update_sequence}", now + new.follow_up)
            )
        return Change(
            "incident.updated",
            part={"severity": new.name, "reason": cmd.reason},
            reasons=[f"severity_{direction}:{old.name}->{new.name}"],
            timers=timers,
        )

    def _escalate(self, inc: Incident, cmd: Escalate, now: datetime) -> Change:
        unknown = [r for r in cmd.roles if r not in self._policy.known_roles()]
        if unknown:
            raise Invalid(f"unknown role(s) {', '.join(unknown)}: not in escalation.yaml or contacts.yaml")
        n = 1 + sum(1 for key in inc.escalations if key.startswith(f"{inc.opening}:{MANUAL}"))
        rule = f"{MANUAL}{n}"
        roles = list(dict.fromkeys(cmd.roles))
        inc.escalations[escalation_key(inc, rule)] = iso(now)
        inc.manual_roles[escalation_key(inc, rule)] = roles
        escalation = {"rule": rule, "kind": "manual", "roles": roles, "reason": cmd.reason, "by": cmd.by}
        page = PageIntent(inc.id, PageAction.TRIGGER, inc.opening, rule, roles)
        return Change(
            "incident.escalated",
            part={"reason": cmd.reason},
            extra={"escalation": escalation},
            pages=[page],
        )

    def _update(self, inc: Incident, cmd: PostUpdate, now: datetime, reminders: int) -> Change:
        """An [UPDATE] now, numbered after every reminder of this opening so far; the
        reminders scheduled before it are superseded (``update_sequence``)."""
        sequence = max(reminders, inc.update_sequence) + 1
        post = post_update(self._rules, inc, sequence, now, cmd.text)
        inc.update_sequence = sequence + 1 if post.following else sequence
        return Change(
            "incident.updated",
            part={"text": cmd.text},
            reasons=["update_posted"],
            pages=[post.page],
            timers=post.following,
            events=[post.event],
            comms_only=True,
        )

    @staticmethod
    def _action_item(inc: Incident, cmd: AddActionItem, now: datetime) -> Change:
        due = cmd.due.isoformat() if cmd.due else None
        if any((a["item"], a["owner"], a["due"]) == (cmd.item, cmd.owner, due) for a in inc.action_items):
            return NOTHING
        item = {"item": cmd.item, "owner": cmd.owner, "due": due, "by": cmd.by, "at": iso(now)}
        inc.action_items.append(item)
        change = Change(
            "incident.updated",
            part={"item": cmd.item, "owner": cmd.owner, "due": due},
            reasons=["action_item"],
        )
        if inc.status is IncidentStatus.RESOLVED:
            # The follow-up ticket was filed (or is being filed) at the resolve: the item goes
            # to it too. One job per item; the ticket's pager skips one it already lists.
            target = f"{ACTION_ITEM}{len(inc.action_items)}"
            text = f"[ACTION ITEM] {inc.severity}: {inc.title}\n- {cmd.item}"
            change.pages = [
                PageIntent(inc.id, PageAction.UPDATE, inc.opening, target, message=text, by=cmd.by)
            ]
            change.only = TICKET_PAGERS
        return change

    @staticmethod
    def _postmortem_done(inc: Incident, cmd: PostmortemDone, now: datetime) -> Change:
        done = inc.postmortem_done
        if done is not None and (cmd.url is None or cmd.url == done.get("url")):
            return NOTHING
        inc.postmortem_done = {"by": cmd.by, "at": iso(now), "url": cmd.url}
        return Change("incident.updated", part={"url": cmd.url}, reasons=["postmortem_done"])


def _for_open_only(inc: Incident, cmd: IncidentCommand) -> bool:
    """On a resolved incident: True if the command is a repeat of its resolve (nothing to
    do); raises Conflict for a command that applies to open incidents only."""
    if isinstance(cmd, Resolve | AddNote | Assign | AddActionItem | PostmortemDone):
        return False
    if isinstance(cmd, SetStatus) and cmd.phase is Phase.RESOLVED:
        return True
    raise Conflict(f"incident {inc.id} is resolved; {cmd.command} applies to open incidents")


def _set_cause_and_eta(inc: Incident, cmd: SetStatus, reasons: list[str]) -> None:
    if cmd.root_cause is not None and cmd.root_cause != inc.root_cause:
        inc.root_cause = cmd.root_cause
        reasons.append("root_cause")
    if cmd.eta is not None and cmd.eta != inc.eta:
        inc.eta = cmd.eta
        reasons.append("eta")
