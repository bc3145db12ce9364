"""Templates and what they show: incidents as cards with their response clock."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse

from service.models import Incident, IncidentStatus
from service.ruleset.durations import format_duration
from service.store.views import hold_in_force, inhibitors

HERE = Path(__file__).resolve().parent
_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def duration(seconds: float) -> str:
    """``4:05``, ``1:02:03``: how the clocks count (the script keeps the same shape)."""
    total = int(abs(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def hhmm(value: datetime | str | None) -> str:
    if value is None:
        return ""
    at = datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else value
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")


_env.filters["when"] = hhmm
_env.globals["once"] = lambda: uuid.uuid4().hex
_env.filters["duration"] = duration
_env.filters["span"] = format_duration  # a rule's duration as noise.yaml writes it (30m)


def clock(inc: Incident, now: datetime) -> dict[str, Any]:
    """The response clock: counting down, overdue (red), or stopped by an ack or resolve."""
    if inc.acknowledged_at is not None:
        took = duration((inc.acknowledged_at - inc.opened_at).total_seconds())
        by = f" by {inc.acknowledged_by}" if inc.acknowledged_by else ""
        return {"state": "stopped", "text": f"acknowledged{by} after {took}"}
    if inc.status is IncidentStatus.RESOLVED:
        return {"state": "stopped", "text": "resolved before acknowledgement"}
    hold = hold_in_force(inc)
    if hold is not None:
        # A held opening's deadline is set again when the hold lifts (see quiet.transitions):
        # a countdown now would show a deadline that will not hold.
        text = "paused while held" if hold.paged else "not started: it pages when the hold lifts"
        return {"state": "held", "text": text}
    left = (inc.response_due_at - now).total_seconds()
    state = "running" if left >= 0 else "overdue"
    text = f"{duration(left)} left" if left >= 0 else f"overdue {duration(left)}"
    return {"state": state, "text": text, "due_ms": int(inc.response_due_at.timestamp() * 1000)}


def card(inc: Incident, now: datetime) -> dict[str, Any]:
    snap = inc.snapshot()
    escalations = [
        {"opening": key.partition(":")[0], "rule": key.partition(":")[2], "at": at}
        for key, at in sorted(snap.get("escalations", {}).items(), key=lambda kv: str(kv[1]))
    ]
    return {**snap, "clock": clock(inc, now), "escalation_list": escalations}


@dataclass(frozen=True, slots=True)
class Board:
    """The open incidents as the board shows them: the paging ones by severity, the held
    ones in "Not paging", each inhibited one under the card of the incident causing it."""

    groups: list[dict[str, Any]]
    held: list[dict[str, Any]]
    paging: int


def board(incidents: Sequence[Incident], severities: Sequence[str], now: datetime) -> Board:
    paging = [i for i in incidents if hold_in_force(i) is None]
    held = [i for i in incidents if hold_in_force(i) is not None]
    open_ids = {i.id for i in incidents}
    # Under one card: the first of its sources that is open.
    source_of = {
        i.id: src
        for i in held
        if (src := next((s for s in inhibitors(hold_in_force(i)) if s in open_ids), None)) is not None
    }
    by_source: dict[str, list[Incident]] = {}
    for inc in held:
        if inc.id in source_of:
            by_source.setdefault(source_of[inc.id], []).append(inc)
    # Each inhibited incident sits under its source's card (the source may itself be
    # inhibited: under its own source's card, and so on). One inhibited by an incident not
    # open any more (the noise worker lifts it within seconds) has a card of its own, as
    # have incidents inhibiting each other in a loop.
    roots = {i.id for i in paging} | {i.id for i in held if i.id not in source_of}
    placed: set[str] = set()
    frontier = list(roots)
    while frontier:
        for inc in by_source.get(frontier.pop(), []):
            if inc.id not in placed and inc.id not in roots:
                placed.add(inc.id)
                frontier.append(inc.id)
    alone = [i for i in held if i.id not in placed]

    def with_caused(inc: Incident, seen: frozenset[str]) -> dict[str, Any]:
        c = card(inc, now)
        under = [i for i in by_source.get(inc.id, []) if i.id in placed and i.id not in seen]
        c["caused"] = [with_caused(i, seen | {i.id}) for i in sorted(under, key=lambda i: i.opened_at)]
        return c

    groups = by_severity(paging, severities, now, lambda i, _: with_caused(i, frozenset({i.id})))
    held_cards = [with_caused(i, frozenset({i.id})) for i in sorted(alone, key=lambda i: i.opened_at)]
    return Board(groups, held_cards, len(paging))


def by_severity(
    incidents: Sequence[Incident],
    severities: Sequence[str],
    now: datetime,
    make: Callable[[Incident, datetime], dict[str, Any]] = card,
) -> list[dict[str, Any]]:
    """Open incidents grouped by severity, most severe first, oldest first within one;
    ``make`` makes each one's card."""
    rank = {name: i for i, name in enumerate(severities)}
    groups: dict[str, list[dict[str, Any]]] = {}
    ordered = sorted(incidents, key=lambda i: (rank.get(i.severity, len(rank)), i.opened_at))
    for inc in ordered:
        groups.setdefault(inc.severity, []).append(make(inc, now))
    return [{"severity": sev, "incidents": cards} for sev, cards in groups.items()]


# Scripts and styles from /ui/static only; never framed (a click cannot be borrowed).
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def page(name: str, context: Mapping[str, Any], status: int = 200) -> HTMLResponse:
    html = _env.get_template(name).render(**context)
    return HTMLResponse(html, status_code=status, headers=HEADERS)
