"""The service's health URL: status, latency and the start of the body."""

from __future__ import annotations

from typing import Any

import httpx

from service.triage.findings import Finding, one_line, redact
from service.triage.probes.base import Stopwatch

BODY_EXCERPT = 200
READ_LIMIT = 4096


class HealthProbe:
    name = "health"

    async def run(self, target: dict[str, Any]) -> Finding:
        url = str(target["url"])
        shown = redact(url)
        clock = Stopwatch()
        async with (
            httpx.AsyncClient(timeout=float(target.get("timeout", 5.0))) as client,
            client.stream("GET", url, follow_redirects=False) as resp,
        ):
            head = await _head(resp)
        excerpt = one_line(head.decode(resp.encoding or "utf-8", "replace")[:BODY_EXCERPT], BODY_EXCERPT)
        ok = resp.status_code < 400
        details = {"status": resp.status_code, "latency_ms": clock.ms, "body": excerpt}
        # The body stays in the details (the board, the event), out of the one-line summary that
        # goes to the channel: it may say more than a channel should show.
        summary = f"HTTP {resp.status_code} in {clock.ms} ms"
        return Finding(self.name, ok, one_line(summary), shown, details, clock.ms)


async def _head(resp: httpx.Response) -> bytes:
    """At most READ_LIMIT bytes of the body: an endless or huge answer is not buffered."""
    head = b""
    async for chunk in resp.aiter_bytes():
        head += chunk
        if len(head) >= READ_LIMIT:
            break
    return head[:READ_LIMIT]
