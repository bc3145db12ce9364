"""The narrow seam every probe fits: a name and ``run(target) -> Finding``."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Protocol

from service.triage.findings import Finding


class ProbeFailed(Exception):
    """A probe that could not look (unreachable, refused, misconfigured): a failed finding."""


class Probe(Protocol):
    name: str

    async def run(self, target: dict[str, Any]) -> Finding: ...


class Stopwatch:
    def __init__(self) -> None:
        self._start = time.perf_counter()

    @property
    def ms(self) -> int:
        return int((time.perf_counter() - self._start) * 1000)


def read_secret(target: dict[str, Any]) -> str:
    """The DSN/URL a target names by environment variable or file, read now."""
    env, file = target.get("secret_env"), target.get("secret_file")
    if env:
        value = os.environ.get(env, "")
        if not value:
            raise ProbeFailed(f"environment variable {env} is not set")
        return value.strip()
    if file:
        try:
            return Path(file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ProbeFailed(f"cannot read secret file {file}: {exc.strerror}") from None
    raise ProbeFailed("no secret_env or secret_file given")


def secret_source(target: dict[str, Any]) -> str:
    """Where the secret comes from, as a finding may show it."""
    if target.get("secret_env"):
        return f"${target['secret_env']}"
    return str(target.get("secret_file") or "")
