"""The noise worker: what changes with time or with other incidents rather than with an
alert. It lifts holds whose silence, window or source incident ended and threshold met with
time, puts open incidents under a silence or window that began, resolves pushed alerts whose
``endsAt`` passed without a re-send, and opens and closes missing-heartbeat incidents.

Every replica runs it; each change is written from the incident's stored version, so two
replicas deciding the same lift write it once (the other gets ``ConcurrentUpdate`` and
looks again next round), and a page keyed per opening is sent once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from service.batch import Batch, Pipeline
from service.clock import iso
from service.context import Context
from service.escalate.policy import EscalationPolicy
from service.models import EXPIRED, AlertStatus, Hold, HoldKind, Incident, IncidentStatus
from service.quiet.gate import Gate, SilenceLike
from service.quiet.heartbeats import missing_alert, webhook_body
from service.quiet.stage import MAX_SOURCES, READ_AT_ONCE, refresh_sources
from service.quiet.transitions import lift, start_hold
from service.ruleset.noise import Heartbeat
from service.scheduling import DueWorker
from service.store.database import chunks
from service.store.incidents import ConcurrentUpdate

# No end is known for an inhibition (the source incident may resolve any time) or for a
# missing heartbeat (it may come back any time): looked at again this often.
RECHECK = timedelta(seconds=5)
# How far ahead windows are looked at; the worker looks again by then anyway.
WINDOW_HORIZON = timedelta(days=1)

# Publishes alerts (an Alertmanager webhook body) to the alerts topic, acknowledged.
PublishAlerts = Callable[[bytes], Awaitable[object]]


class NoiseWorker(DueWorker):
    name = "noise worker"
    # Woken by every silence change: one look a second is enough.
    pace = 1.0

    def __init__(self, ctx: Context, lift_pipeline: Pipeline, publish: PublishAlerts) -> None:
        super().__init__(ctx.clock)
        self._store = ctx.store
        self._rules = ctx.rules
        self._noise = ctx.rules.noise
        self._gate = Gate(ctx.rules.noise)
        self._sources = self._gate.index([])
        self._policy = EscalationPolicy(ctx.rules)
        self._tail = lift_pipeline
        self._publish = publish
        self._on_effects = ctx.on_effects
        self._next: datetime | None = None
        self._expiries_sent: set[tuple[str, datetime]] = set()
        self._missing_sent: set[tuple[str, datetime]] = set()

    async def next_due(self) -> float | None:
        return self._next.timestamp() if self._next else None

    async def run_once(self) -> int:
        now = self._clock.now()
        due: list[datetime] = []
        # The open incidents are read a few at a time, not all at once: a storm's thousand
        # incidents of a hundred alerts each, decoded together, were 60 MiB more memory (and
        # the inhibition sources are an index kept up to date by version, as in the stage).
        versions = await self._store.incidents.open_versions(MAX_SOURCES)
        await refresh_sources(self._sources, self._store.incidents, versions)
        silences = await self._store.silences.active(now)
        done, ended, expiring = 0, [], set[tuple[str, datetime]]()
        for ids in chunks(list(versions), READ_AT_ONCE):
            incidents = [
                i for i in await self._store.incidents.get_many(ids) if i.status is IncidentStatus.OPEN
            ]
            done += await self._holds(incidents, now, due, silences)
            ended += self._expired(incidents, now, due, expiring)
        if ended:
            await self._publish(webhook_body(ended))
        # Remembered until consumed; after a restart published again (a duplicate, dropped).
        self._expiries_sent = expiring
        done += len(ended)
        done += await self._heartbeats(now, due)
        if (change := await self._store.silences.next_change(now)) is not None:
            due.append(change)
        if self._noise.maintenance and (change := self._noise.next_window_change(now, WINDOW_HORIZON)):
            due.append(change)
        self._next = min(due, default=None)
        return done

    async def _holds(
        self, incidents: list[Incident], now: datetime, due: list[datetime], silences: Sequence[SilenceLike]
    ) -> int:
        done = 0
        for inc in incidents:
            hold = self._gate.decide(inc, now, silences, self._sources)
            if hold is not None:
                due.append(hold.until or now + RECHECK)
            if _same(hold, inc.hold):
                continue
            done += await self._apply(inc, hold, now)
        return done

    async def _apply(self, inc: Incident, hold: Hold | None, now: datetime) -> int:
        batch = Batch(records=[], now=now)
        batch.changed[inc.id] = inc
        if hold is not None:
            if (event := start_hold(inc, hold)) is not None:
                batch.events.append(event)
        else:
            reminders = await self._store.timers.latest_reminder(inc.id, inc.opening)
            lifted = lift(inc, now, self._rules, self._policy, reminders)
            batch.events.extend(lifted.events)
            batch.pages.extend(lifted.pages)
            batch.timers.extend(lifted.timers)
        try:
            await self._tail(batch)
        except ConcurrentUpdate:
            # Changed meanwhile (an alert, a person, another replica): decided again next round.
            self.wake()
            return 0
        self._on_effects()
        kind = (hold or inc.hold or Hold(HoldKind.PENDING, "", "", now)).kind
        self._log.info("incident %s: %s", inc.id, f"held ({kind})" if hold else "hold lifted: it proceeds")
        return 1

    def _expired(
        self,
        incidents: list[Incident],
        now: datetime,
        due: list[datetime],
        expiring: set[tuple[str, datetime]],
    ) -> list[dict[str, Any]]:
        """Pushed alerts whose endsAt passed without a re-send are resolved, as Alertmanager
        resolves them: Prometheus stopped sending (it died, or the rule went away). Returns
        the resolves to publish; adds every alert past its endsAt to ``expiring``."""
        ended: list[dict[str, Any]] = []
        for inc in incidents:
            for fp, a in inc.alerts.items():
                if a.status is not AlertStatus.FIRING or a.ends_at is None:
                    continue
                if a.ends_at > now:
                    due.append(a.ends_at)
                    continue
                expiring.add((fp, a.ends_at))
                if (fp, a.ends_at) in self._expiries_sent:
                    continue  # published, not consumed yet
                ended.append(
                    {
                        "status": "resolved",
                        "labels": a.labels,
                        # Marks our expiry: the correlator drops it if a re-send extended the
                        # alert meanwhile, and a later re-send revives it.
                        "annotations": {EXPIRED: "true"},
                        "startsAt": iso(a.starts_at),
                        "endsAt": iso(a.ends_at),
                        "fingerprint": fp,
                    }
                )
        return ended

    async def _heartbeats(self, now: datetime, due: list[datetime]) -> int:
        beats = {h.name: h for h in self._noise.heartbeats}
        if not beats:
            return 0
        done = 0
        for row in await self._store.heartbeats.watch(beats, now):
            beat = beats.get(row.name)
            if beat is None:
                continue
            deadline = row.last_seen + beat.interval
            if row.missing_since is None and deadline <= now:
                # Marked first, then published: until this process published it, it publishes
                # it (again after a restart: a duplicate the correlator drops), so a crash
                # between the two loses no incident.
                await self._store.heartbeats.set_missing(beat.name, deadline)
                await self._missing(beat, deadline)
                done += 1
            elif row.missing_since is not None and row.last_seen <= row.missing_since:
                if (beat.name, row.missing_since) not in self._missing_sent:
                    await self._missing(beat, row.missing_since)
                    done += 1
                due.append(now + RECHECK)
            elif row.missing_since is not None and row.last_seen > row.missing_since:
                await self._publish(webhook_body([missing_alert(beat, row.missing_since, row.last_seen)]))
                await self._store.heartbeats.set_missing(beat.name, None)
                self._log.info("heartbeat %s is back", beat.name)
                done += 1
            else:
                due.append(deadline)
        return done

    async def _missing(self, beat: Heartbeat, since: datetime) -> None:
        await self._publish(webhook_body([missing_alert(beat, since, None)]))
        self._missing_sent.add((beat.name, since))
        self._log.warning("heartbeat %s missing since %s", beat.name, iso(since))


def _same(new: Hold | None, old: Hold | None) -> bool:
    if new is None or old is None:
        return new is old
    return (new.kind, new.by) == (old.kind, old.by)
