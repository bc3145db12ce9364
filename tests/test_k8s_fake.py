"""The stand-in Kubernetes API server, through the real kubernetes_asyncio client: the
remediation tests are only as good as its fidelity to the API server's contracts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from service.config import Settings
from service.remediate.kube import KubeError, connect
from tests.support.k8s_api import REVISION, REVISION_HISTORY, TEMPLATE_HASH, FakeKubernetes

MERGE = "application/merge-patch+json"


@pytest.fixture
async def fake() -> AsyncIterator[FakeKubernetes]:
    async with FakeKubernetes() as server:
        yield server


@pytest.fixture
async def api(fake: FakeKubernetes) -> AsyncIterator[client.ApiClient]:
    cfg = client.Configuration(host=fake.base_url)
    cfg.api_key, cfg.api_key_prefix = {"BearerToken": fake.token}, {"BearerToken": "Bearer"}
    async with client.ApiClient(cfg) as api_client:
        yield api_client


async def test_a_request_without_the_token_is_refused(fake: FakeKubernetes) -> None:
    fake.add_deployment("shop", "api")
    async with client.ApiClient(client.Configuration(host=fake.base_url)) as anonymous:
        with pytest.raises(ApiException) as refused:
            await client.AppsV1Api(anonymous).read_namespaced_deployment("api", "shop")
    assert refused.value.status == 401
    assert status_of(refused.value)["reason"] == "Unauthorized"


def status_of(exc: ApiException) -> dict:  # type: ignore[type-arg]
    body = json.loads(exc.body)
    assert body["kind"] == "Status" and body["code"] == exc.status
    return body  # type: ignore[no-any-return]


def template_of(rs: dict) -> dict:  # type: ignore[type-arg]
    """A ReplicaSet's pod template as the deployment had it (without the hash label)."""
    template = json.loads(json.dumps(rs["spec"]["template"]))
    del template["metadata"]["labels"][TEMPLATE_HASH]
    return template  # type: ignore[no-any-return]


async def test_dry_run_patch_answers_the_change_and_changes_nothing(
    fake: FakeKubernetes, api: client.ApiClient
) -> None:
    apps = client.AppsV1Api(api)
    fake.add_deployment("prod", "web", replicas=2)
    before, rv = fake.deployment("prod", "web"), fake.resource_version

    answer = await apps.patch_namespaced_deployment(
        "web", "prod", {"spec": {"replicas": 5}}, dry_run="All", _content_type=MERGE
    )
    assert answer.spec.replicas == 5 and answer.metadata.generation == 2
    new_image = [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "app:v2"}]
    answer = await apps.patch_namespaced_deployment("web", "prod", new_image, dry_run="All")
    assert answer.spec.template.spec.containers[0].image == "app:v2"
    with pytest.raises(ApiException) as invalid:  # validation runs in a dry run too
        await apps.patch_namespaced_deployment(
            "web", "prod", {"spec": {"replicas": -1}}, dry_run="All", _content_type=MERGE
        )
    assert invalid.value.status == 422 and status_of(invalid.value)["reason"] == "Invalid"
    with pytest.raises(ApiException) as bad:
        await apps.patch_namespaced_deployment("web", "prod", new_image, dry_run="Yes")
    assert bad.value.status == 400

    assert fake.deployment("prod", "web") == before
    assert fake.resource_version == rv
    assert len(fake.replicasets("prod")) == 1
    assert fake.mutations == []
    assert [r.query.get("dryRun") for r in fake.requests] == ["All", "All", "All", "Yes"]


async def test_stale_resource_version_is_a_409_conflict(fake: FakeKubernetes, api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    fake.add_deployment("prod", "web")
    read = await apps.read_namespaced_deployment("web", "prod")
    fake.set_image("prod", "web", "app:v2")  # someone else's rollout after our read

    patch = {"metadata": {"resourceVersion": read.metadata.resource_version}, "spec": {"replicas": 7}}
    for dry_run in ("All", None):
        with pytest.raises(ApiException) as conflict:
            await apps.patch_namespaced_deployment("web", "prod", patch, dry_run=dry_run, _content_type=MERGE)
        assert conflict.value.status == 409
        body = status_of(conflict.value)
        assert body["reason"] == "Conflict" and "the object has been modified" in body["message"]
    assert fake.deployment("prod", "web")["spec"]["replicas"] == 2

    # The same race, landing between the client's read and its write.
    read = await apps.read_namespaced_deployment("web", "prod")
    fake.before_write = lambda method, path: fake.set_image("prod", "web", "app:v3")
    patch = {"metadata": {"resourceVersion": read.metadata.resource_version}, "spec": {"replicas": 7}}
    with pytest.raises(ApiException) as conflict:
        await apps.patch_namespaced_deployment("web", "prod", patch, _content_type=MERGE)
    assert conflict.value.status == 409
    assert fake.deployment("prod", "web")["spec"]["replicas"] == 2
    assert fake.mutations == []


async def test_new_template_is_a_new_revision_and_rollback_reuses_the_old_replicaset(
    fake: FakeKubernetes, api: client.ApiClient
) -> None:
    apps = client.AppsV1Api(api)
    fake.add_deployment("prod", "web", image="app:v1", created_at=datetime(2026, 1, 1, tzinfo=UTC))
    (first,) = fake.replicasets("prod")
    assert first["metadata"]["annotations"][REVISION] == "1"
    assert first["metadata"]["creationTimestamp"] == "2026-01-01T00:00:00Z"
    v1_template = template_of(first)

    v2_template = json.loads(json.dumps(v1_template))
    v2_template["spec"]["containers"][0]["image"] = "app:v2"
    answer = await apps.patch_namespaced_deployment(
        "web", "prod", [{"op": "replace", "path": "/spec/template", "value": v2_template}]
    )
    assert answer.metadata.generation == 2
    listing = await apps.list_namespaced_replica_set("prod", label_selector="app=web")
    revisions = {
        rs.spec.template.spec.containers[0].image: rs.metadata.annotations[REVISION] for rs in listing.items
    }
    assert revisions == {"app:v1": "1", "app:v2": "2"}
    read = await apps.read_namespaced_deployment("web", "prod")
    assert read.metadata.annotations[REVISION] == "2"
    assert read.status.observed_generation == read.metadata.generation == 2

    # Back to the old template, as `rollout undo` does: the v1 ReplicaSet becomes revision 3.
    rollback = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": read.metadata.resource_version},
        {"op": "replace", "path": "/spec/template", "value": v1_template},
    ]
    await apps.patch_namespaced_deployment("web", "prod", rollback)
    replicasets = {rs["metadata"]["name"]: rs for rs in fake.replicasets("prod")}
    assert len(replicasets) == 2
    old = replicasets[first["metadata"]["name"]]
    assert old["metadata"]["annotations"][REVISION] == "3"
    assert old["metadata"]["annotations"][REVISION_HISTORY] == "1"
    assert old["spec"]["replicas"] == 2
    assert sorted(rs["metadata"]["annotations"][REVISION] for rs in replicasets.values()) == ["2", "3"]
    assert fake.deployment("prod", "web")["metadata"]["annotations"][REVISION] == "3"

    # A JSON patch whose `test` fails is refused whole, with 422.
    with pytest.raises(ApiException) as failed:
        await apps.patch_namespaced_deployment("web", "prod", rollback)
    assert failed.value.status == 422 and status_of(failed.value)["reason"] == "Invalid"


async def test_scale_subresource_patch_writes_the_deployments_replicas(
    fake: FakeKubernetes, api: client.ApiClient
) -> None:
    apps = client.AppsV1Api(api)
    fake.add_deployment("prod", "web", replicas=2)
    scale = await apps.read_namespaced_deployment_scale("web", "prod")
    assert (scale.spec.replicas, scale.status.replicas, scale.status.selector) == (2, 2, "app=web")
    assert scale.metadata.resource_version == fake.deployment("prod", "web")["metadata"]["resourceVersion"]

    body = {"metadata": {"resourceVersion": scale.metadata.resource_version}, "spec": {"replicas": 4}}
    answer = await apps.patch_namespaced_deployment_scale("web", "prod", body, _content_type=MERGE)
    assert answer.spec.replicas == 4
    deployment = fake.deployment("prod", "web")
    assert deployment["spec"]["replicas"] == 4 and deployment["status"]["availableReplicas"] == 4
    assert [rs["spec"]["replicas"] for rs in fake.replicasets("prod")] == [4]  # no new revision

    with pytest.raises(ApiException) as stale:  # the resourceVersion it was read at is gone
        await apps.patch_namespaced_deployment_scale("web", "prod", body, _content_type=MERGE)
    assert stale.value.status == 409
    with pytest.raises(ApiException) as invalid:
        await apps.patch_namespaced_deployment_scale(
            "web", "prod", {"spec": {"replicas": -1}}, _content_type=MERGE
        )
    assert invalid.value.status == 422
    assert fake.deployment("prod", "web")["spec"]["replicas"] == 4


async def test_pod_delete_checks_preconditions_and_honours_dry_run(
    fake: FakeKubernetes, api: client.ApiClient
) -> None:
    core = client.CoreV1Api(api)
    pod = fake.add_pod("prod", "web-1", labels={"app": "web"}, node="node-a")
    meta = pod["metadata"]

    stale = client.V1DeleteOptions(
        preconditions=client.V1Preconditions(uid=meta["uid"], resource_version="999")
    )
    with pytest.raises(ApiException) as conflict:
        await core.delete_namespaced_pod("web-1", "prod", body=stale)
    assert conflict.value.status == 409 and "Precondition failed" in status_of(conflict.value)["message"]

    exact = client.V1DeleteOptions(
        preconditions=client.V1Preconditions(uid=meta["uid"], resource_version=meta["resourceVersion"])
    )
    await core.delete_namespaced_pod("web-1", "prod", body=exact, dry_run="All")
    assert fake.pod("prod", "web-1") is not None
    answer = await core.delete_namespaced_pod("web-1", "prod", body=exact)
    assert answer.metadata.name == "web-1"
    assert fake.pod("prod", "web-1") is None
    with pytest.raises(ApiException) as gone:
        await core.delete_namespaced_pod("web-1", "prod")
    assert gone.value.status == 404 and status_of(gone.value)["reason"] == "NotFound"
    assert [(r.method, r.status) for r in fake.mutations] == [("DELETE", 200)]


async def test_eviction_is_429_when_a_disruption_budget_forbids_it(
    fake: FakeKubernetes, api: client.ApiClient
) -> None:
    core = client.CoreV1Api(api)
    for name in ("web-1", "web-2"):
        fake.add_pod("prod", name, labels={"app": "web"}, node="node-a")
    fake.add_deployment("prod", "api", replicas=2)
    (api_rs,) = fake.replicasets("prod")
    for name in ("api-1", "api-2"):
        owner = {"owner_kind": "ReplicaSet", "owner_name": api_rs["metadata"]["name"]}
        fake.add_pod(
            "prod", name, labels=api_rs["spec"]["template"]["metadata"]["labels"], node="node-a", **owner
        )
    fake.add_pod("prod", "loner", labels={"app": "loner"}, node="node-a")
    fake.add_pdb("prod", "web-pdb", selector={"app": "web"}, min_available=2)
    fake.add_pdb("prod", "api-pdb", selector={"app": "api"}, max_unavailable=1)

    def eviction(name: str) -> client.V1Eviction:
        return client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace="prod"))

    with pytest.raises(ApiException) as blocked:
        await core.create_namespaced_pod_eviction("web-1", "prod", eviction("web-1"))
    assert blocked.value.status == 429
    body = status_of(blocked.value)
    assert body["reason"] == "TooManyRequests"
    assert body["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert body["details"]["causes"] == [
        {
            "reason": "DisruptionBudget",
            "message": "The disruption budget web-pdb needs 2 healthy pods and has 2 currently",
        }
    ]
    assert fake.pod("prod", "web-1") is not None

    await core.create_namespaced_pod_eviction("api-1", "prod", eviction("api-1"), dry_run="All")
    assert fake.pod("prod", "api-1") is not None
    await core.create_namespaced_pod_eviction("api-1", "prod", eviction("api-1"))
    assert fake.pod("prod", "api-1") is None
    # Nothing recreated api-1: the ReplicaSet still wants 2, so the budget's one disruption is spent.
    with pytest.raises(ApiException) as spent:
        await core.create_namespaced_pod_eviction("api-2", "prod", eviction("api-2"))
    assert spent.value.status == 429
    await core.create_namespaced_pod_eviction("loner", "prod", eviction("loner"))  # no budget
    assert fake.pod("prod", "loner") is None

    pdbs = await client.PolicyV1Api(api).list_namespaced_pod_disruption_budget("prod")
    allowed = {p.metadata.name: (p.status.disruptions_allowed, p.status.current_healthy) for p in pdbs.items}
    assert allowed == {"api-pdb": (0, 1), "web-pdb": (0, 2)}
    assert [r.status for r in fake.requests if r.path.endswith("/eviction")] == [429, 201, 201, 429, 201]


async def test_pods_by_node_field_selector(fake: FakeKubernetes, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    fake.add_node("node-a")
    fake.add_pod("prod", "web-1", labels={"app": "web"}, node="node-a")
    fake.add_pod("prod", "web-2", labels={"app": "web"}, node="node-b")
    fake.add_pod("prod", "api-1", labels={"app": "api"}, node="node-a")
    fake.add_pod(
        "kube-system",
        "agent-a",
        labels={"app": "agent"},
        node="node-a",
        owner_kind="DaemonSet",
        owner_name="agent",
    )
    fake.add_pod("prod", "pending", labels={"app": "web"})

    everywhere = await core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-a")
    assert sorted(p.metadata.name for p in everywhere.items) == ["agent-a", "api-1", "web-1"]
    web_on_a = await core.list_namespaced_pod(
        "prod", label_selector="app=web", field_selector="spec.nodeName=node-a"
    )
    assert [p.metadata.name for p in web_on_a.items] == ["web-1"]
    not_web = await core.list_namespaced_pod("prod", label_selector="app!=web")
    assert [p.metadata.name for p in not_web.items] == ["api-1"]
    unscheduled = await core.list_namespaced_pod("prod", field_selector="spec.nodeName=")
    assert [p.metadata.name for p in unscheduled.items] == ["pending"]
    with pytest.raises(ApiException) as unknown:
        await core.list_namespaced_pod("prod", field_selector="spec.hostname=node-a")
    assert unknown.value.status == 400


async def test_node_cordon_patch_and_injected_failures(fake: FakeKubernetes, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    fake.add_node("node-a")
    fake.fail_next("PATCH", "/nodes/node-a", 500, dry_run=False)
    cordon = {"spec": {"unschedulable": True}, "status": {"conditions": []}}
    answer = await core.patch_node("node-a", cordon, dry_run="All")  # the failure waits for a real write
    assert answer.spec.unschedulable is True
    with pytest.raises(ApiException) as injected:
        await core.patch_node("node-a", cordon)
    assert injected.value.status == 500
    assert "unschedulable" not in fake.node("node-a")["spec"]

    await core.patch_node("node-a", cordon)
    node = fake.node("node-a")
    assert node["spec"]["unschedulable"] is True
    assert node["status"]["conditions"][0]["type"] == "Ready"  # status is not the patch's to write
    with pytest.raises(ApiException) as missing:
        await core.read_node("node-b")
    assert missing.value.status == 404
    assert (await client.VersionApi(api).get_code()).git_version == "v1.30.0"


async def test_the_service_sends_the_token_its_settings_name(fake: FakeKubernetes, tmp_path: Path) -> None:
    fake.add_deployment("shop", "api")
    (tmp_path / "token").write_text(fake.token + "\n")
    kube = await connect(Settings(kube_api_url=fake.base_url, kube_token_file=tmp_path / "token"))
    assert kube is not None
    try:
        deployment = await kube.read(kube.apps.read_namespaced_deployment, "api", "shop")
    finally:
        await kube.close()
    assert deployment["metadata"]["name"] == "api"
    anonymous = await connect(Settings(kube_api_url=fake.base_url))
    assert anonymous is not None
    try:
        with pytest.raises(KubeError) as refused:
            await anonymous.read(anonymous.apps.read_namespaced_deployment, "api", "shop")
    finally:
        await anonymous.close()
    assert refused.value.status == 401


async def test_a_kubeconfig_names_the_server_and_the_token(fake: FakeKubernetes, tmp_path: Path) -> None:
    fake.add_deployment("shop", "api")
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": fake.base_url}}],
        "users": [{"name": "u", "user": {"token": fake.token}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    (tmp_path / "config").write_text(json.dumps(kubeconfig))  # JSON is YAML
    kube = await connect(Settings(kube_config=tmp_path / "config"))
    assert kube is not None
    try:
        deployment = await kube.read(kube.apps.read_namespaced_deployment, "api", "shop")
    finally:
        await kube.close()
    assert deployment["metadata"]["name"] == "api"
    # No API URL, no cluster around us, no kubeconfig: no client (remediation is off).
    assert await connect(Settings(kube_config=tmp_path / "missing")) is None
