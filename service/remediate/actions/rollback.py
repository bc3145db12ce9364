"""``kubectl rollout undo``, pinned: the revision to return to is chosen at plan time and
its pod template stored with the plan, so running the action twice changes nothing the
second time (a plain undo would flip back to the broken revision)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from service.remediate.actions.base import (
    Params,
    Rbac,
    Refused,
    Verdict,
    comparable_template,
    current_replicaset,
    deployment_rollout,
    owned_replicasets,
    read_deployment,
    refuse_paused,
    revision_of,
)
from service.remediate.kube import Kube
from service.remediate.target import Target, TargetKind


class RollbackParams(Params):
    pass


class Rollback:
    name: ClassVar[str] = "rollback"
    target_kind: ClassVar[TargetKind] = "deployment"
    uses_pod_label: ClassVar[bool] = False
    params_model: ClassVar[type[Params]] = RollbackParams
    rbac: ClassVar[Rbac] = {("apps", "deployments"): ("get", "patch"), ("apps", "replicasets"): ("list",)}

    async def plan(self, kube: Kube, target: Target, params: Any, now: datetime) -> dict[str, Any]:
        deployment = await read_deployment(kube, target)
        refuse_paused(deployment)
        replicasets = await owned_replicasets(kube, deployment)
        current = current_replicaset(deployment, replicasets)
        older = [rs for rs in replicasets if revision_of(rs) < revision_of(current)]
        if not older:
            raise Refused(
                "precondition", f"revision {revision_of(current)} is the only one: nothing to roll back to"
            )
        previous = older[0]
        return {
            "from_revision": revision_of(current),
            "from_replicaset": current["metadata"]["name"],
            "to_revision": revision_of(previous),
            "to_replicaset": previous["metadata"]["name"],
            "template": comparable_template(previous["spec"]["template"]),
        }

    async def apply(
        self, kube: Kube, target: Target, params: Any, plan: dict[str, Any], *, dry_run: bool
    ) -> dict[str, Any]:
        deployment = await read_deployment(kube, target)
        if comparable_template(deployment["spec"]["template"]) == plan["template"]:
            return {"changed": False, "detail": f"already at the template of revision {plan['to_revision']}"}
        refuse_paused(deployment)
        current = current_replicaset(deployment, await owned_replicasets(kube, deployment))
        if current["metadata"]["name"] != plan["from_replicaset"]:
            # Someone rolled out since the plan: rolling back now would undo their change.
            raise Refused(
                "precondition",
                f"deployment moved to {current['metadata']['name']} since the plan "
                f"(from {plan['from_replicaset']}); not rolling back",
            )
        patch = [
            # The server refuses the patch (409) if the deployment changed since our read.
            {
                "op": "replace",
                "path": "/metadata/resourceVersion",
                "value": deployment["metadata"]["resourceVersion"],
            },
            {"op": "replace", "path": "/spec/template", "value": plan["template"]},
        ]
        result = await kube.write(
            kube.apps.patch_namespaced_deployment, target.name, target.namespace, patch, dry_run=dry_run
        )
        return {
            "changed": True,
            "detail": f"pod template of revision {plan['to_revision']} ({plan['to_replicaset']}) applied",
            "resource_version": result.get("metadata", {}).get("resourceVersion"),
        }

    async def verify(self, kube: Kube, target: Target, plan: dict[str, Any], *, act: bool = True) -> Verdict:
        return await deployment_rollout(kube, target)
