"""(d) 1 vs 2 replicas on PostgreSQL, and the page delay after a kill -9.

Real ``incidentd run`` processes on a database of their own (``BENCH_POSTGRES_URL``,
default the local PostgreSQL), the bench's broker, the console pager.

Throughput: one replica (then two) is started and has joined the consumer group; then the same
storm is produced; the time is from the first record sent to every offset committed.
Kill -9: two replicas run; one is killed with SIGKILL and webhooks for new incidents are posted
to the other at once: the delay of each, webhook answered -> ``page.sent`` published,
includes the consumer group noticing the dead member and handing its partitions over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy.engine import make_url

from bench.common import (
    RULES,
    Setup,
    Storm,
    bench_settings,
    free_port,
    percentile,
    produce_all,
    uid,
    wait_committed,
)
from service.ingest.topics import ensure_topics

POSTGRES = os.environ.get("BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


@dataclass(slots=True)
class ReplicaResult:
    one_replica_alerts_per_s: float = 0.0
    two_replicas_alerts_per_s: float = 0.0
    failover_page_ms: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        one = self.one_replica_alerts_per_s
        return self.two_replicas_alerts_per_s / one if one > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratio_2_over_1": round(self.ratio, 3)}


@contextlib.asynccontextmanager
async def _database() -> AsyncIterator[str]:
    url = make_url(POSTGRES)
    name = f"incidentd_bench_{uid()}"
    admin = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


class _Replicas:
    def __init__(self, setup: Setup, database: str) -> None:
        self.settings = bench_settings(setup.bootstrap, setup.tmp, kafka_topic_partitions=setup.partitions)
        self._rules = RULES
        self._database = database
        self.procs: list[tuple[asyncio.subprocess.Process, int]] = []

    def _env(self, port: int) -> dict[str, str]:
        s = self.settings
        names = ("alerts_topic", "events_topic", "dlq_topic", "commands_topic", "group_id")
        env = {f"INCIDENTD_KAFKA_{n.upper()}": str(getattr(s, f"kafka_{n}")) for n in names}
        return {
            **os.environ,
            **env,
            "INCIDENTD_KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap_servers,
            "INCIDENTD_DATABASE_URL": self._database,
            "INCIDENTD_RULES_DIR": str(self._rules),
            "INCIDENTD_HTTP_PORT": str(port),
            "INCIDENTD_LOG_LEVEL": "ERROR",
        }

    async def start(self) -> int:
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", "run", env=self._env(port),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        self.procs.append((proc, port))
        return port

    async def stop_all(self) -> None:
        for proc, _ in self.procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _storm_rate(setup: Setup, storm: Storm, replicas: int) -> float:
    async with _database() as database:
        fleet = _Replicas(setup, database)
        await ensure_topics(fleet.settings)
        try:
            for _ in range(replicas):
                await fleet.start()
            await _joined(setup.bootstrap, fleet.settings.kafka_group_id, replicas)
            started = time.perf_counter()
            produced = await produce_all(setup.bootstrap, fleet.settings.kafka_alerts_topic, storm.records)
            done = await wait_committed(
                setup.bootstrap, fleet.settings.kafka_group_id, produced.end_offsets, timeout=180
            )
        finally:
            await fleet.stop_all()
        return storm.total / (done - started)


async def _joined(bootstrap: str, group: str, members: int) -> None:
    """Until the consumer group is stable with ``members`` members."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        async with asyncio.timeout(120):
            while True:
                (response,) = await admin.describe_consumer_groups([group])
                _, _, state, _, _, found, *_ = response.groups[0]
                if state == "Stable" and len(found) == members:
                    return
                await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def _ready(port: int) -> None:
    async with httpx.AsyncClient(timeout=2) as client:
        for _ in range(600):
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"replica on port {port} never became ready")


async def _failover_delays(setup: Setup, incidents: int) -> list[float]:
    async with _database() as database:
        fleet = _Replicas(setup, database)
        await ensure_topics(fleet.settings)
        survivor, doomed = await fleet.start(), await fleet.start()
        consumer = AIOKafkaConsumer(
            fleet.settings.kafka_events_topic, bootstrap_servers=setup.bootstrap, auto_offset_reset="latest"
        )
        try:
            await asyncio.gather(_ready(survivor), _ready(doomed))
            await consumer.start()
            await _settle_group(setup, fleet)
            fleet.procs[1][0].kill()  # kill -9: no shutdown, its partitions are stranded
            return await _post_and_time(survivor, consumer, incidents)
        finally:
            await consumer.stop()
            await fleet.stop_all()


async def _settle_group(setup: Setup, fleet: _Replicas) -> None:
    """Wait until a warm-up incident is paged: both replicas have joined the group."""
    port = fleet.procs[0][1]
    consumer = AIOKafkaConsumer(
        fleet.settings.kafka_events_topic, bootstrap_servers=setup.bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        await _post(port, "Warmup")
        async for rec in consumer:
            if json.loads(rec.value or b"{}").get("type", "").endswith("page.sent"):
                return
    finally:
        await consumer.stop()


async def _post(port: int, name: str) -> float:
    labels = {"alertname": name, "cluster": "bench", "namespace": "failover", "severity": "critical"}
    doc = {"version": "4", "status": "firing", "alerts": [{"status": "firing", "labels": labels}]}
    async with httpx.AsyncClient(timeout=30) as client:
        resp = await client.post(f"http://127.0.0.1:{port}/api/v1/alerts/alertmanager", json=doc)
    resp.raise_for_status()
    return time.perf_counter()


async def _post_and_time(port: int, consumer: AIOKafkaConsumer, incidents: int) -> list[float]:
    posted = {f"Failover{i}": await _post(port, f"Failover{i}") for i in range(incidents)}
    delays: list[float] = []
    async with asyncio.timeout(120):
        async for rec in consumer:
            event = json.loads(rec.value or b"{}")
            name = event.get("data", {}).get("group_labels", {}).get("alertname")
            if event.get("type", "").endswith("page.sent") and name in posted:
                delays.append((time.perf_counter() - posted.pop(name)) * 1000)
                if not posted:
                    break
    return delays


async def run_replicas(setup: Setup, storm: Storm, incidents: int = 30) -> ReplicaResult:
    result = ReplicaResult()
    try:
        result.one_replica_alerts_per_s = await _storm_rate(setup, storm, 1)
        result.two_replicas_alerts_per_s = await _storm_rate(setup, storm, 2)
        delays = await _failover_delays(setup, incidents)
        result.failover_page_ms = {
            "p50": percentile(delays, 50),
            "p99": percentile(delays, 99),
            "max": max(delays),
        }
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        result.problems.append(f"(d)/(e): {exc.__class__.__name__}: {exc}")
    return result
