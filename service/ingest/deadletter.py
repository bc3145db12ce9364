"""Writes records we cannot process to the dead-letter topic, confirmed before the commit."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from faststream.kafka import KafkaBroker

from service.batch import DeadLetter
from service.ingest.records import dead_letter_headers
from service.observability.metrics import Metrics

log = logging.getLogger(__name__)


class DeadLetterPublisher:
    def __init__(self, broker: KafkaBroker, topic: str, metrics: Metrics) -> None:
        self._broker = broker
        self._topic = topic
        self._metrics = metrics

    async def __call__(self, dead: list[DeadLetter]) -> None:
        futures: list[Any] = []
        for d in dead:
            r = d.record
            headers = dead_letter_headers(d.reason, r.topic, r.partition, r.offset)
            futures.append(
                await self._broker.publish(r.value or b"", self._topic, headers=headers, no_confirm=True)
            )
            kind = reason_class(d.reason)
            self._metrics.dead_letters.labels(kind).inc()
            self._metrics.alerts_invalid.labels("kafka", kind).inc()
            log.warning("dead letter %s[%d]@%d: %s", r.topic, r.partition, r.offset, d.reason)
        # Confirmed before the batch commits: a record is either processed or dead-lettered.
        await asyncio.gather(*futures)


def reason_class(reason: str) -> str:
    if reason.startswith("body is not valid JSON"):
        return "malformed"
    if reason.startswith("processing failed"):
        return "poison"
    if reason.startswith("empty"):
        return "empty"
    return "invalid"
