"""Three real `incidentd run` processes on one PostgreSQL and one broker, started together
on an empty database, paging through the PagerDuty stand-in; one is killed with SIGKILL
while thousands of alerts flow. The promise under test: every alert lands in exactly one
incident, every incident is paged once, and events are published once each (again only
after a crash)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy.engine import make_url

from service.correlate.fingerprint import fingerprint, group_key
from service.ingest.records import record_key
from service.ingest.topics import ensure_topics
from tests.support.kafka import EventLog
from tests.support.pagerduty_api import FakePagerDuty
from tests.support.payloads import alert, body, webhook
from tests.support.service import RULES, free_port, test_settings

GROUP_BY = ["alertname", "cluster", "namespace"]
ROUTING_KEY = "R0UTINGKEY0000000000000000000000"


class Replica:
    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc, self.name = proc, name
        self.err: list[str] = []
        self._drain = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.err.append(line.decode())

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), 60)
        await self._drain
        return code


@pytest.fixture
async def cluster(kafka: str, pg_url: str, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    settings = test_settings(kafka, tmp_path, database_url=pg_url, kafka_topic_partitions=6)
    await ensure_topics(settings)
    async with FakePagerDuty() as pager:
        env = {
            **os.environ,
            "INCIDENTD_KAFKA_BOOTSTRAP_SERVERS": kafka,
            "INCIDENTD_KAFKA_ALERTS_TOPIC": settings.kafka_alerts_topic,
            "INCIDENTD_KAFKA_EVENTS_TOPIC": settings.kafka_events_topic,
            "INCIDENTD_KAFKA_DLQ_TOPIC": settings.kafka_dlq_topic,
            "INCIDENTD_KAFKA_COMMANDS_TOPIC": settings.kafka_commands_topic,
            "INCIDENTD_KAFKA_GROUP_ID": settings.kafka_group_id,
            "INCIDENTD_KAFKA_CREATE_TOPICS": "false",
            "INCIDENTD_DATABASE_URL": pg_url,
            "INCIDENTD_RULES_DIR": str(RULES),
            "INCIDENTD_PAGERS": "pagerduty",
            "INCIDENTD_PAGERDUTY_API_URL": pager.url,
            "INCIDENTD_PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
            "INCIDENTD_PAGE_BACKOFF_INITIAL_SECONDS": "0.2",
            "INCIDENTD_LOG_LEVEL": "WARNING",
        }
        replicas: list[Replica] = []

        async def start(name: str) -> Replica:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "service", "run", cwd=tmp_path,
                env={**env, "INCIDENTD_HTTP_PORT": str(free_port())},
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            replica = Replica(proc, name)
            replicas.append(replica)
            return replica

        events = await EventLog(kafka, settings.kafka_events_topic).start()
        try:
            yield {"start": start, "pager": pager, "events": events, "settings": settings, "pg": pg_url}
        finally:
            await events.stop()
            for replica in replicas:
                await replica.stop(signal.SIGKILL)


def storm(groups: int, distinct: int, repeats: int) -> tuple[list[tuple[bytes, bytes]], dict[str, str]]:
    """Webhook records keyed by incident group as the HTTP path writes them, every alert
    repeated; and fingerprint -> group key."""
    records: list[tuple[bytes, bytes]] = []
    expected: dict[str, str] = {}
    run = uuid.uuid4().hex[:6]
    for g in range(groups):
        alerts = [
            alert(f"Storm{run}", cluster="c1", namespace=f"ns-{g}", pod=f"pod-{d}", severity="critical")
            for d in range(distinct)
        ]
        key = group_key(alerts[0]["labels"], GROUP_BY)[0]
        for a in alerts:
            expected[fingerprint(a["labels"])] = key
        records += [(record_key(key), body(webhook(*alerts)))] * repeats
    return records, expected


async def incidents_in(pg_url: str) -> list[dict[str, Any]]:
    dsn = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT id, group_key, data FROM incidents")
    finally:
        await conn.close()
    return [{"id": r["id"], "group_key": r["group_key"], **json.loads(r["data"])} for r in rows]


def assert_one_incident_per_group(incidents: list[dict[str, Any]], expected: dict[str, str]) -> None:
    seen: Counter[str] = Counter()
    for inc in incidents:
        for fp in inc["alerts"]:
            seen[fp] += 1
            assert expected[fp] == inc["group_key"]
    assert set(seen) == set(expected), "an alert is in no incident"
    assert max(seen.values()) == 1, "an alert is in more than one incident"
    assert len({inc["group_key"] for inc in incidents}) == len(incidents)


@pytest.mark.timeout(240)
async def test_three_replicas_started_together_page_once_and_publish_each_event_once(
    cluster: dict[str, Any],
) -> None:
    starting = [await cluster["start"](f"r{i}") for i in range(3)]
    records, expected = storm(groups=100, distinct=2, repeats=5)
    await produce_keyed(
        cluster["settings"].kafka_bootstrap_servers, cluster["settings"].kafka_alerts_topic, records
    )
    pager: FakePagerDuty = cluster["pager"]
    events: EventLog = cluster["events"]
    await pager.wait_for(lambda: len(pager.created) >= 100, 120)
    await events.wait_types({"incident.opened": 100, "page.sent": 100}, timeout=60)
    assert [r.proc.returncode for r in starting] == [None, None, None], [r.err[-5:] for r in starting]
    assert_one_incident_per_group(await incidents_in(cluster["pg"]), expected)
    assert len(pager.created) == 100 and max(pager.open.values()) == 1  # one trigger per incident
    ids = Counter(e["id"] for e in events.events)
    assert max(ids.values()) == 1, f"events published twice without a crash: {ids.most_common(3)}"
    assert len(events.of_type("incident.opened")) == 100
    for replica in starting:
        assert await replica.stop() == 0, replica.err[-10:]
        assert not [line for line in replica.err if "Traceback" in line]


@pytest.mark.timeout(300)
async def test_a_replica_killed_mid_storm_loses_nothing_and_pages_once(cluster: dict[str, Any]) -> None:
    replicas = [await cluster["start"](f"r{i}") for i in range(3)]
    records, expected = storm(groups=300, distinct=2, repeats=5)  # 3,000 records, 2,400 duplicates
    settings = cluster["settings"]
    first, rest = records[: len(records) // 3], records[len(records) // 3 :]
    await produce_keyed(settings.kafka_bootstrap_servers, settings.kafka_alerts_topic, first)
    pager: FakePagerDuty = cluster["pager"]
    moment = random.randint(1, 90)  # a random moment; printed so a failure can be replayed
    print(f"killing a replica after {moment} pages")
    await pager.wait_for(lambda: len(pager.created) >= moment, 120)
    await replicas[random.randrange(3)].stop(signal.SIGKILL)  # while the storm is being taken in
    await produce_keyed(settings.kafka_bootstrap_servers, settings.kafka_alerts_topic, rest)
    events: EventLog = cluster["events"]
    await pager.wait_for(lambda: len(pager.created) >= 300, 180)
    await events.wait_types({"incident.opened": 300}, timeout=60)
    assert_one_incident_per_group(await incidents_in(cluster["pg"]), expected)
    # The pager saw one incident per incident (a trigger re-sent after the kill carries the
    # same dedup key, and PagerDuty keeps one incident per key).
    assert len(pager.created) == 300
    opened = Counter(e["subject"] for e in events.of_type("incident.opened"))
    assert len(opened) == 300
    ids = Counter(e["id"] for e in events.events)
    # Repeats only of what the killed replica held when it died, each at most once more.
    assert max(ids.values()) <= 2
    print(f"events: {len(events.events)} published for {len(ids)} ids")
    for replica in replicas:
        if replica.proc.returncode is None:
            assert await replica.stop() == 0, replica.err[-10:]


async def produce_keyed(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


@pytest.mark.timeout(300)
async def test_replicas_joining_and_leaving_under_load_lose_nothing(cluster: dict[str, Any]) -> None:
    settings = cluster["settings"]
    records, expected = storm(groups=150, distinct=2, repeats=4)
    parts = [records[i::3] for i in range(3)]
    pager: FakePagerDuty = cluster["pager"]
    first = await cluster["start"]("r0")
    await produce_keyed(settings.kafka_bootstrap_servers, settings.kafka_alerts_topic, parts[0])
    await pager.wait_for(lambda: len(pager.created) >= 20, 120)  # the first one is at work
    second = await cluster["start"]("r1")  # joins: the partitions are shared out again
    await produce_keyed(settings.kafka_bootstrap_servers, settings.kafka_alerts_topic, parts[1])
    assert await first.stop() == 0  # leaves cleanly while the rest is produced
    await produce_keyed(settings.kafka_bootstrap_servers, settings.kafka_alerts_topic, parts[2])
    await pager.wait_for(lambda: len(pager.created) >= 150, 180)
    assert_one_incident_per_group(await incidents_in(cluster["pg"]), expected)
    assert len(pager.created) == 150
    events: EventLog = cluster["events"]
    await events.wait_types({"incident.opened": 150}, timeout=60)
    ids = Counter(e["id"] for e in events.events)
    assert max(ids.values()) == 1, "a clean stop publishes nothing twice"
    assert await second.stop() == 0
