"""``incidentd incidents list|show|ack|resolve|assign``: the incident API for people.

A table (or ``--json``, the API's own answer) instead of curl; the server from ``--url`` /
``INCIDENTD_URL`` (default ``http://127.0.0.1:$INCIDENTD_HTTP_PORT``), the bearer token the
service asks for from ``--token`` / ``INCIDENTD_WEBHOOK_TOKEN`` or ``--token-file`` /
``INCIDENTD_WEBHOOK_TOKEN_FILE`` (the service's own settings, so one environment serves both).
"""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import typer

from service.commandline.api import Answer, ApiError, Detail, Incident, IncidentApi
from service.commandline.exits import Exit

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, help="List, show, acknowledge, resolve and assign incidents.")

URL = typer.Option(
    None,
    "--url",
    envvar="INCIDENTD_URL",
    help="the service (default: http://127.0.0.1:$INCIDENTD_HTTP_PORT or 8080)",
)
TOKEN = typer.Option(None, "--token", envvar="INCIDENTD_WEBHOOK_TOKEN", help="the API's bearer token")
TOKEN_FILE = typer.Option(
    None, "--token-file", envvar="INCIDENTD_WEBHOOK_TOKEN_FILE", help="a file holding the token"
)
TIMEOUT = typer.Option(10.0, "--timeout", help="seconds to wait for the service")
JSON = typer.Option(False, "--json", help="print the API's JSON answer instead of a table")
BY = typer.Option(None, "--by", help="who does it (default: your login name)")


def _fail(message: str, code: Exit) -> typer.Exit:
    typer.echo(f"incidentd: {message}", err=True)
    return typer.Exit(code=int(code))


def _url(url: str | None) -> str:
    return url or f"http://127.0.0.1:{os.environ.get('INCIDENTD_HTTP_PORT', '8080')}"


def _token(token: str | None, token_file: Path | None) -> str | None:
    if token or token_file is None:
        return token
    try:
        return token_file.read_text().strip()
    except OSError as exc:
        raise _fail(f"cannot read the token file {token_file}: {exc.strerror}", Exit.PROBLEMS) from None


@contextmanager
def _api(
    url: str | None, token: str | None, token_file: Path | None, timeout: float
) -> Iterator[IncidentApi]:
    api = IncidentApi(_url(url), _token(token, token_file), timeout)
    try:
        yield api
    except ApiError as exc:
        raise _fail(str(exc), exc.code) from None
    finally:
        api.close()


def _by(by: str | None) -> str:
    try:
        return by or getpass.getuser()
    except (KeyError, OSError):  # no login name (a container's uid without a passwd entry)
        return "cli"


# Each command takes the connection options itself (PLR0913), so they go where people type
# them: `incidentd incidents ack inc-1 --url ...`.
@app.command("list")
def list_(  # noqa: PLR0913
    status: str = typer.Option(None, help="open, triggered (open, not acknowledged), acknowledged, resolved"),
    severity: str = typer.Option(None, help="SEV-1 .. SEV-4"),
    phase: str = typer.Option(None, help="investigating, identified, mitigating, resolved"),
    limit: int = typer.Option(100, help="at most this many, newest first"),
    as_json: bool = JSON,
    url: str = URL,
    token: str = TOKEN,
    token_file: Path = TOKEN_FILE,
    timeout: float = TIMEOUT,
) -> None:
    """Incidents, newest first."""
    filters = {"status": status, "severity": severity, "phase": phase, "limit": str(limit)}
    with _api(url, token, token_file, timeout) as api:
        answer = api.list({k: v for k, v in filters.items() if v is not None})
    _print(answer, as_json, _table)


@app.command()
def show(  # noqa: PLR0913
    incident_id: str = typer.Argument(..., help="the incident's id"),
    as_json: bool = JSON,
    url: str = URL,
    token: str = TOKEN,
    token_file: Path = TOKEN_FILE,
    timeout: float = TIMEOUT,
) -> None:
    """One incident: its state, roles, timeline and pages."""
    with _api(url, token, token_file, timeout) as api:
        answer = api.show(incident_id)
    _print(answer, as_json, _detail)


@app.command()
def ack(  # noqa: PLR0913
    incident_id: str = typer.Argument(..., help="the incident's id"),
    by: str = BY,
    as_json: bool = JSON,
    url: str = URL,
    token: str = TOKEN,
    token_file: Path = TOKEN_FILE,
    timeout: float = TIMEOUT,
) -> None:
    """Acknowledge: the response clock stops and the sent pages are acknowledged."""
    with _api(url, token, token_file, timeout) as api:
        answer = api.command(incident_id, "ack", {"by": _by(by)})
    _print(answer, as_json, _changed)


@app.command()
def resolve(  # noqa: PLR0913
    incident_id: str = typer.Argument(..., help="the incident's id"),
    note: str = typer.Option(None, help="what resolved it"),
    by: str = BY,
    as_json: bool = JSON,
    url: str = URL,
    token: str = TOKEN,
    token_file: Path = TOKEN_FILE,
    timeout: float = TIMEOUT,
) -> None:
    """Resolve: the pages of this opening are closed."""
    body = {"by": _by(by)} | ({"note": note} if note is not None else {})
    with _api(url, token, token_file, timeout) as api:
        answer = api.command(incident_id, "resolve", body)
    _print(answer, as_json, _changed)


@app.command()
def assign(  # noqa: PLR0913
    incident_id: str = typer.Argument(..., help="the incident's id"),
    role: str = typer.Argument(..., help="Incident Commander (IC), Communications, Technical Lead (TL)"),
    who: str = typer.Argument(..., help="the person; paged through contacts.yaml's people"),
    by: str = BY,
    as_json: bool = JSON,
    url: str = URL,
    token: str = TOKEN,
    token_file: Path = TOKEN_FILE,
    timeout: float = TIMEOUT,
) -> None:
    """Give a person a role on the incident (they are paged)."""
    with _api(url, token, token_file, timeout) as api:
        answer = api.command(incident_id, "assign", {"role": role, "who": who, "by": _by(by)})
    _print(answer, as_json, _changed)


def _print(answer: Answer[T], as_json: bool, render: Callable[[T], str]) -> None:
    typer.echo(answer.body if as_json else render(answer.value))


def _state(inc: Incident) -> str:
    if inc.status == "resolved":
        return "resolved"
    return "acknowledged" if inc.acknowledged_at else "triggered"


def _when(at: str | None) -> str:
    # Seconds are enough for a person; --json keeps the API's microseconds.
    return re.sub(r"\.\d+(?=Z|[+-]\d\d:\d\d$)", "", at) if at else "-"


def _table(incidents: Sequence[Incident]) -> str:
    if not incidents:
        return "no incidents"
    rows = [("ID", "SEVERITY", "STATE", "PHASE", "OPENED", "ACK BY", "TITLE")]
    rows += [
        (i.id, i.severity, _state(i), i.phase, _when(i.opened_at), i.acknowledged_by or "-", i.title)
        for i in incidents
    ]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    # The title goes last and unpadded: it is the one column of any length.
    return "\n".join("  ".join([*(v.ljust(w) for v, w in zip(r, widths, strict=False)), r[-1]]) for r in rows)


def _detail(d: Detail) -> str:
    inc = d.incident
    fields = {
        "title": inc.title,
        "impact": inc.impact,
        "opened": _when(inc.opened_at),
        "respond by": _when(inc.response_due_at) if inc.response_due_at else None,
        "acked": f"{_when(inc.acknowledged_at)} by {inc.acknowledged_by}" if inc.acknowledged_at else None,
        "resolved": _when(inc.resolved_at) if inc.resolved_at else None,
        **dict(sorted(inc.roles.items())),
    }
    pages = [
        f"  {p.integration} {p.action}: {p.status} ({p.attempts} attempt(s))"
        + (f", last error: {p.last_error}" if p.last_error else "")
        for p in d.pages
    ]
    return "\n".join(
        [
            f"{inc.id}  {inc.severity}  {_state(inc)}  phase {inc.phase}",
            *[f"  {name}: {value}" for name, value in fields.items() if value],
            "timeline:",
            *[f"  {_when(t.at)}  {t.type}  {t.summary}" for t in d.timeline],
            "pages:",
            *pages,
        ]
    )


def _changed(inc: Incident) -> str:
    roles = ", ".join(f"{role}: {who}" for role, who in sorted(inc.roles.items()))
    ack = f" by {inc.acknowledged_by}" if inc.acknowledged_by and inc.status != "resolved" else ""
    return f"{inc.id} {_state(inc)}{ack}" + (f" ({roles})" if roles else "")
