"""Templates and what they show: incidents as cards with their response clock."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse

from service.models import Incident, IncidentStatus

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


def clock(inc: Incident, now: datetime) -> dict[str, Any]:
    """The response clock: counting down, overdue (red), or stopped by an ack or resolve."""
    if inc.acknowledged_at is not None:
        took = duration((inc.acknowledged_at - inc.opened_at).total_seconds())
        by = f" by {inc.acknowledged_by}" if inc.acknowledged_by else ""
        return {"state": "stopped", "text": f"acknowledged{by} after {took}"}
    if inc.status is IncidentStatus.RESOLVED:
        return {"state": "stopped", "text": "resolved before acknowledgement"}
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


def by_severity(
    incidents: Sequence[Incident], severities: Sequence[str], now: datetime
) -> list[dict[str, Any]]:
    """Open incidents grouped by severity, most severe first, oldest first within one."""
    rank = {name: i for i, name in enumerate(severities)}
    groups: dict[str, list[dict[str, Any]]] = {}
    ordered = sorted(incidents, key=lambda i: (rank.get(i.severity, len(rank)), i.opened_at))
    for inc in ordered:
        groups.setdefault(inc.severity, []).append(card(inc, now))
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
