"""The (e) scenarios' HTTP load, in a process of its own: the issue measures the service from
outside, and a load generator sharing the service's event loop put its own work (httpx's
connection pool took a third of the loop in a profile of (e4)) into every latency figure.

    python -m bench.loadgen PLAN.json

PLAN: ``url``; ``closed``: the storm (``alerts``, ``groups``, ``batch``, ``inflight``,
``deadline_s``; ``format`` webhook or postable, the ``ok`` status) posted as fast as it is
answered, or null; ``open``: streams posted on a fixed
timeline, each ``name`` (sev1, new, repeat), ``interval`` s, ``duration`` s or null (until stdin
closes), and for ``repeat`` the ``open`` incidents and alerts ``per_body``.

Prints JSON lines: ``ready`` once the bodies are built, ``closed`` when the storm was posted,
one ``open`` per stream at the end. Times are ``time.perf_counter()``, CLOCK_MONOTONIC on
Linux, so the parent compares them with its own pages' times.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.load import (
    Posted,
    Schedule,
    new_incident_body,
    post_all,
    repeat_bodies,
    sev1_body,
    storm_bodies,
)


@dataclass(slots=True)
class Opened:
    """An open stream's outcome: when each key was answered 202, and the failures."""

    accepted: dict[str, float] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)


def _maker(spec: dict[str, Any]) -> Callable[[int], tuple[str, bytes]]:
    name = spec["name"]
    if name == "sev1":
        return lambda n: (f"sev1-{n}", sev1_body(f"sev1-{n}"))
    if name == "new":
        return lambda n: (f"new-{n}", new_incident_body(n))
    if name == "repeat":
        bodies = repeat_bodies(spec["open"], spec["per_body"])
        return lambda n: (f"repeat-{n}", bodies[n % len(bodies)])
    raise ValueError(f"unknown open stream {name!r}")


def _emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


async def _stdin_closed(stop: asyncio.Event) -> None:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.read()  # EOF: the parent says stop
    stop.set()


async def _open_stream(url: str, spec: dict[str, Any], stop: asyncio.Event) -> None:
    until = asyncio.Event()
    make = _maker(spec)
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as client:
        schedule = Schedule(client, url)
        task = asyncio.create_task(schedule.every(spec["interval"], make, until))
        if spec.get("duration") is None:
            await stop.wait()
        else:
            await asyncio.sleep(spec["duration"])
        until.set()
        count = await task
        await schedule.finish()
    _emit("open", name=spec["name"], count=count, accepted=schedule.accepted, failed=schedule.failed)


async def generate(plan: dict[str, Any]) -> None:
    url, closed = plan["url"], plan.get("closed")
    bodies = []
    if closed is not None:
        storm = storm_bodies(closed["alerts"], closed["groups"], closed["batch"])
        postable = closed.get("format") == "postable"  # Alertmanager's POST /api/v2/alerts
        bodies = [b.postable() if postable else b.webhook() for b in storm]
        del storm
    stop = asyncio.Event()
    watcher = asyncio.create_task(_stdin_closed(stop))
    _emit("ready")
    streams = [asyncio.create_task(_open_stream(url, s, stop)) for s in plan.get("open", [])]
    if closed is not None:
        deadline = time.perf_counter() + closed["deadline_s"]
        posted = await post_all(url, bodies, closed["inflight"], ok=closed.get("ok", 202), deadline=deadline)
        _emit("closed", total=len(bodies), **asdict(posted))
    await asyncio.gather(*streams)
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher


class LoadProcess:
    """The parent's side: starts ``python -m bench.loadgen``, reads what it reports."""

    def __init__(self, plan: dict[str, Any]) -> None:
        self._plan = plan
        self._proc: asyncio.subprocess.Process | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="incidentd-loadgen-")
        self.opened: dict[str, Opened] = {}

    async def __aenter__(self) -> LoadProcess:
        path = Path(self._dir.name) / "plan.json"
        path.write_text(json.dumps(self._plan))
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.loadgen",
            str(path),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,  # a storm's round-trip times come as one line
        )
        await self._expect("ready")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            await self._proc.wait()
        self._dir.cleanup()

    async def _line(self) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        line = await self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"bench.loadgen exited (code {await self._proc.wait()})")
        message: dict[str, Any] = json.loads(line)
        if message["event"] == "open":
            self.opened[message["name"]] = Opened(message["accepted"], message["failed"])
        return message

    async def _expect(self, event: str) -> dict[str, Any]:
        while (message := await self._line())["event"] != event:
            pass
        return message

    async def closed(self) -> tuple[Posted, int]:
        """The storm's posting, once every body was answered (or the deadline passed), and
        how many bodies it had."""
        m = await self._expect("closed")
        total = m.pop("total")
        m.pop("event")
        return Posted(**m), total

    async def finish(self) -> dict[str, Opened]:
        """Stops the streams without a duration; each stream's outcome once all ended."""
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.close()
        while len(self.opened) < len(self._plan.get("open", [])):
            await self._line()
        await self._proc.wait()
        return self.opened


def main() -> None:
    asyncio.run(generate(json.loads(Path(sys.argv[1]).read_text())))


if __name__ == "__main__":
    main()
