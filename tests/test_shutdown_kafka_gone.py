"""A stop with Kafka gone still takes every step: it gives back the leases it holds (another
replica would otherwise wait out the lease), closes Kafka's producer and the store.

With the broker killed, aiokafka's consumer stop raised its fetcher's CancelledError, which
the shutdown took for its own cancel: it stopped at its first step, every later one skipped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
from pathlib import Path

from service.embedded.broker import embedded_broker
from service.models import PageAction
from service.ruleset import load_rules
from service.runtime import Runtime
from service.store.pages import NewPage
from service.store.store import Effects
from tests.support.incidents import make_incident
from tests.support.service import free_port, test_settings
from tests.support.time import T0


async def test_a_stop_with_kafka_gone_gives_back_its_leases_and_closes_its_clients(tmp_path: Path) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    settings = test_settings(bootstrap, tmp_path, shutdown_timeout_seconds=10)
    runtime = await Runtime.create(settings, load_rules(settings.rules_dir))
    async with embedded_broker(bootstrap) as pid:
        async with runtime.running():
            inc = make_incident("inc-1", "ApiDown")
            # A page for a pager this service does not run: no worker of its own takes or
            # finishes the job, so only the stop's release frees the lease held here.
            page = NewPage(inc.id, "pagerduty", PageAction.TRIGGER, inc.opening)
            assert await runtime.store.commit(Effects(incidents=[inc], pages=[page]), T0)
            [job] = await runtime.store.pages.claim_due(T0, 1, 10, set(), {"pagerduty"})
            os.kill(pid, signal.SIGKILL)
    assert runtime.broker.config.producer.closed
    db = settings.database_url.removeprefix("sqlite+aiosqlite:///")
    with contextlib.closing(sqlite3.connect(db)) as conn:
        held = conn.execute(
            "SELECT lease_owner, lease_until FROM page_jobs WHERE id = ?", (job.id,)
        ).fetchone()
    assert held == (None, None)
