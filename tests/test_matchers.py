import pytest

from service.ruleset.matchers import Matcher


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
