"""Shared pieces: the alert storm, settings, a recording pager, topic helpers, statistics."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from service.config import Settings
from service.correlate.fingerprint import fingerprint, group_key
from service.ingest.records import record_key
from service.notify.base import PageRequest
from service.ruleset.models import RuleSet

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "rules"

# Names that hit each classify rule, plus some only the `severity` label classifies.
ALERTNAMES = (
    "ApiDown",
    "DatabaseUnavailable",
    "AuthBroken",
    "DebateEngineFailure",
    "ConnectorDown",
    "SlowResponses",
    "UIGlitch",
    "HighErrorRate",
    "DiskWillFillIn4h",
    "KubePodCrashLooping",
)
LABEL_SEVERITIES = ("critical", "warning", "info")


def _warnings_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING


def quiet_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("aiokafka", "uvicorn", "uvicorn.error", "uvicorn.access", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # FastStream sets its own loggers' levels and handlers when a broker starts; a filter stays.
    for name in ("faststream", "faststream.access.kafka", "faststream.kafka"):
        logging.getLogger(name).addFilter(_warnings_only)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def uid() -> str:
    return uuid.uuid4().hex[:8]


@dataclass(frozen=True, slots=True)
class Setup:
    """What every scenario runs on: the broker, a scratch directory, the rules."""

    bootstrap: str
    tmp: Path
    rules: RuleSet
    partitions: int
    max_batch: int


def bench_settings(bootstrap: str, tmp: Path, **overrides: Any) -> Settings:
    """Settings with topics, group and database of their own for one scenario."""
    u = uid()
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "kafka_alerts_topic": f"bench-alerts-{u}",
        "kafka_events_topic": f"bench-incidents.events-{u}",
        "kafka_dlq_topic": f"bench-alerts.dlq-{u}",
        "kafka_group_id": f"bench-incidentd-{u}",
        "database_url": f"sqlite+aiosqlite:///{tmp / f'state-{u}.db'}",
        "rules_dir": RULES,
        "http_host": "127.0.0.1",
        "http_port": free_port(),
        "pagers": ["console"],
    }
    values.update(overrides)
    return Settings(**values)


# -- payloads ------------------------------------------------------------------


def alert_doc(labels: dict[str, str], starts_at: str = "2026-11-26T10:00:00Z") -> dict[str, Any]:
    return {
        "status": "firing",
        "labels": labels,
        "annotations": {
            "summary": f"{labels['alertname']} is firing",
            "description": "benchmark alert",
        },
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.bench/graph?g0.expr=up",
        "fingerprint": fingerprint(labels),
    }


def webhook_doc(alerts: list[dict[str, Any]], group_labels: Mapping[str, str]) -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": "{}:" + json.dumps(dict(group_labels), sort_keys=True),
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "incidentd",
        "groupLabels": dict(group_labels),
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.bench",
        "alerts": alerts,
    }


@dataclass(frozen=True, slots=True)
class Storm:
    """Alertmanager-style records: ``distinct`` alerts in ``groups`` groups, each sent
    ``repeats`` times, one webhook record per alert, keyed by its incident group."""

    records: list[tuple[bytes, bytes]]
    distinct: int
    groups: int
    repeats: int

    @property
    def total(self) -> int:
        return len(self.records)


def alert_storm(total: int, distinct: int, groups: int, group_by: Iterable[str], seed: int = 7) -> Storm:
    distinct = max(1, min(distinct, total))
    groups = max(1, min(groups, distinct))
    group_by = list(group_by)
    rng = random.Random(seed)
    uniques: list[tuple[bytes, dict[str, Any], dict[str, str]]] = []
    for i in range(distinct):
        g = i % groups
        labels = {
            "alertname": ALERTNAMES[g % len(ALERTNAMES)],
            # One cluster per group: the storm measures the pipeline, and the shipped
            # inhibit rule (a database down explains API errors in its cluster) would hold
            # some groups' pages back.
            "cluster": f"bench-{g}",
            "namespace": f"ns-{g // len(ALERTNAMES)}",
            "severity": LABEL_SEVERITIES[g % len(LABEL_SEVERITIES)],
            "instance": f"10.0.{g}.{i // groups}:9100",
            "job": "node",
        }
        gkey, chosen = group_key(labels, group_by)
        uniques.append((record_key(gkey), alert_doc(labels), chosen))
    records: list[tuple[bytes, bytes]] = []
    repeats = -(-total // distinct)
    for _ in range(repeats):
        # One round is one repeat interval (or one HA peer): every alert once, in any order.
        order = list(range(distinct))
        rng.shuffle(order)
        for i in order:
            rkey, doc, chosen = uniques[i]
            body = json.dumps(webhook_doc([doc], chosen), separators=(",", ":")).encode()
            records.append((rkey, body))
    return Storm(records[:total], distinct, groups, repeats)


# -- Kafka helpers ---------------------------------------------------------------


async def create_topics(bootstrap: str, topics: Mapping[str, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, n, 1) for name, n in topics.items()])
    finally:
        await admin.close()


@dataclass(slots=True)
class Produced:
    seconds: float
    end_offsets: dict[TopicPartition, int]


async def produce_all(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> Produced:
    """Sends every record without waiting for each; returns the end offset per partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    try:
        start = time.perf_counter()
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        metas = await asyncio.gather(*futures)
        seconds = time.perf_counter() - start
    finally:
        await producer.stop()
    ends: dict[TopicPartition, int] = {}
    for m in metas:
        tp = TopicPartition(m.topic, m.partition)
        ends[tp] = max(ends.get(tp, 0), m.offset + 1)
    return Produced(seconds, ends)


async def wait_committed(
    bootstrap: str, group: str, ends: Mapping[TopicPartition, int], timeout: float, interval: float = 0.005
) -> float:
    """Polls the group's committed offsets until they reach ``ends``; returns when (perf_counter)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        deadline = time.perf_counter() + timeout
        while True:
            offsets = await admin.list_consumer_group_offsets(group, partitions=list(ends))
            now = time.perf_counter()
            got = {tp: (o.offset if o is not None else -1) for tp, o in offsets.items()}
            if all(got.get(tp, -1) >= end for tp, end in ends.items()):
                return now
            if now > deadline:
                raise TimeoutError(f"group {group} committed {got}, expected {dict(ends)}")
            await asyncio.sleep(interval)
    finally:
        await admin.close()


# -- the recording pager -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SentPage:
    at: float  # time.perf_counter()
    request: PageRequest

    @property
    def alertname(self) -> str:
        return str(self.request.incident.get("group_labels", {}).get("alertname", ""))


@dataclass
class RecordingNotifier:
    """Implements :class:`service.notify.base.Notifier`; remembers when each page went out."""

    name: str = "bench"
    comms: bool = False
    sent: list[SentPage] = field(default_factory=list)
    # When each group's cluster was first paged, kept as pages come: the bench polls it
    # from the service's own event loop, and a scan of every page sent cost that loop 1%.
    first_by_cluster: dict[str, float] = field(default_factory=dict)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, request: PageRequest) -> str | None:
        at = time.perf_counter()
        self.sent.append(SentPage(at, request))
        if request.action == "trigger":
            cluster = str(request.incident.get("group_labels", {}).get("cluster", ""))
            self.first_by_cluster.setdefault(cluster, at)
        self._changed.set()
        return f"bench-{len(self.sent)}"

    async def aclose(self) -> None:
        return None

    def by_alertname(self, action: str = "trigger") -> dict[str, float]:
        """First page time per group alertname."""
        out: dict[str, float] = {}
        for page in self.sent:
            if page.request.action == action:
                out.setdefault(page.alertname, page.at)
        return out

    async def wait_until(self, done: Any, timeout: float) -> None:
        """Waits until ``done(self)`` is true."""

        async def _wait() -> None:
            while not done(self):
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(_wait(), timeout)


# -- statistics -------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
