"""(b) The service's own consumer on an alert storm, through a real ``Runtime``."""

from __future__ import annotations

import asyncio
import cProfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.common import RecordingNotifier, Setup, Storm, bench_settings, produce_all, wait_committed
from service.batch import Batch, Pipeline, Stage
from service.ingest.topics import ensure_topics
from service.runtime import Runtime


class Probe:
    """Stages around the service's own: when records enter, when the batch that completes
    the stream is stored (its offsets are committed right after), and how long each of the
    service's stages took in all (wall time, awaits on the store included)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.first_at: float | None = None
        self.stored_at: float | None = None
        self.batches = 0
        self.records = 0
        self.stage_seconds: dict[str, float] = {}
        self.done = asyncio.Event()

    async def enter(self, batch: Batch) -> Batch:
        if self.first_at is None:
            self.first_at = time.perf_counter()
        return batch

    async def leave(self, batch: Batch) -> Batch:
        self.batches += 1
        # A re-delivered batch would count twice; the committed offsets are the exact check.
        self.records += len(batch.records)
        if self.records >= self.target and not self.done.is_set():
            self.stored_at = time.perf_counter()
            self.done.set()
        return batch

    def timed(self, stage: Stage) -> Stage:
        name = type(stage).__name__
        self.stage_seconds[name] = 0.0

        async def run(batch: Batch) -> Batch:
            start = time.perf_counter()
            try:
                return await stage(batch)
            finally:
                self.stage_seconds[name] += time.perf_counter() - start

        return run

    def install(self, pipeline: Pipeline) -> None:
        pipeline.stages = [self.enter, *(self.timed(s) for s in pipeline.stages), self.leave]


@dataclass(slots=True)
class StormResult:
    alerts: int
    distinct: int
    groups: int
    batches: int
    seconds: float  # first record entering the pipeline -> all offsets committed
    stored_seconds: float  # first record -> last batch stored
    startup_seconds: float  # runtime start -> first record (group join)
    first_to_last_page_seconds: float
    preload_seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.alerts / self.seconds if self.seconds > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "alerts_per_s": round(self.rate, 1)}


def _sample(runtime: Runtime, name: str, labels: dict[str, str] | None = None) -> float:
    return float(runtime.metrics.registry.get_sample_value(name, labels or {}) or 0.0)


async def run_storm(
    setup: Setup, storm: Storm, timeout: float = 120.0, profile_to: Path | None = None
) -> StormResult:
    bootstrap, rules = setup.bootstrap, setup.rules
    settings = bench_settings(
        bootstrap, setup.tmp, kafka_topic_partitions=setup.partitions, kafka_max_batch=setup.max_batch
    )
    await ensure_topics(settings)
    produced = await produce_all(bootstrap, settings.kafka_alerts_topic, storm.records)

    pager = RecordingNotifier()
    runtime = Runtime(settings, rules, notifiers={pager.name: pager})
    probe = Probe(storm.total)
    probe.install(runtime.pipeline)

    profiler = cProfile.Profile() if profile_to else None
    started = time.perf_counter()
    async with runtime.running():
        if profiler:
            profiler.enable()
        await asyncio.wait_for(probe.done.wait(), timeout)
        committed_at = await wait_committed(
            bootstrap, settings.kafka_group_id, produced.end_offsets, timeout=timeout
        )
        if profiler:
            profiler.disable()
        problems: list[str] = []
        try:
            await pager.wait_until(lambda p: len(p.sent) >= storm.groups, timeout=30)
        except TimeoutError:
            problems.append(f"only {len(pager.sent)} of {storm.groups} pages were sent")
        # Page outcomes recorded, then every stored event published, before reading counters.
        await asyncio.wait_for(runtime.pages.drain(), 30)
        await asyncio.wait_for(runtime.relay.flush(), 30)
        counters = {
            "alerts_received": _sample(runtime, "incidentd_alerts_received_total"),
            "alerts_deduplicated": _sample(runtime, "incidentd_alerts_deduplicated_total"),
            "incidents_opened": sum(
                _sample(runtime, "incidentd_incidents_opened_total", {"severity": s})
                for s in rules.severities
            ),
            "pages_sent": float(len(pager.sent)),
            "events_published": _sample(runtime, "incidentd_events_published_total"),
            "dead_letters": sum(
                _sample(runtime, "incidentd_dead_letters_total", {"reason": r})
                for r in ("malformed", "invalid", "poison", "empty")
            ),
        }
    if profiler and profile_to:
        profile_to.parent.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(profile_to)

    assert probe.first_at is not None and probe.stored_at is not None
    expected = {
        "alerts_received": storm.total,
        "alerts_deduplicated": storm.total - storm.distinct,
        "incidents_opened": storm.groups,
        "pages_sent": storm.groups,
        "dead_letters": 0,
    }
    for name, want in expected.items():
        if counters[name] != want:
            problems.append(f"{name} = {counters[name]:g}, expected {want}")
    last_page = max((p.at for p in pager.sent), default=probe.first_at)
    return StormResult(
        alerts=storm.total,
        distinct=storm.distinct,
        groups=storm.groups,
        batches=probe.batches,
        seconds=committed_at - probe.first_at,
        stored_seconds=probe.stored_at - probe.first_at,
        startup_seconds=probe.first_at - started,
        first_to_last_page_seconds=last_page - probe.first_at,
        preload_seconds=produced.seconds,
        stage_seconds={k: round(v, 3) for k, v in probe.stage_seconds.items()},
        counters=counters,
        problems=problems,
    )
