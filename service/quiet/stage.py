"""The quiet stage (after correlate): which incidents of the batch page, and which are held.

A held incident's first page is withdrawn and its close too if its opening never paged; the
escalate, triage and remediate stages pass over it. A hold that ends here (a threshold met,
an alert no silence covers) lifts at once; holds that end with time or with another
incident are lifted by the noise worker.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Protocol

from service.batch import FLAPPING, Batch, PageIntent
from service.escalate.policy import EscalationPolicy
from service.models import AlertState, AlertStatus, Incident, IncidentStatus, PageAction
from service.quiet.gate import Gate, SilenceLike, SourceIndex
from service.quiet.transitions import flap_quiet_timer, lift, start_hold
from service.ruleset.models import RuleSet
from service.store.database import chunks

# Inhibition sources are the open incidents; more than this many open at once is a storm
# in which the newest explain the rest.
MAX_SOURCES = 5000
# Incidents decoded at once (each may carry hundreds of alerts).
READ_AT_ONCE = 100


class ActiveSilences(Protocol):
    async def active(self, now: datetime) -> Sequence[SilenceLike]: ...


class OpenIncidents(Protocol):
    async def open_versions(self, limit: int) -> dict[str, int]: ...
    async def get_many(self, ids: Sequence[str]) -> Sequence[Incident]: ...


class Reminders(Protocol):
    async def latest_reminder(self, incident_id: str, opening: int) -> int: ...


# The open incidents are read for inhibition at most this often (a storm brings a target in
# every batch); this consumer's own changes go into the index at once, other consumers'
# within this long (and the noise worker corrects a hold decided without them).
SOURCES_TTL_SECONDS = 5.0


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
        self._sources_index: SourceIndex | None = None
        self._read_at = -SOURCES_TTL_SECONDS

    async def __call__(self, batch: Batch) -> Batch:
        firsts = {
            (p.incident_id, p.opening)
            for p in batch.pages
            if p.target == "first" and p.action is PageAction.TRIGGER
        }
        paged_before = {inc.id: inc.paged for inc in batch.changed.values()}
        candidates = {i.id for i in batch.changed.values() if i.is_current and _judged(i, firsts)}
        silences = await self._silences.active(batch.now) if candidates else []
        sources: SourceIndex | None = None
        # Whether each of the batch's incidents was a source when they went into the index.
        taken: dict[str, bool] | None = None
        held: set[tuple[str, int]] = set()
        for inc in batch.changed.values():
            opening = (inc.id, inc.opening)
            if opening in firsts:
                # A new opening: a hold of an earlier one says nothing about it.
                inc.hold = None
            if inc.id in candidates:
                if sources is None and self._gate.inhibits and self._gate.may_be_inhibited(inc):
                    sources = await self._sources(batch)
                    taken = {i.id: SourceIndex.takes(i) for i in batch.changed.values()}
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
        self._finish(batch, taken)
        return batch

    def _finish(self, batch: Batch, taken: dict[str, bool] | None) -> None:
        """After the holds: who to wake, the flapping timers, the sources cache."""
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
        if self._sources_index is not None:
            # Taken before the holds were decided (``_sources``), an incident is taken again
            # only if a hold or a lift changed whether it is a source: the holds change no
            # alert. Taking a storm's incidents twice was 1% of its processing.
            again = [
                i for i in batch.changed.values() if taken is None or taken.get(i.id) != SourceIndex.takes(i)
            ]
            self._sources_index.update(again)

    async def _sources(self, batch: Batch) -> SourceIndex:
        """The inhibition sources: the open incidents, this batch's copies included."""
        if self._sources_index is None:
            self._sources_index = self._gate.index([])
        if time.monotonic() - self._read_at > SOURCES_TTL_SECONDS:
            await refresh_sources(self._sources_index, self._incidents)
            self._read_at = time.monotonic()
        self._sources_index.update(batch.changed.values())
        return self._sources_index

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


async def refresh_sources(
    index: SourceIndex, incidents: OpenIncidents, current: dict[str, int] | None = None
) -> int:
    """Read again only the open incidents whose stored version the index has not taken
    (others' changes, and a commit of this consumer's that lost a race), a hundred at a
    time, and forget the ones no longer open: a storm's thousand open incidents are not
    decoded again every few seconds, nor all at once. ``current``: the open incidents'
    versions, if just read. Returns how many were read."""
    if current is None:
        current = await incidents.open_versions(MAX_SOURCES)
    index.forget([i for i in index.versions if i not in current])
    stale = [i for i, v in current.items() if index.versions.get(i) != v]
    for chunk in chunks(stale, READ_AT_ONCE):
        index.update(await incidents.get_many(chunk), stored=True)
    return len(stale)
