"""The ``alerts`` topic consumer: batches in, one store transaction and one commit per batch.

Ack policy is explicit: ``NACK_ON_ERROR``. FastStream commits the batch's
offsets only when the handler returns; on an exception it seeks back so the
batch is read again. (Its default for Kafka, ``ACK_FIRST``, commits before
processing and loses alerts on a crash; ``ACK`` commits even after an error.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypedDict

from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage, TopicPartition
from sqlalchemy.exc import DBAPIError, OperationalError

from service.backlog import AlertBacklog
from service.batch import DeadLetter, Pipeline, Record, Stored
from service.config import Settings
from service.context import Context
from service.ingest.deadletter import DeadLetterPublisher
from service.ingest.seal import seal_of
from service.store.incidents import ConcurrentUpdate

log = logging.getLogger(__name__)

# After this many failures of the same batch for a reason that is not the
# infrastructure, each record is processed alone and the failing ones go to
# the dead-letter topic: one poison record must not block its partition.
POISON_ATTEMPTS = 3


async def _raw_records(msg: KafkaMessage) -> Any:
    # Skip FastStream's JSON decoding: bytes that are not JSON must reach the DLQ, not crash.
    raw = msg.raw_message
    return list(raw) if isinstance(raw, tuple) else [raw]


class GroupTimeouts(TypedDict):
    session_timeout_ms: int
    heartbeat_interval_ms: int
    rebalance_timeout_ms: int


def group_timeouts(settings: Settings) -> GroupTimeouts:
    """The consumer-group timeouts every consumer of the service uses."""
    return GroupTimeouts(
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=max(300, settings.kafka_session_timeout_ms // 3),
        rebalance_timeout_ms=settings.kafka_rebalance_timeout_ms,
    )


def source(settings: Settings, topic: str) -> tuple[tuple[str, ...], list[TopicPartition]]:
    """What a consumer of ``topic`` reads: the topic, in its consumer group; or, with
    INCIDENTD_KAFKA_ASSIGNMENT=manual, every partition of it (service/ingest/topics.py
    checks the count at start), with no group join."""
    if settings.kafka_assignment == "manual":
        return (), [TopicPartition(topic, p) for p in range(settings.kafka_topic_partitions)]
    return (topic,), []


def is_infrastructure_error(exc: BaseException) -> bool:
    """Failures that are not the records' fault: retried for ever, never dead-lettered."""
    from aiokafka.errors import KafkaError

    # ConcurrentUpdate: another replica won a race on the incident; re-reading fixes it.
    transient = (OperationalError, DBAPIError, KafkaError, OSError, TimeoutError, ConcurrentUpdate)
    return isinstance(exc, transient)


class AlertConsumer:
    lane = "alerts"
    # After each stage of a slice, the turns of the event loop left to others. A webhook
    # needs five or six to be answered (its body read, the handler, the produce, the
    # broker's acknowledgement, the answer), one per round of everything ready: with one
    # turn per stage a storm's backlog took the loop from the webhooks still coming
    # (measured: the 202 rate fell to 0.26-0.32x Alertmanager's, 0.52-0.68x with four).
    # A turn with nothing else ready costs microseconds.
    turns = 4

    @staticmethod
    def subscription(settings: Settings) -> tuple[str, str]:
        """The topic and the consumer group of this lane."""
        return settings.kafka_alerts_topic, settings.kafka_group_id

    def __init__(
        self,
        broker: KafkaBroker,
        pipeline: Pipeline,
        ctx: Context,
        dead_letters: DeadLetterPublisher,
        after_batch: Callable[[int, Stored | None], Awaitable[None]],
    ) -> None:
        """``after_batch``: told how many records a stored slice had and what it stored (the
        work queues it added to; None: unknown, wake every worker), before the commit."""
        settings = ctx.settings
        topic, group_id = self.subscription(settings)
        self._slice_bytes = settings.kafka_slice_bytes
        self._dead_letters = dead_letters
        self._broker = broker
        self._pipeline = pipeline
        self._clock = ctx.clock
        self._metrics = ctx.metrics
        self._after_batch = after_batch
        self._backlog = AlertBacklog(ctx.clock)
        self._failures: dict[tuple[tuple[str, int, int], ...], int] = {}
        self._backoff = 0.2
        self._stopping = asyncio.Event()
        # Set while this lane has no batch in hand; a lane that yields to it waits for that
        # before each slice, so the urgent lane's batch has the event loop and the store.
        self.idle = asyncio.Event()
        self.idle.set()
        self._yields_to: AlertConsumer | None = None
        topics, partitions = source(settings, topic)
        self.subscriber = broker.subscriber(
            *topics,
            partitions=partitions,
            batch=True,
            group_id=group_id,
            auto_offset_reset="earliest",
            max_records=settings.kafka_max_batch,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            batch_timeout_ms=settings.kafka_batch_timeout_ms,
            **group_timeouts(settings),
            ack_policy=AckPolicy.NACK_ON_ERROR,
            decoder=_raw_records,
        )
        self.subscriber(self.handle)

    def report_to(self, backlog: AlertBacklog) -> None:
        """Tell ``backlog`` of each poll's slices (the relay lets events wait for a backlog)."""
        self._backlog = backlog

    def yield_to(self, other: AlertConsumer) -> None:
        """Start no slice while ``other`` has a batch in hand (the urgent lane)."""
        self._yields_to = other

    async def handle(self, body: Any) -> None:
        records = [
            Record(r.value, r.topic, r.partition, r.offset, r.timestamp, seal_of(r.headers)) for r in body
        ]
        if not records:
            return
        self.idle.clear()
        try:
            await self._handle(records)
        finally:
            self.idle.set()

    async def _handle(self, records: list[Record]) -> None:
        self._metrics.batch_size.observe(len(records))
        ident = tuple(sorted({(r.topic, r.partition, r.offset) for r in records}))[:1]
        try:
            if self._failures.get(ident, 0) >= POISON_ATTEMPTS:
                await self._isolate(records)
                await self._after_batch(len(records), None)
            else:
                parts = slices(records, self._slice_bytes)
                with self._backlog.poll(len(parts)):
                    for part in parts:
                        if self._yields_to is not None:
                            await self._yields_to.idle.wait()
                        stored = (await self._pipeline.process(part, self._clock.now(), self.turns)).stored
                        # Each slice's pages go out as soon as it is stored, not after the poll.
                        await self._after_batch(len(part), stored)
        except Exception as exc:
            # It may have failed after its store transaction: wake every worker for what it
            # stored (its re-read will be duplicates, which wake nobody).
            await self._after_batch(0, None)
            self._failures[ident] = self._failures.get(ident, 0) + 1
            infra = is_infrastructure_error(exc)
            if infra:
                # Not the records' fault: never dead-letter, keep retrying, slower each time.
                self._failures[ident] = 0
            log.warning(
                "batch of %d records failed (%s: %s); it will be read again",
                len(records),
                exc.__class__.__name__,
                exc,
            )
            # Back off before the batch is re-read, but let shutdown interrupt the wait.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._backoff)
            self._backoff = min(self._backoff * 2, 10.0)
            raise
        self._failures.pop(ident, None)
        self._backoff = 0.2

    def stop(self) -> None:
        self._stopping.set()

    async def _isolate(self, records: list[Record]) -> None:
        for rec in records:
            try:
                await self._pipeline.process([rec], self._clock.now())
            except Exception as exc:
                if is_infrastructure_error(exc):
                    raise
                reason = (
                    f"processing failed after {POISON_ATTEMPTS} attempts: {exc.__class__.__name__}: {exc}"
                )
                log.error("dead-lettering %s[%d]@%d: %s", rec.topic, rec.partition, rec.offset, reason)
                await self._dead_letters([DeadLetter(rec, reason)])


class UrgentAlertConsumer(AlertConsumer):
    """The urgent lane: the alerts whose severity is ``urgent``, in a topic and a group of
    their own, so they never wait behind the other topic's backlog."""

    lane = "urgent"
    turns = 1

    @staticmethod
    def subscription(settings: Settings) -> tuple[str, str]:
        return settings.urgent_topic, f"{settings.kafka_group_id}.urgent"


def slices(records: list[Record], max_bytes: int) -> list[list[Record]]:
    """``records`` in order, cut so that each part holds at most ``max_bytes`` of values (a
    larger record alone). Every slice is one store transaction: a storm's poll does not hold
    the store, the event loop or the memory for all of its records at once."""
    parts: list[list[Record]] = []
    size = max_bytes
    for rec in records:
        n = len(rec.value) if rec.value is not None else 0
        if size + n > max_bytes:
            parts.append([])
            size = 0
        parts[-1].append(rec)
        size += n
    return parts
