"""``kubectl drain --ignore-daemonsets``: cordon, then evict through the Eviction API.

A 429 from a PodDisruptionBudget is respected, never forced: the eviction is tried
again while the action is verified, and if the budget still blocks it when the
verification times out, a person takes over. Pods without a controller are refused
at plan time, as kubectl refuses them without --force: they would be lost.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from pydantic import Field

from service.remediate.actions.base import Params, Rbac, Refused, Verdict
from service.remediate.kube import Kube, KubeError
from service.remediate.target import Target, TargetKind

MIRROR = "kubernetes.io/config.mirror"


class DrainNodeParams(Params):
    max_pods: int = Field(default=50, ge=1, le=500)


def _owner_kind(pod: dict[str, Any]) -> str | None:
    for ref in pod["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("kind"))
    return None


class DrainNode:
    name: ClassVar[str] = "drain_node"
    target_kind: ClassVar[TargetKind] = "node"
    uses_pod_label: ClassVar[bool] = False
    params_model: ClassVar[type[Params]] = DrainNodeParams
    rbac: ClassVar[Rbac] = {
        ("", "nodes"): ("get", "patch"),
        ("", "pods"): ("list",),
        ("", "pods/eviction"): ("create",),
    }

    async def _pods(self, kube: Kube, node: str) -> list[dict[str, Any]]:
        listing = await kube.read(
            kube.core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={node}"
        )
        return list(listing.get("items", []))

    async def plan(
        self, kube: Kube, target: Target, params: DrainNodeParams, now: datetime
    ) -> dict[str, Any]:
        await kube.read(kube.core.read_node, target.name)  # 404 here: no such node
        evict: list[dict[str, Any]] = []
        daemonsets: list[str] = []
        unmanaged: list[str] = []
        for pod in await self._pods(kube, target.name):
            meta = pod["metadata"]
            ref = f"{meta['namespace']}/{meta['name']}"
            kind = _owner_kind(pod)
            if kind == "DaemonSet" or MIRROR in (meta.get("annotations") or {}):
                daemonsets.append(ref)
            elif kind is None:
                unmanaged.append(ref)
            else:
                evict.append({"namespace": meta["namespace"], "name": meta["name"], "uid": meta.get("uid")})
        if unmanaged:
            raise Refused(
                "precondition", f"pods without a controller would be lost: {', '.join(unmanaged[:10])}"
            )
        if len(evict) > params.max_pods:
            raise Refused("bounds", f"{len(evict)} pods to evict, more than max_pods {params.max_pods}")
        return {"pods": evict, "daemonset_pods_skipped": daemonsets}

    async def apply(
        self, kube: Kube, target: Target, params: Any, plan: dict[str, Any], *, dry_run: bool
    ) -> dict[str, Any]:
        node = await kube.read(kube.core.read_node, target.name)
        cordoned = False
        if not node.get("spec", {}).get("unschedulable"):
            cordon = {"spec": {"unschedulable": True}}
            await kube.merge_patch(
                kube.core.patch_node, target.name, read=node, changes=cordon, dry_run=dry_run
            )
            cordoned = True
        evicted, blocked, gone = await self._evict(kube, plan["pods"], dry_run=dry_run)
        detail = f"{'cordoned, ' if cordoned else ''}evicted {len(evicted)} pod(s)"
        if blocked:
            detail += f"; {len(blocked)} blocked by a disruption budget, retried while verifying"
        return {
            "changed": cordoned or bool(evicted),
            "detail": detail,
            "cordoned": cordoned,
            "evicted": evicted,
            "blocked": blocked,
            "already_gone": gone,
        }

    async def _evict(
        self, kube: Kube, pods: list[dict[str, Any]], *, dry_run: bool
    ) -> tuple[list[str], list[dict[str, str]], list[str]]:
        evicted: list[str] = []
        blocked: list[dict[str, str]] = []
        gone: list[str] = []
        for pod in pods:
            ref = f"{pod['namespace']}/{pod['name']}"
            body = {
                "apiVersion": "policy/v1",
                "kind": "Eviction",
                "metadata": {"name": pod["name"], "namespace": pod["namespace"]},
                "deleteOptions": {"preconditions": {"uid": pod["uid"]}},
            }
            try:
                await kube.write(
                    kube.core.create_namespaced_pod_eviction,
                    pod["name"],
                    pod["namespace"],
                    body,
                    dry_run=dry_run,
                )
            except KubeError as exc:
                if exc.status == 429:
                    blocked.append({"pod": ref, "reason": exc.message})
                    continue
                if exc.status in (404, 409):
                    gone.append(ref)
                    continue
                raise
            evicted.append(ref)
        return evicted, blocked, gone

    async def verify(self, kube: Kube, target: Target, plan: dict[str, Any], *, act: bool = True) -> Verdict:
        node = await kube.read(kube.core.read_node, target.name)
        if not node.get("spec", {}).get("unschedulable"):
            return Verdict(False, "node is no longer cordoned (someone uncordoned it?)")
        planned = {p["uid"]: p for p in plan["pods"]}
        remaining = [
            planned[p["metadata"].get("uid")]
            for p in await self._pods(kube, target.name)
            if p["metadata"].get("uid") in planned
        ]
        if not remaining:
            return Verdict(True, f"node drained: {len(planned)} pod(s) evicted")
        blocked: list[dict[str, str]] = []
        if act:
            _, blocked, _ = await self._evict(kube, remaining, dry_run=False)
        reasons = "; ".join(f"{b['pod']}: {b['reason']}" for b in blocked[:3])
        return Verdict(
            False, f"{len(remaining)} pod(s) still on the node" + (f" ({reasons})" if reasons else "")
        )
