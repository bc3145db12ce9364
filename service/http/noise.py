"""``GET /api/v1/noise``: the noise control in force, read only. Silences are changed
through Alertmanager's v2 API (``/api/v2/silences``), the rest in noise.yaml."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.clock import iso
from service.ruleset.durations import format_duration
from service.ruleset.matchers import Matcher
from service.ruleset.noise import NoiseFile
from service.store.views import IncidentViews, NoiseState

PATH = "/api/v1/noise"


def _when(value: datetime | None) -> str | None:
    return iso(value) if value is not None else None


def _matchers(matchers: Sequence[Matcher]) -> list[str]:
    return [str(m) for m in matchers]


def noise_json(state: NoiseState) -> dict[str, Any]:
    """Durations in noise.yaml's own syntax (``30m``), matchers as written in the rules."""
    now = state.at
    return {
        "at": iso(now),
        "silences": [
            {
                "id": s.id,
                "matchers": [str(m) for m in s.matchers],
                "startsAt": iso(s.starts_at),
                "endsAt": iso(s.ends_at),
                "createdBy": s.created_by,
                "comment": s.comment,
                "state": s.state(now),
            }
            for s in state.silences
        ],
        "maintenance": [
            {
                "name": w.window.name,
                "matchers": _matchers(w.window.matchers),
                "time_intervals": list(w.window.time_intervals),
                "comment": w.window.comment,
                "active": w.active,
                "next_change": _when(w.next_change),
            }
            for w in state.windows
        ],
        "inhibit_rules": [
            {
                "name": r.label(i),
                "source_matchers": _matchers(r.source_matchers),
                "target_matchers": _matchers(r.target_matchers),
                "equal": list(r.equal),
            }
            for i, r in enumerate(state.inhibit_rules)
        ],
        "flapping": (
            {
                "reopens": state.flapping.reopens,
                "within": format_duration(state.flapping.within),
                "quiet": format_duration(state.flapping.quiet),
            }
            if state.flapping is not None
            else None
        ),
        "thresholds": [
            {
                "name": t.name,
                "matchers": _matchers(t.matchers),
                "min_firing": t.min_firing,
                "firing_for": format_duration(t.firing_for) if t.firing_for is not None else None,
                "burst": (
                    {"count": t.burst.count, "within": format_duration(t.burst.within)}
                    if t.burst is not None
                    else None
                ),
            }
            for t in state.thresholds
        ],
        "heartbeats": [
            {
                "name": h.heartbeat.name,
                "matchers": _matchers(h.heartbeat.matchers),
                "interval": format_duration(h.heartbeat.interval),
                "severity": h.heartbeat.severity,
                "last_seen": _when(h.last_seen),
                "missing_since": _when(h.missing_since),
            }
            for h in state.heartbeats
        ],
    }


def noise_routes(views: IncidentViews, noise: NoiseFile) -> list[Route]:
    async def show(request: Request) -> Response:
        return JSONResponse(noise_json(await views.noise(noise)))

    return [Route(PATH, show, methods=["GET"])]
