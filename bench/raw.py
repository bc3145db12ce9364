"""(a) The floor: plain aiokafka consume -> parse -> produce -> commit, one commit per batch."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.common import Storm, create_topics, produce_all, uid


@dataclass(slots=True)
class RawResult:
    messages: int
    batches: int
    seconds: float  # first non-empty poll -> last commit
    join_seconds: float  # consumer start -> first non-empty poll (group join)
    preload_seconds: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "messages_per_s": round(self.rate, 1)}


async def run_raw(
    bootstrap: str, storm: Storm, partitions: int, max_records: int, timeout: float = 120.0
) -> RawResult:
    u = uid()
    source, sink, group = f"bench-raw-in-{u}", f"bench-raw-out-{u}", f"bench-raw-{u}"
    await create_topics(bootstrap, {source: partitions, sink: partitions})
    produced = await produce_all(bootstrap, source, storm.records)
    total = sum(produced.end_offsets.values())

    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    joining = time.perf_counter()
    await consumer.start()
    try:
        done = batches = 0
        started: float | None = None
        deadline = time.perf_counter() + timeout
        while done < total:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"raw baseline consumed {done} of {total} records")
            polled = await consumer.getmany(timeout_ms=500, max_records=max_records)
            if not polled:
                continue
            if started is None:
                started = time.perf_counter()
            futures = []
            for records in polled.values():
                for rec in records:
                    doc = json.loads(rec.value)
                    alert = doc["alerts"][0]
                    out = json.dumps(
                        {"fingerprint": alert["fingerprint"], "status": alert["status"]},
                        separators=(",", ":"),
                    ).encode()
                    futures.append(await producer.send(sink, out, key=rec.key))
                done += len(records)
            await asyncio.gather(*futures)
            await consumer.commit()
            batches += 1
        assert started is not None
        elapsed = time.perf_counter() - started
    finally:
        await consumer.stop()
        await producer.stop()
    return RawResult(
        messages=done,
        batches=batches,
        seconds=elapsed,
        join_seconds=started - joining,
        preload_seconds=produced.seconds,
    )
