"""(a) The floor: plain aiokafka consume -> parse -> produce -> commit, one commit per batch."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.common import ROOT, Setup, Storm, alert_storm, create_topics, produce_all, uid


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


async def run_raw_apart(setup: Setup, alerts: int, groups: int, timeout: float = 120.0) -> RawResult:
    """:func:`run_raw` over ``alerts`` one-alert records in ``groups`` groups, in a process
    of its own: its records never live in this process, whose memory (e) measures."""
    args = {
        "bootstrap": setup.bootstrap,
        "alerts": alerts,
        "groups": groups,
        "group_by": list(setup.rules.grouping.group_by),
        "partitions": setup.partitions,
        "max_batch": setup.max_batch,
        "timeout": timeout,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.raw", json.dumps(args), cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout * 2)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise OSError(f"the raw loop's process exited {proc.returncode}: {tail[0]}")
    return RawResult(**json.loads(out))


def main() -> None:
    args = json.loads(sys.argv[1])
    storm = alert_storm(args["alerts"], args["alerts"], args["groups"], args["group_by"])
    result = asyncio.run(
        run_raw(args["bootstrap"], storm, args["partitions"], args["max_batch"], args["timeout"])
    )
    print(json.dumps(asdict(result)))


if __name__ == "__main__":
    main()
