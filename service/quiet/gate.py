"""Does an open incident page now? A pure decision over its alerts, the active silences, the
maintenance windows, the open incidents that may inhibit it and its open threshold.

An incident is held (muted) when every one of its firing alerts is muted; one alert that is
not muted is enough to page, as in Alertmanager, where silences and inhibition act per alert.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from service.models import AlertState, AlertStatus, Hold, HoldKind, Incident, IncidentStatus
from service.ruleset.durations import format_duration
from service.ruleset.noise import NoiseFile, Threshold


class SilenceLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def created_by(self) -> str: ...
    @property
    def comment(self) -> str: ...
    @property
    def ends_at(self) -> datetime: ...
    def matches(self, labels: Mapping[str, str]) -> bool: ...


@dataclass(frozen=True, slots=True)
class Mute:
    kind: HoldKind
    by: str
    reason: str
    until: datetime | None


@dataclass(frozen=True, slots=True)
class _Source:
    id: str
    title: str
    target_side: bool  # the source alert also matches the rule's targets (two-sided)


# Per equal-labels key, a few sources are enough: one to name, and others for when it is the
# target's own incident or a two-sided one.
_PER_KEY = 4


class SourceIndex:
    """The firing alerts of open incidents that can inhibit, per inhibit rule, keyed by the
    rule's ``equal`` labels, so judging a target is a lookup rather than a scan of every open
    alert. Kept up to date incident by incident (:meth:`update`)."""

    def __init__(self, noise: NoiseFile, sources: Sequence[Incident] = ()) -> None:
        self._noise = noise
        self._by_rule: list[dict[tuple[str, ...], list[_Source]]] = [{} for _ in noise.inhibit_rules]
        self._keys: dict[str, set[tuple[int, tuple[str, ...]]]] = {}
        # The only labels _add reads: alerts that agree on them add the same entries.
        self._read = tuple(
            sorted(
                {m.name for r in noise.inhibit_rules for m in (*r.source_matchers, *r.target_matchers)}
                | {n for r in noise.inhibit_rules for n in r.equal}
            )
        )
        # The stored version each incident was taken at; for a batch's copy, the version its
        # commit stores (one on from the one read), so this consumer's own writes are not read
        # back: a commit that lost a race stored nothing, and the version read differs.
        self.versions: dict[str, int] = {}
        self.update(sources, stored=True)

    def update(self, incidents: Iterable[Incident], *, stored: bool = False) -> None:
        """Take these incidents as they are now (open or not, firing or not); ``stored``: as
        read from the store (their versions are the stored ones)."""
        for inc in incidents:
            self._remove(inc.id)
            self.versions[inc.id] = inc.version if stored else inc.version + 1
            if not self.takes(inc):
                continue
            # An incident's alerts mostly differ in labels no rule reads (a storm's hundred
            # instances of one alert): each distinct projection is added once.
            added: set[tuple[str, ...]] = set()
            for a in inc.alerts.values():
                if a.status is AlertStatus.FIRING:
                    read = tuple([a.labels.get(n, "") for n in self._read])
                    if read not in added:
                        added.add(read)
                        self._add(inc, a.labels)

    @staticmethod
    def takes(inc: Incident) -> bool:
        """Can ``inc`` inhibit? Only an open incident; a pending one is not an incident yet
        and explains nothing."""
        pending = inc.hold is not None and inc.hold.kind is HoldKind.PENDING
        return inc.status is IncidentStatus.OPEN and not pending

    def forget(self, ids: Iterable[str]) -> None:
        for incident_id in ids:
            self._remove(incident_id)
            self.versions.pop(incident_id, None)

    def _remove(self, incident_id: str) -> None:
        for i, key in self._keys.pop(incident_id, ()):
            found = self._by_rule[i].get(key, [])
            found[:] = [e for e in found if e.id != incident_id]
            if not found:
                self._by_rule[i].pop(key, None)

    def _add(self, src: Incident, labels: Mapping[str, str]) -> None:
        for i, rule in enumerate(self._noise.inhibit_rules):
            if not all(m.matches(labels) for m in rule.source_matchers):
                continue
            key = tuple(labels.get(n, "") for n in rule.equal)
            found = self._by_rule[i].setdefault(key, [])
            entry = _Source(src.id, src.title, all(m.matches(labels) for m in rule.target_matchers))
            if len(found) < _PER_KEY and entry not in found:
                found.append(entry)
                self._keys.setdefault(src.id, set()).add((i, key))

    def find(self, i: int, key: tuple[str, ...], own_id: str, two_sided: bool) -> _Source | None:
        for entry in self._by_rule[i].get(key, ()):
            if entry.id != own_id and not (two_sided and entry.target_side):
                return entry
        return None


class Gate:
    def __init__(self, noise: NoiseFile) -> None:
        self._noise = noise

    def index(self, sources: Sequence[Incident]) -> SourceIndex:
        return SourceIndex(self._noise, sources)

    @property
    def inhibits(self) -> bool:
        return bool(self._noise.inhibit_rules)

    def may_be_inhibited(self, inc: Incident) -> bool:
        """Could any inhibit rule target this incident? (Saves loading the sources.)"""
        return any(
            all(m.matches(a.labels) for m in rule.target_matchers)
            for rule in self._noise.inhibit_rules
            for a in inc.alerts.values()
            if a.status is AlertStatus.FIRING
        )

    def may_inhibit(self, inc: Incident) -> bool:
        """Could this incident be an inhibition source (any alert of it matches a source)?"""
        return any(
            all(m.matches(a.labels) for m in rule.source_matchers)
            for rule in self._noise.inhibit_rules
            for a in inc.alerts.values()
        )

    def decide(
        self,
        inc: Incident,
        now: datetime,
        silences: Sequence[SilenceLike],
        sources: Sequence[Incident] | SourceIndex,
        firing: list[AlertState] | None = None,
    ) -> Hold | None:
        """The hold the incident should be under now (None: it pages). ``firing``: judge by
        these alerts rather than those firing now (an opening that resolved in its batch)."""
        if firing is None:
            firing = [a for a in inc.alerts.values() if a.status is AlertStatus.FIRING]
        if not firing:
            # Nothing fires (a declared incident, or all resolved): nothing to mute.
            return None
        paged = inc.paged == inc.opening
        index = sources if isinstance(sources, SourceIndex) else self.index(sources)
        mutes = self._all_muted(firing, now, silences, index, inc.id)
        if mutes is not None:
            return self._hold(inc, mutes, now, paged)
        if not paged:
            return self._pending(inc, firing, now)
        return None

    def _hold(self, inc: Incident, mutes: list[Mute], now: datetime, paged: bool) -> Hold:
        # One cause is named (the first firing alert's): "by" is one silence, window,
        # threshold or source incident, which the board links to; the rest are counted.
        first = mutes[0]
        by = first.by
        others = len({(m.kind, m.by) for m in mutes}) - 1
        reason = first.reason + (f" (and {others} more)" if others > 0 else "")
        known = [m.until for m in mutes if m.until is not None]
        # Lifts when the first alert's mute ends: looked at again then.
        until = min(known) if known else None
        old = inc.hold
        # Held since the first hold began, whatever holds it now: a lift moves the deadline
        # by the whole time held.
        since = old.since if old is not None else now
        return Hold(first.kind, by, reason, since, until, paged=paged if old is None else old.paged)

    def _all_muted(
        self,
        firing: list[AlertState],
        now: datetime,
        silences: Sequence[SilenceLike],
        sources: SourceIndex,
        own_id: str,
    ) -> list[Mute] | None:
        """Each alert's mute, or None as soon as one alert is not muted: in a storm nothing is
        usually muted, and an incident's hundred alerts need not all be looked at."""
        mutes: list[Mute] = []
        for alert in firing:
            mute = self._mute(alert, now, silences, sources, own_id)
            if mute is None:
                return None
            mutes.append(mute)
        return mutes

    def _mute(
        self,
        alert: AlertState,
        now: datetime,
        silences: Sequence[SilenceLike],
        sources: SourceIndex,
        own_id: str,
    ) -> Mute | None:
        labels = alert.labels
        for s in silences:
            if s.matches(labels):
                text = f"silenced by {s.created_by}" + (f": {s.comment}" if s.comment else "")
                return Mute(HoldKind.SILENCED, s.id, text, s.ends_at)
        window = self._noise.window_on(labels, now)
        if window is not None:
            rule, ends = window
            text = f"maintenance window {rule.name}" + (f": {rule.comment}" if rule.comment else "")
            return Mute(HoldKind.MAINTENANCE, rule.name, text, ends)
        return self._inhibited(labels, sources, own_id)

    def _inhibited(self, labels: Mapping[str, str], sources: SourceIndex, own_id: str) -> Mute | None:
        for i, rule in enumerate(self._noise.inhibit_rules):
            if not all(m.matches(labels) for m in rule.target_matchers):
                continue
            # Alertmanager's excludeTwoSidedMatch: an alert on both sides of the rule is not
            # muted by one that is too, or two such alerts would mute each other for ever.
            two_sided = all(m.matches(labels) for m in rule.source_matchers)
            key = tuple(labels.get(n, "") for n in rule.equal)
            src = sources.find(i, key, own_id, two_sided)
            if src is not None:
                text = f"caused by {src.id} ({src.title}): {rule.label(i)}"
                return Mute(HoldKind.INHIBITED, src.id, text, None)
        return None

    def _pending(self, inc: Incident, firing: list[AlertState], now: datetime) -> Hold | None:
        # One firing alert that no threshold gates is enough to open.
        rule = self._noise.threshold_for(firing[0].labels)
        if rule is None or any(self._noise.threshold_for(a.labels) is None for a in firing[1:]):
            return None
        waiting, until = _unmet(rule, inc, firing, now)
        if waiting is None:
            return None
        old = inc.hold
        since = old.since if old is not None else now
        return Hold(
            HoldKind.PENDING, rule.name, f"threshold {rule.name}: waiting for {waiting}", since, until
        )


def _unmet(
    rule: Threshold, inc: Incident, firing: list[AlertState], now: datetime
) -> tuple[str | None, datetime | None]:
    """What the threshold still waits for (None: met), and when firing-for will be met."""
    wanted: list[str] = []
    until: datetime | None = None
    if rule.min_firing is not None:
        if len(firing) >= rule.min_firing:
            return None, None
        wanted.append(f"{rule.min_firing} firing ({len(firing)} now)")
    if rule.firing_for is not None:
        due = min(a.starts_at for a in firing) + rule.firing_for
        if due <= now:
            return None, None
        wanted.append(f"firing for {format_duration(rule.firing_for)}")
        until = due
    if rule.burst is not None:
        recent = sum(1 for a in inc.alerts.values() if a.starts_at >= now - rule.burst.within)
        if recent >= rule.burst.count:
            return None, None
        wanted.append(f"{rule.burst.count} within {format_duration(rule.burst.within)} ({recent} now)")
    return " or ".join(wanted), until
