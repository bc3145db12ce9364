"""``kubectl delete pod -l app=...`` (the runbook's "restart pods if stuck"), bounded: only
the deployment's own pods, by default only those not Ready, and never more than
``max_pods`` - a larger match is refused, not trimmed, because it means the alert
describes something other than a few stuck pods."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from pydantic import Field

from service.remediate.actions.base import (
    Params,
    Rbac,
    Refused,
    Verdict,
    deployment_rollout,
    owned_replicasets,
    read_deployment,
)
from service.remediate.kube import Kube, KubeError
from service.remediate.target import Target, TargetKind


class DeletePodsParams(Params):
    max_pods: int = Field(default=3, ge=1, le=100)
    only_unready: bool = True


def _controller_uid(pod: dict[str, Any]) -> str | None:
    for ref in pod["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


class DeletePods:
    name: ClassVar[str] = "delete_pods"
    target_kind: ClassVar[TargetKind] = "deployment"
    uses_pod_label: ClassVar[bool] = True
    params_model: ClassVar[type[Params]] = DeletePodsParams
    rbac: ClassVar[Rbac] = {
        ("apps", "deployments"): ("get",),
        ("apps", "replicasets"): ("list",),
        ("", "pods"): ("list", "delete"),
    }

    async def plan(
        self, kube: Kube, target: Target, params: DeletePodsParams, now: datetime
    ) -> dict[str, Any]:
        deployment = await read_deployment(kube, target)
        match = deployment.get("spec", {}).get("selector", {}).get("matchLabels") or {}
        if not match:
            raise Refused("target", "deployment has no matchLabels selector; refusing to select pods")
        selector = ",".join(f"{k}={v}" for k, v in sorted(match.items()))
        listing = await kube.read(kube.core.list_namespaced_pod, target.namespace, label_selector=selector)
        # The selector narrows the listing; ownership decides. Another workload's pods can
        # carry the same labels (a canary, or a selector's matchExpressions left out).
        owned = {rs["metadata"].get("uid") for rs in await owned_replicasets(kube, deployment)}
        pods = [p for p in listing.get("items", []) if _controller_uid(p) in owned]
        if target.pod is not None:
            pods = [p for p in pods if p["metadata"]["name"] == target.pod]
            if not pods:
                raise Refused("target", f"pod {target.pod} is not one of {target.key}'s pods")
        if params.only_unready:
            pods = [p for p in pods if not _ready(p)]
        if not pods:
            raise Refused(
                "target", f"no {'unready ' if params.only_unready else ''}pods of {target.key} to delete"
            )
        if len(pods) > params.max_pods:
            raise Refused("bounds", f"{len(pods)} pods match, more than max_pods {params.max_pods}")
        return {
            "selector": selector,
            "pods": [{"name": p["metadata"]["name"], "uid": p["metadata"].get("uid")} for p in pods],
        }

    async def apply(
        self, kube: Kube, target: Target, params: Any, plan: dict[str, Any], *, dry_run: bool
    ) -> dict[str, Any]:
        deleted: list[str] = []
        gone: list[str] = []
        for pod in plan["pods"]:
            # The uid precondition: a replacement pod that reuses the name is not ours to delete.
            body = {"preconditions": {"uid": pod["uid"]}}
            try:
                await kube.write(
                    kube.core.delete_namespaced_pod, pod["name"], target.namespace, body=body, dry_run=dry_run
                )
            except KubeError as exc:
                if exc.status not in (404, 409):
                    raise
                gone.append(pod["name"])
                continue
            deleted.append(pod["name"])
        detail = f"deleted {len(deleted)} pod(s)" + (f"; {len(gone)} already gone" if gone else "")
        return {"changed": bool(deleted), "detail": detail, "deleted": deleted, "already_gone": gone}

    async def verify(self, kube: Kube, target: Target, plan: dict[str, Any], *, act: bool = True) -> Verdict:
        return await deployment_rollout(kube, target)
