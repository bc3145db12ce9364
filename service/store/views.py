"""What people look at: incidents with their timeline, pages and remediation jobs, and
the noise control in force (silences, windows, inhibition, thresholds, heartbeats)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from service.clock import Clock
from service.models import Hold, HoldKind, Incident, IncidentStatus
from service.ruleset.noise import FlapRule, Heartbeat, InhibitRule, Maintenance, NoiseFile, Threshold
from service.ruleset.time_intervals import NamedTimeInterval
from service.store.outbox import TimelineItem
from service.store.pages import PageView
from service.store.remediations import RemediationJob
from service.store.silences import Silence
from service.store.store import Store

# ``hold``: one kind, ``any`` (held now) or ``none`` (nothing holds it: it pages).
HOLDS = (*(k.value for k in HoldKind), "any", "none")
# How far ahead a window's next change is looked for.
WINDOW_HORIZON = timedelta(days=8)
# More open incidents than this at once is a storm; the noise worker reads as many.
MAX_OPEN = 5000


def hold_in_force(inc: Incident) -> Hold | None:
    """A resolved incident keeps the hold it resolved under (the reason it never paged),
    but nothing holds it any more."""
    return inc.hold if inc.status is IncidentStatus.OPEN else None


def inhibitors(hold: Hold | None) -> list[str]:
    """The id of the incident an inhibited incident is caused by (none if not inhibited)."""
    if hold is None or hold.kind is not HoldKind.INHIBITED:
        return []
    return [hold.by]


@dataclass(frozen=True, slots=True)
class IncidentFilter:
    """``status``: open, triggered (open, unacknowledged), acknowledged (open, acknowledged)
    or resolved; ``phase``: the commander's phase; ``hold``: one of ``HOLDS``;
    ``flapping``: whether it is flapping."""

    status: str | None = None
    severity: str | None = None
    phase: str | None = None
    hold: str | None = None
    flapping: bool | None = None

    @property
    def stored_status(self) -> str | None:
        """The status column that narrows the rows read."""
        if self.status in ("triggered", "acknowledged"):
            return "open"
        if self.status is None and self.hold not in (None, "none"):
            return "open"  # only an open incident is held
        return self.status

    @property
    def in_columns(self) -> bool:
        """Whether the columns alone answer it (no document to read)."""
        return (
            self.stored_status == self.status
            and self.phase is None
            and self.hold is None
            and self.flapping is None
        )

    def wants(self, inc: Incident) -> bool:
        if self.phase is not None and inc.phase.value != self.phase:
            return False
        if self.hold is not None and not _hold_wanted(self.hold, hold_in_force(inc)):
            return False
        if self.flapping is not None and (inc.flapping is not None) != self.flapping:
            return False
        if self.status == "triggered":
            return inc.acknowledged_at is None
        if self.status == "acknowledged":
            return inc.acknowledged_at is not None
        return True


def _hold_wanted(wanted: str, hold: Hold | None) -> bool:
    if wanted == "any":
        return hold is not None
    if wanted == "none":
        return hold is None
    return hold is not None and hold.kind.value == wanted


@dataclass(frozen=True, slots=True)
class IncidentDetail:
    incident: Incident
    timeline: list[TimelineItem]
    pages: list[PageView]
    remediations: list[RemediationJob]
    # The open incidents it inhibits (their hold names it), oldest first.
    caused: list[Incident] = field(default_factory=list)
    # The incidents that inhibit it, while it is inhibited (any that still exist).
    sources: list[Incident] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class WindowState:
    window: Maintenance
    active: bool
    next_change: datetime | None  # when it next goes on or off (None: not within a week)


@dataclass(frozen=True, slots=True)
class HeartbeatState:
    heartbeat: Heartbeat
    last_seen: datetime | None  # None: not watched yet (the noise worker begins it)
    missing_since: datetime | None


@dataclass(frozen=True, slots=True)
class NoiseState:
    """The noise control in force at ``at``: the rules with what the store knows of them."""

    at: datetime
    silences: list[Silence]  # active (ending soonest first), then pending (starting soonest)
    windows: list[WindowState]
    inhibit_rules: list[InhibitRule]
    flapping: FlapRule | None
    thresholds: list[Threshold]
    heartbeats: list[HeartbeatState]


class IncidentViews:
    def __init__(self, store: Store, clock: Clock | None = None) -> None:
        self._store = store
        self._clock = clock

    def now(self) -> datetime:
        """The service's clock (a test may run it behind the wall's), or the wall's."""
        return self._clock.now() if self._clock is not None else datetime.now(UTC)

    async def find(self, where: IncidentFilter, limit: int) -> list[Incident]:
        """Newest first. Status and severity are columns; acknowledgement, phase, hold and
        flapping live in the incident's document, so those filters read pages of the
        narrowed rows."""
        stored = where.stored_status
        if where.in_columns:
            return await self._store.incidents.list(stored, where.severity, limit)
        found: list[Incident] = []
        offset, page = 0, max(limit, 200)
        while len(found) < limit:
            rows = await self._store.incidents.list(stored, where.severity, page, offset)
            found += [inc for inc in rows if where.wants(inc)]
            if len(rows) < page:
                break
            offset += page
        return found[:limit]

    async def caused_by(self, incident_id: str) -> list[Incident]:
        """The open incidents inhibited by ``incident_id``, oldest first."""
        inhibited = await self.find(IncidentFilter("open", hold=HoldKind.INHIBITED.value), MAX_OPEN)
        found = [i for i in inhibited if incident_id in inhibitors(i.hold)]
        return sorted(found, key=lambda i: i.opened_at)

    async def detail(self, incident_id: str) -> IncidentDetail | None:
        inc = await self._store.incidents.get(incident_id)
        if inc is None:
            return None
        sources = [await self._store.incidents.get(i) for i in inhibitors(hold_in_force(inc))]
        return IncidentDetail(
            inc,
            await self._store.outbox.timeline(incident_id),
            await self._store.pages.for_incident(incident_id),
            await self._store.remediations.list(incident_id),
            await self.caused_by(incident_id),
            [src for src in sources if src is not None],
        )

    async def noise(self, noise: NoiseFile) -> NoiseState:
        now = self.now()
        # Expired ones are history (GET /api/v2/silences lists them).
        silences = [s for s in await self._store.silences.list_all() if s.state(now) != "expired"]
        silences.sort(key=lambda s: (0, s.ends_at) if s.state(now) == "active" else (1, s.starts_at))
        windows = []
        for m in noise.maintenance:
            intervals = noise.intervals(m)
            on = any(t.contains(now) for t in intervals)
            windows.append(WindowState(m, on, _next_change(intervals, now, on)))
        rows = {r.name: r for r in await self._store.heartbeats.all()}
        beats = []
        for h in noise.heartbeats:
            row = rows.get(h.name)
            beats.append(
                HeartbeatState(h, row.last_seen if row else None, row.missing_since if row else None)
            )
        return NoiseState(
            now, silences, windows, list(noise.inhibit_rules), noise.flapping, list(noise.thresholds), beats
        )

    # Last in the class: a method named ``list`` shadows the builtin in the annotations
    # of the methods after it.
    async def list(
        self, status: str | None, severity: str | None, limit: int, phase: str | None = None
    ) -> list[Incident]:
        return await self.find(IncidentFilter(status, severity, phase), limit)


def _next_change(intervals: list[NamedTimeInterval], now: datetime, on: bool) -> datetime | None:
    """When a window of these intervals (on while any of them is) next goes on or off:
    one interval ending while another still covers changes nothing."""
    at = now
    for _ in range(64):
        changes = [c for t in intervals if (c := t.next_change(at, now + WINDOW_HORIZON - at)) is not None]
        if not changes:
            return None
        at = min(changes)
        if any(t.contains(at) for t in intervals) != on:
            return at
    return None
