"""The service's health URL: status, latency and the start of the body."""

from __future__ import annotations

from typing import Any

import httpx

from service.triage.findings import Finding, one_line, redact
from service.triage.probes.base import Stopwatch

BODY_EXCERPT = 200


class HealthProbe:
    name = "health"

    async def run(self, target: dict[str, Any]) -> Finding:
        url = str(target["url"])
        shown = redact(url)
        clock = Stopwatch()
        async with httpx.AsyncClient(timeout=float(target.get("timeout", 5.0))) as client:
            resp = await client.get(url, follow_redirects=False)
        excerpt = one_line(resp.text[:BODY_EXCERPT], BODY_EXCERPT)
        ok = resp.status_code < 400
        details = {"status": resp.status_code, "latency_ms": clock.ms, "body": excerpt}
        summary = f"HTTP {resp.status_code} in {clock.ms} ms" + (f": {excerpt}" if excerpt and not ok else "")
        return Finding(self.name, ok, one_line(summary), shown, details, clock.ms)
