"""Readiness: can this replica do its work? (The broker and the store answer.)"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

TIMEOUT = 2.0

# A check answers normally when the part is reachable and raises (or returns False) when not.
Check = Callable[[], Awaitable[bool | None]]


class Readiness:
    def __init__(self, checks: Mapping[str, Check]) -> None:
        self._checks = dict(checks)

    async def check(self) -> dict[str, str]:
        """name -> "ok" or why not."""
        results: dict[str, str] = {}
        for name, probe in self._checks.items():
            try:
                ok = await asyncio.wait_for(probe(), TIMEOUT)
                results[name] = "unreachable" if ok is False else "ok"
            except Exception as exc:
                results[name] = f"unreachable: {exc.__class__.__name__}"
        return results
