"""The deployments' recent rollouts (``kubectl rollout history``): each ReplicaSet's
``deployment.kubernetes.io/revision`` and creation time, newest first. Read-only."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from service.remediate.kube import Kube
from service.triage.findings import Finding, one_line
from service.triage.probes.base import ProbeFailed, Stopwatch

REVISION = "deployment.kubernetes.io/revision"
# Revisions shown per deployment; a rollout this recent is called out in the summary.
SHOWN = 3
RECENT_SECONDS = 3600


def _owner(rs: dict[str, Any]) -> str | None:
    for ref in rs["metadata"].get("ownerReferences") or []:
        if ref.get("kind") == "Deployment":
            return str(ref.get("name"))
    return None


class RolloutsProbe:
    name = "rollouts"

    def __init__(self, kube: Kube | None) -> None:
        self._kube = kube

    async def run(self, target: dict[str, Any]) -> Finding:
        if self._kube is None:
            raise ProbeFailed("no Kubernetes API configured")
        ns, only = str(target["namespace"]), str(target.get("deployment") or "")
        clock = Stopwatch()
        listed = await self._kube.read(self._kube.apps.list_namespaced_replica_set, ns)
        by_deployment: dict[str, list[dict[str, Any]]] = {}
        for rs in listed.get("items", []):
            owner = _owner(rs)
            revision = (rs["metadata"].get("annotations") or {}).get(REVISION)
            if owner is None or revision is None or (only and owner != only):
                continue
            containers = rs.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
            by_deployment.setdefault(owner, []).append(
                {
                    "revision": int(revision),
                    "created_at": rs["metadata"].get("creationTimestamp"),
                    "replicaset": rs["metadata"]["name"],
                    "images": [c.get("image") for c in containers],
                }
            )
        now = datetime.now(UTC)
        rollouts: dict[str, list[dict[str, Any]]] = {}
        parts = []
        for name, revs in sorted(by_deployment.items()):
            revs.sort(key=lambda r: r["revision"], reverse=True)
            rollouts[name] = revs[:SHOWN]
            latest = revs[0]
            age = _age_seconds(latest["created_at"], now)
            recent = age is not None and age < RECENT_SECONDS
            latest["recent"] = recent
            ago = f"{int(age // 60)} min ago" if age is not None else "at an unknown time"
            parts.append(f"{name} rev {latest['revision']} {ago}" + (" (recent)" if recent else ""))
        shown = ns + (f"/{only}" if only else "")
        summary = "; ".join(parts) if parts else "no deployments with rollouts"
        return Finding(self.name, True, one_line(summary), shown, {"deployments": rollouts}, clock.ms)


def _age_seconds(stamp: str | None, now: datetime) -> float | None:
    if not stamp:
        return None
    try:
        return (now - datetime.fromisoformat(stamp.replace("Z", "+00:00"))).total_seconds()
    except ValueError:
        return None
