"""The Helm chart's optional blocks and the values it refuses (deploy/helm/incidentd).

Rendered with Helm's own Go library (scripts/helm-lint.sh, as tests/test_deploy.py does): every
pager wired from its Secret (the pod builds every listed pager from what the chart gives it), a
pager listed without its Secret refused before anything renders, extra volumes, the
NetworkPolicy, the PrometheusRule (see also tests/test_prometheus_rules.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.config import Settings
from service.notify.registry import NOTIFIERS, build_notifiers
from tests.test_deploy import (
    CHART,
    HELM_LINT,
    HELM_VENV,
    _container,
    _helm,
    _mount_of,
    _one,
    _run,
    longest_stop,
)

PROMETHEUS_RULES = CHART.parents[2] / "deploy" / "prometheus" / "incidentd-rules.yaml"
helm_timeout = pytest.mark.timeout(900)

# Every pager block of values.yaml: the Secret's key, the setting its file feeds, and the other
# values a render with that pager needs.
PAGER_BLOCKS: dict[str, tuple[str, str, dict[str, str]]] = {
    "opsgenie": ("api-key", "INCIDENTD_OPSGENIE_API_KEY_FILE", {}),
    "jsm": ("api-key", "INCIDENTD_JSM_API_KEY_FILE", {}),
    "pagerduty": ("routing-key", "INCIDENTD_PAGERDUTY_ROUTING_KEY_FILE", {}),
    "slack": ("webhook-url", "INCIDENTD_SLACK_WEBHOOK_URL_FILE", {}),
    "jira": (
        "api-token",
        "INCIDENTD_JIRA_API_TOKEN_FILE",
        {"url": "https://example.atlassian.net", "email": "sre@example.com", "project": "OPS"},
    ),
    "statuspage": ("api-key", "INCIDENTD_STATUSPAGE_API_KEY_FILE", {"pageId": "p4g3"}),
}
# What each Secret file holds in the settings test below.
STAND_INS = {
    "INCIDENTD_SLACK_WEBHOOK_URL_FILE": "https://hooks.slack.com/services/T000/B000/XXXX",
    "INCIDENTD_DATABASE_URL_FILE": "postgresql+asyncpg://incidentd:pw@db:5432/incidentd",
}


@pytest.fixture(scope="module")
def helm_venv() -> Path:
    result = _run([HELM_LINT, "--setup"], timeout=840)
    assert result.returncode == 0, result.stdout + result.stderr
    return HELM_VENV


def _all_pagers() -> dict[str, Any]:
    values: dict[str, Any] = {"pagers": ["console", *PAGER_BLOCKS]}
    for pager, (key, _, extra) in PAGER_BLOCKS.items():
        values[pager] = {"existingSecret": f"incidentd-{pager}", "key": key, **extra}
    return values


def _env(docs: list[dict[str, Any]]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in _container(docs)["env"] if "value" in e}


def test_every_pager_has_a_block_the_schema_knows() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    names = set(schema["properties"]["pagers"]["items"]["enum"])
    # jsm: Jira Service Management Ops, Opsgenie's alert API under JSM's base URL.
    assert names == set(NOTIFIERS) | {"jsm"}
    assert names - {"console"} == set(PAGER_BLOCKS)
    required = {
        check["if"]["properties"]["pagers"]["contains"]["const"]: check["then"]["properties"]
        for check in schema["allOf"]
    }
    assert set(required) == set(PAGER_BLOCKS), "a pager the schema does not refuse without its Secret"
    for pager, (key, _, extra) in PAGER_BLOCKS.items():
        assert values[pager]["existingSecret"] == "" and values[pager]["key"] == key, pager
        assert set(required[pager][pager]["required"]) == {"existingSecret", *extra}, pager


@helm_timeout
def test_every_pager_is_wired_from_its_secret(
    helm_venv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, docs, _ = _helm(tmp_path, values=_all_pagers())
    assert result.returncode == 0, result.stderr
    env = _env(docs)
    assert env["INCIDENTD_PAGERS"] == "console,opsgenie,jsm,pagerduty,slack,jira,statuspage"
    for pager, (key, setting, _) in PAGER_BLOCKS.items():
        secret = _mount_of(docs, env[setting])["secret"]
        assert secret["secretName"] == f"incidentd-{pager}", pager
        assert env[setting].endswith(f"/{pager}/{key}") and secret["items"] == [{"key": key, "path": key}]
    assert env["INCIDENTD_JIRA_PROJECT"] == "OPS" and env["INCIDENTD_STATUSPAGE_PAGE_ID"] == "p4g3"

    # The pod starts with them: Settings load from the rendered env (each Secret file a stand-in)
    # and every listed pager this build knows is built, as at start-up.
    for name in [n for n in os.environ if n.startswith("INCIDENTD_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if name.endswith("_FILE"):
            stand_in = tmp_path / name.lower()
            stand_in.write_text(STAND_INS.get(name, "s3cret") + "\n")
            value = str(stand_in)
        monkeypatch.setenv(name, value)
    settings = Settings()
    settings.pagers = [p for p in settings.pagers if p in NOTIFIERS]
    assert {"console", "opsgenie", "pagerduty", "slack", "jira", "statuspage"} <= set(settings.pagers)
    notifiers = build_notifiers(settings)
    assert set(notifiers) == set(settings.pagers)
    assert settings.database_url == STAND_INS["INCIDENTD_DATABASE_URL_FILE"]

    async def close() -> None:
        for notifier in notifiers.values():
            await notifier.aclose()

    asyncio.run(close())


@helm_timeout
def test_a_pager_secret_is_wired_without_the_pager_listed(helm_venv: Path, tmp_path: Path) -> None:
    # A fallback pager of contacts.yaml is built at start without being in INCIDENTD_PAGERS.
    values = {"pagerduty": {"existingSecret": "incidentd-pagerduty", "key": "routing-key"}}
    result, docs, _ = _helm(tmp_path, values=values)
    assert result.returncode == 0, result.stderr
    env = _env(docs)
    assert env["INCIDENTD_PAGERS"] == "console"
    assert _mount_of(docs, env["INCIDENTD_PAGERDUTY_ROUTING_KEY_FILE"])["secret"]["secretName"] == (
        "incidentd-pagerduty"
    )
    assert "INCIDENTD_SLACK_WEBHOOK_URL_FILE" not in env


@helm_timeout
def test_acknowledgement_secrets_come_from_the_pager_secret(helm_venv: Path, tmp_path: Path) -> None:
    values = {
        "opsgenie": {"existingSecret": "og", "key": "api-key", "webhookSecretKey": "webhook-secret"},
        "pagerduty": {"existingSecret": "pd", "key": "routing-key", "webhookSecretKey": "webhook-secret"},
        "slack": {"existingSecret": "sl", "key": "webhook-url", "signingSecretKey": "signing-secret"},
    }
    result, docs, _ = _helm(tmp_path, values=values)
    assert result.returncode == 0, result.stderr
    env = _env(docs)
    inbound = {
        "INCIDENTD_OPSGENIE_WEBHOOK_SECRET_FILE": ("og", "webhook-secret"),
        "INCIDENTD_PAGERDUTY_WEBHOOK_SECRET_FILE": ("pd", "webhook-secret"),
        "INCIDENTD_SLACK_SIGNING_SECRET_FILE": ("sl", "signing-secret"),
    }
    for setting, (secret_name, key) in inbound.items():
        secret = _mount_of(docs, env[setting])["secret"]
        assert secret["secretName"] == secret_name and env[setting].endswith("/" + key)
        assert {"key": key, "path": key} in secret["items"], setting
    # Not asked for: not wired.
    result, docs, _ = _helm(tmp_path, values=_all_pagers())
    assert not set(inbound) & set(_env(docs))


def _without(pager: str, field: str) -> dict[str, Any]:
    values = _all_pagers()
    values["pagers"] = ["console", pager]
    values[pager][field] = ""
    return values


@helm_timeout
@pytest.mark.parametrize(
    ("values", "expected"),
    [
        *[
            pytest.param(
                _without(pager, "existingSecret"), f"at '/{pager}/existingSecret': minLength", id=pager
            )
            for pager in PAGER_BLOCKS
        ],
        pytest.param(_without("jira", "project"), "at '/jira/project': minLength", id="jira-project"),
        pytest.param(
            _without("statuspage", "pageId"), "at '/statuspage/pageId': minLength", id="statuspage-page"
        ),
        pytest.param({"pagers": ["pagerdutty"]}, "at '/pagers/0'", id="unknown-pager"),
        pytest.param(
            {"kafka": {"replicationFactor": 0}}, "at '/kafka/replicationFactor'", id="replication-0"
        ),
        pytest.param(
            {"extraVolumeMounts": [{"name": "ca"}]}, "at '/extraVolumeMounts/0'", id="mount-without-path"
        ),
        pytest.param({"prometheusRule": {"enabled": "yes"}}, "at '/prometheusRule/enabled'", id="rule-flag"),
        pytest.param({"networkPolicy": {"egress": {}}}, "at '/networkPolicy/egress'", id="egress-not-a-list"),
    ],
)
def test_chart_refuses_a_pager_without_its_secret_and_bad_values(
    helm_venv: Path, tmp_path: Path, values: dict[str, Any], expected: str
) -> None:
    result, docs, _ = _helm(tmp_path, values=values)
    assert result.returncode == 1, f"bad values passed:\n{result.stderr}"
    assert expected in result.stderr
    assert not docs, "nothing renders from refused values"


def _grace(seconds: int, **env: float) -> dict[str, Any]:
    extra = [{"name": f"INCIDENTD_{name.upper()}", "value": str(value)} for name, value in env.items()]
    return {"terminationGracePeriodSeconds": seconds, "extraEnv": extra}


@helm_timeout
def test_chart_refuses_a_grace_period_shorter_than_a_stop(helm_venv: Path, tmp_path: Path) -> None:
    """The chart's defaults for the two timeouts are the service's: the bound of a render with
    neither set is the service's longest stop."""
    longest = longest_stop(Settings())
    assert (
        float(yaml.safe_load((CHART / "values.yaml").read_text())["terminationGracePeriodSeconds"]) >= longest
    )
    cases = [
        (_grace(int(longest)), 0),
        (_grace(int(longest) - 1), 1),
        (_grace(70, shutdown_timeout_seconds=60), 0),
        (_grace(70, shutdown_timeout_seconds=60, kafka_publish_timeout_seconds=10), 1),
        (_grace(30, shutdown_timeout_seconds=45), 1),
    ]
    for i, (values, code) in enumerate(cases):
        out = tmp_path / str(i)
        out.mkdir()
        result, docs, _ = _helm(out, values=values)
        assert result.returncode == code, f"{values}:\n{result.stderr}"
        if code:
            assert "terminationGracePeriodSeconds is" in result.stderr and not docs
        else:
            pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
            assert pod["terminationGracePeriodSeconds"] == values["terminationGracePeriodSeconds"]


@helm_timeout
def test_extra_volumes_and_mounts(helm_venv: Path, tmp_path: Path) -> None:
    values = {
        "extraVolumes": [{"name": "kafka-ca", "secret": {"secretName": "kafka-ca"}}],
        "extraVolumeMounts": [{"name": "kafka-ca", "mountPath": "/etc/kafka-ca", "readOnly": True}],
        "extraEnv": [{"name": "INCIDENTD_KUBE_CA_FILE", "value": "/etc/kafka-ca/ca.crt"}],
    }
    result, docs, _ = _helm(tmp_path, values=values)
    assert result.returncode == 0, result.stderr
    assert _mount_of(docs, "/etc/kafka-ca/ca.crt") == {
        "name": "kafka-ca",
        "secret": {"secretName": "kafka-ca"},
    }
    names = [m["name"] for m in _container(docs)["volumeMounts"]]
    assert {"rules", "tmp", "database"} <= set(names), "the chart's own mounts stay"


@helm_timeout
def test_network_policy(helm_venv: Path, tmp_path: Path) -> None:
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    kafka = {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"port": 9093, "protocol": "TCP"}]}
    values = {"networkPolicy": {"enabled": True, "ingressFrom": [monitoring], "egress": [kafka]}}
    result, docs, _ = _helm(tmp_path, values=values)
    assert result.returncode == 0, result.stderr
    policy = _one(docs, "NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"] == _one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"] == [{"from": [monitoring], "ports": [{"port": "http", "protocol": "TCP"}]}]
    dns, *rest = policy["egress"]
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert rest == [kafka]

    # Egress left open when no egress rules are given; ingress from anywhere, to the port only.
    result, docs, _ = _helm(tmp_path, values={"networkPolicy": {"enabled": True}})
    assert result.returncode == 0, result.stderr
    policy = _one(docs, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"] and "egress" not in policy
    assert policy["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]


def _rules_for_job(job: str) -> list[dict[str, Any]]:
    text = PROMETHEUS_RULES.read_text().replace('job="incidentd"', f'job="{job}"')
    groups = yaml.safe_load(text)["groups"]
    assert isinstance(groups, list)
    return groups


@helm_timeout
@pytest.mark.parametrize(
    ("release", "job", "expected_job"),
    [("prod", "", "prod-incidentd"), ("incidentd", "kubernetes-pods", "kubernetes-pods")],
    ids=["job-from-the-service-monitor", "job-given"],
)
def test_prometheus_rule_ships_the_rules_file(
    helm_venv: Path, tmp_path: Path, release: str, job: str, expected_job: str
) -> None:
    values = {"prometheusRule": {"enabled": True, "job": job, "labels": {"release": "kube-prometheus-stack"}}}
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    out = tmp_path / "rendered.yaml"
    result = _run([HELM_LINT, CHART, "-f", tmp_path / "values.yaml", "-o", out, "--release", release])
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(out.read_text()) if d]
    rule = _one(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"]["groups"] == _rules_for_job(expected_job)
    assert 'job="incidentd"' not in yaml.safe_dump(rule), "an expression kept the file's job name"
    # What the Prometheus Operator loads is a valid rules file too.
    as_file = tmp_path / "rendered-rules.yaml"
    as_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: Debian's prometheus package (scripts/ensure-system-deps.sh)"
    checked = _run([promtool, "check", "rules", as_file])
    assert checked.returncode == 0, checked.stdout + checked.stderr
