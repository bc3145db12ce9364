"""Alert -> severity, title and impact, from ``rules/classify.yaml``."""

from __future__ import annotations

import logging
from typing import Any

from jinja2 import Template

from service.models import Alert
from service.ruleset.matchers import RuleMatch
from service.ruleset.models import ClassifyRule, RuleSet

log = logging.getLogger(__name__)


class Classifier:
    def __init__(self, rules: RuleSet) -> None:
        self._rules = rules
        self._first = RuleMatch([(r.matchers, r) for r in rules.classify.rules])
        self._by_name = {r.name: r for r in rules.classify.rules}

    def rule_for(self, labels: dict[str, str]) -> ClassifyRule | None:
        return self._first.first(labels)

    def classify(self, alert: Alert) -> Alert:
        """Severity and the rule that chose it: cheap, done for every alert."""
        alert.severity, alert.rule = self.severity_of(alert.labels)
        return alert

    def severity_of(self, labels: dict[str, str]) -> tuple[str, str]:
        """The severity these labels get, and the name of the rule that gives it."""
        rule = self.rule_for(labels)
        if rule is not None:
            return rule.severity, rule.name
        cls = self._rules.classify
        mapped = cls.fallback.map.get(labels.get(cls.fallback.label, "").lower())
        if mapped:
            return mapped, f"fallback:{cls.fallback.label}"
        return cls.default, "default"

    def describe(self, alert: Alert) -> Alert:
        """Title and impact from the templates: only for alerts that open an incident.

        Rendering costs more than everything else per alert, and in a storm almost
        every alert is a duplicate whose title nobody reads.
        """
        cls = self._rules.classify
        rule = self._by_name.get(alert.rule)
        ctx = {"labels": alert.labels, "annotations": alert.annotations, "severity": alert.severity}
        title_tpl = (rule.title if rule else None) or cls.default_title
        alert.title = _render(title_tpl, ctx) or alert.labels.get("alertname", "alert")
        alert.impact = _render(rule.impact if rule else None, ctx)
        return alert

    def classify_all(self, alerts: list[Alert]) -> list[Alert]:
        return [self.classify(a) for a in alerts]


def _render(template: Template | None, ctx: dict[str, Any]) -> str:
    if template is None:
        return ""
    try:
        return template.render(ctx).strip()
    except Exception as exc:  # any error in a user's template, not only Jinja's own
        # A template that fails on one alert's data must not stop the alert; the
        # fallback title (the alertname) is still a usable page.
        log.warning(
            "template failed for alert %s: %s: %s", ctx["labels"].get("alertname"), type(exc).__name__, exc
        )
        return ""
