"""The 5xx error rate from the Prometheus HTTP API (the runbook's query unless the rule
gives another): ``GET <url>/api/v1/query?query=...``."""

from __future__ import annotations

import math
from typing import Any

import httpx

from service.triage.findings import Finding, one_line, redact
from service.triage.probes.base import ProbeFailed, Stopwatch


class PrometheusProbe:
    name = "prometheus"

    async def run(self, target: dict[str, Any]) -> Finding:
        base, query = str(target["url"]).rstrip("/"), str(target["query"])
        clock = Stopwatch()
        async with httpx.AsyncClient(timeout=float(target.get("timeout", 5.0))) as client:
            resp = await client.get(f"{base}/api/v1/query", params={"query": query})
        try:
            body = resp.json()
        except ValueError:
            raise ProbeFailed(f"HTTP {resp.status_code}: not JSON") from None
        if resp.status_code != 200 or body.get("status") != "success":
            raise ProbeFailed(f"HTTP {resp.status_code}: {body.get('error') or body.get('status')}")
        data = body.get("data") or {}
        values: list[float] = []
        if data.get("resultType") == "vector":
            values = [float(item["value"][1]) for item in data.get("result", [])]
        elif data.get("resultType") == "scalar":
            values = [float(data["result"][1])]
        rate = sum(v for v in values if not math.isnan(v))
        details = {"query": query, "value": rate, "series": len(values)}
        # Any 5xx during an incident is worth a line; none at all is the healthy answer.
        ok = rate == 0
        summary = f"5xx rate {rate:.3g}/s" if values else "no 5xx series (query returned nothing)"
        return Finding(self.name, ok, one_line(summary), redact(base), details, clock.ms)
