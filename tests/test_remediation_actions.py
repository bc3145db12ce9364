"""Each remediation action against the Kubernetes API stand-in, over real HTTP through
kubernetes-asyncio: its effect on the cluster state, its dry run, and its bounds."""

from __future__ import annotations

from typing import Any

import pytest

from service.remediate.actions.delete_pods import DeletePodsParams
from service.remediate.actions.drain_node import DrainNodeParams
from service.remediate.actions.registry import ACTIONS
from service.remediate.actions.restart import RESTARTED_AT
from service.remediate.actions.rollback import RollbackParams
from service.remediate.actions.scale import ScaleParams
from service.remediate.kube import Kube, KubeError
from service.remediate.target import Refused, Target
from tests.support.k8s_api import FakeKubernetes
from tests.support.remediation import add_third_db_pod, kube_for, node_with_guarded_db
from tests.support.time import T0

API = Target("deployment", "api", "shop")


@pytest.fixture
def fake(k8s: FakeKubernetes) -> FakeKubernetes:
    return k8s


def image(fake: FakeKubernetes, name: str = "api") -> str:
    return str(fake.deployment("shop", name)["spec"]["template"]["spec"]["containers"][0]["image"])


def current_rs(fake: FakeKubernetes, name: str = "api") -> str:
    """The name of the deployment's ReplicaSet with the highest revision (its pods' owner)."""
    owned = [rs for rs in fake.replicasets("shop") if rs["metadata"]["ownerReferences"][0]["name"] == name]
    return str(owned[-1]["metadata"]["name"])


def writes(fake: FakeKubernetes) -> list[tuple[str, str, bool]]:
    return [(r.method, r.path, r.dry_run) for r in fake.requests if r.method in ("PATCH", "POST", "DELETE")]


def assert_each_write_dry_run_first(fake: FakeKubernetes) -> None:
    """Every real write follows the identical call with dryRun=All."""
    seen: list[tuple[str, str, Any]] = []
    for r in fake.requests:
        if r.method not in ("PATCH", "POST", "DELETE"):
            continue
        if r.dry_run:
            seen.append((r.method, r.path, r.body))
        else:
            assert seen and seen[-1] == (r.method, r.path, r.body), (
                f"{r.method} {r.path} without a dry run first"
            )


async def test_rollback_pins_the_revision_so_a_second_run_changes_nothing(
    fake: FakeKubernetes, kube: Kube
) -> None:
    rollback = ACTIONS["rollback"]
    plan = await rollback.plan(kube, API, RollbackParams(), T0)
    assert (plan["from_revision"], plan["to_revision"]) == (2, 1)

    first = await rollback.apply(kube, API, RollbackParams(), plan, dry_run=False)
    second = await rollback.apply(kube, API, RollbackParams(), plan, dry_run=False)

    assert first["changed"] is True and second["changed"] is False
    assert image(fake) == "api:v1"
    real_patches = [w for w in writes(fake) if w[0] == "PATCH" and not w[2]]
    assert len(real_patches) == 1
    # The controller gave the old ReplicaSet a new, higher revision; a plain "undo" now
    # would flip back to v2. The pinned plan does not.
    assert (
        fake.deployment("shop", "api")["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    )
    assert_each_write_dry_run_first(fake)


async def test_rollback_refuses_a_paused_deployment_and_one_with_no_history(
    fake: FakeKubernetes, kube: Kube
) -> None:
    fake.add_deployment("shop", "frozen", paused=True)
    fake.add_deployment("shop", "fresh", image="fresh:v1")
    rollback = ACTIONS["rollback"]
    with pytest.raises(Refused, match="paused"):
        await rollback.plan(kube, Target("deployment", "frozen", "shop"), RollbackParams(), T0)
    with pytest.raises(Refused, match="nothing to roll back to") as no_history:
        await rollback.plan(kube, Target("deployment", "fresh", "shop"), RollbackParams(), T0)
    assert no_history.value.guardrail == "precondition"
    assert writes(fake) == []


async def test_rollback_will_not_undo_a_rollout_made_after_the_plan(fake: FakeKubernetes, kube: Kube) -> None:
    rollback = ACTIONS["rollback"]
    plan = await rollback.plan(kube, API, RollbackParams(), T0)
    fake.set_image("shop", "api", "api:v3")  # someone ships a fix meanwhile
    with pytest.raises(Refused, match="since the plan"):
        await rollback.apply(kube, API, RollbackParams(), plan, dry_run=True)
    assert image(fake) == "api:v3"


async def test_a_write_racing_another_writer_gets_a_conflict_not_a_lost_update(
    fake: FakeKubernetes, kube: Kube
) -> None:
    rollback = ACTIONS["rollback"]
    plan = await rollback.plan(kube, API, RollbackParams(), T0)
    # Between our read and our write, another writer changes the deployment.
    fake.before_write = lambda method, path: fake.set_healthy("shop", "api", False)
    with pytest.raises(KubeError) as conflict:
        await rollback.apply(kube, API, RollbackParams(), plan, dry_run=False)
    assert conflict.value.status == 409
    assert image(fake) == "api:v2"


async def test_dry_run_calls_the_server_and_changes_nothing(fake: FakeKubernetes, kube: Kube) -> None:
    fake.add_node("node-1")
    fake.add_pod(
        "shop",
        "api-1",
        labels={"app": "api"},
        node="node-1",
        ready=False,
        owner_kind="ReplicaSet",
        owner_name=current_rs(fake),
    )
    before = (fake.deployment("shop", "api"), fake.pods("shop"), fake.node("node-1"), fake.resource_version)
    cases: list[tuple[str, Target, Any]] = [
        ("rollback", API, RollbackParams()),
        ("scale", API, ScaleParams(replicas=5, max_replicas=10)),
        ("restart", API, None),
        ("delete_pods", API, DeletePodsParams()),
        ("drain_node", Target("node", "node-1"), DrainNodeParams()),
    ]
    for name, target, params in cases:
        action = ACTIONS[name]
        plan = await action.plan(kube, target, params, T0)
        result = await action.apply(kube, target, params, plan, dry_run=True)
        assert result["changed"] is True, name  # the dry run reports what would change
    after = (fake.deployment("shop", "api"), fake.pods("shop"), fake.node("node-1"), fake.resource_version)
    assert after == before
    assert fake.mutations == []
    assert {w[0] for w in writes(fake)} == {"PATCH", "DELETE", "POST"}
    assert all(dry for _, _, dry in writes(fake))


async def test_scale_goes_up_through_the_subresource_within_the_maximum_and_never_down(
    fake: FakeKubernetes, kube: Kube
) -> None:
    scale = ACTIONS["scale"]
    plan = await scale.plan(kube, API, ScaleParams(add=20, max_replicas=10), T0)
    assert plan == {"from_replicas": 2, "to_replicas": 10}
    await scale.apply(kube, API, None, plan, dry_run=False)
    assert fake.deployment("shop", "api")["spec"]["replicas"] == 10
    assert {p for m, p, _ in writes(fake)} == {"/apis/apps/v1/namespaces/shop/deployments/api/scale"}
    with pytest.raises(Refused, match="never scales down"):
        await scale.plan(kube, API, ScaleParams(replicas=5, max_replicas=10), T0)
    with pytest.raises(ValueError, match="above max_replicas"):
        ScaleParams(replicas=11, max_replicas=10)


async def test_restart_stamps_the_pod_template_once(fake: FakeKubernetes, kube: Kube) -> None:
    restart = ACTIONS["restart"]
    plan = await restart.plan(kube, API, None, T0)
    first = await restart.apply(kube, API, None, plan, dry_run=False)
    again = await restart.apply(kube, API, None, plan, dry_run=False)
    annotations = fake.deployment("shop", "api")["spec"]["template"]["metadata"]["annotations"]
    assert annotations[RESTARTED_AT] == "2026-11-26T12:00:00Z"
    assert (first["changed"], again["changed"]) == (True, False)
    assert len([w for w in writes(fake) if not w[2]]) == 1


async def test_delete_pods_takes_only_unready_pods_of_the_deployment_and_refuses_too_many(
    fake: FakeKubernetes, kube: Kube
) -> None:
    for name, ready in (("api-a", True), ("api-b", False), ("api-c", False)):
        fake.add_pod(
            "shop",
            name,
            labels={"app": "api"},
            node="n1",
            ready=ready,
            owner_kind="ReplicaSet",
            owner_name=current_rs(fake),
        )
    fake.add_pod(
        "shop",
        "other-x",
        labels={"app": "other"},
        node="n1",
        ready=False,
        owner_kind="ReplicaSet",
        owner_name="o",
    )
    # Same labels, another owner (a canary): never the deployment's to delete.
    fake.add_pod(
        "shop",
        "canary-z",
        labels={"app": "api"},
        node="n1",
        ready=False,
        owner_kind="ReplicaSet",
        owner_name="canary",
    )
    delete = ACTIONS["delete_pods"]

    with pytest.raises(Refused) as bounded:
        await delete.plan(kube, API, DeletePodsParams(max_pods=1), T0)
    assert bounded.value.guardrail == "bounds"

    plan = await delete.plan(kube, API, DeletePodsParams(max_pods=2), T0)
    result = await delete.apply(kube, API, None, plan, dry_run=False)
    assert sorted(result["deleted"]) == ["api-b", "api-c"]
    assert sorted(p["metadata"]["name"] for p in fake.pods("shop")) == ["api-a", "canary-z", "other-x"]
    # Applying again finds them gone and deletes nothing else.
    again = await delete.apply(kube, API, None, plan, dry_run=False)
    assert again["deleted"] == [] and sorted(again["already_gone"]) == ["api-b", "api-c"]

    one = Target("deployment", "api", "shop", pod="other-x")
    with pytest.raises(Refused, match="not one of"):
        await delete.plan(kube, one, DeletePodsParams(), T0)
    with pytest.raises(Refused, match="no unready pods"):
        await delete.plan(kube, API, DeletePodsParams(), T0)


async def test_drain_cordons_skips_daemonsets_and_respects_a_disruption_budget(
    fake: FakeKubernetes, kube: Kube
) -> None:
    node_with_guarded_db(fake)  # db-0 on node-1 may not go until a third db pod exists
    fake.add_pod(
        "shop", "web-0", labels={"app": "web"}, node="node-1", owner_kind="ReplicaSet", owner_name="w"
    )
    drain = ACTIONS["drain_node"]
    node = Target("node", "node-1")

    plan = await drain.plan(kube, node, DrainNodeParams(), T0)
    assert plan["daemonset_pods_skipped"] == ["kube-system/agent-0"]
    result = await drain.apply(kube, node, None, plan, dry_run=False)

    assert fake.node("node-1")["spec"]["unschedulable"] is True
    assert result["evicted"] == ["shop/web-0"]
    # minAvailable=2 of 2 blocks db-0: the 429 is respected, not forced.
    assert [b["pod"] for b in result["blocked"]] == ["shop/db-0"]
    assert fake.pod("shop", "db-0") is not None
    assert fake.pod("kube-system", "agent-0") is not None
    verdict = await drain.verify(kube, node, plan)
    assert not verdict.done and "disruption budget" in verdict.detail

    add_third_db_pod(fake)
    assert (await drain.verify(kube, node, plan)).done is False  # this check evicted db-0
    assert fake.pod("shop", "db-0") is None
    assert (await drain.verify(kube, node, plan)).done is True
    assert_each_write_dry_run_first(fake)


async def test_drain_refuses_pods_without_a_controller(fake: FakeKubernetes, kube: Kube) -> None:
    fake.add_node("node-1")
    fake.add_pod("shop", "hand-made", labels={"app": "x"}, node="node-1")
    with pytest.raises(Refused, match="without a controller"):
        await ACTIONS["drain_node"].plan(kube, Target("node", "node-1"), DrainNodeParams(), T0)
    assert fake.node("node-1")["spec"].get("unschedulable") is not True


async def test_unreachable_api_is_a_clear_error(kube: Kube) -> None:
    dead = kube_for("http://127.0.0.1:9")
    try:
        with pytest.raises(KubeError, match="unreachable") as err:
            await ACTIONS["restart"].plan(dead, API, None, T0)
        assert err.value.status == 0
    finally:
        await dead.close()
