"""Publishes the outbox to Kafka: claim, unconfirmed sends, one flush, then delete.

At-least-once: a crash after the flush and before the delete publishes the same
records again, with the same CloudEvent ids. Rows are claimed with a lease, so with
several replicas each event is published by one of them.
"""

from __future__ import annotations

import asyncio

from faststream.kafka import KafkaBroker

from service.clock import SystemClock
from service.observability.metrics import Metrics
from service.scheduling import DueWorker
from service.store.outbox import Outbox, OutboxClaim, OutboxRecord
from service.store.queue import LEASE_SECONDS

CE_HEADERS = {"content-type": "application/cloudevents+json; charset=utf-8"}
# Events claimed and sent at once. The claim runs in the event loop's thread on SQLite
# (Database.write_inline), and a storm's events carry their incidents' alerts: a claim of
# 1,000 held the loop up to 185 ms, its sends up to 98 ms; of 100, 27 and 17 ms.
CLAIM_AT_ONCE = 100


class OutboxRelay(DueWorker):
    name = "outbox relay"

    def __init__(
        self, outbox: Outbox, broker: KafkaBroker, metrics: Metrics, batch: int = CLAIM_AT_ONCE
    ) -> None:
        # Wall time even under an injected clock: leases are about this machine's processes.
        super().__init__(SystemClock())
        self._outbox = outbox
        self._broker = broker
        self._metrics = metrics
        self._batch = batch
        self._lock = asyncio.Lock()
        self._inflight: set[asyncio.Future[None]] = set()

    async def run_once(self) -> int:
        return await self.flush()

    async def next_due(self) -> float | None:
        return await self._outbox.next_due(self._clock.now())

    async def flush(self) -> int:
        """Publish everything in the outbox this replica can claim; return how many
        records went out."""
        total = 0
        # A send cancelled with its worker (a stop) is finished first: its records are
        # queued in the producer and go out anyway; given back, they would go out twice.
        await asyncio.gather(*self._inflight, return_exceptions=True)
        async with self._lock:
            while True:
                claim = await self._outbox.claim(self._clock.now(), self._batch, LEASE_SECONDS)
                if claim.records:
                    send = asyncio.ensure_future(self._send(claim))
                    self._inflight.add(send)
                    send.add_done_callback(self._inflight.discard)
                    await asyncio.shield(send)
                    self._metrics.events_published.inc(len(claim.records))
                    total += len(claim.records)
                if len(claim.records) < self._batch:
                    return total

    async def _send(self, claim: OutboxClaim) -> None:
        """Publish a claim and delete its rows; on failure give them back at once, so another
        try (ours or a replica's) need not wait for the lease."""
        try:
            await self._publish([rec for _, rec in claim.records])
        except BaseException:
            await self._outbox.queue.release([row_id for row_id, _ in claim.records], claim.owner)
            raise
        await self._outbox.published(claim)

    async def _publish(self, records: list[OutboxRecord]) -> None:
        futures = [
            await self._broker.publish(rec.value, rec.topic, key=rec.key, headers=CE_HEADERS, no_confirm=True)
            for rec in records
        ]
        await asyncio.gather(*futures)
