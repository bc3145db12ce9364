"""PostgreSQL LISTEN/NOTIFY: replicas hear of new or released work at once.

Every transaction that adds work (page jobs, timers, remediation jobs, events) or gives
leases back notifies ``incidentd_work`` with the queues it touched; each replica keeps
one connection listening and wakes the workers of those queues. Without it a replica
would find another's work only at its next idle look.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

log = logging.getLogger(__name__)

CHANNEL = "incidentd_work"
RETRY_SECONDS = 2.0


async def notify(conn: AsyncConnection, queues: Iterable[str]) -> None:
    """In ``conn``'s transaction: delivered to the listeners when it commits."""
    names = sorted(set(queues))
    if names:
        await conn.execute(
            text("SELECT pg_notify(:channel, :queues)"), {"channel": CHANNEL, "queues": ",".join(names)}
        )


class WorkListener:
    def __init__(self, url: str, on_work: Callable[[set[str] | None], None]) -> None:
        """``on_work``: the queues that have new work; None for "maybe all of them"
        (after a reconnect, notifications may have been missed)."""
        self._dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._on_work = on_work

    def _heard(self, conn: object, pid: int, channel: str, payload: str) -> None:
        self._on_work({q for q in payload.split(",") if q})

    async def run(self) -> None:
        # Imported here: only PostgreSQL deployments listen, and asyncpg was a twentieth of
        # every start-up's imports.
        import asyncpg

        while True:
            try:
                await self._listen()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("cannot listen for work on PostgreSQL (%s); retrying", exc)
            await asyncio.sleep(RETRY_SECONDS)

    async def _listen(self) -> None:
        """Until the connection is lost."""
        import asyncpg

        conn = await asyncpg.connect(self._dsn)
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        try:
            await conn.add_listener(CHANNEL, self._heard)
            self._on_work(None)
            await lost.wait()
            log.warning("the PostgreSQL connection listening for work closed; reconnecting")
        finally:
            if not conn.is_closed():
                await conn.close(timeout=2)
