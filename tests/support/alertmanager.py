"""Runs a real Prometheus Alertmanager (and amtool) on loopback for end-to-end tests.

Each instance gets its own free port, config file and storage directory, runs
unclustered (``--cluster.listen-address=``), and is always terminated when the
context exits.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import shutil
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import yaml

from tests.support.service import free_port

ALERTMANAGER_BIN = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
AMTOOL_BIN = shutil.which("amtool") or "/usr/bin/amtool"

START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
AMTOOL_TIMEOUT = 15.0


class AlertmanagerError(RuntimeError):
    pass


# Every Alertmanager started here and not yet stopped: a last resort at interpreter exit
# (e.g. a hard test timeout) so that no process outlives the test run.
_live: set[asyncio.subprocess.Process] = set()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_live):
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()


def rfc3339(moment: datetime) -> str:
    """The time format amtool's --start/--end take (Go parses the fractional seconds too)."""
    if moment.tzinfo is None:
        raise ValueError("timezone-aware datetimes only")
    return moment.isoformat().replace("+00:00", "Z")


def webhook_config(
    webhook_url: str,
    group_by: Sequence[str],
    *,
    group_wait: str = "1s",
    group_interval: str = "1s",
    repeat_interval: str = "4h",
) -> dict[str, Any]:
    """One route, one webhook receiver that also sends resolved notifications."""
    return {
        "route": {
            "receiver": "incidentd",
            "group_by": list(group_by),
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
        },
        "receivers": [
            {
                "name": "incidentd",
                "webhook_configs": [{"url": webhook_url, "send_resolved": True}],
            }
        ],
    }


@dataclass
class Alertmanager:
    name: str
    url: str
    workdir: Path
    log_path: Path
    process: asyncio.subprocess.Process

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    async def amtool(self, *args: str) -> str:
        """Runs ``amtool`` against this instance and returns its standard output."""
        cmd = [
            AMTOOL_BIN,
            f"--alertmanager.url={self.url}",
            "--no-version-check",
            "--timeout=10s",
            *args,
        ]
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), AMTOOL_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AlertmanagerError(f"amtool timed out: {' '.join(cmd)}") from None
        if proc.returncode != 0:
            raise AlertmanagerError(
                f"amtool exited {proc.returncode}: {' '.join(cmd)}\n"
                f"stderr: {err.decode(errors='replace')}\n{self.name} log:\n{self.log_tail()}"
            )
        return out.decode()

    async def fire(
        self,
        labels: Mapping[str, str],
        *,
        starts_at: datetime | None = None,
        annotations: Mapping[str, str] | None = None,
        generator_url: str | None = None,
    ) -> None:
        args = [f"{k}={v}" for k, v in labels.items()]
        if starts_at is not None:
            args.append(f"--start={rfc3339(starts_at)}")
        args += [f"--annotation={k}={v}" for k, v in (annotations or {}).items()]
        if generator_url:
            args.append(f"--generator-url={generator_url}")
        await self.amtool("alert", "add", *args)

    async def resolve(
        self,
        labels: Mapping[str, str],
        *,
        ends_at: datetime,
        starts_at: datetime | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> None:
        """Posts the alert again with an end time (now or past): Alertmanager resolves it."""
        args = [f"{k}={v}" for k, v in labels.items()]
        if starts_at is not None:
            args.append(f"--start={rfc3339(starts_at)}")
        args.append(f"--end={rfc3339(ends_at)}")
        args += [f"--annotation={k}={v}" for k, v in (annotations or {}).items()]
        await self.amtool("alert", "add", *args)

    async def query(self, *matchers: str) -> list[dict[str, Any]]:
        """``amtool alert query -o json``: Alertmanager's own view, fingerprints included."""
        out = await self.amtool("-o", "json", "alert", "query", *matchers)
        result: list[dict[str, Any]] = json.loads(out) if out.strip() else []
        return result

    async def api_alerts(self, **params: str) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` (pass active/silenced/inhibited/unprocessed as "true"/"false")."""
        async with httpx.AsyncClient(timeout=10) as client:
            resp = await client.get(f"{self.url}/api/v2/alerts", params=params)
            resp.raise_for_status()
            alerts: list[dict[str, Any]] = resp.json()
            return alerts


def _open_log(path: Path) -> BinaryIO:
    return path.open("ab")


async def _wait_ready(am: Alertmanager) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            if am.process.returncode is not None:
                raise AlertmanagerError(
                    f"{am.name} exited with {am.process.returncode} during start-up:\n{am.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                resp = await client.get(f"{am.url}/-/ready")
                if resp.status_code == 200:
                    return
            if loop.time() > deadline:
                raise AlertmanagerError(f"{am.name} not ready after {START_TIMEOUT}s:\n{am.log_tail()}")
            # A child process's readiness has no event to wait on: poll /-/ready.
            await asyncio.sleep(0.05)


async def _stop(am: Alertmanager) -> None:
    proc = am.process
    if proc.returncode is not None:
        _live.discard(proc)
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
    _live.discard(proc)


def _prepare(workdir: Path, config: dict[str, Any]) -> tuple[Path, Path, Path]:
    """Writes the config and creates the storage dir; returns (config, storage, log) paths."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "alertmanager.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    storage = workdir / "data"
    storage.mkdir(exist_ok=True)
    return config_path, storage, workdir / "alertmanager.log"


async def _start(workdir: Path, name: str, config: dict[str, Any]) -> Alertmanager:
    config_path, storage, log_path = _prepare(workdir, config)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = _open_log(log_path)
    try:
        proc = await asyncio.create_subprocess_exec(
            ALERTMANAGER_BIN,
            f"--config.file={config_path}",
            f"--storage.path={storage}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--web.external-url={url}",
            "--cluster.listen-address=",
            "--log.level=debug",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    finally:
        log.close()  # the child keeps its own descriptor
    _live.add(proc)
    am = Alertmanager(name=name, url=url, workdir=workdir, log_path=log_path, process=proc)
    try:
        await _wait_ready(am)
    except BaseException:
        await _stop(am)
        raise
    return am


@contextlib.asynccontextmanager
async def run_alertmanager(
    workdir: Path,
    webhook_url: str,
    group_by: Sequence[str],
    *,
    name: str = "alertmanager",
    **timing: str,
) -> AsyncIterator[Alertmanager]:
    """A real, unclustered Alertmanager posting every group to ``webhook_url``.

    ``timing`` overrides group_wait / group_interval / repeat_interval.
    """
    config = webhook_config(webhook_url, group_by, **timing)
    attempts = 3  # the free port may be taken between choosing and binding it
    for attempt in range(1, attempts + 1):
        try:
            am = await _start(workdir / f"{name}-{attempt}", name, config)
            break
        except AlertmanagerError:
            if attempt == attempts:
                raise
    try:
        yield am
    finally:
        await _stop(am)
