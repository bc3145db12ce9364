"""The interface every remediation action implements, and what deployment actions share.

An action is three steps, each safe to repeat after a crash:

- ``plan``: read the cluster, check the action makes sense, and fix every choice
  (the revision to roll back to, the pods to delete). The plan is stored before
  anything changes, so a retry does exactly the same thing.
- ``apply``: make the planned change; with ``dry_run`` only the server-side dry run.
  Applying a plan that already took effect changes nothing.
- ``verify``: has the change taken effect (rollout available, node drained)?
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from service.clock import iso
from service.remediate.kube import Kube
from service.remediate.target import Refused, Target, TargetKind
from service.ruleset.durations import format_duration

REVISION = "deployment.kubernetes.io/revision"
TEMPLATE_HASH = "pod-template-hash"


__all__ = ["Action", "Params", "Rbac", "Refused", "Verdict"]

# (API group, resource) -> the verbs an action needs; the chart's Role is built from it.
Rbac = dict[tuple[str, str], tuple[str, ...]]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class Verdict:
    done: bool
    detail: str


class Action(Protocol):
    name: ClassVar[str]
    target_kind: ClassVar[TargetKind]
    uses_pod_label: ClassVar[bool]
    params_model: ClassVar[type[Params]]
    # What the Helm chart's Role must grant, per (API group, resource): verbs.
    rbac: ClassVar[Rbac]

    async def plan(self, kube: Kube, target: Target, params: Any, now: datetime) -> dict[str, Any]: ...

    async def apply(
        self, kube: Kube, target: Target, params: Any, plan: dict[str, Any], *, dry_run: bool
    ) -> dict[str, Any]: ...

    async def verify(self, kube: Kube, target: Target, plan: dict[str, Any], *, act: bool = True) -> Verdict:
        """``act``: the check may also push the action on (a drain retries evictions)."""
        ...


# -- deployments -------------------------------------------------------------


async def read_deployment(kube: Kube, target: Target) -> dict[str, Any]:
    return dict(await kube.read(kube.apps.read_namespaced_deployment, target.name, target.namespace))


def refuse_paused(deployment: dict[str, Any]) -> None:
    if deployment.get("spec", {}).get("paused"):
        raise Refused("precondition", "deployment is paused (someone is rolling it out by hand)")


async def owned_replicasets(kube: Kube, deployment: dict[str, Any]) -> list[dict[str, Any]]:
    """The deployment's ReplicaSets, newest revision first (what ``rollout history`` lists)."""
    meta = deployment["metadata"]
    match = deployment.get("spec", {}).get("selector", {}).get("matchLabels", {})
    selector = ",".join(f"{k}={v}" for k, v in sorted(match.items()))
    listing = await kube.read(
        kube.apps.list_namespaced_replica_set, meta["namespace"], label_selector=selector
    )
    owned = [
        rs
        for rs in listing.get("items", [])
        if any(
            ref.get("uid") == meta.get("uid") and ref.get("controller")
            for ref in rs["metadata"].get("ownerReferences", [])
        )
    ]
    return sorted(owned, key=revision_of, reverse=True)


def revision_of(obj: dict[str, Any]) -> int:
    raw = obj.get("metadata", {}).get("annotations", {}).get(REVISION, "0")
    return int(raw) if str(raw).isdigit() else 0


def comparable_template(template: dict[str, Any]) -> dict[str, Any]:
    """A pod template without the label the controller adds, as ``rollout undo`` compares."""
    meta = dict(template.get("metadata", {}))
    labels = {k: v for k, v in meta.get("labels", {}).items() if k != TEMPLATE_HASH}
    meta["labels"] = labels
    return {**template, "metadata": meta}


def current_replicaset(deployment: dict[str, Any], replicasets: list[dict[str, Any]]) -> dict[str, Any]:
    template = comparable_template(deployment["spec"]["template"])
    for rs in replicasets:
        if comparable_template(rs["spec"]["template"]) == template:
            return rs
    raise Refused("precondition", "the deployment's current ReplicaSet is not found (rollout in progress?)")


def rollout_verdict(deployment: dict[str, Any]) -> Verdict:
    """``kubectl rollout status``: the controller saw the change and every replica is
    updated and available."""
    spec, status = deployment.get("spec", {}), deployment.get("status", {})
    generation = deployment.get("metadata", {}).get("generation", 0)
    want = spec.get("replicas", 1)
    if status.get("observedGeneration", 0) < generation:
        return Verdict(False, "the controller has not seen the change yet")
    updated, available = status.get("updatedReplicas", 0), status.get("availableReplicas", 0)
    if updated < want or available < want:
        return Verdict(False, f"rollout: {updated}/{want} updated, {available}/{want} available")
    return Verdict(True, f"rollout available: {available}/{want} replicas")


async def deployment_rollout(kube: Kube, target: Target) -> Verdict:
    return rollout_verdict(await read_deployment(kube, target))


async def refuse_unless_changed_within(kube: Kube, target: Target, within: timedelta, now: datetime) -> None:
    """The runbook's "if recent change caused issue": the current revision rolled out recently."""
    deployment = await read_deployment(kube, target)
    current = current_replicaset(deployment, await owned_replicasets(kube, deployment))
    created = parse_time(current["metadata"]["creationTimestamp"])
    if now - created > within:
        raise Refused(
            "precondition",
            f"no recent change: the current revision rolled out at {iso(created)}, "
            f"more than {format_duration(within)} ago",
        )


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
