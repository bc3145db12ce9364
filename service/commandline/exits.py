"""The exit codes of every ``incidentd`` command, as the README documents them; scripts
and CI branch on them, so each keeps its meaning."""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum

import typer
from pydantic import ValidationError

from service.config import ConfigError, Settings


class Exit(IntEnum):
    OK = 0
    # rules check found problems; the service refused a request (404, 409, 422, 5xx); a
    # configuration or database error.
    PROBLEMS = 1
    # click's own code for a wrong flag, argument or command.
    USAGE = 2
    # nothing answered: the HTTP API (connection refused, timeout) or, for tail, a Kafka broker.
    UNREACHABLE = 3
    # the service answered 401: a missing or wrong token.
    UNAUTHORIZED = 4


def fail(message: str) -> typer.Exit:
    return fail_with(message, Exit.PROBLEMS)


def fail_with(message: str, code: Exit) -> typer.Exit:
    """One line on stderr, and the exit to raise."""
    typer.echo(f"incidentd: {message}", err=True)
    return typer.Exit(code=int(code))


def load_settings(refuse: Callable[[str], typer.Exit] = fail, /, **overrides: object) -> Settings:
    """The settings from the environment, or the ``refuse``d exit (1) with every setting
    that is wrong."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except (ValidationError, ConfigError) as exc:
        raise refuse(settings_problem(exc)) from None


def settings_problem(exc: ValidationError | ConfigError) -> str:
    """What is wrong with the settings, one line per setting."""
    if isinstance(exc, ConfigError):
        return f"invalid configuration: {exc}"
    lines = [f"INCIDENTD_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()]
    return "invalid configuration:\n  " + "\n  ".join(lines)
