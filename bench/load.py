"""What the (e) scenarios post: the webhook bodies, and the HTTP load that posts them
(closed loop: as fast as answered; open loop: on a fixed timeline). ``bench/loadgen.py`` runs
the load in a process of its own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.common import ALERTNAMES, LABEL_SEVERITIES, alert_doc, webhook_doc

WEBHOOK = "/api/v1/alerts/alertmanager"
HEADERS = {"content-type": "application/json"}


@dataclass(frozen=True, slots=True)
class Body:
    cluster: str  # every group here has a cluster of its own: it names the group
    alerts: list[dict[str, Any]]
    group: dict[str, str]

    def webhook(self) -> bytes:
        return json.dumps(webhook_doc(self.alerts, self.group), separators=(",", ":")).encode()

    def postable(self) -> bytes:
        """The same alerts as Alertmanager's API v2 takes them (what Prometheus sends)."""
        keep = ("labels", "annotations", "startsAt", "generatorURL")
        return json.dumps([{k: a[k] for k in keep} for a in self.alerts], separators=(",", ":")).encode()


def group_alerts(cluster: str, alertname: str, namespace: str, severity: str, n: int) -> Body:
    group = {"alertname": alertname, "cluster": cluster, "namespace": namespace}
    alerts = [
        alert_doc({**group, "severity": severity, "instance": f"{cluster}-{i}:9100", "job": "node"})
        for i in range(n)
    ]
    return Body(cluster, alerts, group)


# The storm is the backlog the issue names (low-severity alerts, repeats): no alert of it takes
# the urgent lane (rules/severities.yaml: SEV-1, which rules/classify.yaml gives these names),
# so (3) measures a SEV-1 against that backlog, not against 200 other new SEV-1s.
STORM_ALERTNAMES = tuple(n for n in ALERTNAMES if n not in ("ApiDown", "DatabaseUnavailable"))


def storm_bodies(alerts: int, groups: int, batch: int, seed: int = 11) -> list[Body]:
    """``alerts`` distinct alerts in ``groups`` groups (clusters ``storm-<g>``: no inhibit rule
    links them), each group's alerts in bodies of up to ``batch``, in a shuffled order."""
    groups = max(1, min(groups, alerts))
    bodies: list[Body] = []
    for g in range(groups):
        n = alerts // groups + (1 if g < alerts % groups else 0)
        whole = group_alerts(
            f"storm-{g}",
            STORM_ALERTNAMES[g % len(STORM_ALERTNAMES)],
            f"ns-{g // len(ALERTNAMES)}",
            LABEL_SEVERITIES[g % len(LABEL_SEVERITIES)],
            n,
        )
        for i in range(0, n, batch):
            bodies.append(Body(whole.cluster, whole.alerts[i : i + batch], whole.group))
    random.Random(seed).shuffle(bodies)
    return bodies


# The probes whose way through the service is timed: (e3)'s SEV-1s and (e4)'s new incidents.
PROBE_CLUSTER = re.compile(rb'"cluster":"((?:sev1|new)-\d+)"')
# A body names its group's labels before its alerts (webhook_doc), a few hundred bytes in.
_PROBE_WITHIN = 1024


def probe_cluster(value: bytes) -> str | None:
    """The probe cluster a record carries, if any. The bench looks at every record the
    service stores, on the service's own event loop: a search of a storm's whole 40 KB
    bodies tried each of their hundred ``"cluster":`` labels (2% of that loop in a profile
    of (e1)); the group labels at the start of a body say it."""
    m = PROBE_CLUSTER.search(value, 0, _PROBE_WITHIN)
    return m.group(1).decode() if m else None


def sev1_body(cluster: str) -> bytes:
    """A new SEV-1 (rules/classify.yaml: ApiDown) in a cluster of its own: a new incident, and
    no DatabaseUnavailable in its cluster (rules/noise.yaml's inhibit rule)."""
    labels = {
        "alertname": "ApiDown",
        "cluster": cluster,
        "namespace": "aragora",
        "instance": cluster,
        "severity": "critical",
    }
    group = {k: labels[k] for k in ("alertname", "cluster", "namespace")}
    return json.dumps(webhook_doc([alert_doc(labels)], group), separators=(",", ":")).encode()


def storm_shape(alerts: int, groups: int, batch: int) -> tuple[set[str], int]:
    """The clusters and the number of bodies of :func:`storm_bodies`, without building them."""
    groups = max(1, min(groups, alerts))
    sizes = [alerts // groups + (1 if g < alerts % groups else 0) for g in range(groups)]
    return {f"storm-{g}" for g in range(groups)}, sum(-(-n // batch) for n in sizes)


def new_incident_body(n: int) -> bytes:
    """(e4)'s new incidents: one alert each, a cluster of its own."""
    labels = {"alertname": "BenchNew", "cluster": f"new-{n}", "namespace": "repeats", "severity": "critical"}
    group = {k: labels[k] for k in ("alertname", "cluster", "namespace")}
    return json.dumps(webhook_doc([alert_doc(labels)], group), separators=(",", ":")).encode()


def repeat_bodies(open_incidents: int, per_body: int) -> list[bytes]:
    """(e4)'s open incidents, each a body of ``per_body`` alerts re-sent as they are."""
    return [
        group_alerts(f"rep-{i}", "HighErrorRate", "repeats", "warning", per_body).webhook()
        for i in range(open_incidents)
    ]


@dataclass(slots=True)
class Posted:
    first_sent: float = 0.0
    last_done: float = 0.0
    rtt: list[float] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    sent: int = 0
    ok_alerts: int = 0  # alerts in the bodies answered ``ok``


async def post_all(
    url: str, bodies: list[bytes], inflight: int, ok: int, deadline: float = float("inf")
) -> Posted:
    """Every body, ``inflight`` requests at a time, as fast as they are answered; none is
    sent after ``deadline`` (perf_counter)."""
    out = Posted()
    queue = list(reversed(bodies))
    sizes = [body.count(b'"labels"') for body in bodies]
    size = dict(zip(map(id, bodies), sizes, strict=True))
    limits = httpx.Limits(max_connections=inflight, max_keepalive_connections=inflight)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def worker() -> None:
            while queue and time.perf_counter() < deadline:
                body = queue.pop()
                out.sent += 1
                sent = time.perf_counter()
                try:
                    resp = await client.post(url, content=body, headers=HEADERS)
                    status = str(resp.status_code)
                except httpx.HTTPError as exc:
                    status = f"{exc.__class__.__name__}: {exc}"
                done = time.perf_counter()
                if status != str(ok):
                    out.failed.append(status)
                else:
                    out.rtt.append(done - sent)
                    out.ok_alerts += size[id(body)]
                out.last_done = max(out.last_done, done)

        out.first_sent = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(inflight)))
    return out


def failures(what: str, failed: list[str]) -> list[str]:
    if not failed:
        return []
    kinds: dict[str, int] = {}
    for f in failed:
        kinds[f] = kinds.get(f, 0) + 1
    return [f"{what}: {len(failed)} requests failed ({', '.join(f'{k} x{n}' for k, n in kinds.items())})"]


class Schedule:
    """Posts bodies at given offsets from a start (open loop: no request waits for another's
    answer); remembers when each was answered 202."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.client = client
        self.url = url
        self.accepted: dict[str, float] = {}
        self.failed: list[str] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def _post(self, key: str, body: bytes) -> None:
        try:
            resp = await self.client.post(self.url, content=body, headers=HEADERS)
            status = str(resp.status_code)
        except httpx.HTTPError as exc:
            status = f"{exc.__class__.__name__}: {exc}"
        if status == "202":
            self.accepted[key] = time.perf_counter()
        else:
            self.failed.append(status)

    def post(self, key: str, body: bytes) -> None:
        task = asyncio.create_task(self._post(key, body))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def every(
        self, interval: float, make: Callable[[int], tuple[str, bytes]], stop: asyncio.Event
    ) -> int:
        """Posts ``make(n)`` every ``interval`` s until ``stop``; returns how many."""
        start = time.perf_counter()
        n = 0
        while not stop.is_set():
            self.post(*make(n))
            n += 1
            delay = start + n * interval - time.perf_counter()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        return n

    async def finish(self) -> None:
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)
