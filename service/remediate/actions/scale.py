"""``kubectl scale`` through the scale subresource, up only and never past the policy's
maximum (the runbook scales to 5, in an emergency to 10)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from pydantic import Field, model_validator

from service.remediate.actions.base import Params, Rbac, Refused, Verdict, deployment_rollout
from service.remediate.kube import Kube
from service.remediate.target import Target, TargetKind


class ScaleParams(Params):
    replicas: int | None = Field(default=None, ge=1, description="scale to this many")
    add: int | None = Field(default=None, ge=1, description="or add this many to the current count")
    max_replicas: int = Field(ge=1, le=1000, description="never more than this")

    @model_validator(mode="after")
    def _one_way(self) -> ScaleParams:
        if (self.replicas is None) == (self.add is None):
            raise ValueError("give exactly one of replicas or add")
        if self.replicas is not None and self.replicas > self.max_replicas:
            raise ValueError(f"replicas {self.replicas} is above max_replicas {self.max_replicas}")
        return self


class Scale:
    name: ClassVar[str] = "scale"
    target_kind: ClassVar[TargetKind] = "deployment"
    uses_pod_label: ClassVar[bool] = False
    params_model: ClassVar[type[Params]] = ScaleParams
    rbac: ClassVar[Rbac] = {
        ("apps", "deployments/scale"): ("get", "patch"),
        ("apps", "deployments"): ("get",),
    }

    async def _read(self, kube: Kube, target: Target) -> dict[str, Any]:
        return dict(
            await kube.read(kube.apps.read_namespaced_deployment_scale, target.name, target.namespace)
        )

    async def plan(self, kube: Kube, target: Target, params: ScaleParams, now: datetime) -> dict[str, Any]:
        current = int((await self._read(kube, target)).get("spec", {}).get("replicas", 0))
        wanted = params.replicas if params.replicas is not None else current + (params.add or 0)
        desired = min(params.max_replicas, wanted)
        if desired <= current:
            raise Refused(
                "precondition",
                f"already at {current} replicas (policy allows up to {desired}); never scales down",
            )
        return {"from_replicas": current, "to_replicas": desired}

    async def apply(
        self, kube: Kube, target: Target, params: Any, plan: dict[str, Any], *, dry_run: bool
    ) -> dict[str, Any]:
        scale = await self._read(kube, target)
        current = int(scale.get("spec", {}).get("replicas", 0))
        if current >= plan["to_replicas"]:
            return {"changed": False, "detail": f"already at {current} replicas"}
        await kube.merge_patch(
            kube.apps.patch_namespaced_deployment_scale,
            target.name,
            target.namespace,
            read=scale,
            changes={"spec": {"replicas": plan["to_replicas"]}},
            dry_run=dry_run,
        )
        return {"changed": True, "detail": f"scaled from {current} to {plan['to_replicas']} replicas"}

    async def verify(self, kube: Kube, target: Target, plan: dict[str, Any], *, act: bool = True) -> Verdict:
        return await deployment_rollout(kube, target)
