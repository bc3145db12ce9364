"""(e) Issue #13 item 5: the service over HTTP, each figure against an anchor of the same run.

One bench run, on the bench's embedded broker:

1. storm: ``--storm-alerts`` alerts in ``--storm-groups`` groups posted to
   ``POST /api/v1/alerts/alertmanager`` as Alertmanager would (webhook v4 bodies of up to
   ``--storm-batch`` alerts, one group per body, ``--storm-inflight`` requests in flight),
   until every group's incident is paged; anchor: the raw aiokafka loop (``bench/raw.py``)
   over as many one-alert records, run in a process of its own just before (1) and again
   just after, (1) set against both runs together;
2. the real Alertmanager (``/usr/bin/prometheus-alertmanager``) taking the same alerts on its
   ``POST /api/v2/alerts``, same batches and concurrency: the anchor of the 202 rate;
3. one new SEV-1 (``ApiDown``, a cluster of its own) every ``--sev1-interval`` s while (1) is
   taken in and drained: webhook 202 -> first page sent;
4. new incidents at ``--repeats-new-rate``/s while ``--repeats-rate`` alerts/s of repeats (the
   same alerts re-sent, same startsAt) for ``--repeats-open`` open incidents flow in, for
   ``--repeats-seconds``: webhook 202 -> first page sent; on a service of its own, not
   the one still paging (1)'s thousand incidents;
5. this process's RSS (the service runs in it): idle just before (1), the peak sampled every
   100 ms during (1);
6. ``incidentd run`` as a subprocess (topics already there): process start -> ``/readyz``
   200 and the alerts consumer group's partitions assigned (aiokafka's INFO line "Setting
   newly assigned partitions ... for group <id>"); and, as a cross-check, a webhook posted
   as soon as ``/readyz`` answers -> its ``incident.opened`` on the events topic. Twice: on a
   new SQLite file (the schema is created) and again on the same file (a restart).

The service and the recording pager run in this process; the load of (1), (3) and (4) is
posted by a process of its own (``bench/loadgen.py``), as a producer outside the service
would, and Alertmanager runs in its own process. (5) is the service's memory alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml
from aiokafka import AIOKafkaConsumer

from bench.common import (
    RULES,
    RecordingNotifier,
    Setup,
    alert_doc,
    bench_settings,
    free_port,
    percentile,
    webhook_doc,
)
from bench.load import (
    HEADERS,
    WEBHOOK,
    failures,
    post_all,
    probe_cluster,
    repeat_bodies,
    sev1_body,
    storm_shape,
)
from bench.loadgen import LoadProcess
from bench.raw import RawResult, run_raw_apart
from bench.storm import Probe
from service import allocator
from service.batch import Batch, Pipeline
from service.http.app import create_app
from service.ingest.topics import ensure_topics
from service.runtime import Runtime
from service.store.outbox import Outbox

ALERTMANAGER_BIN = "/usr/bin/prometheus-alertmanager"
INCIDENTD_BIN = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "incidentd"
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class StormHttpParams:
    alerts: int = 100_000
    groups: int = 1_000
    batch: int = 100  # alerts per webhook body
    inflight: int = 8
    sev1_interval: float = 0.25
    repeats_seconds: float = 10.0
    repeats_rate: float = 1000.0  # repeated alerts/s
    repeats_open: int = 50  # open incidents whose alerts repeat
    repeats_new_rate: float = 10.0  # new incidents/s
    timeout: float = 180.0  # for the storm to be paged and stored, from its first POST


@dataclass(slots=True)
class StormHttpResult:
    alerts: int = 0
    groups: int = 0
    bodies: int = 0
    accepted_alerts: int = 0  # answered 202
    alertmanager_alerts: int = 0  # answered 200 by Alertmanager
    # (1)
    accept_seconds: float = 0.0  # first POST -> last 202
    paged_seconds: float = 0.0  # first POST -> last group's first page
    stored_seconds: float = 0.0  # first POST -> last storm record stored (offsets then committed)
    events_seconds: float = 0.0  # first POST -> every event stored by then published
    # the raw loop run just before (1) and again just after: the machine's speed drifts
    # within a run (seen: the same loop at 14k and at 23k msg/s), so (1) is set against both
    raw_before: RawResult | None = None
    raw_after: RawResult | None = None
    accept_ms: dict[str, float] = field(default_factory=dict)  # POST -> 202 of the storm's bodies
    # (2)
    alertmanager_seconds: float = 0.0
    # (3)
    sev1_ms: dict[str, float] = field(default_factory=dict)
    sev1_stored_ms: dict[str, float] = field(default_factory=dict)  # 202 -> its batch stored
    sev1_polled_ms: dict[str, float] = field(default_factory=dict)  # 202 -> its batch polled
    # (4)
    repeats_new_ms: dict[str, float] = field(default_factory=dict)
    repeats_new_stored_ms: dict[str, float] = field(default_factory=dict)  # 202 -> its batch stored
    repeats_new_polled_ms: dict[str, float] = field(default_factory=dict)  # 202 -> its batch polled
    repeats_alerts_per_s: float = 0.0  # the repeats' offered load actually answered
    # (5)
    rss_idle_mib: float = 0.0
    rss_peak_mib: float = 0.0
    hwm_mib: float = 0.0  # VmHWM at the end of (1): the process's peak since it started
    # where the consumer's time went during (1): wall seconds per pipeline stage, and batches
    stage_seconds: dict[str, float] = field(default_factory=dict)
    batches: int = 0
    # Python's cyclic collector during (1), by generation: seconds, and collections
    collector_seconds: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    collector_runs: list[int] = field(default_factory=lambda: [0, 0, 0])
    loop_cpu_seconds: float = 0.0  # the event loop's thread, during (1) (until its SEV-1s are paged)
    # (6)
    startup: list[dict[str, float]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def accept_rate(self) -> float:
        return self.accepted_alerts / self.accept_seconds if self.accept_seconds > 0 else 0.0

    @property
    def e2e_rate(self) -> float:
        return self.alerts / self.paged_seconds if self.paged_seconds > 0 else 0.0

    @property
    def alertmanager_rate(self) -> float:
        return self.alertmanager_alerts / self.alertmanager_seconds if self.alertmanager_seconds > 0 else 0.0

    @property
    def raw_runs(self) -> list[RawResult]:
        return [r for r in (self.raw_before, self.raw_after) if r is not None]

    @property
    def raw_msgs_per_s(self) -> float:
        """The raw loop's rate over both its runs: their records over their summed time."""
        seconds = sum(r.seconds for r in self.raw_runs)
        return sum(r.messages for r in self.raw_runs) / seconds if seconds > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        def r(x: float) -> float:
            return round(x, 3)

        return {
            **asdict(self),
            "accept_alerts_per_s": round(self.accept_rate, 1),
            "e2e_alerts_per_s": round(self.e2e_rate, 1),
            "alertmanager_alerts_per_s": round(self.alertmanager_rate, 1),
            "raw_msgs_per_s": round(self.raw_msgs_per_s, 1),
            "ratio_e2e_over_raw": r(self.e2e_rate / self.raw_msgs_per_s) if self.raw_msgs_per_s else None,
            "ratio_accept_over_alertmanager": (
                r(self.accept_rate / self.alertmanager_rate) if self.alertmanager_rate else None
            ),
            "rss_growth_mib": r(self.rss_peak_mib - self.rss_idle_mib),
        }


def summary_ms(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    if not ms:
        return {"count": 0}
    return {
        "count": len(ms),
        "p50": round(percentile(ms, 50), 2),
        "p99": round(percentile(ms, 99), 2),
        "max": round(max(ms), 2),
    }


# -- payloads ------------------------------------------------------------------------


def first_pages(pager: RecordingNotifier, prefix: str) -> dict[str, float]:
    """When each incident whose cluster starts with ``prefix`` was first paged."""
    return {c: at for c, at in pager.first_by_cluster.items() if c.startswith(prefix)}


# -- HTTP load -------------------------------------------------------------------------


# -- memory ---------------------------------------------------------------------------


def proc_status_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


class RssSampler:
    """The largest VmRSS seen, sampled every ``interval`` s (VmHWM cannot be reset)."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.peak_kib = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.peak_kib = max(self.peak_kib, proc_status_kib("VmRSS"))
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self.peak_kib = proc_status_kib("VmRSS")
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> float:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.peak_kib = max(self.peak_kib, proc_status_kib("VmRSS"))
        return self.peak_kib / 1024


class CollectorTime:
    """Seconds Python's cyclic collector ran between :meth:`start` and :meth:`stop`, and how
    many collections, by generation (``gc.callbacks``): time the event loop stood still,
    which no profile of its own frames shows."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.collections = [0, 0, 0]
        self._began = 0.0

    def _note(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.seconds[info["generation"]] += time.perf_counter() - self._began
            self.collections[info["generation"]] += 1

    def start(self) -> None:
        gc.callbacks.append(self._note)

    def stop(self) -> None:
        gc.callbacks.remove(self._note)


# -- the service in this process -----------------------------------------------------------


class StoredClock:
    """A last stage: counts the stored records of the storm's groups, notes when all are in;
    and the wall time of each of the service's stages (``bench.storm.Probe``)."""

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self.target = 0
        self.records = 0
        self.batches = 0
        self.done_at = 0.0
        self.done = asyncio.Event()
        self.probe = Probe(0)
        self.probe_stored: dict[str, float] = {}  # each probe's cluster -> its batch stored
        self.probe_polled: dict[str, float] = {}  # ... -> its batch entered the pipeline

    def install(self, pipeline: Pipeline) -> None:
        pipeline.stages = [self.enter, *(self.probe.timed(s) for s in pipeline.stages), self.leave]

    async def enter(self, batch: Batch) -> Batch:
        for r in batch.records:
            if r.value and (cluster := probe_cluster(r.value)):
                self.probe_polled.setdefault(cluster, time.perf_counter())
        return batch

    async def leave(self, batch: Batch) -> Batch:
        self.batches += 1
        for r in batch.records:
            if r.value and (cluster := probe_cluster(r.value)):
                self.probe_stored.setdefault(cluster, time.perf_counter())
        self.records += sum(1 for r in batch.records if r.value and self.prefix in r.value)
        if self.target and self.records >= self.target and not self.done.is_set():
            self.done_at = time.perf_counter()
            self.done.set()
        return batch


@dataclass(frozen=True)
class Served:
    url: str
    outbox: Outbox  # the storm's events are published when it holds none of them


@contextlib.asynccontextmanager
async def serving(setup: Setup, pager: RecordingNotifier, clock: StoredClock) -> Any:
    settings = bench_settings(
        setup.bootstrap, setup.tmp, kafka_topic_partitions=setup.partitions, kafka_max_batch=setup.max_batch
    )
    runtime = Runtime(settings, setup.rules, notifiers={pager.name: pager})
    clock.install(runtime.pipeline)
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
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn exited during start-up")
            await asyncio.sleep(0.02)
        # As `incidentd run` does once it serves.
        allocator.freeze_started()
        yield Served(f"http://{settings.http_host}:{settings.http_port}{WEBHOOK}", runtime.store.outbox)
    finally:
        server.should_exit = True
        await task


async def _published(outbox: Outbox, cutoff: float, timeout: float, problems: list[str]) -> float:
    """When the outbox held no event stored before ``cutoff`` (epoch): every one published
    (and removed, at most REMOVE_WITHIN later); perf_counter time."""

    async def done() -> bool:
        left = await outbox.backlog()
        return left.count == 0 or (left.oldest is not None and left.oldest > cutoff)

    deadline = time.perf_counter() + timeout
    while not await done():
        if time.perf_counter() > deadline:
            problems.append("(e1) storm events: not all published within --storm-timeout")
            break
        await asyncio.sleep(0.02)
    return time.perf_counter()


async def _wait(what: str, done: Callable[[], bool], timeout: float, problems: list[str]) -> bool:
    deadline = time.perf_counter() + timeout
    while not done():
        if time.perf_counter() > deadline:
            problems.append(f"{what}: not after {timeout:.0f} s" if timeout > 0 else f"{what}: no time left")
            return False
        # Pages are timed by the pager itself; this poll only decides when to move on.
        await asyncio.sleep(0.05)
    return True


async def storm_phase(
    served: Served, pager: RecordingNotifier, clock: StoredClock, p: StormHttpParams, result: StormHttpResult
) -> bool:
    """(1), (3) and (5) together; whether the storm was drained in time."""
    clusters, result.bodies = storm_shape(p.alerts, p.groups, p.batch)
    result.alerts, result.groups = p.alerts, len(clusters)
    clock.target = result.bodies

    stages_before, batches_before = dict(clock.probe.stage_seconds), clock.batches
    sampler, collector = RssSampler(), CollectorTime()
    result.rss_idle_mib = proc_status_kib("VmRSS") / 1024
    sampler.start()
    collector.start()
    # The service's event loop is this thread: its CPU time against the storm's wall time
    # tells whether the loop was the bound.
    loop_cpu = time.thread_time()
    storm = {"alerts": p.alerts, "groups": p.groups, "batch": p.batch, "inflight": p.inflight}
    plan = {
        "url": served.url,
        "closed": {**storm, "deadline_s": p.timeout},
        "open": [{"name": "sev1", "interval": p.sev1_interval, "duration": None}],
    }
    async with LoadProcess(plan) as load:
        posted, total = await load.closed()
        if posted.sent < total:
            result.problems.append(
                f"(e1) only {posted.sent} of {total} storm bodies posted within --storm-timeout"
            )
        result.accept_seconds = posted.last_done - posted.first_sent
        result.accepted_alerts = posted.ok_alerts
        result.accept_ms = summary_ms(posted.rtt)
        result.problems += failures("(e1) storm webhooks", posted.failed)
        left = posted.first_sent + p.timeout - time.perf_counter()
        paged = await _wait(
            f"(e1) storm: {len(clusters)} groups paged",
            lambda: len(first_pages(pager, "storm-")) >= len(clusters),
            left,
            result.problems,
        )
        left = posted.first_sent + p.timeout - time.perf_counter()
        stored = paged and await _wait(
            "(e1) storm: every record stored", clock.done.is_set, left, result.problems
        )
        if not stored:
            result.problems.append(
                f"(e1) storm not drained {time.perf_counter() - posted.first_sent:.0f} s after the first "
                f"POST (--storm-timeout): {clock.records} of {total} records stored, "
                f"{len(first_pages(pager, 'storm-'))} of {len(clusters)} groups paged"
            )
        if stored:
            left = posted.first_sent + p.timeout - time.perf_counter()
            published = await _published(served.outbox, time.time(), left, result.problems)
            result.events_seconds = published - posted.first_sent
        sev1 = (await load.finish())["sev1"]
    result.rss_peak_mib = await sampler.stop()
    collector.stop()
    result.collector_seconds, result.collector_runs = collector.seconds, collector.collections
    result.loop_cpu_seconds = time.thread_time() - loop_cpu
    result.hwm_mib = proc_status_kib("VmHWM") / 1024
    result.batches = clock.batches - batches_before
    result.stage_seconds = {
        k.removesuffix("Stage"): round(v - stages_before.get(k, 0.0), 3)
        for k, v in clock.probe.stage_seconds.items()
    }
    storm_pages = first_pages(pager, "storm-")
    if paged:
        result.paged_seconds = max(storm_pages.values()) - posted.first_sent
    else:
        result.problems.append(f"(e1) storm: {len(storm_pages)} of {len(clusters)} groups paged")
    if stored:
        result.stored_seconds = clock.done_at - posted.first_sent

    await _wait(
        "(e3) SEV-1 pages",
        lambda: set(sev1.accepted) <= set(first_pages(pager, "sev1-")),
        60 if stored else 5,
        result.problems,
    )
    sev1_pages = first_pages(pager, "sev1-")
    result.sev1_ms = summary_ms([sev1_pages[k] - t for k, t in sev1.accepted.items() if k in sev1_pages])
    result.sev1_stored_ms = summary_ms(
        [clock.probe_stored[k] - t for k, t in sev1.accepted.items() if k in clock.probe_stored]
    )
    result.sev1_polled_ms = summary_ms(
        [clock.probe_polled[k] - t for k, t in sev1.accepted.items() if k in clock.probe_polled]
    )
    missing = len(set(sev1.accepted) - set(sev1_pages))
    if missing:
        result.problems.append(f"(e3) {missing} of {len(sev1.accepted)} SEV-1 webhooks not paged")
    result.problems += failures("(e3) SEV-1 webhooks", sev1.failed)
    return stored


async def repeats_phase(
    url: str, pager: RecordingNotifier, clock: StoredClock, p: StormHttpParams, result: StormHttpResult
) -> None:
    """(4): the open incidents first, then repeats and new incidents on a fixed timeline."""
    per_body = max(1, round(p.repeats_rate / p.repeats_open))  # each open group re-sent once a second
    posted = await post_all(url, repeat_bodies(p.repeats_open, per_body), 8, ok=202)
    result.problems += failures("(e4) opening webhooks", posted.failed)
    await _wait(
        f"(e4) {p.repeats_open} open incidents paged",
        lambda: len(first_pages(pager, "rep-")) >= p.repeats_open,
        60,
        result.problems,
    )
    seconds = p.repeats_seconds
    plan = {
        "url": url,
        "closed": None,
        "open": [
            {"name": "new", "interval": 1 / p.repeats_new_rate, "duration": seconds},
            {
                "name": "repeat",
                "interval": 1 / p.repeats_open,
                "duration": seconds,
                "open": p.repeats_open,
                "per_body": per_body,
            },
        ],
    }
    async with LoadProcess(plan) as load:
        streams = await load.finish()
    new, rep = streams["new"], streams["repeat"]
    result.repeats_alerts_per_s = len(rep.accepted) * per_body / seconds
    result.problems += failures("(e4) new-incident webhooks", new.failed)
    result.problems += failures("(e4) repeat webhooks", rep.failed)
    await _wait(
        "(e4) new incidents paged",
        lambda: set(new.accepted) <= set(first_pages(pager, "new-")),
        60,
        result.problems,
    )
    pages = first_pages(pager, "new-")
    result.repeats_new_ms = summary_ms([pages[k] - t for k, t in new.accepted.items() if k in pages])
    result.repeats_new_stored_ms = summary_ms(
        [clock.probe_stored[k] - t for k, t in new.accepted.items() if k in clock.probe_stored]
    )
    result.repeats_new_polled_ms = summary_ms(
        [clock.probe_polled[k] - t for k, t in new.accepted.items() if k in clock.probe_polled]
    )
    missing = len(set(new.accepted) - set(pages))
    if missing:
        result.problems.append(f"(e4) {missing} of {len(new.accepted)} new incidents not paged")


async def service_phases(setup: Setup, p: StormHttpParams, result: StormHttpResult) -> None:
    """(1), (3), (5) on one service; (4) on a service of its own (a new database and topics):
    the storm's thousand open incidents and their paging are not part of (4)'s scenario."""
    result.raw_before = await _raw_anchor(setup, p, result)
    pager = RecordingNotifier()
    clock = StoredClock(b'"cluster":"storm-')
    async with serving(setup, pager, clock) as served:
        await _warm_up(served.url, pager, result)
        await storm_phase(served, pager, clock, p, result)
    result.raw_after = await _raw_anchor(setup, p, result)
    pager = RecordingNotifier()
    clock = StoredClock(b"-")
    async with serving(setup, pager, clock) as served:
        await _warm_up(served.url, pager, result)
        await repeats_phase(served.url, pager, clock, p, result)


async def _raw_anchor(setup: Setup, p: StormHttpParams, result: StormHttpResult) -> RawResult | None:
    """(1)'s anchor: the raw aiokafka loop over as many one-alert records."""
    try:
        return await run_raw_apart(setup, p.alerts, p.groups)
    except (OSError, TimeoutError) as exc:
        result.problems.append(f"(e1) raw anchor: {exc.__class__.__name__}: {exc}")
        return None


async def _warm_up(url: str, pager: RecordingNotifier, result: StormHttpResult) -> None:
    """The group join and first fetch are not what is measured."""
    async with httpx.AsyncClient(timeout=30) as client:
        warm = await client.post(url, content=sev1_body("warmup"), headers=HEADERS)
        warm.raise_for_status()
    await _wait("(e) warm-up paged", lambda: bool(first_pages(pager, "warmup")), 60, result.problems)


# -- Alertmanager ------------------------------------------------------------------------


async def alertmanager_phase(setup: Setup, p: StormHttpParams, result: StormHttpResult) -> None:
    """(2): the same alerts, batches and concurrency on Alertmanager's ``POST /api/v2/alerts``."""
    if not os.access(ALERTMANAGER_BIN, os.X_OK):
        result.problems.append(f"(e2) no {ALERTMANAGER_BIN} (make deps-system)")
        return
    work = setup.tmp / "alertmanager"
    (work / "data").mkdir(parents=True, exist_ok=True)
    config = {
        "route": {"receiver": "null", "group_by": list(setup.rules.grouping.group_by)},
        "receivers": [{"name": "null"}],
    }
    (work / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with (work / "alertmanager.log").open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            ALERTMANAGER_BIN,
            f"--config.file={work / 'alertmanager.yml'}",
            f"--storage.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--web.external-url={base}",
            "--cluster.listen-address=",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        await _until_ok(f"{base}/-/ready", proc, 20)
        # From the load process, as the service's storm is: the same client, the same work.
        storm = {"alerts": p.alerts, "groups": p.groups, "batch": p.batch, "inflight": p.inflight}
        closed = {**storm, "deadline_s": p.timeout, "format": "postable", "ok": 200}
        async with LoadProcess({"url": f"{base}/api/v2/alerts", "closed": closed}) as load:
            posted, _ = await load.closed()
            await load.finish()
        result.alertmanager_seconds = posted.last_done - posted.first_sent
        result.alertmanager_alerts = posted.ok_alerts
        result.problems += failures("(e2) Alertmanager POST /api/v2/alerts", posted.failed)
    except (OSError, TimeoutError) as exc:
        result.problems.append(f"(e2) Alertmanager: {exc.__class__.__name__}: {exc}")
    finally:
        await _terminate(proc)


async def _until_ok(url: str, proc: asyncio.subprocess.Process, timeout: float) -> float:
    """Polls ``url`` until it answers 200; returns when (perf_counter)."""
    deadline = time.perf_counter() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            if proc.returncode is not None:
                raise OSError(f"{url}: the process exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return time.perf_counter()
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{url} not 200 after {timeout:.0f} s")
            await asyncio.sleep(0.01)


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()


# -- start-up --------------------------------------------------------------------------------

STARTUPS = ("new database", "restart", "consumer groups, new database")


async def startup_phase(setup: Setup, result: StormHttpResult) -> None:
    """(6): ``incidentd run`` as ``run --embedded`` runs it (manual partition assignment) on a
    new SQLite file, then again on the same file; then, for reference, joining consumer groups
    (what replicas do) on a new file and new groups."""
    settings = bench_settings(setup.bootstrap, setup.tmp, kafka_topic_partitions=setup.partitions)
    await ensure_topics(settings)
    names = ("alerts_topic", "events_topic", "dlq_topic", "commands_topic", "group_id")
    env = {
        **os.environ,
        **{f"INCIDENTD_KAFKA_{n.upper()}": str(getattr(settings, f"kafka_{n}")) for n in names},
        "INCIDENTD_KAFKA_BOOTSTRAP_SERVERS": setup.bootstrap,
        "INCIDENTD_KAFKA_TOPIC_PARTITIONS": str(setup.partitions),
        "INCIDENTD_DATABASE_URL": settings.database_url,
        "INCIDENTD_RULES_DIR": str(RULES),
        "INCIDENTD_PAGERS": "console",
        "INCIDENTD_HTTP_HOST": "127.0.0.1",
        # aiokafka's "Setting newly assigned partitions" is an INFO line, read as text.
        "INCIDENTD_LOG_LEVEL": "INFO",
        "INCIDENTD_LOG_FORMAT": "text",
    }
    events = AIOKafkaConsumer(
        settings.kafka_events_topic, bootstrap_servers=setup.bootstrap, auto_offset_reset="latest"
    )
    await events.start()
    try:
        await events.getmany(timeout_ms=200)  # assigned, at the end of the topic
        manual = {**env, "INCIDENTD_KAFKA_ASSIGNMENT": "manual"}
        group = settings.kafka_group_id + "-groups"
        grouped = {
            **env,
            "INCIDENTD_KAFKA_ASSIGNMENT": "group",
            "INCIDENTD_KAFKA_GROUP_ID": group,
            "INCIDENTD_DATABASE_URL": settings.database_url.replace(".db", "-groups.db"),
        }
        own = settings.kafka_group_id
        runs = [(STARTUPS[0], manual, own), (STARTUPS[1], manual, own), (STARTUPS[2], grouped, group)]
        for i, (label, run_env, group_id) in enumerate(runs):
            try:
                result.startup.append(await _start_once(run_env, group_id, events, i))
            except (OSError, TimeoutError) as exc:
                result.problems.append(f"(e6) start-up, {label}: {exc.__class__.__name__}: {exc}")
    finally:
        await events.stop()


async def _start_once(env: dict[str, str], group: str, events: AIOKafkaConsumer, n: int) -> dict[str, float]:
    port = free_port()
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        str(INCIDENTD_BIN), "run", env={**env, "INCIDENTD_HTTP_PORT": str(port)},
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assigned = asyncio.get_running_loop().create_future()
    wanted = f"for group {group}".encode()
    lines: list[bytes] = []

    # Milestones in the log: the first line (imports done), the first subscription (store
    # started, Kafka client started), the commands group's partitions assigned.
    seen: dict[str, float] = {}

    async def read_log() -> None:
        assert proc.stderr is not None
        async for line in proc.stderr:
            now = time.perf_counter()
            seen.setdefault("first_log_line_s", now)
            if b"Subscribed to topic(s)" in line:
                seen.setdefault("kafka_started_s", now)
            if b"without a consumer group join" in line:  # manual assignment: all at once
                seen.setdefault("kafka_started_s", now)
                seen.setdefault("commands_assigned_s", now)
                if not assigned.done():
                    assigned.set_result(now)
            if b"newly assigned partitions" in line:
                if line.rstrip().endswith(wanted):
                    if not assigned.done():
                        assigned.set_result(now)
                elif line.rstrip().endswith(wanted + b".commands"):
                    seen.setdefault("commands_assigned_s", now)
            lines.append(line)
            del lines[:-40]

    reader = asyncio.create_task(read_log())
    try:
        ready = await _until_ok(f"http://127.0.0.1:{port}/readyz", proc, 60)
        name = f"StartupProbe{n}"
        labels = {"alertname": name, "cluster": "startup", "namespace": "bench", "severity": "critical"}
        body = json.dumps(webhook_doc([alert_doc(labels)], {"alertname": name}))
        async with httpx.AsyncClient(timeout=30) as client:
            resp = await client.post(f"http://127.0.0.1:{port}{WEBHOOK}", content=body, headers=HEADERS)
        if resp.status_code != 202:
            raise OSError(f"webhook answered {resp.status_code}")
        opened = await asyncio.wait_for(_event(events, name, "incident.opened"), 60)
        consuming = await asyncio.wait_for(assigned, 60)
    except (OSError, TimeoutError) as exc:
        tail = b"".join(lines[-10:]).decode(errors="replace")
        raise type(exc)(f"{exc}; log tail:\n{tail}") from exc
    finally:
        await _terminate(proc)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return {
        **{k: round(v - started, 3) for k, v in seen.items()},
        "readyz_s": round(ready - started, 3),
        "assigned_s": round(consuming - started, 3),
        "consuming_s": round(max(ready, consuming) - started, 3),
        "first_incident_opened_s": round(opened - started, 3),
    }


async def _event(events: AIOKafkaConsumer, alertname: str, suffix: str) -> float:
    async for rec in events:
        event = json.loads(rec.value or b"{}")
        name = event.get("data", {}).get("group_labels", {}).get("alertname")
        if name == alertname and str(event.get("type", "")).endswith(suffix):
            return time.perf_counter()
    raise OSError("the events consumer stopped")


# -- the whole part ---------------------------------------------------------------------------


async def _step(what: str, step: Awaitable[None], result: StormHttpResult) -> None:
    try:
        await step
    except Exception as exc:
        result.problems.append(f"{what}: {exc.__class__.__name__}: {exc}")


async def run_storm_http(setup: Setup, p: StormHttpParams) -> StormHttpResult:
    result = StormHttpResult()
    # Start-up first (an idle machine), then the service in this process with the raw loop's
    # runs just before and after (1), each in a process of its own, then Alertmanager.
    await _step("(e6) start-up", startup_phase(setup, result), result)
    await _step("(e1/3/4/5) service", service_phases(setup, p, result), result)
    await _step("(e2) Alertmanager", alertmanager_phase(setup, p, result), result)
    return result
