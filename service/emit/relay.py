"""Publishes the outbox to Kafka: unconfirmed sends, one flush, then delete.

At-least-once: a crash after the flush and before the delete publishes the
same records again, with the same CloudEvent ids.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from faststream.kafka import KafkaBroker

from service.observability.metrics import Metrics
from service.store.store import Store

log = logging.getLogger(__name__)

CE_HEADERS = {"content-type": "application/cloudevents+json; charset=utf-8"}


class OutboxRelay:
    def __init__(self, store: Store, broker: KafkaBroker, metrics: Metrics, batch: int = 1000):
        self._store = store
        self._broker = broker
        self._metrics = metrics
        self._batch = batch
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def wake(self) -> None:
        self._wake.set()

    async def flush(self) -> int:
        """Publish everything in the outbox; return how many records went out."""
        total = 0
        async with self._lock:
            while True:
                rows = await self._store.fetch_outbox(self._batch)
                if not rows:
                    return total
                futures: list[Any] = []
                for _, rec in rows:
                    futures.append(
                        await self._broker.publish(
                            rec.value, rec.topic, key=rec.key, headers=CE_HEADERS, no_confirm=True
                        )
                    )
                await asyncio.gather(*futures)
                await self._store.delete_outbox([row_id for row_id, _ in rows])
                self._metrics.events_published.inc(len(rows))
                total += len(rows)

    async def run(self) -> None:
        delay = 0.5
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
                delay = 0.5
            except Exception as exc:
                log.warning("outbox relay: publish failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                self._wake.set()
