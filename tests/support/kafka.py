"""Helpers to read and write topics on the real test broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any, Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from service.ingest.kafka_security import ClientSecurity


class TopicReader:
    """Reads a topic from the beginning and keeps every record it saw."""

    def __init__(self, bootstrap: str, topic: str, security: ClientSecurity | None = None) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.security = security or ClientSecurity(
            security_protocol="PLAINTEXT",
            ssl_context=None,
            sasl_mechanism="PLAIN",
            sasl_plain_username=None,
            sasl_plain_password=None,
        )
        self.records: list[Any] = []
        self._consumer: AIOKafkaConsumer | None = None
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> Self:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, **self.security
        )
        await self._consumer.start()
        partitions = await self._partitions()
        tps = [TopicPartition(self.topic, p) for p in partitions]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        self._task = asyncio.create_task(self._pump())
        return self

    async def _partitions(self) -> set[int]:
        assert self._consumer is not None
        for _ in range(100):
            parts = self._consumer.partitions_for_topic(self.topic)
            if parts:
                return set(parts)
            await self._consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public metadata refresh
            await asyncio.sleep(0.05)
        raise AssertionError(f"topic {self.topic} has no partitions")

    async def _pump(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            if batch:
                async with self._changed:
                    for recs in batch.values():
                        self.records.extend(recs)
                    self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[list[Any]], bool], timeout: float = 30.0) -> list[Any]:
        async def _wait() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self.records))

        await asyncio.wait_for(_wait(), timeout)
        return self.records

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer:
            # aiokafka's fetcher leaks a CancelledError from close() when the broker is gone.
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer.stop()


class EventLog(TopicReader):
    """``incidents.events`` as decoded CloudEvents."""

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(r.value) for r in self.records]

    def of_type(self, suffix: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"].endswith("." + suffix)]

    async def wait_types(self, counts: dict[str, int], timeout: float = 30.0) -> list[dict[str, Any]]:
        def done(_: list[Any]) -> bool:
            return all(len(self.of_type(t)) >= n for t, n in counts.items())

        await self.wait_for(done, timeout)
        return self.events


async def produce(
    bootstrap: str,
    topic: str,
    values: list[bytes],
    key: bytes | None = None,
    security: ClientSecurity | None = None,
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **(security or {}))
    await producer.start()
    try:
        futures = [await producer.send(topic, v, key=key) for v in values]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
