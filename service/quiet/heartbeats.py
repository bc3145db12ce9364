"""Heartbeats (dead man's switch): the stage that takes heartbeat alerts out of the batch
(they are signs of life, not incidents) and the alerts the noise worker publishes when one
goes missing and when it returns.

A missing heartbeat becomes an ordinary alert on the alerts topic (``HeartbeatMissing``,
label ``heartbeat``), so its incident is classified, paged, escalated and resolved as any
other, by whichever replica's consumer takes it; a second replica publishing the same alert
is a duplicate (same fingerprint, same startsAt).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Protocol

from service.batch import Batch
from service.clock import iso
from service.models import AlertStatus
from service.ruleset.durations import format_duration
from service.ruleset.noise import Heartbeat, NoiseFile

MISSING = "HeartbeatMissing"


class SeenHeartbeats(Protocol):
    async def seen(self, names: Iterable[str], at: datetime) -> None: ...


class HeartbeatStage:
    """After classify: heartbeat alerts are recorded and dropped; a missing-heartbeat alert
    gets its rule's severity."""

    def __init__(self, noise: NoiseFile, heartbeats: SeenHeartbeats) -> None:
        self._noise = noise
        self._by_name = {h.name: h for h in noise.heartbeats}
        self._heartbeats = heartbeats

    async def __call__(self, batch: Batch) -> Batch:
        if not self._by_name:
            return batch
        seen: set[str] = set()
        keep = []
        for alert in batch.alerts:
            labels = alert.labels
            own = (
                self._by_name.get(labels.get("heartbeat", "")) if labels.get("alertname") == MISSING else None
            )
            if own is not None:
                alert.severity, alert.rule = own.severity, f"heartbeat:{own.name}"
                keep.append(alert)
                continue
            beat = self._noise.heartbeat_for(labels)
            if beat is None:
                keep.append(alert)
                continue
            # A resolved Watchdog says the pipeline ended it, not that it lives.
            if alert.status is AlertStatus.FIRING:
                seen.add(beat.name)
            batch.ignored += 1
        batch.alerts = keep
        if seen:
            # One that was missing is back: the noise worker (which looks at missing ones
            # every few seconds) resolves its incident.
            await self._heartbeats.seen(seen, batch.now)
        return batch


def missing_alert(beat: Heartbeat, since: datetime, now: datetime | None) -> dict[str, object]:
    """The alert of a missing heartbeat, firing since ``since`` (resolved at ``now`` if given)."""
    summary = beat.summary or (
        f"alerting pipeline silent: no {beat.name} heartbeat for more than {format_duration(beat.interval)}"
    )
    return {
        "status": "resolved" if now else "firing",
        "labels": {"alertname": MISSING, "heartbeat": beat.name},
        "annotations": {
            "summary": summary,
            "description": "Alerts matching "
            + ", ".join(str(m) for m in beat.matchers)
            + " stopped arriving.",
        },
        "startsAt": iso(since),
        "endsAt": iso(now) if now else "0001-01-01T00:00:00Z",
    }


def webhook_body(alerts: list[dict[str, object]]) -> bytes:
    """Alerts as an Alertmanager webhook body: what the intake takes from any sender."""
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    body = {"version": "4", "status": status, "receiver": "incidentd", "alerts": alerts}
    return json.dumps(body).encode()
