"""The namespace's pods (``kubectl get pods``): phase, restarts, the last termination
reason, and a short log tail of the failing ones (``kubectl logs --tail``). Read-only."""

from __future__ import annotations

from typing import Any

from service.remediate.kube import Kube
from service.triage.findings import Finding, one_line
from service.triage.probes.base import ProbeFailed, Stopwatch

# Logs of at most this many failing pods, each cut to this many characters.
LOGGED_PODS = 3
LOG_CHARS = 2000


def pod_row(pod: dict[str, Any]) -> dict[str, Any]:
    status = pod.get("status") or {}
    containers = status.get("containerStatuses") or []
    restarts = sum(int(c.get("restartCount") or 0) for c in containers)
    waiting = next(
        (c["state"]["waiting"].get("reason") for c in containers if (c.get("state") or {}).get("waiting")),
        None,
    )
    terminated = next(
        (
            c["lastState"]["terminated"].get("reason")
            for c in containers
            if (c.get("lastState") or {}).get("terminated")
        ),
        None,
    )
    ready = next(
        (c.get("status") == "True" for c in status.get("conditions") or [] if c.get("type") == "Ready"),
        False,
    )
    phase = status.get("phase") or "Unknown"
    failing = (
        phase not in ("Running", "Succeeded") or waiting is not None or (phase == "Running" and not ready)
    )
    return {
        "name": pod["metadata"]["name"],
        "phase": phase,
        "ready": ready,
        "restarts": restarts,
        "waiting_reason": waiting,
        "last_termination_reason": terminated,
        "failing": failing,
    }


class PodsProbe:
    name = "pods"

    def __init__(self, kube: Kube | None) -> None:
        self._kube = kube

    async def run(self, target: dict[str, Any]) -> Finding:
        if self._kube is None:
            raise ProbeFailed("no Kubernetes API configured")
        ns, selector = str(target["namespace"]), str(target.get("selector") or "")
        clock = Stopwatch()
        kwargs = {"label_selector": selector} if selector else {}
        listed = await self._kube.read(self._kube.core.list_namespaced_pod, ns, **kwargs)
        rows = [pod_row(p) for p in listed.get("items", [])]
        failing = [r for r in rows if r["failing"]]
        for row in failing[:LOGGED_PODS]:
            row["log_tail"] = await self._log(ns, row["name"], int(target.get("tail_lines", 20)))
        shown = f"{ns}" + (f" ({selector})" if selector else "")
        if not rows:
            return Finding(self.name, False, "no pods found", shown, {"pods": []}, clock.ms)
        bad = ", ".join(
            f"{r['name']} {r['waiting_reason'] or r['phase']}"
            + (f" restarts={r['restarts']}" if r["restarts"] else "")
            + (f" last={r['last_termination_reason']}" if r["last_termination_reason"] else "")
            for r in failing
        )
        summary = (
            f"{len(failing)} of {len(rows)} pods failing: {bad}" if failing else f"{len(rows)} pods running"
        )
        return Finding(self.name, not failing, one_line(summary), shown, {"pods": rows}, clock.ms)

    async def _log(self, namespace: str, pod: str, tail: int) -> str:
        assert self._kube is not None
        try:
            resp: Any = await self._kube.core.read_namespaced_pod_log(
                # Lines bound a tail only when there are newlines; bytes bound it always.
                pod,
                namespace,
                tail_lines=tail,
                limit_bytes=4 * LOG_CHARS,
                _preload_content=False,
                _request_timeout=5.0,
            )
            raw = await resp.read()
        except Exception as exc:  # a missing log is one line of the finding, not its end
            return f"(log unavailable: {exc.__class__.__name__})"
        if resp.status != 200:
            return f"(log unavailable: HTTP {resp.status})"
        text: str = raw.decode(errors="replace")
        return text[-LOG_CHARS:]
