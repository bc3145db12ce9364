"""Runs a real Prometheus Alertmanager (and amtool) on loopback for end-to-end tests.

Each instance gets its own free port, config file and storage directory, and is always
terminated when the context exits. ``run_alertmanager`` runs one unclustered
(``--cluster.listen-address=``); ``run_alertmanager_cluster`` runs a real gossip cluster on
loopback and returns only once every member reports the cluster ready with all its peers;
``wait_decided`` waits until every member has acted on (sent, or left to a peer) the
notification of every group in a given state.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import re
import shutil
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.service import free_port

ALERTMANAGER_BIN = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
AMTOOL_BIN = shutil.which("amtool") or "/usr/bin/amtool"

START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
AMTOOL_TIMEOUT = 15.0
START_ATTEMPTS = 3  # a free port may be taken between choosing and binding it

# Gossip timing for a cluster on loopback. Alertmanager settles when its member count held
# still for 3 polls spaced 10 gossip intervals apart (0.25: peer.Settle), and until then its
# notification pipeline waits; a member at position n > 0 waits n * peer_timeout before it
# looks at the (gossiped) notification log and sends what the others have not.
CLUSTER_GOSSIP_INTERVAL = "20ms"
CLUSTER_PUSHPULL_INTERVAL = "1s"
CLUSTER_PEER_TIMEOUT = "2s"
CLUSTER_READY_TIMEOUT = 20.0
DECISION_TIMEOUT = 20.0

# The dispatcher's debug line at the start of every flush of an aggregation group (0.25);
# logfmt quotes the alerts only when there are several:
#   aggrGroup="{}:{alertname=\"A\"}" msg=flushing alerts="[A[5cd5a4f][active] A[5cd1a4f][resolved]]"
#   aggrGroup="{}:{alertname=\"A\"}" msg=flushing alerts=[A[5cd5a4f][active]]
_FLUSH_LINE = re.compile(
    r'aggrGroup="(?P<group>(?:[^"\\]|\\.)*)" msg=flushing alerts="?\[(?P<alerts>[^"\n]*)\]"?$',
    re.MULTILINE,
)
_FLUSHED_ALERT = re.compile(r"\[(?P<fp>[0-9a-f]{7})\]\[(?P<state>active|resolved)\]")


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


@dataclass(frozen=True)
class Flush:
    """One flush of an aggregation group, as its debug log line shows it."""

    group: str  # Alertmanager's group key
    alerts: frozenset[tuple[str, str]]  # (first 7 hex digits of the fingerprint, "active" | "resolved")


def flushes(am: Alertmanager) -> list[Flush]:
    """Every flush ``am`` has started, in order (it runs with ``--log.level=debug``)."""
    try:
        text = am.log_path.read_text(errors="replace")
    except OSError:
        return []
    text = text[: text.rfind("\n") + 1]  # complete lines only: the process may be writing one
    return [
        Flush(m["group"], frozenset((a["fp"], a["state"]) for a in _FLUSHED_ALERT.finditer(m["alerts"])))
        for m in _FLUSH_LINE.finditer(text)
    ]


@dataclass(frozen=True)
class PipelineCounts:
    """Alertmanager's own counters of its notification pipeline (``GET /metrics``)."""

    dedup_queries: float  # one notification-log query per flush, in the dedup stage
    webhooks: float  # webhook notifications started (past the dedup stage)
    requests: float  # webhook requests answered
    failed: float  # webhook requests that failed

    @property
    def idle(self) -> bool:
        return self.webhooks == self.requests and self.failed == 0


async def pipeline_counts(am: Alertmanager, client: httpx.AsyncClient) -> PipelineCounts:
    resp = await client.get(f"{am.url}/metrics")
    resp.raise_for_status()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            if s.labels.get("integration", "webhook") == "webhook":
                values[s.name] = values.get(s.name, 0.0) + s.value
    return PipelineCounts(
        dedup_queries=values.get("alertmanager_nflog_queries_total", 0.0),
        webhooks=values.get("alertmanager_notifications_total", 0.0),
        requests=values.get("alertmanager_notification_requests_total", 0.0),
        failed=values.get("alertmanager_notification_requests_failed_total", 0.0),
    )


def _completed(log: Sequence[Flush], target: frozenset[tuple[str, str]]) -> int | None:
    """The flush by which every alert of ``target`` was flushed in its state: one flush, or
    consecutive flushes of the group when a resolve straddled a flush (the alert resolved
    first is notified and dropped, the other follows in the next flush)."""
    fps = {fp for fp, _ in target}
    state = next(iter(target))[1]
    seen: set[str] = set()
    for i, f in enumerate(log):
        mine = {fp for fp, _ in f.alerts}
        if not mine or not mine <= fps:
            continue
        reached = {fp for fp, s in f.alerts if s == state}
        seen = seen | reached if reached == mine else reached
        if seen >= fps:
            return i
    return None


def _decided(
    log: Sequence[Flush], counts: PipelineCounts, targets: Iterable[frozenset[tuple[str, str]]]
) -> bool:
    """Has the member made, and carried out, its decision on every group in its target state?

    A group's flush runs the whole pipeline (peer wait, dedup, webhook) before the group's next
    flush starts, so a later flush of the same group proves it. A group whose alerts are all
    resolved is emptied by that flush and never flushes again: then the member must be idle,
    every flush logged so far past its dedup query and no webhook in flight.
    """
    # ``counts`` was read before ``log``: equal means no flush was still before its dedup stage.
    idle = counts.idle and counts.dedup_queries == len(log)
    for target in targets:
        first = _completed(log, target)
        if first is None:
            return False
        group = log[first].group
        if not idle and not any(f.group == group for f in log[first + 1 :]):
            return False
    return True


async def wait_decided(
    members: Sequence[Alertmanager], groups: Iterable[Iterable[str]], *, resolved: bool
) -> None:
    """Returns once every member has flushed every group with all its alerts firing (or all
    resolved) and has acted on it: sent its webhook (answered) or left it to a peer.

    ``groups`` are the alerts' full fingerprints, group by group. Holds twice in a row, so a
    notification between its dedup query and its webhook counter is not missed.
    """
    state = "resolved" if resolved else "active"
    targets = [frozenset((fp[:7], state) for fp in group) for group in groups]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DECISION_TIMEOUT
    held = 0
    async with httpx.AsyncClient(timeout=2) as client:
        while held < 2:
            counts = await asyncio.gather(*(pipeline_counts(am, client) for am in members))
            done = all(_decided(flushes(am), c, targets) for am, c in zip(members, counts, strict=True))
            held = held + 1 if done else 0
            if held < 2 and loop.time() > deadline:
                report = "\n".join(
                    f"{am.name}: {c} {flushes(am)[-6:]}" for am, c in zip(members, counts, strict=True)
                )
                raise AlertmanagerError(
                    f"no decision on every group ({state}) after {DECISION_TIMEOUT}s:\n{report}"
                )
            # Neither the log nor the counters have an event to wait on: poll them.
            await asyncio.sleep(0.05)


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


def _cluster_flags(ports: Sequence[int], index: int) -> list[str]:
    """Gossip on 127.0.0.1:ports[index], every other member as an initial peer."""
    own = f"127.0.0.1:{ports[index]}"
    peers = [f"--cluster.peer=127.0.0.1:{p}" for i, p in enumerate(ports) if i != index]
    return [
        f"--cluster.listen-address={own}",
        # Alertmanager will not advertise a loopback address it finds itself.
        f"--cluster.advertise-address={own}",
        *peers,
        f"--cluster.gossip-interval={CLUSTER_GOSSIP_INTERVAL}",
        f"--cluster.pushpull-interval={CLUSTER_PUSHPULL_INTERVAL}",
        f"--cluster.peer-timeout={CLUSTER_PEER_TIMEOUT}",
        "--cluster.reconnect-interval=1s",
        f"--cluster.settle-timeout={int(CLUSTER_READY_TIMEOUT)}s",
    ]


async def _start(
    workdir: Path,
    name: str,
    config: dict[str, Any],
    cluster: Sequence[str] = ("--cluster.listen-address=",),
) -> Alertmanager:
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
            *cluster,
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
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            am = await _start(workdir / f"{name}-{attempt}", name, config)
            break
        except AlertmanagerError:
            if attempt == START_ATTEMPTS:
                raise
    try:
        yield am
    finally:
        await _stop(am)


async def cluster_status(am: Alertmanager, client: httpx.AsyncClient) -> dict[str, Any]:
    """The ``cluster`` part of ``GET /api/v2/status``: name, status and peers."""
    resp = await client.get(f"{am.url}/api/v2/status")
    resp.raise_for_status()
    cluster: dict[str, Any] = resp.json()["cluster"]
    return cluster


def _cluster_formed(statuses: Sequence[dict[str, Any]], size: int) -> bool:
    """Every member settled ("ready") and sees all ``size`` members, itself included."""
    names = {s.get("name") for s in statuses}
    return len(names) == size and all(
        s.get("status") == "ready" and {p.get("name") for p in s.get("peers", ())} == names for s in statuses
    )


def _cluster_report(members: Sequence[Alertmanager], statuses: Sequence[Any]) -> str:
    return "\n".join(f"{am.name}: {st}\n{am.log_tail(15)}" for am, st in zip(members, statuses, strict=True))


async def _wait_cluster_ready(members: Sequence[Alertmanager]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CLUSTER_READY_TIMEOUT
    statuses: list[Any] = []
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            for am in members:
                if am.process.returncode is not None:
                    raise AlertmanagerError(
                        f"{am.name} exited with {am.process.returncode}:\n{am.log_tail()}"
                    )
            with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                statuses = list(await asyncio.gather(*(cluster_status(am, client) for am in members)))
                if _cluster_formed(statuses, len(members)):
                    return
            if loop.time() > deadline:
                raise AlertmanagerError(
                    f"cluster not ready after {CLUSTER_READY_TIMEOUT}s:\n{_cluster_report(members, statuses)}"
                )
            # Gossip has no event to wait on from outside: poll /api/v2/status.
            await asyncio.sleep(0.05)


def _cluster_ports(size: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < size:
        ports.add(free_port())
    return sorted(ports)


async def _stop_cluster(members: Sequence[Alertmanager]) -> None:
    """One member at a time. A member leaving waits (up to 10 s in 0.25) until its leave was
    gossiped to a peer it still believes alive; stopped together, each can miss the other."""
    for am in reversed(members):
        await _stop(am)


async def _start_cluster(workdir: Path, name: str, config: dict[str, Any], size: int) -> list[Alertmanager]:
    """Starts ``size`` members at once, or none: a member that fails to start stops the others."""
    ports = _cluster_ports(size)
    results = await asyncio.gather(
        *(
            _start(workdir / f"{name}-{i}", f"{name}-{i}", config, _cluster_flags(ports, i))
            for i in range(size)
        ),
        return_exceptions=True,
    )
    members = [r for r in results if isinstance(r, Alertmanager)]
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        await _stop_cluster(members)
        # Anything but a failed start (a cancellation, a bug) goes up as it is.
        raise next((e for e in errors if not isinstance(e, AlertmanagerError)), errors[0])
    return members


@contextlib.asynccontextmanager
async def run_alertmanager_cluster(
    workdir: Path,
    webhook_url: str,
    group_by: Sequence[str],
    *,
    size: int = 2,
    name: str = "am",
    **timing: str,
) -> AsyncIterator[list[Alertmanager]]:
    """``size`` real Alertmanagers gossiping on loopback, all posting to ``webhook_url``.

    Yields once every member's ``/api/v2/status`` says ``cluster.status == "ready"`` and lists
    all members as peers. ``timing`` overrides group_wait / group_interval / repeat_interval.
    """
    if size < 2:
        raise ValueError("a cluster has at least two members")
    config = webhook_config(webhook_url, group_by, **timing)
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            members = await _start_cluster(workdir / f"try-{attempt}", name, config, size)
            break
        except AlertmanagerError:
            if attempt == START_ATTEMPTS:
                raise
    try:
        await _wait_cluster_ready(members)
        yield members
    finally:
        await _stop_cluster(members)
