"""incidentd's own alerts (deploy/prometheus/incidentd-rules.yaml) with the real promtool: the file
passes `promtool check rules`, and its unit tests (deploy/prometheus/tests/) pass `promtool test
rules`, firing each alert on the failure it names and keeping all quiet on a healthy service."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "incidentd-rules.yaml"
UNIT_TESTS = sorted((ROOT / "deploy" / "prometheus" / "tests").glob("*.yaml"))

# What the issue asks incidentd to alert on, by alert.
REQUIRED_ALERTS = {
    "IncidentdDown",
    "IncidentdAllInstancesDown",
    "IncidentdKafkaConsumerLagHigh",
    "IncidentdPageGivenUp",
    "IncidentdPagesRetrying",
    "IncidentdDeadLetters",
    "IncidentdWebhooksRefused",
    "IncidentdOutboxBacklog",
    "IncidentdPageOldestPending",
}


def _promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: Debian's prometheus package (scripts/ensure-system-deps.sh)"
    return subprocess.run(
        [promtool, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def _rules() -> list[dict[str, Any]]:
    (group,) = yaml.safe_load(RULES.read_text())["groups"]
    rules = group["rules"]
    assert isinstance(rules, list)
    return rules


def test_rules_pass_promtool_check() -> None:
    result = _promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_rules_pass_their_promtool_unit_tests() -> None:
    assert UNIT_TESTS
    result = _promtool("test", "rules", *UNIT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    # The same unit tests against rules whose given-up page alert never fires must fail.
    broken = yaml.safe_load(RULES.read_text())
    for rule in broken["groups"][0]["rules"]:
        if rule["alert"] == "IncidentdPageGivenUp":
            rule["expr"] = "vector(0) > 1"
    (tmp_path / "tests").mkdir()
    (tmp_path / RULES.name).write_text(yaml.safe_dump(broken))
    for test in UNIT_TESTS:
        shutil.copy(test, tmp_path / "tests" / test.name)
    result = _promtool("test", "rules", *sorted((tmp_path / "tests").glob("*.yaml")))
    assert result.returncode != 0
    assert "alertname: IncidentdPageGivenUp" in result.stdout + result.stderr


def test_every_alert_the_issue_asks_for_exists_and_is_unit_tested() -> None:
    alerts = {rule["alert"] for rule in _rules()}
    assert alerts == REQUIRED_ALERTS
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in UNIT_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert fired == alerts, f"alerts never seen firing in a unit test: {alerts - fired}"
    assert quiet == alerts, f"alerts never seen quiet in a unit test: {alerts - quiet}"


def test_every_alert_has_a_severity_and_text_and_uses_agreed_metrics() -> None:
    for rule in _rules():
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        # Every selector names the scrape job, which the chart replaces with its own.
        selectors = re.findall(r"\b([a-z_]+)\{([^}]*)\}", rule["expr"])
        assert selectors and all('job="incidentd"' in labels for _, labels in selectors), rule["alert"]
        # That each name is one the service exports: tests/test_monitoring_queries.py.
