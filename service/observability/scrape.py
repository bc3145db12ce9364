"""The gauges read at each scrape of ``/metrics``: outbox and page backlog from the store,
consumer lag from Kafka.

Read when Prometheus asks rather than on a timer, so a scrape sees the state as it is, and
a replica nobody scrapes runs no queries. Concurrent scrapes share one read. The store's
backlog is store-wide (every replica reports the same numbers: aggregate with ``max``);
the lag is of the partitions this replica consumes (aggregate with ``sum``). A part that
cannot be read in time keeps its last values; the scrape is never failed for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from service.clock import Clock
from service.observability.metrics import Metrics
from service.store.store import Store

log = logging.getLogger(__name__)

# Below Prometheus' default scrape timeout (10 s), well above a healthy read.
TIMEOUT = 3.0


class Subscriber(Protocol):
    """A FastStream Kafka subscriber: ``consumer`` is its aiokafka consumer while it runs."""

    @property
    def consumer(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class ConsumerGroup:
    group: str
    subscriber: Subscriber


@dataclass(frozen=True, slots=True)
class PartitionLag:
    topic: str
    partition: int
    records: int


class ScrapeGauges:
    def __init__(self, store: Store, metrics: Metrics, clock: Clock, groups: Sequence[ConsumerGroup]) -> None:
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._groups = list(groups)
        self._lock = asyncio.Lock()
        self._failing: set[str] = set()

    async def refresh(self) -> None:
        if self._lock.locked():
            # Another scrape is reading: its values will do for this one too.
            async with self._lock:
                return
        async with self._lock:
            await asyncio.gather(
                self._guarded("store backlog", self._backlog),
                self._guarded("consumer lag", self._lag),
            )

    async def _guarded(self, part: str, read: Callable[[], Awaitable[None]]) -> None:
        try:
            await asyncio.wait_for(read(), TIMEOUT)
        except Exception as exc:
            # Once per outage, not at every scrape; the readiness check says the rest.
            if part not in self._failing:
                log.warning("metrics: cannot read the %s: %s: %s", part, exc.__class__.__name__, exc)
            self._failing.add(part)
            return
        self._failing.discard(part)

    async def _backlog(self) -> None:
        now = self._clock.now()
        outbox = await self._store.outbox.backlog()
        pages = await self._store.pages.backlog(now)
        m, stamp = self._metrics, now.timestamp()
        m.outbox_pending.set(outbox.count)
        m.outbox_oldest_age.set(_age(stamp, outbox.oldest))
        m.pages_pending.set(pages.count)
        m.page_oldest_age.set(_age(stamp, pages.oldest))

    async def _lag(self) -> None:
        read = [(g.group, await consumer_lag(g.subscriber.consumer)) for g in self._groups]
        gauge = self._metrics.consumer_lag
        # Partitions handed to another replica since the last scrape are no longer ours.
        gauge.clear()
        for group, lags in read:
            for lag in lags:
                gauge.labels(group, lag.topic, str(lag.partition)).set(lag.records)


async def consumer_lag(consumer: Any) -> list[PartitionLag]:
    """The lag of each partition assigned to ``consumer`` (an aiokafka consumer, None when
    stopped): the partition's end offset (high-water mark) less the group's committed
    offset, or less its first offset when the group has committed nothing yet."""
    if consumer is None:
        return []
    partitions = sorted(consumer.assignment(), key=lambda tp: (tp.topic, tp.partition))
    if not partitions:
        return []
    ends = await consumer.end_offsets(partitions)
    lags = []
    for tp in partitions:
        committed = await consumer.committed(tp)
        if committed is None:
            committed = (await consumer.beginning_offsets([tp]))[tp]
        lags.append(PartitionLag(tp.topic, tp.partition, max(0, int(ends[tp]) - int(committed))))
    return lags


def _age(now: float, oldest: float | None) -> float:
    return 0.0 if oldest is None else max(0.0, now - oldest)
