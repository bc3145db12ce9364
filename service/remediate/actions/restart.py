"""``kubectl rollout restart``: stamp the pod template with ``restartedAt``. The stamp
is chosen at plan time, so applying the plan again changes nothing."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from service.remediate.actions.base import (
    Params,
    Rbac,
    Verdict,
    deployment_rollout,
    read_deployment,
    refuse_paused,
)
from service.remediate.kube import Kube
from service.remediate.target import Target, TargetKind

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


class RestartParams(Params):
    pass


class Restart:
    name: ClassVar[str] = "restart"
    target_kind: ClassVar[TargetKind] = "deployment"
    uses_pod_label: ClassVar[bool] = False
    params_model: ClassVar[type[Params]] = RestartParams
    rbac: ClassVar[Rbac] = {("apps", "deployments"): ("get", "patch")}

    async def plan(self, kube: Kube, target: Target, params: Any, now: datetime) -> dict[str, Any]:
        refuse_paused(await read_deployment(kube, target))
        return {"restarted_at": now.isoformat(timespec="seconds").replace("+00:00", "Z")}

    async def apply(
        self, kube: Kube, target: Target, params: Any, plan: dict[str, Any], *, dry_run: bool
    ) -> dict[str, Any]:
        deployment = await read_deployment(kube, target)
        annotations = deployment["spec"]["template"].get("metadata", {}).get("annotations") or {}
        if annotations.get(RESTARTED_AT) == plan["restarted_at"]:
            return {"changed": False, "detail": f"already restarted at {plan['restarted_at']}"}
        refuse_paused(deployment)
        stamp = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: plan["restarted_at"]}}}}}
        await kube.merge_patch(
            kube.apps.patch_namespaced_deployment,
            target.name,
            target.namespace,
            read=deployment,
            changes=stamp,
            dry_run=dry_run,
        )
        return {"changed": True, "detail": f"rollout restart at {plan['restarted_at']}"}

    async def verify(self, kube: Kube, target: Target, plan: dict[str, Any], *, act: bool = True) -> Verdict:
        return await deployment_rollout(kube, target)
