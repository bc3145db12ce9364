import pytest

from service.classify.classifier import Classifier
from service.ingest.parse import parse_document
from service.models import Alert
from service.ruleset import RuleSet
from service.ruleset.durations import parse_duration
from tests.support.payloads import alert
from tests.support.time import T0


def _alert(**labels: str) -> Alert:
    name = labels.pop("alertname")
    return parse_document(alert(name, **labels), T0)[0]


@pytest.mark.parametrize(
    ("alertname", "severity"),
    [
        ("ApiDown", "SEV-1"),
        ("DatabaseUnavailable", "SEV-1"),
        ("DataLoss", "SEV-1"),
        ("DebateEngineFailure", "SEV-2"),
        ("AuthBroken", "SEV-2"),
        ("ConnectorDown", "SEV-3"),
        ("SlowResponses", "SEV-3"),
        ("UIGlitch", "SEV-4"),
        ("NonCriticalWarning", "SEV-4"),
    ],
)
def test_shipped_rules_classify_the_runbook_examples(rules: RuleSet, alertname: str, severity: str) -> None:
    a = Classifier(rules).classify(_alert(alertname=alertname, namespace="aragora"))
    assert a.severity == severity
    assert a.rule != "default"


@pytest.mark.parametrize(
    ("label", "severity", "rule"),
    [
        ("critical", "SEV-2", "fallback:severity"),
        ("warning", "SEV-3", "fallback:severity"),
        ("info", "SEV-4", "fallback:severity"),
        ("CRITICAL", "SEV-2", "fallback:severity"),
        ("bogus", "SEV-3", "default"),
    ],
)
def test_fallback_from_prometheus_severity_label_then_default(
    rules: RuleSet, label: str, severity: str, rule: str
) -> None:
    a = Classifier(rules).classify(_alert(alertname="SomethingElse", severity=label))
    assert (a.severity, a.rule) == (severity, rule)


def test_explicit_rule_wins_over_severity_label(rules: RuleSet) -> None:
    a = Classifier(rules).classify(_alert(alertname="UIGlitch", severity="critical"))
    assert a.severity == "SEV-4"


def test_title_from_summary_annotation_else_alertname(rules: RuleSet) -> None:
    c = Classifier(rules)
    with_summary = c.describe(c.classify(_alert(alertname="ApiDown")))
    assert with_summary.title == "ApiDown is happening"
    assert with_summary.impact == "Complete service outage: users cannot use the product"
    bare = parse_document({"labels": {"alertname": "ApiDown", "namespace": "aragora"}}, T0)[0]
    assert c.describe(c.classify(bare)).title == "ApiDown in aragora"


def test_runbook_severity_table_is_data(rules: RuleSet) -> None:
    table = {name: s.response_time for name, s in rules.severities.items()}
    assert table == {
        "SEV-1": parse_duration("15m"),
        "SEV-2": parse_duration("30m"),
        "SEV-3": parse_duration("2h"),
        "SEV-4": parse_duration("24h"),
    }
    assert rules.severity("SEV-1").follow_up == parse_duration("30m")
