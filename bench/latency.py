"""(c) Webhook accepted (HTTP 202) -> page sent, through HTTP, Kafka, consumer and page worker."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import uvicorn

from bench.common import RecordingNotifier, Setup, alert_doc, bench_settings, percentile, webhook_doc
from service.batch import Batch
from service.http.app import create_app
from service.runtime import Runtime

WEBHOOK = "/api/v1/alerts/alertmanager"


class StageClock:
    """Pipeline stages around the service's own: when each alert's batch was polled and stored."""

    def __init__(self) -> None:
        self.polled: dict[str, float] = {}
        self.stored: dict[str, float] = {}
        self._batch_in = 0.0

    async def enter(self, batch: Batch) -> Batch:
        self._batch_in = time.perf_counter()
        return batch

    async def leave(self, batch: Batch) -> Batch:
        now = time.perf_counter()
        for alert in batch.alerts:
            name = alert.labels.get("alertname", "")
            self.polled.setdefault(name, self._batch_in)
            self.stored.setdefault(name, now)
        return batch


@dataclass(slots=True)
class LatencyResult:
    webhooks: int
    rate: float  # offered load, webhooks/s (0: one after the other)
    page_ms: dict[str, float] = field(default_factory=dict)  # 202 -> page sent
    accept_ms: dict[str, float] = field(default_factory=dict)  # POST -> 202
    # 202 -> batch polled by the consumer -> batch stored -> page sent
    to_poll_ms: dict[str, float] = field(default_factory=dict)
    to_store_ms: dict[str, float] = field(default_factory=dict)
    to_page_ms: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _summary(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {
        "p50": round(percentile(ms, 50), 2),
        "p90": round(percentile(ms, 90), 2),
        "p99": round(percentile(ms, 99), 2),
        "max": round(max(ms), 2) if ms else float("nan"),
    }


def _body(alertname: str) -> bytes:
    labels = {"alertname": alertname, "cluster": "bench-1", "namespace": "latency", "severity": "critical"}
    group = {"alertname": alertname, "cluster": "bench-1", "namespace": "latency"}
    return json.dumps(webhook_doc([alert_doc(labels)], group)).encode()


async def run_latency(setup: Setup, count: int, rate: float) -> LatencyResult:
    settings = bench_settings(setup.bootstrap, setup.tmp, kafka_topic_partitions=setup.partitions)
    pager = RecordingNotifier()
    runtime = Runtime(settings, setup.rules, notifiers={pager.name: pager})
    clock = StageClock()
    runtime.pipeline.stages.insert(0, clock.enter)
    runtime.pipeline.stages.append(clock.leave)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(runtime.http_services(), runtime.http_settings(), lifespan=runtime.lifespan),
            host=settings.http_host,
            port=settings.http_port,
            log_level="warning",
            access_log=False,
        )
    )
    task = asyncio.create_task(server.serve())
    result = LatencyResult(webhooks=count, rate=rate)
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn exited during start-up")
            await asyncio.sleep(0.02)
        url = f"http://{settings.http_host}:{settings.http_port}{WEBHOOK}"
        headers = {"content-type": "application/json"}
        async with httpx.AsyncClient(timeout=30) as client:
            # Warm-up: the consumer's group join and first fetch are not the latency we measure.
            warm = await client.post(url, content=_body("BenchWarmup"), headers=headers)
            warm.raise_for_status()
            await pager.wait_until(lambda p: "BenchWarmup" in p.by_alertname(), timeout=60)

            names = [f"BenchLatency{i:05d}" for i in range(count)]
            accepted: dict[str, float] = {}
            rtt: list[float] = []
            failed: list[str] = []

            async def post(i: int, name: str, t0: float) -> None:
                if rate > 0:
                    await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
                sent = time.perf_counter()
                resp = await client.post(url, content=_body(name), headers=headers)
                done = time.perf_counter()
                if resp.status_code != 202:
                    failed.append(f"{name}: HTTP {resp.status_code}")
                    return
                accepted[name] = done
                rtt.append(done - sent)

            t0 = time.perf_counter()
            if rate > 0:
                await asyncio.gather(*(post(i, n, t0) for i, n in enumerate(names)))
            else:
                for i, n in enumerate(names):
                    await post(i, n, t0)
            try:
                await pager.wait_until(lambda p: len(p.sent) >= len(accepted) + 1, timeout=60)
            except TimeoutError:
                result.problems.append(f"{len(pager.sent) - 1} of {len(accepted)} pages were sent")
            paged = pager.by_alertname()
            seen = [n for n in names if n in paged and n in accepted and n in clock.stored]
            result.page_ms = _summary([paged[n] - accepted[n] for n in seen])
            result.to_poll_ms = _summary([clock.polled[n] - accepted[n] for n in seen])
            result.to_store_ms = _summary([clock.stored[n] - clock.polled[n] for n in seen])
            result.to_page_ms = _summary([paged[n] - clock.stored[n] for n in seen])
            result.accept_ms = _summary(rtt)
            result.problems.extend(failed)
    finally:
        server.should_exit = True
        await task
    return result
