"""PostgreSQL: ``SELECT 1`` and ``count(*) FROM pg_stat_activity`` (the runbook's two checks),
over a DSN read from the environment or a file and never shown."""

from __future__ import annotations

from typing import Any

from service.triage.findings import Finding, redact
from service.triage.probes.base import ProbeFailed, Stopwatch, read_secret, secret_source


class PostgresProbe:
    name = "postgres"

    async def run(self, target: dict[str, Any]) -> Finding:
        # Imported here: only a rule that probes PostgreSQL needs it, and every start paid
        # for it.
        import asyncpg

        dsn = read_secret(target)
        where = secret_source(target)
        clock = Stopwatch()
        try:
            conn = await asyncpg.connect(dsn, timeout=float(target.get("timeout", 5.0)))
            try:
                one = await conn.fetchval("SELECT 1")
                connections = await conn.fetchval("SELECT count(*) FROM pg_stat_activity")
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
            raise ProbeFailed(redact(f"{exc.__class__.__name__}: {exc}", [dsn])) from None
        details = {"select_1": one, "connections": int(connections), "latency_ms": clock.ms}
        summary = f"SELECT 1 ok in {clock.ms} ms; {connections} connections"
        return Finding(self.name, one == 1, summary, where, details, clock.ms)
