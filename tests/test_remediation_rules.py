"""remediation.yaml: validation with file, location and problem; targets from labels only."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from service.remediate.target import Refused, resolve_target
from service.ruleset import RulesError, load_rules
from service.ruleset.remediation import Allowlist, Policy, strictest

BROKEN = """
page_roles: [DevOps, Nobody]
allowlist:
  namespaces:
    shop: [api]
policies:
  - name: a
    action: nuke
    matchers: ['alertname="x"']
  - name: b
    action: scale
    matchers: ['alertname="x"']
    params: {replicas: 5, max_replicas: 10, bogus: 1}
  - name: c
    action: drain_node
    matchers: ['alertname="x"']
    target_labels: {deployment: dep}
    preconditions: {changed_within: 5m}
    approval: {severities: [SEV-9]}
  - name: d
    action: scale
    matchers: ['alertname="x"']
    params: {replicas: 20, max_replicas: 10}
"""


@pytest.fixture
def folder(tmp_path: Path, rules_dir: Path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(rules_dir, target)
    return target


def problems(path: Path) -> list[str]:
    with pytest.raises(RulesError) as info:
        load_rules(path)
    return [str(p) for p in info.value.problems]


def test_every_problem_is_reported_with_its_location(folder: Path) -> None:
    (folder / "remediation.yaml").write_text(BROKEN)
    f = folder / "remediation.yaml"
    assert problems(folder) == [
        f"{f}:2:22: page_roles[1]: unknown role 'Nobody'; contacts.yaml defines Account Manager, CTO, "
        "Communications, Customer Success, Database Admin, DevOps, Engineering Lead, Incident Commander, "
        "Legal, Security, Technical Lead",
        f"{f}:8:5: policies[0].action: unknown action 'nuke'; one of rollback, scale, restart, "
        "delete_pods, drain_node",
        f"{f}:13:45: policies[1].params.bogus: Extra inputs are not permitted",
        f"{f}:17:21: policies[2].target_labels.deployment: drain_node targets node, not deployment",
        f"{f}:18:21: policies[2].preconditions.changed_within: only for deployment actions, not drain_node",
        f"{f}:19:29: policies[2].approval.severities[0]: unknown severity 'SEV-9'",
        f"{f}:23:5: policies[3].params: replicas 20 is above max_replicas 10",
    ]


def test_rules_check_cli_prints_the_problems_and_fails(folder: Path) -> None:
    (folder / "remediation.yaml").write_text("allowlist:\n  namespaces:\n    Shop: ['*']\n")
    run = subprocess.run(
        [sys.executable, "-m", "service", "rules", "check", str(folder)], capture_output=True, text=True
    )
    assert run.returncode == 1
    assert (
        f"{folder / 'remediation.yaml'}:2:3: allowlist.namespaces: 'Shop' is not a Kubernetes name"
        in run.stderr
    )


def test_a_rules_directory_without_remediation_has_none(folder: Path) -> None:
    (folder / "remediation.yaml").unlink()
    assert load_rules(folder).remediation.policies == []


def test_modes_only_go_down() -> None:
    assert strictest("enforce", "dry-run", "enforce") == "dry-run"
    assert strictest("enforce", "enforce") == "enforce"
    assert strictest("dry-run", "off", "enforce") == "off"


POLICY = Policy.model_validate({"name": "p", "action": "restart", "matchers": ['alertname="x"']})
ALLOW = Allowlist(namespaces={"shop": ["api", "worker-*"]}, nodes=["node-*"])


@pytest.mark.parametrize(
    ("labels", "guardrail", "reason"),
    [
        ({"namespace": "shop"}, "target", "alert has no 'deployment' label"),
        ({"deployment": "api"}, "target", "alert has no 'namespace' label"),
        ({"namespace": "shop", "deployment": ""}, "target", "alert has no 'deployment' label"),
        ({"namespace": "shop", "deployment": "payments"}, "allowlist", "not in the allowlist"),
        ({"namespace": "prod", "deployment": "api"}, "allowlist", "not in the allowlist"),
        ({"namespace": "shop", "deployment": "*"}, "target", "not a valid Kubernetes deployment name"),
        ({"namespace": "shop", "deployment": "api/../x"}, "target", "not a valid Kubernetes deployment name"),
        ({"namespace": "shop", "deployment": "API"}, "target", "not a valid Kubernetes deployment name"),
        ({"namespace": "sh.op", "deployment": "api"}, "target", "not a valid Kubernetes namespace name"),
    ],
)
def test_unresolvable_targets_are_refused_never_widened(
    labels: dict[str, str], guardrail: str, reason: str
) -> None:
    with pytest.raises(Refused) as refused:
        resolve_target("deployment", POLICY, labels, ALLOW)
    assert refused.value.guardrail == guardrail and reason in refused.value.reason


def test_targets_come_from_the_mapped_labels_and_globs_match_names() -> None:
    mapped = Policy.model_validate(
        {
            "name": "p",
            "action": "restart",
            "matchers": ['alertname="x"'],
            "target_labels": {"namespace": "kubernetes_namespace", "deployment": "app"},
        }
    )
    labels = {
        "kubernetes_namespace": "shop",
        "app": "worker-7",
        "namespace": "kube-system",
        "deployment": "x",
    }
    target = resolve_target("deployment", mapped, labels, ALLOW)
    assert (target.namespace, target.name, target.key) == ("shop", "worker-7", "deployment/shop/worker-7")
    assert resolve_target("node", POLICY, {"node": "node-3"}, ALLOW).key == "node/node-3"
    with pytest.raises(Refused, match="not in the allowlist"):
        resolve_target("node", POLICY, {"node": "db-1"}, ALLOW)
    with pytest.raises(Refused, match="not in the allowlist"):
        resolve_target("deployment", POLICY, {"namespace": "shop", "deployment": "x"}, Allowlist())
