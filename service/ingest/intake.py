"""The webhook's work: a body in, one Kafka record per incident group out, acknowledged.

A 2xx is given only for what Kafka has acknowledged (Alertmanager retries 5xx only);
every way a body can fail is an exception the HTTP layer turns into its status.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from faststream.kafka import KafkaBroker

from service.clock import Clock
from service.ingest.parse import PayloadError, decode, parse_document
from service.ingest.records import split_by_group
from service.observability.metrics import Metrics

# Kafka's default record limit (1 MiB) less room for the record's own framing.
MAX_RECORD_BYTES = 1_000_000

# Sends (key, value) records to the alerts topic and returns once Kafka acknowledged all.
Publish = Callable[[list[tuple[bytes, bytes]]], Awaitable[None]]


class TooLarge(Exception):
    pass


class Unavailable(Exception):
    """Kafka did not acknowledge in time: nothing can be promised, the sender retries."""


@dataclass(frozen=True, slots=True)
class Accepted:
    alerts: int
    records: int


class AlertIntake:
    def __init__(
        self, publish: Publish, group_by: Sequence[str], clock: Clock, metrics: Metrics, *, timeout: float
    ) -> None:
        self._publish = publish
        self._group_by = list(group_by)
        self._clock = clock
        self._metrics = metrics
        self._timeout = timeout

    async def accept(self, body: bytes) -> Accepted:
        """Raises :class:`PayloadError` (400/422), :class:`TooLarge` (413) or
        :class:`Unavailable` (503)."""
        try:
            doc = decode(body)
            if "alerts" not in doc and "version" not in doc:
                raise PayloadError(
                    "invalid", "not an Alertmanager webhook: 'version' and 'alerts' are required"
                )
            alerts = parse_document(doc, self._clock.now())
        except PayloadError as exc:
            self._metrics.alerts_invalid.labels("http", exc.kind).inc()
            raise
        if not alerts:
            return Accepted(0, 0)
        records = split_by_group(doc, alerts, self._group_by)
        if any(len(value) > MAX_RECORD_BYTES for _, value in records):
            self._metrics.alerts_invalid.labels("http", "too_large").inc()
            raise TooLarge(
                f"the alerts of one incident group exceed Kafka's record limit ({MAX_RECORD_BYTES} bytes)"
            )
        try:
            await asyncio.wait_for(self._publish(records), self._timeout)
        except Exception as exc:
            raise Unavailable(f"{exc.__class__.__name__}: {exc}") from exc
        self._metrics.alerts_received.labels("http").inc(len(alerts))
        return Accepted(len(alerts), len(records))


def kafka_publisher(broker: KafkaBroker, topic: str) -> Publish:
    """Unconfirmed sends of every record, then one wait for all acknowledgements."""

    async def publish(records: list[tuple[bytes, bytes]]) -> None:
        futures = [await broker.publish(value, topic, key=key, no_confirm=True) for key, value in records]
        await asyncio.gather(*futures)

    return publish
