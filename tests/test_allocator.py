"""glibc's malloc arenas are capped at start-up (service/allocator.py): measured in real
processes, by the arenas their memory maps show. Python's cyclic collector is tuned at
start-up and what start-up made is frozen out of its walks: watched from inside real
processes (``gc.callbacks``, ``gc.get_objects``)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from service.allocator import ARENAS, YOUNG_COLLECTION, HeapTrimmer
from tests.support.payloads import alert, body, webhook
from tests.support.service import free_port, run_service, spawn_run, test_settings

# glibc's thread arenas are heaps of HEAP_MAX_SIZE (64 MiB on 64-bit), aligned to it.
HEAP_MAX = 64 << 20


def thread_arenas(pid: int | str = "self") -> int:
    """The heaps of glibc's thread arenas in a process's memory map: each is a 64 MiB
    reservation on a 64 MiB boundary, read-write as far as it is in use and inaccessible
    beyond (the main arena is the ``[heap]`` mapping). Other anonymous mappings that happen
    to start on the boundary (Python's own arenas, 1 MiB) do not reach to its end."""
    maps = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) == 5:  # anonymous
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            maps.append((lo, hi, fields[1]))
    count = 0
    for i, (lo, hi, perms) in enumerate(maps):
        if perms != "rw-p" or lo % HEAP_MAX:
            continue
        rest = maps[i + 1] if i + 1 < len(maps) else None
        reserved = rest is not None and rest[0] == hi and rest[2] == "---p" and rest[1] == lo + HEAP_MAX
        if hi == lo + HEAP_MAX or reserved:
            count += 1
    return count


# Eight threads allocating at once, each 1.5 MB in blocks of the size pymalloc passes to
# malloc: together far less than one arena heap (64 MiB), which a shared arena would
# otherwise outgrow into a second heap.
THREADS = f"""
import sys, threading
sys.path.insert(0, {str(Path(__file__).parents[1])!r})
from service.allocator import limit_arenas
from tests.test_allocator import thread_arenas
capped = limit_arenas() if sys.argv[1] == "cap" else None
held, both = [], threading.Barrier(8)
def work():
    both.wait()
    held.append([bytes(3000) for _ in range(500)])
    both.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print(capped, thread_arenas())
"""


def run_threads(mode: str, **env: str) -> tuple[str, int]:
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env
    out = subprocess.run(
        [sys.executable, "-c", THREADS, mode], capture_output=True, text=True, env=environ, check=True
    ).stdout.split()
    return out[0], int(out[1])


def test_threads_share_the_capped_arenas() -> None:
    assert run_threads("cap") == ("True", ARENAS - 1)  # and the main arena
    capped, uncapped = run_threads("none")
    assert capped == "None" and uncapped >= 6


def test_the_environment_wins() -> None:
    # MALLOC_ARENA_MAX set: glibc applies it itself, and limit_arenas leaves it alone.
    capped, arenas = run_threads("cap", MALLOC_ARENA_MAX="4")
    assert capped == "False" and ARENAS - 1 < arenas <= 3


async def test_incidentd_run_caps_its_arenas(tmp_path: Path) -> None:
    """The running service, its store threads busy with an incident: two arenas, where the
    same service with glibc's own limit has one per thread."""
    procs = []
    for name, env in (("capped", {}), ("glibc", {"MALLOC_ARENA_MAX": "64"})):
        (tmp_path / name).mkdir()
        port = free_port()
        env |= {
            "INCIDENTD_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "INCIDENTD_HTTP_PORT": str(port),
        }
        procs.append((await spawn_run(tmp_path / name, env), port))
    try:
        arenas = [await _paged_then_arenas(proc, port) for proc, port in procs]
        assert arenas[0] <= ARENAS - 1 < 3 <= arenas[1]
    finally:
        for proc, _ in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def _paged_then_arenas(proc: asyncio.subprocess.Process, port: int) -> int:
    assert proc.stdout is not None

    async def line(pattern: str) -> None:
        assert proc.stdout is not None
        while pattern not in (raw := await proc.stdout.readline()).decode():
            assert raw, f"incidentd run ended before {pattern!r}"

    await asyncio.wait_for(line("incidentd is running"), 60)
    async with httpx.AsyncClient(timeout=30) as client:
        resp = await client.post(
            f"http://127.0.0.1:{port}/api/v1/alerts/alertmanager",
            content=body(webhook(alert("ApiDown", namespace="aragora"))),
        )
        assert resp.status_code == 202
    await asyncio.wait_for(line("=== PAGE P1 inc-"), 60)
    return thread_arenas(proc.pid)


# 80 MiB of 40 KB blocks (malloc's heap, under its mmap threshold), every 20th kept: freed
# memory below live blocks, which glibc does not give back by itself.
FRAGMENTED = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parents[1])!r})
from service.allocator import HeapTrimmer
def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
blocks = [bytes(40_000) for _ in range(2_000)]
kept = blocks[::20]
del blocks
before = rss_mib()
trimmer = HeapTrimmer()
if sys.argv[1] == "trim":
    trimmer.after_work()
print(before, rss_mib(), trimmer.trims)
"""


def rss_around(mode: str) -> tuple[int, int, int]:
    out = subprocess.run([sys.executable, "-c", FRAGMENTED, mode], capture_output=True, text=True, check=True)
    before, after, trims = map(int, out.stdout.split())
    return before, after, trims


def test_a_trim_gives_freed_heap_back() -> None:
    before, after, trims = rss_around("trim")
    assert trims == 1 and before - after >= 50
    before, after, trims = rss_around("none")
    assert trims == 0 and before - after < 5  # glibc alone keeps it


def test_trims_are_at_most_one_per_interval() -> None:
    now = [100.0]
    trimmer = HeapTrimmer(min_interval=0.05, clock=lambda: now[0])
    for t in (100.0, 100.01, 100.04, 100.06, 100.2, 100.21):
        now[0] = t
        trimmer.after_work()
    assert trimmer.trims == 3  # at 100.0, 100.06 and 100.2


def test_a_slow_trim_spaces_the_next_ones_out() -> None:
    """A trim that took 10 ms (a large heap) allows the next one a second later (1%)."""
    now = [100.0]

    def trim(pad: int) -> int:
        now[0] += 0.01
        return 1

    trimmer = HeapTrimmer(min_interval=0.05, clock=lambda: now[0], trim=trim)
    trimmer.after_work()  # 100.0 -> 100.01
    for t in (100.1, 100.5, 100.99):
        now[0] = t
        trimmer.after_work()
    assert trimmer.trims == 1
    now[0] = 101.01
    trimmer.after_work()
    assert trimmer.trims == 2


async def test_the_service_trims_after_a_stored_slice(kafka: str, tmp_path: Path) -> None:
    async with run_service(test_settings(kafka, tmp_path)) as svc:
        before = svc.runtime.heap.trims
        assert (await svc.post_webhook(body(webhook(alert("ApiDown"))))).status_code == 202
        await svc.runtime.progress.wait_records(1)
        # Published by the relay, which the stored slice woke before the trim was queued.
        await svc.events.wait_types({"incident.opened": 1})
        assert svc.runtime.heap.trims == before + 1


# Container objects made and kept (a storm's alerts): how many young collections they cost,
# and whether a full collection still walks the objects made before the freeze.
COLLECTOR = f"""
import gc, sys
sys.path.insert(0, {str(Path(__file__).parents[1])!r})
from service.allocator import freeze_started, tune_collector
if "tune" in sys.argv[1]:
    tune_collector()
young = []
gc.callbacks.append(lambda phase, info: phase == "stop" and info["generation"] == 0 and young.append(1))
kept = [{{"labels": {{}}}} for _ in range(5_000)]
before_cycle = [[]]
before_cycle[0].append(before_cycle)
before_cycle = None
frozen = freeze_started() if "freeze" in sys.argv[1] else 0
walked = len(gc.get_objects())
after_cycle = [[]]
after_cycle[0].append(after_cycle)
after_cycle = None
print(gc.get_threshold()[0], len(young), frozen, walked, gc.collect())
"""


def collector_run(mode: str) -> list[int]:
    out = subprocess.run([sys.executable, "-c", COLLECTOR, mode], capture_output=True, text=True, check=True)
    return [int(x) for x in out.stdout.split()]


def test_the_young_generation_is_collected_less_often() -> None:
    threshold, young, *_ = collector_run("tune")
    assert threshold == YOUNG_COLLECTION and young == 0  # 10,000 containers kept: none
    threshold, young, *_ = collector_run("default")
    assert threshold == 700 and young >= 10


def test_what_start_up_made_is_not_walked_again() -> None:
    _, _, frozen, walked, collected = collector_run("tune freeze")
    # Every object alive at the freeze (the 10,000 kept, the modules, the cycle not yet
    # collected) is out of the collector's walks; only the cycle made after is collected.
    assert frozen > 10_000 and walked < 1_000 and collected == 2
    _, _, frozen, walked, collected = collector_run("tune")
    assert frozen == 0 and walked > 10_000 and collected == 4


# Reports, as `incidentd run` exits, how its collector was set.
COLLECTOR_AT_EXIT = """
import atexit, gc, os
atexit.register(lambda: open(os.environ["COLLECTOR_REPORT"], "w").write(
    f"{gc.get_threshold()[0]} {gc.get_freeze_count()}"
))
"""


async def test_incidentd_run_tunes_and_freezes_its_collector(tmp_path: Path) -> None:
    hook, report = tmp_path / "hook", tmp_path / "collector"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(COLLECTOR_AT_EXIT)
    port = free_port()
    proc = await spawn_run(
        tmp_path,
        {
            "PYTHONPATH": os.pathsep.join([str(hook), *filter(None, [os.environ.get("PYTHONPATH")])]),
            "COLLECTOR_REPORT": str(report),
            "INCIDENTD_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "INCIDENTD_HTTP_PORT": str(port),
        },
    )
    try:
        assert proc.stdout is not None
        while (
            "incidentd is running" not in (raw := await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        ):
            assert raw, "incidentd run ended before serving"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    threshold, frozen = map(int, report.read_text().split())
    # Everything it imported and built to start, rules and clients included, is frozen.
    assert threshold == YOUNG_COLLECTION and frozen > 100_000
