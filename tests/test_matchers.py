import json
import subprocess
from pathlib import Path

import pytest

from service.ruleset.matchers import Matcher
from tests.support.alertmanager import AMTOOL_BIN


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ('alertname="ApiDown"', {"alertname": "ApiDown"}, True),
        ('alertname="ApiDown"', {"alertname": "ApiDownX"}, False),
        ('namespace!="dev"', {"namespace": "prod"}, True),
        ('namespace!="dev"', {"namespace": "dev"}, False),
        ('namespace!="dev"', {}, True),  # missing label is the empty string
        ('alertname=~"Api.*"', {"alertname": "ApiDown"}, True),
        ('alertname=~"Api"', {"alertname": "ApiDown"}, False),  # anchored both ends
        ('alertname=~"Down"', {"alertname": "ApiDown"}, False),
        ('alertname!~"Api.*"', {"alertname": "ApiDown"}, False),
        ('alertname!~"Api.*"', {"alertname": "AuthBroken"}, True),
        ('team=""', {}, True),
        ('team=~".+"', {}, False),
        ("severity=critical", {"severity": "critical"}, True),  # unquoted value
        ('  severity = "critical"  ', {"severity": "critical"}, True),
        ('summary="say \\"hi\\""', {"summary": 'say "hi"'}, True),
        ('alertname=~"ApiDown|DataLoss"', {"alertname": "DataLoss"}, True),
    ],
)
def test_matcher_semantics_follow_alertmanager(text: str, labels: dict[str, str], expected: bool) -> None:
    assert Matcher.parse(text).matches(labels) is expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("alertname", "invalid matcher"),
        ('1abc="x"', "invalid matcher"),
        ('alertname=~"(unclosed"', "invalid regex"),
        ('alertname="unterminated', "unterminated"),
        ("alertname=a,b", "quote it"),
    ],
)
def test_invalid_matchers_say_why(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Matcher.parse(text)


def test_matcher_prints_back_as_alertmanager_syntax() -> None:
    assert str(Matcher.parse("namespace!~dev|test")) == 'namespace!~"dev|test"'


# RE2, as Alertmanager (Go) has it. GO_ONLY: RE2 takes them, Python's re refuses them or reads
# them otherwise; PYTHON_ONLY: Python's re takes them, RE2 and Alertmanager refuse them.
GO_ONLY = [r"\pL+", r"[[:digit:]]+", r"\Qa.b\E", r"\p{Greek}+"]
PYTHON_ONLY = [r"(a)\1", r"(?=x)x", r"(?<!a)b", r"a++", r"(?>a)"]


@pytest.mark.parametrize("regex", PYTHON_ONLY)
def test_regexes_alertmanager_refuses_are_refused(regex: str) -> None:
    with pytest.raises(ValueError, match="invalid regex"):
        Matcher.parse(f"team=~{json.dumps(regex)}")


@pytest.mark.parametrize(
    ("regex", "value", "expected"),
    [
        (r"\pL+", "héllo", True),
        (r"\pL+", "h3llo", False),
        (r"[[:digit:]]+", "42", True),
        (r"[[:digit:]]+", ":", False),  # Python's re reads [[:digit:]] as a set of ':digt['
        (r"\Qa.b\E", "a.b", True),
        (r"\Qa.b\E", "axb", False),
        ("db", "db\n", False),  # "$" ends the text, not a line: Python's re matches here
    ],
)
def test_re2_syntax_and_anchoring(regex: str, value: str, expected: bool) -> None:
    assert Matcher.parse(f"team=~{json.dumps(regex)}").matches({"team": value}) is expected


def _amtool_accepts(regex: str, tmp_path: Path) -> bool:
    config = tmp_path / "alertmanager.yml"
    matcher = json.dumps(f"team=~{json.dumps(regex)}")
    config.write_text(
        "route:\n  receiver: r\n  routes:\n"
        f"    - {{receiver: r, matchers: [{matcher}]}}\nreceivers: [{{name: r}}]\n"
    )
    proc = subprocess.run([AMTOOL_BIN, "check-config", str(config)], capture_output=True, timeout=60)
    return proc.returncode == 0


@pytest.mark.alertmanager
@pytest.mark.parametrize("regex", [*GO_ONLY, *PYTHON_ONLY, "a|b", "(unclosed", "a{1001}"])
def test_valid_regexes_are_what_alertmanager_says(regex: str, tmp_path: Path) -> None:
    try:
        Matcher.parse(f"team=~{json.dumps(regex)}")
        ours = True
    except ValueError:
        ours = False
    assert ours is _amtool_accepts(regex, tmp_path), regex


def test_rule_match_remembers_answers_by_the_labels_its_rules_name() -> None:
    from service.ruleset.matchers import RuleMatch

    rules = RuleMatch(
        [
            ((Matcher.parse('alertname="ApiDown"'), Matcher.parse('env=~"prod.*"')), "api-prod"),
            ((Matcher.parse('team=""'),), "no-team"),
            ((Matcher.parse('alertname=~"Api.*"'),), "api"),
        ]
    )
    assert rules.all({"alertname": "ApiDown", "env": "prod-eu", "instance": "a"}) == (
        "api-prod",
        "no-team",
        "api",
    )
    # Another instance (a label no rule names) is the same answer; the env is not.
    assert rules.first({"alertname": "ApiDown", "env": "prod-eu", "instance": "b"}) == "api-prod"
    assert rules.all({"alertname": "ApiDown", "env": "dev", "instance": "a"}) == ("no-team", "api")
    # A missing label and an empty one match alike; a team set is a different answer.
    assert rules.all({"alertname": "ApiDown", "env": "dev", "team": ""}) == ("no-team", "api")
    assert rules.all({"alertname": "ApiDown", "env": "dev", "team": "db"}) == ("api",)
    assert rules.first({"alertname": "Other", "team": "db"}) is None


def test_rule_match_answers_as_the_matchers_do_past_its_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    import service.ruleset.matchers as m

    monkeypatch.setattr(m, "RULE_MATCH_MEMO", 3)
    rules = m.RuleMatch([((Matcher.parse('instance=~"a.*"'),), "a")])
    for i in range(10):
        assert rules.first({"instance": f"a{i}"}) == "a"
        assert rules.first({"instance": f"b{i}"}) is None


def test_rule_match_over_annotations_lets_a_label_win_as_a_merge_would() -> None:
    from service.ruleset.matchers import RuleMatch

    rules = RuleMatch([((Matcher.parse('data_breach=~"true|suspected"'),), "breach")])
    # Remembered or not, the answer is that of {**annotations, **labels}.
    for _ in range(2):
        assert rules.all_over({"alertname": "A"}, {"data_breach": "true"}) == ("breach",)
        assert rules.all_over({"data_breach": "no"}, {"data_breach": "true"}) == ()
        assert rules.all_over({"data_breach": "suspected"}, {"data_breach": "no"}) == ("breach",)
        assert rules.all_over({"data_breach": ""}, {"data_breach": "true"}) == ()
        assert rules.all_over({}, {}) == ()
