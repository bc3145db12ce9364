"""The quiet stage (after correlate): which incidents of the batch page, and which are held.

A held incident's first page is withdrawn and its close too if its opening never paged; the
escalate, triage and remediate stages pass over it. A hold that ends here (a threshold met,
an alert no silence covers) lifts at once; holds that end with time or with another
incident are lifted by the noise worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Protocol

from service.batch import FLAPPING, Batch, PageIntent
from service.escalate.policy import EscalationPolicy
from service.models import AlertState, AlertStatus, Incident, IncidentStatus, PageAction
from service.quiet.gate import Gate, SilenceLike
from service.quiet.transitions import flap_quiet_timer, lift, start_hold
from service.ruleset.models import RuleSet

# Inhibition sources are the open incidents; more than this many open at once is a storm
# in which the newest explain the rest.
MAX_SOURCES = 5000


class ActiveSilences(Protocol):
    async def active(self, now: datetime) -> Sequence[SilenceLike]: ...


class OpenIncidents(Protocol):
    async def list(
        self, status: str | None, severity: str | None, limit: int, offset: int = 0
    ) -> list[Incident]: ...


class Reminders(Protocol):
    async def latest_reminder(self, incident_id: str, opening: int) -> int: ...


async def inhibition_sources(incidents: OpenIncidents, fresher: dict[str, Incident]) -> list[Incident]:
    """The open incidents, with this batch's copies in place of the stored ones."""
    stored = {i.id: i for i in await incidents.list("open", None, MAX_SOURCES)}
    stored.update(fresher)
    return [i for i in stored.values() if i.status is IncidentStatus.OPEN]


class QuietStore(Protocol):
    @property
    def silences(self) -> ActiveSilences: ...
    @property
    def incidents(self) -> OpenIncidents: ...
    @property
    def timers(self) -> Reminders: ...


class QuietStage:
    def __init__(self, rules: RuleSet, store: QuietStore) -> None:
        self._rules = rules
        self._gate = Gate(rules.noise)
        self._policy = EscalationPolicy(rules)
        self._silences = store.silences
        self._incidents = store.incidents
        self._reminders = store.timers

    async def __call__(self, batch: Batch) -> Batch:
        firsts = {
            (p.incident_id, p.opening)
            for p in batch.pages
            if p.target == "first" and p.action is PageAction.TRIGGER
        }
        paged_before = {inc.id: inc.paged for inc in batch.changed.values()}
        candidates = {i.id for i in batch.changed.values() if i.is_current and _judged(i, firsts)}
        silences = await self._silences.active(batch.now) if candidates else []
        sources: list[Incident] | None = None
        held: set[tuple[str, int]] = set()
        for inc in batch.changed.values():
            opening = (inc.id, inc.opening)
            if opening in firsts:
                # A new opening: a hold of an earlier one says nothing about it.
                inc.hold = None
            if inc.id in candidates:
                if sources is None and self._gate.inhibits and self._gate.may_be_inhibited(inc):
                    sources = await inhibition_sources(self._incidents, batch.changed)
                hold = self._gate.decide(inc, batch.now, silences, sources or [], _opened_with(inc, batch))
                if hold is not None:
                    if (event := start_hold(inc, hold)) is not None:
                        batch.events.append(event)
                    held.add(opening)
                elif inc.hold is not None and inc.status is IncidentStatus.OPEN:
                    await self._lift(batch, inc)
            if opening in firsts and opening not in held:
                inc.paged = inc.opening
        batch.pages = [p for p in batch.pages if not _withheld(p, held, firsts, paged_before, batch)]
        if self._gate.inhibits and any(
            e.type == "incident.resolved" and self._gate.may_inhibit(batch.changed[e.incident["id"]])
            for e in batch.events
            if e.incident["id"] in batch.changed
        ):
            # Targets it inhibited proceed: the noise worker lifts them once this batch is stored.
            batch.holds_may_lift = True
        for inc in batch.changed.values():
            if (timer := flap_quiet_timer(inc)) is not None:
                batch.timers.append(timer)
        return batch

    async def _lift(self, batch: Batch, inc: Incident) -> None:
        reminders = await self._reminders.latest_reminder(inc.id, inc.opening)
        lifted = lift(inc, batch.now, self._rules, self._policy, reminders)
        batch.events.extend(lifted.events)
        batch.pages.extend(lifted.pages)
        batch.timers.extend(lifted.timers)


def _judged(inc: Incident, firsts: set[tuple[str, int]]) -> bool:
    """Open incidents are judged; so is an opening that began and resolved in this batch
    (a silenced blip must not page either)."""
    return inc.status is IncidentStatus.OPEN or (inc.id, inc.opening) in firsts


def _opened_with(inc: Incident, batch: Batch) -> list[AlertState] | None:
    """For an opening that resolved in its own batch: the alerts it opened with, as firing."""
    if inc.status is IncidentStatus.OPEN:
        return None
    fps = {
        a["fingerprint"]
        for e in batch.events
        if e.type in ("incident.opened", "incident.reopened") and e.incident["id"] == inc.id
        for a in e.extra.get("alerts", [])
    }
    return [replace(inc.alerts[fp], status=AlertStatus.FIRING) for fp in fps if fp in inc.alerts]


def _withheld(
    page: PageIntent,
    held: set[tuple[str, int]],
    firsts: set[tuple[str, int]],
    paged_before: dict[str, int],
    batch: Batch,
) -> bool:
    key = (page.incident_id, page.opening)
    if page.action is PageAction.TRIGGER and page.target == "first":
        return key in held
    if page.action is PageAction.CLOSE:
        if key in held:
            return True
        if key in firsts:
            return False  # its first page goes out with this batch
        # Nothing was paged for this opening (it resolved while held): nothing to close.
        return paged_before.get(page.incident_id, page.opening) != page.opening
    if page.action is PageAction.UPDATE and page.target == FLAPPING:
        inc = batch.changed.get(page.incident_id)
        # A series nobody was paged for (held) needs no word that it flaps.
        return inc is not None and inc.paged != page.opening
    return False
